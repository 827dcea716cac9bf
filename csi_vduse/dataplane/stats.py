"""Per-queue I/O counters of one device, shared through a small file next to its record.

The dataplane maps ``<state dir>/devices/<name>.stats`` and each queue's C loop is the
only writer of its own block, so readers (the driver's metrics endpoint) just read the
file: no locks, no messages. Layout, all little-endian u64 unless said otherwise:

- header, 64 bytes: magic ``CSIVDST\\0``, then u32 version, u32 queue count, u32 words
  per queue block, u32 latency bucket count, zero padding;
- one block of ``WORDS`` u64 per queue: requests by op (``OPS``), bytes read, bytes
  written, requests answered IOERR, requests answered UNSUPP, latency sum in ns, then
  one count per latency bucket (not cumulative; upper bounds ``BUCKET_BOUNDS_NS``, the
  last bucket is +Inf), then reads and writes done with O_DIRECT, then the stall mark:
  the CLOCK_MONOTONIC time in ns since which requests have waited on the backend with
  none finishing, 0 while none waits (a dataplane from before the mark left it 0).

Latency runs from taking the request off the avail ring to writing its status byte.
Only requests that get a status byte are counted; one whose chain breaks the rules before
its header is read counts as "other". Only the C engine counts (fast/stats.h).
The mark is how a reader tells a backend that stopped answering (Ceph unreachable, a hung
disk) from an idle device, without a word to the dataplane.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"CSIVDST\0"
VERSION = 1
HEADER = struct.Struct("<8sIIII")
HEADER_SIZE = 64
OPS = ("read", "write", "flush", "discard", "write_zeroes", "get_id", "other")
BYTES_READ = 7
BYTES_WRITTEN = 8
IOERR = 9
UNSUPP = 10
LATENCY_NS = 11
FIRST_BUCKET = 12
BUCKET_BOUNDS_NS = tuple(16_000 << k for k in range(17))  # 16 us ... ~1.05 s
BUCKETS = len(BUCKET_BOUNDS_NS) + 1  # and +Inf
DIRECT = 30
WAITING_SINCE = 31
WORDS = 32
BLOCK_SIZE = 8 * WORDS


class StatsError(Exception):
    """A stats file that cannot be read as this version's layout."""


def file_size(queues: int) -> int:
    return HEADER_SIZE + queues * BLOCK_SIZE


def create(path: Path, queues: int) -> int:
    """A fresh zeroed counters file at ``path``, returned open for the dataplane to map."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        header = HEADER.pack(MAGIC, VERSION, queues, WORDS, BUCKETS)
        os.pwrite(fd, header.ljust(file_size(queues), b"\0"), 0)
        # A rename, so readers never see a half-written header.
        os.rename(tmp, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


class StatsFile:
    """The dataplane's side: the file ``create`` made, mapped shared, one block per queue."""

    def __init__(self, fd: int, *, queues: int) -> None:
        """Map the file open at ``fd``, which this takes over."""
        self.queues = queues
        try:
            self.map = mmap.mmap(fd, file_size(queues), mmap.MAP_SHARED)
        finally:
            os.close(fd)

    @staticmethod
    def block_offset(queue: int) -> int:
        return HEADER_SIZE + queue * BLOCK_SIZE

    def close(self) -> None:
        # A queue still holding a pointer into it keeps it; it ends with the process.
        with contextlib.suppress(BufferError):
            self.map.close()


@dataclass(kw_only=True)
class VolumeStats:
    """Counters summed over a device's queues."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    bytes_read: int = 0
    bytes_written: int = 0
    ioerr: int = 0
    unsupp: int = 0
    latency_ns: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    direct: int = 0  # reads and writes that bypassed the page cache (O_DIRECT)
    waiting_since_ns: int = 0  # the earliest queue's stall mark; 0: no request waits

    def waiting_ns(self, now_ns: int) -> int:
        """How long requests have waited with none finishing at ``now_ns``
        (``time.monotonic_ns()``); 0 when none waits."""
        return max(0, now_ns - self.waiting_since_ns) if self.waiting_since_ns else 0


def parse(data: bytes) -> VolumeStats:
    if len(data) < HEADER_SIZE:
        raise StatsError(f"{len(data)} bytes is shorter than the header")
    magic, version, queues, words, buckets = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StatsError(f"magic {magic!r} is not {MAGIC!r}")
    if (version, words, buckets) != (VERSION, WORDS, BUCKETS):
        raise StatsError(f"version {version} ({words} words, {buckets} buckets) is not ours")
    if len(data) < file_size(queues):
        raise StatsError(f"{len(data)} bytes is too short for {queues} queues")
    stats = VolumeStats()
    for queue in range(queues):
        block = struct.unpack_from(f"<{WORDS}Q", data, StatsFile.block_offset(queue))
        for index, op in enumerate(OPS):
            stats.requests[op] += block[index]
        stats.bytes_read += block[BYTES_READ]
        stats.bytes_written += block[BYTES_WRITTEN]
        stats.ioerr += block[IOERR]
        stats.unsupp += block[UNSUPP]
        stats.latency_ns += block[LATENCY_NS]
        stats.direct += block[DIRECT]
        if block[WAITING_SINCE] and (
            not stats.waiting_since_ns or block[WAITING_SINCE] < stats.waiting_since_ns
        ):
            stats.waiting_since_ns = block[WAITING_SINCE]
        for index in range(BUCKETS):
            stats.buckets[index] += block[FIRST_BUCKET + index]
    return stats


def read(path: Path) -> VolumeStats:
    """The file's counters; OSError or StatsError when it cannot be read as ours."""
    return parse(path.read_bytes())
