"""The OSD's block device: a loop device over a sparse file.

BlueStore opens its block with O_DIRECT, which the test VM's tmpfs root cannot serve; a
loop device over a file there can. Where no loop device can be had (a container without
``/dev/loop-control``), the OSD falls back to a plain file, which needs a disk filesystem.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from tests.ceph import node

log = logging.getLogger(__name__)


def attach(image: Path, size: int) -> Path | None:
    """A loop device over a new sparse ``image`` of ``size`` bytes; None if none is usable."""
    node.load_module("loop")
    with open(image, "wb") as file:
        file.truncate(size)
    done = subprocess.run(
        ["losetup", "--find", "--show", "--direct-io=on", str(image)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        log.info("ceph: no loop device (%s); the OSD uses a plain file", done.stderr.strip())
        image.unlink()
        return None
    return Path(done.stdout.strip())


def detach_all(image: Path) -> list[str]:
    """Detach every loop device over ``image`` (found by its backing file, so even one whose
    attach was never recorded); the devices detached."""
    if not image.exists():
        return []
    done = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME", "--associated", str(image)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    devices = done.stdout.split()
    for device in devices:
        subprocess.run(
            ["losetup", "--detach", device], capture_output=True, timeout=60, check=False
        )
    return devices


def supports_direct_io(directory: Path) -> bool:
    """Whether files in ``directory`` can be opened with O_DIRECT, as BlueStore opens its block."""
    probe = directory / ".direct-io-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True
