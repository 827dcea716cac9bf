"""The C fast path against the Python reference engine, and the features only it exercises.

The differential test posts the same hostile descriptor chains to a Python-served and
a C-served fake device and requires identical results: used ring, guest memory, backing
file. Anything the reference does, the fast path must do byte for byte.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from csi_vduse.dataplane.fast._ring import lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csi_vduse.dataplane.blk.backend import FileBackend
from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.fast.engine import BlkTarget, FastEngine
from csi_vduse.dataplane.server import Server
from csi_vduse.vduse.messages import RequestType
from csi_vduse.virtio.blk import SECTOR_SIZE, BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from csi_vduse.virtio.spec import DescFlag, Feature, bit
from tests.unit.fake_virtio import (
    MEMORY,
    QUEUE_SIZE,
    REGION_SPLIT,
    FakeDriver,
    FakeKernel,
    bring_up,
    session_for,
)
from tests.unit.test_dataplane import DISK, Rig, make_rig

HEADERS = 0x1000  # request headers, 64 bytes apart
DATA = 0x20000  # data buffers, 4 KiB apart
TABLES = 0x60000  # indirect tables
RANGES = 0x70000  # DISCARD / WRITE_ZEROES ranges: valid, valid with UNMAP, reserved flag

ADDRESSES = st.one_of(
    st.integers(0, 15).map(lambda i: HEADERS + 64 * i),
    st.integers(0, 15).map(lambda i: DATA + 4096 * i),
    st.integers(0, 31).map(lambda i: TABLES + 16 * i),
    st.sampled_from(
        [RANGES, REGION_SPLIT - 7, REGION_SPLIT - 512, MEMORY - 8, 1 << 40, 2**64 - 16]
    ),
)
LENGTHS = st.one_of(
    st.sampled_from([0, 1, 8, 15, 16, 17, 32, 48, 512, 4096, 8192, 2**32 - 1]),
    st.integers(0, 9000),
)
DESCRIPTOR = st.tuples(ADDRESSES, LENGTHS, st.integers(0, 7), st.integers(0, QUEUE_SIZE + 4))
KINDS = st.sampled_from([Blk.IN, Blk.OUT, Blk.FLUSH, Blk.GET_ID, Blk.DISCARD,
                         Blk.WRITE_ZEROES, 3, 99])  # fmt: skip
SECTORS = st.sampled_from([0, 1, 8, DISK // SECTOR_SIZE - 1, DISK // SECTOR_SIZE, 2**55, 2**64 - 1])


def _fill(
    driver: FakeDriver, headers: list[tuple[int, int]], tables: list[tuple[int, int, int, int]]
) -> None:
    for i, (kind, sector) in enumerate(headers):
        struct.pack_into("<IIQ", driver.mem, HEADERS + 64 * i, kind, 0, sector)
    for i, (addr, length, flags, nxt) in enumerate(tables):
        struct.pack_into("<QIHH", driver.mem, TABLES + 16 * i, addr, length, flags, nxt)
    struct.pack_into("<QII", driver.mem, RANGES, 8, 8, 0)
    struct.pack_into("<QII", driver.mem, RANGES + 16, 16, 8, 1)
    struct.pack_into("<QII", driver.mem, RANGES + 32, 24, 8, 2)
    driver.mem[DATA : DATA + 16 * 4096] = bytes(range(256)) * 256


SEGMENT = st.tuples(ADDRESSES, LENGTHS, st.booleans())  # addr, len, device-writable
# A mutation: (descriptor position, field, value) applied to an otherwise well-formed chain.
MUTATION = st.none() | st.tuples(
    st.integers(0, 6), st.sampled_from(["addr", "len", "flags", "next"]), st.integers(0, 2**64 - 1)
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[tuple[int, int, int, int]], bool, object]:
    """Mostly well-formed virtio-blk chains (header, data, status), some subtly broken."""
    header = draw(st.integers(0, 15).map(lambda i: HEADERS + 64 * i))
    data = draw(st.lists(SEGMENT, max_size=4))
    if draw(st.booleans()):
        data = [(addr, draw(st.sampled_from([512, 1024, 4096])), w) for addr, _, w in data]
    if draw(st.integers(0, 3)) == 0:
        data = [(RANGES, draw(st.sampled_from([16, 32, 48, 17])), False)]
    status = draw(st.sampled_from([(DATA + 4096 * 15 + 7, 1, True), (DATA, 513, True)]))
    segments = [(header, draw(st.sampled_from([16, 16, 16, 8, 24])), False), *data, status]
    descs = []
    for i, (addr, length, writable) in enumerate(segments):
        last = i == len(segments) - 1
        flags = (DescFlag.WRITE if writable else 0) | (0 if last else DescFlag.NEXT)
        descs.append((addr, length, int(flags), i + 1))
    mutation = draw(MUTATION)
    if mutation is not None:
        pos, field, value = mutation
        pos %= len(descs)
        addr, length, flags, nxt = descs[pos]
        if field == "addr":
            addr = value
        elif field == "len":
            length = value % 2**32
        elif field == "flags":
            flags = value % 8
        else:
            nxt = value % (QUEUE_SIZE + 4)
        descs[pos] = (addr, length, flags, nxt)
    return descs, draw(st.booleans()), mutation


def _post(
    driver: FakeDriver, descs: list[tuple[int, int, int, int]], indirect: bool, n: int
) -> None:
    """Chain positions link to position+1: relative in an indirect table, absolute in the ring."""
    head = driver.next_desc
    if indirect:
        table = TABLES + 16 * 8 * n
        for i, (addr, length, flags, nxt) in enumerate(descs):
            struct.pack_into("<QIHH", driver.mem, table + 16 * i, addr, length, flags, nxt)
        driver.put_desc(head, addr=table, length=16 * len(descs), flags=DescFlag.INDIRECT, nxt=0)
        driver.next_desc = (head + 1) % QUEUE_SIZE
    else:
        for i, (addr, length, flags, nxt) in enumerate(descs):
            driver.put_desc(
                (head + i) % QUEUE_SIZE,
                addr=addr,
                length=length,
                flags=flags,
                nxt=(head + nxt) % 2**16,
            )
        driver.next_desc = (head + len(descs)) % QUEUE_SIZE
    driver.publish(head)


@pytest.mark.parametrize("io", ["none", "io_uring", "threads"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(st.tuples(KINDS, SECTORS), min_size=16, max_size=16),
    tables=st.lists(DESCRIPTOR, min_size=32, max_size=32),
    chains=st.lists(requests(), min_size=1, max_size=3),
)
def test_fast_path_matches_the_reference_on_hostile_chains(
    io: str,
    headers: list[tuple[int, int]],
    tables: list[tuple[int, int, int, int]],
    chains: list[tuple[list[tuple[int, int, int, int]], bool, object]],
) -> None:
    """In order (io none) the chains go in one batch. Asynchronous requests may complete in
    any order, and hostile chains share buffers, so there they go one at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        engines = ("python", f"fast:{io}")
        rigs = [make_rig(Path(tmp), engine=e, backing_name=f"{e}.img") for e in engines]
        try:
            for rig in rigs:
                _fill(rig.driver, headers, tables)
                for n, (descs, indirect, _) in enumerate(chains):
                    _post(rig.driver, descs, indirect, n)
                    if io != "none":
                        rig.driver.kick()
                        rig.serve()
                rig.driver.kick()
                rig.serve()
            reference, fast = rigs
            done = [[(c.head, c.written) for c in r.driver.completions()] for r in rigs]
            assert done[1] == done[0]
            assert fast.driver.mem[:] == reference.driver.mem[:]
            assert fast.backing.read_bytes() == reference.backing.read_bytes()
        finally:
            for rig in rigs:
                rig.close()


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[Rig]:
    made = make_rig(tmp_path, engine="fast")
    yield made
    made.close()


