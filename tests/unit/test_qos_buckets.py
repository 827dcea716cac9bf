"""fast/qos.c's token buckets on their own: a page written here, a fake clock, no queue.

How requests fare under them in the C loop is tests/unit/test_qos_limits.py.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from csi_vduse.dataplane.fast._ring import ffi, lib

from csi_vduse.dataplane import qos
from csi_vduse.virtio.blk import SECTOR_SIZE

NS = 1_000_000_000
START_NS = NS  # the fake clock's first reading (0 means the real clock)


def write_page(page: mmap.mmap, *, sequence: int = 0, limits: tuple[int, ...]) -> None:
    page[:] = qos.LAYOUT.pack(qos.MAGIC, qos.VERSION, sequence, *limits).ljust(qos.PAGE_SIZE, b"\0")


@pytest.fixture
def raw_page() -> Iterator[tuple[mmap.mmap, Any]]:
    """A page this test writes itself, and the buckets reading it on a fake clock."""
    page = mmap.mmap(-1, qos.PAGE_SIZE)
    write_page(page, limits=(10, 0, 0, 0))
    held = ffi.from_buffer("uint8_t[]", page)
    limits = ffi.new("struct dp_qos *")
    assert lib.dp_qos_init(limits, held) == 0
    limits.fake_now_ns = START_NS
    yield page, limits
    lib.dp_qos_free(limits)
    ffi.release(held)
    page.close()


def admit(limits: Any, op: int = lib.DP_IO_READ, size: int = SECTOR_SIZE) -> int | None:
    """None when admitted, else how long to wait."""
    wait = ffi.new("uint64_t *")
    return None if lib.dp_qos_admit(limits, op, size, wait) else int(wait[0])


def test_limits_the_driver_is_writing_are_read_once_it_is_done(
    raw_page: tuple[mmap.mmap, Any],
) -> None:
    page, limits = raw_page
    assert admit(limits) is None  # ten a second, a bucket of one
    assert admit(limits) == 1  # empty: a billionth of a token is a nanosecond away
    struct.pack_into("<I", page, qos.SEQUENCE_OFFSET, 1)  # the writer starts
    struct.pack_into("<Q", page, qos.LIMITS_OFFSET, 0)  # no limit, half written
    assert admit(limits) is not None
    struct.pack_into("<I", page, qos.SEQUENCE_OFFSET, 2)
    assert admit(limits) is None


def test_limits_beyond_the_contract_are_taken_as_its_largest(
    raw_page: tuple[mmap.mmap, Any],
) -> None:
    page, limits = raw_page
    struct.pack_into("<I4Q", page, qos.SEQUENCE_OFFSET, 2, *[2**64 - 1] * 4)
    # A bucket of an hour at 2**50 a second: full, the first passes.
    assert admit(limits, lib.DP_IO_WRITE, 2**64 - 1) is None
    wait = admit(limits, lib.DP_IO_WRITE, 2**64 - 1)
    assert wait is not None and wait <= 0.1 * NS  # deep in debt: the page is looked at again
    struct.pack_into("<I4Q", page, qos.SEQUENCE_OFFSET, 4, 1, 1, 1, 0)
    assert admit(limits, lib.DP_IO_WRITE, 1) is not None  # the debt is kept, at the new rate


@pytest.mark.parametrize(("burst_ms", "held"), [(0, 100), (50, 100), (500, 500), (1000, 1000)])
def test_a_bucket_holds_its_burst_and_a_tenth_of_a_second_at_least(
    raw_page: tuple[mmap.mmap, Any], burst_ms: int, held: int
) -> None:
    page, limits = raw_page
    write_page(page, sequence=2, limits=(1000, 0, 0, burst_ms))
    admitted = 0
    while admit(limits) is None:
        admitted += 1
    assert admitted == held


def test_reads_and_writes_take_their_bytes_from_their_own_buckets_and_nothing_else_does(
    raw_page: tuple[mmap.mmap, Any],
) -> None:
    page, limits = raw_page
    write_page(page, sequence=2, limits=(0, 10_000, 20_000, 0))  # 1000 and 2000 bytes held
    assert admit(limits, lib.DP_IO_READ, 1000) is None
    assert admit(limits, lib.DP_IO_READ, 1) == 1
    assert admit(limits, lib.DP_IO_WRITE, 1999) is None
    assert admit(limits, lib.DP_IO_WRITE, 1) is None
    assert admit(limits, lib.DP_IO_WRITE, 1) == 1
    for op in (lib.DP_IO_FLUSH, lib.DP_IO_DISCARD, lib.DP_IO_WRITE_ZEROES):
        assert admit(limits, op, 2**40) is None  # no IOPS limit, and bytes only for data
    limits.fake_now_ns += NS // 10_000  # a tenth of a millisecond: one byte each
    assert admit(limits, lib.DP_IO_READ, 1) is None
