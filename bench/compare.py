"""fio against three block devices over the same file, in one VDUSE kernel.

Systems: this dataplane (``csi-vduse device create``), qemu-storage-daemon's
vduse-blk export (the C reference), and the kernel loop device. One 1 GiB backing
file on tmpfs serves all three, one system at a time: each job runs on every system
before the next job starts, so a shared host's drifting load falls on all alike. Every
job runs with 1 and with 2 queues (fio ``numjobs`` = queues, each job at the listed
depth; the loop device has no queues, so its single run is the reference for both rows).

Run inside a VDUSE kernel: ``bash bench/run.sh`` boots the test VM for it. Prints
a table and one ``BENCH-JSON`` line with every number. Absolute numbers under
software emulation mean little; the ratios in the same run are the point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.rbd_source import RbdSource
from csi_vduse.devices.spec import DEFAULT_BOUNCE_SIZE, DeviceSpec, parse_size
from csi_vduse.devices.state import StateStore
from csi_vduse.vdpa import sysfs

SIZE = 1 << 30
JOBS = {
    "4k randread QD1": ["--rw=randread", "--bs=4k", "--iodepth=1"],
    "4k randread QD32": ["--rw=randread", "--bs=4k", "--iodepth=32"],
    "4k randwrite QD32": ["--rw=randwrite", "--bs=4k", "--iodepth=32"],
    "64k randrw 70/30 QD16": ["--rw=randrw", "--rwmixread=70", "--bs=64k", "--iodepth=16"],
    "1M seq read QD8": ["--rw=read", "--bs=1M", "--iodepth=8"],
    "1M seq write QD8": ["--rw=write", "--bs=1M", "--iodepth=8"],
}


@dataclass
class Result:
    iops: float
    mib_s: float
    mean_us: float
    p99_us: float


def fio(dev: str, args: list[str], seconds: int, jobs: int, *, size: int = SIZE) -> Result:
    """One fio run over the first ``size`` bytes of ``dev``, a slice of it per fio job; a mixed
    job's reads and writes are summed (latency: weighted mean, max p99)."""
    out = subprocess.run(
        ["fio", "--name=bench", f"--filename={dev}", "--ioengine=libaio", "--direct=1",
         "--time_based", f"--runtime={seconds}", "--ramp_time=1", "--output-format=json",
         "--group_reporting", f"--numjobs={jobs}", f"--size={size // jobs}",
         f"--offset_increment={size // jobs}", "--randrepeat=0", *args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    job = json.loads(out)["jobs"][0]
    sides = [job[s] for s in ("read", "write") if job[s]["total_ios"]]
    ios = sum(s["total_ios"] for s in sides) or 1
    return Result(
        iops=sum(s["iops"] for s in sides),
        mib_s=sum(s["bw"] for s in sides) / 1024,
        mean_us=sum(s["lat_ns"]["mean"] * s["total_ios"] for s in sides) / ios / 1000,
        p99_us=max(s["clat_ns"]["percentile"]["99.000000"] for s in sides) / 1000,
    )


def peak_rss_mib(pid: int) -> dict[str, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )

    def mib(key: str) -> float:
        return int(status[key].split()[0]) / 1024

    return {k: mib(k) for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")}


Backing = Path | RbdSource  # a file, or an RBD image (bench/ceph_pool.py)


def device_spec(name: str, backing: Backing, queues: int, **extra: Any) -> DeviceSpec:
    """Our device ``name`` on ``backing``, with ``queues`` queues."""
    image, rbd = (None, backing) if isinstance(backing, RbdSource) else (backing, None)
    return DeviceSpec(name=name, backing=image, rbd=rbd, profile=BlkProfile(queues=queues), **extra)


@contextlib.contextmanager
def ours(backing: Backing, work: Path, queues: int, bounce: int) -> Iterator[tuple[str, int]]:
    """A csi-vduse device on ``backing`` (a file or an RBD image): its block device and
    dataplane pid."""
    manager = DeviceManager(StateStore(work / "state"))
    record = manager.create(device_spec("bench-ours", backing, queues, bounce_size=bounce))
    try:
        assert record.block_device is not None and record.pid is not None
        yield record.block_device, record.pid
    finally:
        manager.delete("bench-ours")


@contextlib.contextmanager
def qsd(image: Path, queues: int) -> Iterator[tuple[str, int]]:
    """qemu-storage-daemon's vduse-blk export of ``image``: its block device and pid."""
    with qsd_export(f"file,node-name=f0,filename={image},cache.direct=off", queues) as found:
        yield found


def qsd_argv(blockdev: str, name: str, queues: int) -> list[str]:
    """qemu-storage-daemon exporting block node ``f0`` (``blockdev``) as VDUSE device ``name``
    (the export's id too, which names its reconnect log ``$TMPDIR/vduse-blk-NAME``)."""
    return [
        "qemu-storage-daemon",
        "--blockdev", blockdev,
        "--export", f"vduse-blk,id={name},node-name=f0,name={name},writable=on,"
                    f"num-queues={queues},queue-size=256",
    ]  # fmt: skip


@contextlib.contextmanager
def qsd_export(
    blockdev: str, queues: int, *, name: str = "bench-qsd", timeout: float = 20.0
) -> Iterator[tuple[str, int]]:
    """``qsd_argv``'s daemon with its device attached: the block device and the daemon's pid.
    ``timeout``: seconds for the daemon to open its node and make the device."""
    daemon = subprocess.Popen(qsd_argv(blockdev, name, queues))
    try:
        deadline = time.monotonic() + timeout
        while not Path(f"/dev/vduse/{name}").exists() and time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise RuntimeError(f"qemu-storage-daemon exited with status {daemon.returncode}")
            time.sleep(0.05)
        subprocess.run(["vdpa", "dev", "add", "name", name, "mgmtdev", "vduse"], check=True)
        try:
            yield str(sysfs.wait_for_block_device(name, 20)), daemon.pid
        finally:
            subprocess.run(["vdpa", "dev", "del", name], check=False)
    finally:
        daemon.terminate()
        daemon.wait()


@contextlib.contextmanager
def loop(image: Path) -> Iterator[str]:
    subprocess.run(["modprobe", "loop"], check=True)
    # Direct I/O to the backing where the filesystem has it (tmpfs does not): as qsd's.
    for extra in (["--direct-io=on"], []):
        attach = subprocess.run(
            ["losetup", "--find", "--show", *extra, str(image)],
            check=False,
            capture_output=True,
            text=True,
        )
        if attach.returncode == 0:
            break
    attach.check_returncode()
    dev = attach.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def show(label: str, jobs: int, name: str, r: Result) -> None:
    print(f"  {label:5} q{jobs} {name:22} {r.iops:9.0f} IOPS {r.mib_s:8.1f} MiB/s "
          f"mean {r.mean_us:8.1f}us p99 {r.p99_us:8.1f}us", flush=True)  # fmt: skip


def run_queues(
    image: Path, work: Path, queues: int, *, seconds: int, names: list[str],
    report: dict[str, Any], bounce: int,
) -> None:  # fmt: skip
    """Every job on ours, then qsd, then (once) loop, before the next job: drifting load on a
    shared host then weighs on all systems of a job alike, not on whichever ran last."""
    run_loop = "loop" not in report
    mine: dict[str, Result] = {}
    theirs: dict[str, Result] = {}
    looped: dict[str, Result] = {}
    with contextlib.ExitStack() as stack:
        dev_ours, pid_ours = stack.enter_context(ours(image, work, queues, bounce))
        dev_qsd, pid_qsd = stack.enter_context(qsd(image, queues))
        dev_loop = stack.enter_context(loop(image)) if run_loop else None
        idle = peak_rss_mib(pid_ours)
        for name in names:
            mine[name] = fio(dev_ours, JOBS[name], seconds, queues)
            show("ours", queues, name, mine[name])
            theirs[name] = fio(dev_qsd, JOBS[name], seconds, queues)
            show("qsd", queues, name, theirs[name])
            if dev_loop is not None:
                looped[name] = fio(dev_loop, JOBS[name], seconds, 1)
                show("loop", 1, name, looped[name])
        rss_ours = peak_rss_mib(pid_ours)
        rss_ours["idle VmRSS"] = idle["VmRSS"]
        report[f"ours-q{queues}"] = {"results": mine, "rss": rss_ours}
        report[f"qsd-q{queues}"] = {"results": theirs, "rss": peak_rss_mib(pid_qsd)}
        if run_loop:
            report["loop"] = {"results": looped}


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}" if b else "  n/a"


def print_table(report: dict[str, Any], names: list[str]) -> None:
    print("\nIOPS / MiB/s / mean us / p99 us per system; ours/qsd and ours/loop by IOPS;")
    print("lat = ours/qsd mean latency (lower is better)")
    header = (f"{'q':>2} {'job':22} | {'ours':>31} | {'qemu-storage-daemon':>31} | "
              f"{'loop':>31} | {'/qsd':>5} {'/loop':>5} {'lat':>5}")  # fmt: skip
    print(header)
    print("-" * len(header))
    loop_results = report["loop"]["results"]
    for queues in report["queues"]:
        mine = report[f"ours-q{queues}"]["results"]
        theirs = report[f"qsd-q{queues}"]["results"]
        for name in names:
            cells = []
            for r in (mine[name], theirs[name], loop_results[name]):
                cells.append(f"{r.iops:7.0f} {r.mib_s:6.1f} {r.mean_us:7.1f} {r.p99_us:7.1f}")
            vs_qsd = ratio(mine[name].iops, theirs[name].iops)
            vs_loop = ratio(mine[name].iops, loop_results[name].iops)
            lat = ratio(mine[name].mean_us, theirs[name].mean_us)
            print(f"{queues:>2} {name:22} | {' | '.join(cells)} | {vs_qsd} {vs_loop} {lat}")
    for queues in report["queues"]:
        mine, theirs = report[f"ours-q{queues}"]["rss"], report[f"qsd-q{queues}"]["rss"]
        print(f"peak RSS with {queues} queue(s): {our_rss(mine)}; qsd {theirs['VmHWM']:.1f} MiB")


def our_rss(rss: dict[str, float]) -> str:
    """Our dataplane's peak RSS and what it was made of (``peak_rss_mib`` at the end, with
    ``idle VmRSS`` read after attach)."""
    return (f"ours {rss['VmHWM']:.1f} MiB (idle after attach {rss['idle VmRSS']:.1f}; at the "
            f"end anon {rss['RssAnon']:.1f}, file {rss['RssFile']:.1f}, shmem "
            f"{rss['RssShmem']:.1f})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime", type=int, default=30, help="seconds per fio job")
    parser.add_argument("--queues", default="1,2", help="queue counts to run, e.g. 1,2")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated job names")
    parser.add_argument(
        "--bounce-size", type=parse_size, default=DEFAULT_BOUNCE_SIZE,
        help="our device's bounce buffer (qsd keeps the kernel's 64M)",
    )  # fmt: skip
    args = parser.parse_args()
    names = [n.strip() for n in args.jobs.split(",")]
    queue_counts = [int(q) for q in args.queues.split(",")]
    Path("/mnt/bench").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200M", "tmpfs", "/mnt/bench"],
                   check=True)  # fmt: skip
    try:
        image = Path("/mnt/bench/disk.img")
        subprocess.run(["fio", "--name=prefill", f"--filename={image}", "--rw=write",
                        "--bs=1M", f"--size={SIZE}", "--output-format=terse"],
                       check=True, capture_output=True)  # fmt: skip
        report: dict[str, Any] = {
            "runtime": args.runtime, "queues": queue_counts, "bounce_size": args.bounce_size,
        }  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for queues in queue_counts:
                run_queues(
                    image, Path(tmp), queues, seconds=args.runtime, names=names, report=report,
                    bounce=args.bounce_size,
                )  # fmt: skip
    finally:
        subprocess.run(["umount", "/mnt/bench"], check=False)
    print_table(report, names)
    print("BENCH-JSON " + json.dumps(report, default=asdict), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