def test_event_idx_asks_for_the_next_kick_and_suppresses_unwanted_interrupts(fast: Rig) -> None:
    fast.kernel.fast_interrupts()
    fast.roundtrip(Blk.FLUSH)
    assert fast.driver.avail_event == fast.driver.avail_idx  # kick me at the next request
    assert fast.kernel.fast_interrupts() == 1
    fast.driver.set_used_event(fast.driver.used_seen + 5)  # "interrupt me after 6 more"
    for _ in range(3):
        [done] = fast.roundtrip(Blk.FLUSH)
        assert done.status == BlkStatus.OK
    assert fast.kernel.fast_interrupts() == 0
    for _ in range(3):
        fast.roundtrip(Blk.FLUSH)
    assert fast.kernel.fast_interrupts() == 1


def test_without_event_idx_no_interrupt_flag_is_honoured(tmp_path: Path) -> None:
    features = BlkProfile().features & ~bit(Feature.EVENT_IDX)
    made = make_rig(tmp_path, engine="fast", features=features)
    try:
        made.kernel.fast_interrupts()
        struct.pack_into("<H", made.driver.mem, made.driver.avail, 1)  # VRING_AVAIL_F_NO_INTERRUPT
        [done] = made.roundtrip(Blk.FLUSH)
        assert done.status == BlkStatus.OK and made.kernel.fast_interrupts() == 0
        struct.pack_into("<H", made.driver.mem, made.driver.avail, 0)
        made.roundtrip(Blk.FLUSH)
        assert made.kernel.fast_interrupts() == 1
    finally:
        made.close()


