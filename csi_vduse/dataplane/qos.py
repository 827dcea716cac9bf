"""A device's I/O limits, shared live between the driver and its dataplane through a page.

The driver keeps ``<state dir>/devices/<name>.qos`` and passes it open to the dataplane
(``--qos-fd``), which maps it read-only; the C loop (fast/qos.c) rereads it as it admits
requests, so a new limit takes effect within a request without a message or a restart,
and a successor dataplane or a restarted driver reads the same file. Layout, 64 bytes,
little-endian:

- magic ``CSIVDQS\\0``; u32 version; u32 sequence (odd while the driver writes);
- u64 IOPS, u64 read bytes/s, u64 write bytes/s (0: no limit); u64 burst in ms;
- zero padding.

The sequence is a seqlock: the writer makes it odd, writes the limits, makes it even; a
reader that sees it odd, or changed across its reads, reads again later. One writer at a
time (the driver serializes changes per volume).

Semantics (the token buckets of fast/qos.c): each limit is a bucket refilled at its rate
and holding at most ``burst`` worth of it (at least a tenth of a second's). Every request
takes one IOPS token; reads take their bytes from the read bucket and writes from the
write bucket. A request is admitted while the buckets it draws from are not empty (they
may go into debt, so a request larger than the burst still passes); otherwise its queue
takes no more requests until they refill. A request waits; it never fails.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"CSIVDQS\0"
VERSION = 1
LAYOUT = struct.Struct("<8sII4Q")
SEQUENCE_OFFSET = 12
LIMITS_OFFSET = 16
LIMITS = struct.Struct("<4Q")
PAGE_SIZE = 64
DEFAULT_BURST_MS = 1000
MAX_BURST_MS = 3_600_000
MAX_RATE = 1 << 50  # beyond any device; keeps the C arithmetic clear of overflow


class QosError(Exception):
    """Limits out of range, or a page that is not this version's layout."""


@dataclass(frozen=True, kw_only=True)
class QosLimits:
    """A device's limits; 0 means none."""

    iops: int = 0
    read_bps: int = 0
    write_bps: int = 0
    burst_ms: int = DEFAULT_BURST_MS

    def __post_init__(self) -> None:
        for name in ("iops", "read_bps", "write_bps"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_RATE:
                raise QosError(f"{name} must be from 0 to {MAX_RATE}, not {value}")
        if not 0 <= self.burst_ms <= MAX_BURST_MS:
            raise QosError(f"burst_ms must be from 0 to {MAX_BURST_MS}, not {self.burst_ms}")

    @property
    def unlimited(self) -> bool:
        return not (self.iops or self.read_bps or self.write_bps)

    def pack(self) -> bytes:
        return LIMITS.pack(self.iops, self.read_bps, self.write_bps, self.burst_ms)


UNLIMITED = QosLimits()


def create(path: Path, limits: QosLimits) -> None:
    """Write a fresh page at ``path`` (renamed into place, so no reader sees half of it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    page = LAYOUT.pack(MAGIC, VERSION, 0, 0, 0, 0, 0)[:LIMITS_OFFSET] + limits.pack()
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, page.ljust(PAGE_SIZE, b"\0"), 0)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def open_page(path: Path) -> int:
    """The page at ``path`` open read-only for a dataplane to map (``--qos-fd``); a missing
    one (a device made before limits existed) is created without limits."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        create(path, UNLIMITED)
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def map_page(fd: int) -> mmap.mmap:
    """The dataplane's read-only view of the page open at ``fd`` (which this closes);
    QosError when it is not this version's layout."""
    try:
        page = mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    except ValueError as exc:  # shorter than a page
        raise QosError(f"the QoS page is too short: {exc}") from None
    finally:
        os.close(fd)
    try:
        parse(bytes(page))
    except QosError:
        page.close()
        raise
    return page


def parse(data: bytes) -> QosLimits:
    if len(data) < PAGE_SIZE:
        raise QosError(f"{len(data)} bytes is shorter than a QoS page")
    magic, version, _, iops, read_bps, write_bps, burst_ms = LAYOUT.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise QosError(f"not a version {VERSION} QoS page ({magic!r}, version {version})")
    return QosLimits(iops=iops, read_bps=read_bps, write_bps=write_bps, burst_ms=burst_ms)


def read(path: Path) -> QosLimits:
    """The limits in the page at ``path``; OSError or QosError."""
    return parse(path.read_bytes())


def update(path: Path, limits: QosLimits) -> None:
    """Change the limits in place, where a running dataplane sees them; a page that is
    missing or not ours is written afresh."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        create(path, limits)
        return
    try:
        if os.fstat(fd).st_size < PAGE_SIZE:
            raise QosError("short page")
        with mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED) as page:
            parse(bytes(page))
            (sequence,) = struct.unpack_from("<I", page, SEQUENCE_OFFSET)
            sequence |= 1  # odd: readers wait
            struct.pack_into("<I", page, SEQUENCE_OFFSET, sequence)
            page[LIMITS_OFFSET : LIMITS_OFFSET + LIMITS.size] = limits.pack()
            struct.pack_into("<I", page, SEQUENCE_OFFSET, (sequence + 1) & 0xFFFFFFFF)
    except QosError:
        create(path, limits)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
