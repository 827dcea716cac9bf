"""``csi-vduse demo``: the whole volume lifecycle on this machine, step by step.

Creates a device over a sparse file, puts ext4 on it, mounts it, writes and reads
a file, unmounts and deletes the device, checking that nothing is left behind.
It needs root and a kernel with vduse and virtio_vdpa loaded.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.spec import DeviceSpec

Say = Callable[[str], None]
NAME = "csi-vduse-demo"
SIZE = 64 << 20


def _run(say: Say, *argv: str) -> str:
    say(f"    $ {' '.join(argv)}")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DeviceError("demo", f"{argv[0]} failed: {done.stderr.strip()}", done.returncode)
    for line in done.stdout.strip().splitlines():
        say(f"      {line}")
    return done.stdout


def run_demo(manager: DeviceManager, say: Say) -> None:
    with tempfile.TemporaryDirectory(prefix="csi-vduse-demo-") as tmp:
        work = Path(tmp)
        backing, mnt = work / "volume.img", work / "mnt"
        mnt.mkdir()
        say(f"[1/6] create device {NAME}: a {SIZE >> 20} MiB sparse file served through VDUSE")
        record = manager.create(DeviceSpec(NAME, backing, SIZE))
        dev = str(record.block_device)
        try:
            say(f"      block device: {dev}")
            say(f"[2/6] format {dev} with ext4")
            _run(say, "mkfs.ext4", "-q", "-L", "demo", dev)
            say(f"[3/6] mount {dev} on {mnt}")
            _run(say, "mount", dev, str(mnt))
            try:
                say("[4/6] write a file and read it back")
                message = f"hello from {dev}, a virtio-blk disk emulated in userspace\n"
                (mnt / "hello.txt").write_text(message)
                _run(say, "sync")
                read_back = (mnt / "hello.txt").read_text()
                if read_back != message:
                    raise DeviceError("demo", f"read back {read_back!r}, wrote {message!r}")
                _run(say, "cat", str(mnt / "hello.txt"))
                _run(say, "df", "-h", str(mnt))
            finally:
                say(f"[5/6] unmount {mnt}")
                _run(say, "umount", str(mnt))
        finally:
            say(f"[6/6] delete device {NAME}")
            manager.delete(NAME)
        left = [s.record.name for s in manager.list()]
        say(f"      devices left: {left or 'none'}; {dev} gone: {not Path(dev).exists()}")
        say(f"done: {dev} was created, formatted, mounted, written, read and deleted")
