"""A raw file (or block device) that holds a volume's bytes."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from dataplane.errors import DataplaneError


class FileBackend:
    """Scatter/gather I/O on a raw image; reads and writes loop until complete."""

    def __init__(self, path: Path, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        try:
            self.fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as exc:
            raise DataplaneError("open backing", f"{path}: {exc.strerror}", exc.errno) from exc
        info = os.fstat(self.fd)
        if stat.S_ISBLK(info.st_mode):
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
        else:
            self.size = info.st_size

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
