"""Filesystems on a volume's block device: probe, create, check and grow.

The rule that protects data: a device is formatted only when probing finds no
signature at all. A filesystem of another type, or a partition table, is an error.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from csi_vduse.mounts import tools
from csi_vduse.mounts.errors import MountError

log = logging.getLogger(__name__)

SUPPORTED = ("ext4", "xfs")
DEFAULT = "ext4"
_BLKID_NOTHING_FOUND = 2


def probe(device: Path) -> str | None:
    """The filesystem on ``device``, or None when it is blank."""
    code, output = tools.run(
        "probe filesystem",
        ["blkid", "-p", "-o", "export", str(device)],
        ok_codes=(0, _BLKID_NOTHING_FOUND),
    )
    if code == _BLKID_NOTHING_FOUND:
        return None
    found = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    if "TYPE" in found:
        return found["TYPE"]
    raise MountError(
        "probe filesystem",
        f"{device} holds {found.get('PTTYPE', 'unknown')} data, not a filesystem; "
        "refusing to format over it",
        errno.EEXIST,
    )


def make(device: Path, fs_type: str) -> None:
    if fs_type == "ext4":
        argv = ["mkfs.ext4", "-q", "-F", str(device)]
    elif fs_type == "xfs":
        argv = ["mkfs.xfs", "-q", str(device)]
    else:
        raise MountError("format", f"unsupported filesystem {fs_type!r}", errno.EINVAL)
    log.info("formatting %s as %s", device, fs_type)
    tools.run("format", argv)


def check(device: Path, fs_type: str) -> None:
    """Repair what a crash left (journal replay, orphans) before mounting."""
    if fs_type in ("ext2", "ext3", "ext4"):
        # e2fsck: 1 = errors corrected, 2 = corrected and reboot advised; 4+ = not fixed.
        code, output = tools.run("check filesystem", ["e2fsck", "-p", str(device)], (0, 1, 2))
        if code:
            log.warning("e2fsck corrected %s: %s", device, output)


def ensure(device: Path, fs_type: str) -> str:
    """Make sure ``device`` holds ``fs_type`` (formatting a blank one); returns the type."""
    found = probe(device)
    if found is None:
        make(device, fs_type)
        return fs_type
    if found != fs_type:
        raise MountError(
            "probe filesystem",
            f"{device} already holds {found}, not {fs_type}; refusing to reformat",
            errno.EEXIST,
        )
    check(device, found)
    return found


def grow(device: Path, mount_point: Path, *, fs_type: str) -> None:
    """Grow a mounted filesystem to fill its (already larger) device."""
    if fs_type in ("ext2", "ext3", "ext4"):
        tools.run("grow filesystem", ["resize2fs", str(device)])
    elif fs_type == "xfs":
        tools.run("grow filesystem", ["xfs_growfs", str(mount_point)])
    else:
        raise MountError("grow filesystem", f"cannot grow {fs_type}", errno.EOPNOTSUPP)