def test_unmapping_drops_exactly_the_stale_ranges(fast: Rig) -> None:
    assert isinstance(fast.engine, FastEngine)
    fast.roundtrip(Blk.IN, sector=0, in_len=SECTOR_SIZE)
    queue = fast.engine.queues[0]
    assert queue.q.nmaps == 2  # the data region and the ring region
    fast.kernel.send(RequestType.UPDATE_IOTLB, iova_start=REGION_SPLIT, iova_last=REGION_SPLIT)
    fast.server.drain_messages()
    assert queue.q.nmaps == 1
    [done] = fast.roundtrip(Blk.IN, sector=1, in_len=SECTOR_SIZE)
    assert done.data == fast.backing.read_bytes()[SECTOR_SIZE : 2 * SECTOR_SIZE]
    assert queue.q.nmaps == 2


def test_a_broken_ring_stops_only_that_queue_and_keeps_the_device_answering(fast: Rig) -> None:
    struct.pack_into("<H", fast.driver.mem, fast.driver.avail + 2, QUEUE_SIZE + 1)
    fast.driver.kick()
    fast.serve()
    assert isinstance(fast.engine, FastEngine) and fast.engine.queues[0].broken
    fast.kernel.send(RequestType.GET_VQ_STATE, vq_index=0)
    fast.serve()
    assert fast.kernel.responses[-1].avail_index == 0


def test_backing_errors_fail_that_request_only(tmp_path: Path) -> None:
    """/dev/full: every write fails with ENOSPC, reads return zeroes."""
    full = os.open("/dev/full", os.O_RDWR)
    kernel = FakeKernel()
    profile = BlkProfile()
    engine = FastEngine(
        kernel,
        BlkTarget(backing_fd=full, capacity=DISK, readonly=False, serial=b"x"),
        devfd=-1,
        irqfd=kernel.irqfd,
        threaded=False,
    )
    session = session_for(kernel, profile, engine)
    server = Server(kernel, session)
    driver = FakeDriver(kernel)
    bring_up(driver, profile.features, server.drain_messages)
    try:
        driver.request(Blk.OUT, sector=0, out=b"a" * SECTOR_SIZE)
        driver.request(Blk.IN, sector=0, in_len=SECTOR_SIZE)
        driver.kick()
        engine.serve_pending()
        # Completions may come in any order; heads follow the order of posting.
        write, read = sorted(driver.completions(), key=lambda c: c.head)
        assert write.status == BlkStatus.IOERR
        assert read.status == BlkStatus.OK and read.data == bytes(SECTOR_SIZE)
    finally:
        session.reset()
        server.close()
        driver.close()
        os.close(full)
        kernel.close()


