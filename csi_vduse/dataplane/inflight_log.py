"""The persistent in-flight log: what a dataplane's successor needs to take over its device.

The kernel keeps a VDUSE device, its rings and its pending I/O when the dataplane dies,
but not how far the dataplane got. This file, next to the device's record, holds that:
the device status the driver last set (with the features it accepted), and per queue the
ring positions and one flag per descriptor head that is set while the request is being
served (``struct dp_vqlog`` in ``fast/inflight.h``; the C loop keeps it and replays from it).

Layout, little-endian: a 64-byte header (magic ``CSIVDIFL``, u32 version, u32 queue
count, u32 block size, u32 device status, u64 features, zero padding), then one block of
``BLOCK_SIZE`` bytes per queue. A file whose header does not match is started afresh.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from pathlib import Path
from typing import Any

from csi_vduse.dataplane.blk.profile import MAX_QUEUE_SIZE
from csi_vduse.dataplane.fast._ring import ffi

MAGIC = b"CSIVDIFL"
VERSION = 1
HEADER = struct.Struct("<8sIIIIQ")
HEADER_SIZE = 64
QUEUE_HEADER_SIZE = 16  # struct dp_vqlog before its flags
FLAGS_PER_QUEUE = MAX_QUEUE_SIZE  # a larger queue is refused: its heads have no flag here
BLOCK_SIZE = QUEUE_HEADER_SIZE + FLAGS_PER_QUEUE
STATUS_OFFSET = 20
FEATURES_OFFSET = 24


def file_size(queues: int) -> int:
    return HEADER_SIZE + queues * BLOCK_SIZE


def open_file(path: Path) -> int:
    """The device's log file, created empty if missing; opened for the dataplane."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


class InflightLog:
    """A device's log, mapped shared; survives this process by design."""

    def __init__(self, fd: int, *, queues: int) -> None:
        """Map the file open at ``fd`` (``open_file``), which this takes over."""
        self.queues = queues
        try:
            size = file_size(queues)
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        magic, version, count, block, _status, _features = HEADER.unpack_from(self.map, 0)
        if (magic, version, count, block) != (MAGIC, VERSION, queues, BLOCK_SIZE):
            self.map[:] = bytes(size)
            HEADER.pack_into(self.map, 0, MAGIC, VERSION, queues, BLOCK_SIZE, 0, 0)
        self._base = ffi.from_buffer("uint8_t[]", self.map)

    @property
    def status(self) -> int:
        value: int = struct.unpack_from("<I", self.map, STATUS_OFFSET)[0]
        return value

    @property
    def features(self) -> int:
        value: int = struct.unpack_from("<Q", self.map, FEATURES_OFFSET)[0]
        return value

    def record_status(self, status: int, *, features: int) -> None:
        """Called before the driver is told its status change took effect."""
        struct.pack_into("<Q", self.map, FEATURES_OFFSET, features)
        struct.pack_into("<I", self.map, STATUS_OFFSET, status)

    def reset(self) -> None:
        """The driver reset the device: nothing is left to take over."""
        struct.pack_into("<I", self.map, STATUS_OFFSET, 0)
        for index in range(self.queues):
            struct.pack_into("<H", self.map, self._offset(index) + 6, 0)  # dp_vqlog.valid

    def replayed(self, index: int) -> int:
        value: int = struct.unpack_from("<I", self.map, self._offset(index) + 8)[0]
        return value

    def block(self, index: int) -> Any:
        """Queue ``index``'s block, as a pointer for the C loop (dp_log_attach)."""
        if not 0 <= index < self.queues:
            raise IndexError(f"queue {index} of {self.queues}")
        return self._base + self._offset(index)

    def _offset(self, index: int) -> int:
        return HEADER_SIZE + index * BLOCK_SIZE

    def close(self) -> None:
        # A queue still holding a pointer into it keeps it; it ends with the process.
        with contextlib.suppress(BufferError):
            self.map.close()
