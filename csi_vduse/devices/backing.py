"""The file or block device a device serves: made when missing, measured, grown.

Data is never truncated or deleted here: a backing that exists is used at the size it
has, and growing one only ever extends it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from csi_vduse.devices.errors import DeviceError

log = logging.getLogger(__name__)


def prepare(path: Path, size: int | None) -> tuple[bool, int]:
    """Use ``path`` as it is, or create it sparse when missing; never truncates data.

    Returns whether it was created, and its size in bytes.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if size is None:
            raise DeviceError(
                "prepare backing file",
                f"{path} does not exist and no --size was given",
                errno.ENOENT,
            ) from None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DeviceError(
                "prepare backing file", f"cannot create {path}: {exc.strerror}", exc.errno
            ) from exc
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        log.info("created sparse backing file %s of %d bytes", path, size)
        return True, size
    if stat.S_ISREG(info.st_mode):
        actual = info.st_size
    elif stat.S_ISBLK(info.st_mode):
        actual = block_device_size(path)
    else:
        raise DeviceError(
            "prepare backing file", f"{path} is neither a file nor a block device", errno.EINVAL
        )
    if size is not None and size != actual:
        raise DeviceError(
            "prepare backing file",
            f"{path} exists with {actual} bytes, not the {size} asked for (refusing to resize)",
            errno.EINVAL,
        )
    if actual == 0 or actual % 512:
        raise DeviceError(
            "prepare backing file",
            f"{path} has {actual} bytes, not a positive multiple of 512",
            errno.EINVAL,
        )
    return False, actual


def grow(path: Path, size: int) -> None:
    """Extend a file (sparse) to ``size``; a block device must already be that large."""
    with open(path, "rb+") as backing:
        if stat.S_ISBLK(os.fstat(backing.fileno()).st_mode):
            have = os.lseek(backing.fileno(), 0, os.SEEK_END)
            if have < size:
                raise DeviceError(
                    "grow backing", f"{path} holds only {have} bytes, not {size}", errno.ENOSPC
                )
        elif os.fstat(backing.fileno()).st_size < size:
            os.truncate(backing.fileno(), size)


def block_device_size(path: Path | str) -> int:
    """A block device's size in bytes (its stat says 0)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