@pytest.mark.parametrize("io", ["io_uring", "threads", "none"])
def test_worker_threads_serve_kicks_and_survive_an_iotlb_update(tmp_path: Path, io: str) -> None:
    """The real arrangement: one thread per queue in the C loop, Python answering messages."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(range(256)) * (DISK // 256))
    kernel = FakeKernel()
    profile = BlkProfile(queues=2)
    backend = FileBackend(backing, readonly=False)
    engine = FastEngine(
        kernel, BlkTarget(backing_fd=backend.fd, capacity=DISK, readonly=False, serial=b"x"),
        devfd=-1, irqfd=kernel.irqfd, io=io, async_min=0,
    )  # fmt: skip
    session = session_for(kernel, profile, engine)
    server = Server(kernel, session)
    drivers = [FakeDriver(kernel, queue=i) for i in range(2)]
    bring_up(drivers[0], profile.features, server.drain_messages, others=(drivers[1],))
    lock = threading.Lock()

    def wait_for(driver: FakeDriver, count: int) -> list[int]:
        deadline = time.monotonic() + 5
        seen: list[int] = []
        while len(seen) < count and time.monotonic() < deadline:
            seen += [c.status for c in driver.completions()]
            time.sleep(0.001)
        return seen

    try:
        assert [queue.io for queue in engine.queues.values()] == [io, io]
        for round_ in range(3):
            for i, driver in enumerate(drivers):
                with lock:
                    driver.request(Blk.OUT, sector=8 * i, out=bytes([round_ + i]) * SECTOR_SIZE)
                    driver.kick()
            assert [wait_for(d, 1) for d in drivers] == [[BlkStatus.OK], [BlkStatus.OK]]
            kernel.send(RequestType.UPDATE_IOTLB, iova_start=0, iova_last=2**64 - 1)
            server.drain_messages()
            # Resumed queues map afresh what they touch, never keeping a stale entry.
            assert all(q.q.nmaps <= 2 for q in engine.queues.values())
        data = backing.read_bytes()
        assert data[0] == 2 and data[8 * SECTOR_SIZE] == 3
    finally:
        session.reset()
        engine.close()
        server.close()
        for driver in drivers:
            driver.close()
        backend.close()
        kernel.close()


def test_backings_that_block_on_every_read_are_told_apart() -> None:
    """tmpfs (a memfd here) cannot be read with RWF_NOWAIT, so io_uring would hand every
    request to a worker: small ones are then served on the queue's own thread."""
    fd = os.memfd_create("backing")
    try:
        os.write(fd, b"x" * 4096)
        assert lib.dp_aio_nowait(fd) == 0
    finally:
        os.close(fd)


def test_direct_io_takes_aligned_transfers_and_stays_coherent_with_buffered_ones(
    tmp_path: Path,
) -> None:
    made = make_rig(tmp_path, engine="fast", direct=True)
    try:
        assert isinstance(made.engine, FastEngine)
        if made.engine.target.direct_fd < 0:
            pytest.skip("this filesystem cannot serve O_DIRECT asynchronously")
        page, small = os.urandom(4096), os.urandom(SECTOR_SIZE)
        [done] = made.roundtrip(Blk.OUT, sector=8, out=page, data_at=DATA)
        assert done.status == BlkStatus.OK
        # 512 bytes cannot go direct: the page cache takes them, and the direct read
        # that follows must see them.
        [done] = made.roundtrip(Blk.OUT, sector=9, out=small, data_at=DATA + 4096)
        [read] = made.roundtrip(Blk.IN, sector=8, in_len=4096, data_at=DATA + 8192)
        assert read.status == BlkStatus.OK
        assert read.data == page[:SECTOR_SIZE] + small + page[2 * SECTOR_SIZE :]
        assert made.engine.queues[0].backend.direct == 2  # the page write and the page read
        assert made.backing.read_bytes()[8 * SECTOR_SIZE : 16 * SECTOR_SIZE] == read.data
    finally:
        made.close()
