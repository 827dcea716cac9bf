"""A raw file (or block device) that holds a volume's bytes."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Sequence
from pathlib import Path

from csi_vduse.dataplane.errors import DataplaneError
from csi_vduse.dataplane.interface import open_flags

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_ZEROES = bytes(65536)


BLKSSZGET = 0x1268  # <linux/fs.h>: a block device's logical block size
PAGE = 4096


def direct_alignment(fd: int) -> int:
    """What O_DIRECT transfers on ``fd`` must be aligned to: a block device's logical block
    size, else a page, which no disk filesystem exceeds."""
    if not stat.S_ISBLK(os.fstat(fd).st_mode):
        return PAGE
    try:
        size: int = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    except OSError:
        return PAGE
    return max(512, size)


def _fallocate(fd: int, *, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with a mode, which the os module does not offer."""
    if _libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class FileBackend:
    """Scatter/gather I/O on a raw image; reads and writes loop until complete."""

    def __init__(self, path: Path, readonly: bool, fd: int | None = None) -> None:
        """Open ``path``, or adopt ``fd`` (opened on our behalf; ``path`` names it)."""
        self.path = path
        self.readonly = readonly
        if fd is None:
            try:
                fd = os.open(path, open_flags(readonly))
            except OSError as exc:
                raise DataplaneError("open backing", f"{path}: {exc.strerror}", exc.errno) from exc
        self.fd = fd
        self.size = self.current_size()

    def current_size(self) -> int:
        """The backing's size now (it may have grown since it was opened)."""
        info = os.fstat(self.fd)
        if stat.S_ISBLK(info.st_mode):
            return os.lseek(self.fd, 0, os.SEEK_END)
        return info.st_size

    def read_into(self, views: Sequence[memoryview], offset: int) -> None:
        pending = [v for v in views if len(v)]
        while pending:
            done = os.preadv(self.fd, pending, offset)
            if done == 0:
                raise OSError(0, f"read beyond the end of {self.path} at {offset}")
            offset += done
            pending = _advance(pending, done)

    def write_from(self, views: Sequence[memoryview], offset: int) -> None:
        pending = [v for v in views if len(v)]
        while pending:
            done = os.pwritev(self.fd, pending, offset)
            offset += done
            pending = _advance(pending, done)

    def zero(self, offset: int, length: int, *, unmap: bool) -> None:
        """Make [offset, offset+length) read as zeroes; ``unmap`` may free the space."""
        mode = FALLOC_FL_PUNCH_HOLE if unmap else FALLOC_FL_ZERO_RANGE
        try:
            _fallocate(self.fd, mode=mode | FALLOC_FL_KEEP_SIZE, offset=offset, length=length)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
        if not unmap:
            try:
                _fallocate(
                    self.fd, mode=FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset=offset,
                    length=length,
                )  # fmt: skip
                return  # a hole reads back as zeroes too
            except OSError:
                pass
        while length:
            done = os.pwrite(self.fd, _ZEROES[: min(length, len(_ZEROES))], offset)
            offset += done
            length -= done

    def flush(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _advance(views: list[memoryview], done: int) -> list[memoryview]:
    """The part of ``views`` not yet covered by ``done`` bytes."""
    rest = []
    for view in views:
        if done >= len(view):
            done -= len(view)
            continue
        rest.append(view[done:])
        done = 0
    return rest
