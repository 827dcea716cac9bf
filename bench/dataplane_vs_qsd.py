"""fio against a csi-vduse device and a qemu-storage-daemon vduse-blk export, same VM.

Run inside a VDUSE kernel (``bash bench/run.sh`` boots the test VM for it). Prints
IOPS and bandwidth for each workload and the ratio csi-vduse / qemu-storage-daemon.
Absolute numbers under software emulation mean little; the ratios are the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.spec import DeviceSpec
from csi_vduse.devices.state import StateStore
from csi_vduse.vdpa import sysfs

SIZE = 512 << 20
WORKLOADS = {
    "randread 4k qd32": ["--rw=randread", "--bs=4k", "--iodepth=32"],
    "randwrite 4k qd32": ["--rw=randwrite", "--bs=4k", "--iodepth=32"],
    "randread 4k qd1": ["--rw=randread", "--bs=4k", "--iodepth=1"],
    "read 128k qd8": ["--rw=read", "--bs=128k", "--iodepth=8"],
}


def fio(dev: str, args: list[str], seconds: int) -> tuple[float, float]:
    out = subprocess.run(
        ["fio", "--name=bench", f"--filename={dev}", "--ioengine=libaio", "--direct=1",
         "--time_based", f"--runtime={seconds}", "--ramp_time=1", "--output-format=json",
         *args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    job = json.loads(out)["jobs"][0]
    side = job["read"] if job["read"]["io_bytes"] else job["write"]
    return float(side["iops"]), float(side["bw"]) / 1024


def start_qsd(image: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    qsd = subprocess.Popen([
        "qemu-storage-daemon",
        "--blockdev", f"file,node-name=f0,filename={image},cache.direct=off",
        "--export", f"vduse-blk,id=e0,node-name=f0,name={name},writable=on,num-queues=1",
    ])  # fmt: skip
    for _ in range(200):
        if Path(f"/dev/vduse/{name}").exists():
            break
        time.sleep(0.05)
    subprocess.run(["vdpa", "dev", "add", "name", name, "mgmtdev", "vduse"], check=True)
    return qsd, str(sysfs.wait_for_block_device(name, 20))


def main() -> int:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for image in ("ours.img", "qsd.img"):
            subprocess.run(["fio", "--name=prefill", f"--filename={work / image}", "--rw=write",
                            "--bs=1M", f"--size={SIZE}", "--output-format=terse"],
                           check=True, capture_output=True)  # fmt: skip
        manager = DeviceManager(StateStore(work / "state"))
        ours = str(manager.create(DeviceSpec("bench-ours", work / "ours.img")).block_device)
        qsd, theirs = start_qsd(work / "qsd.img", "bench-qsd")
        try:
            print(f"{'workload':20} {'csi-vduse':>16} {'qemu-storage-daemon':>22} {'ratio':>7}")
            for label, args in WORKLOADS.items():
                our_iops, our_bw = fio(ours, args, seconds)
                their_iops, their_bw = fio(theirs, args, seconds)
                print(f"{label:20} {our_iops:9.0f} IOPS {our_bw:5.0f}MiB/s "
                      f"{their_iops:9.0f} IOPS {their_bw:5.0f}MiB/s {our_iops / their_iops:7.2f}",
                      flush=True)  # fmt: skip
        finally:
            manager.delete("bench-ours")
            subprocess.run(["vdpa", "dev", "del", "bench-qsd"], check=False)
            qsd.terminate()
            qsd.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
