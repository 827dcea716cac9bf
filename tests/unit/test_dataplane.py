"""The dataplane against a userspace fake of the virtio driver and the VDUSE kernel side.

Every rig test runs on the C engine (with each asynchronous I/O kind) and on the Python
reference engine, the oracle the C code must agree with.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from csi_vduse.dataplane.blk.backend import FileBackend
from csi_vduse.dataplane.blk.capacity import grow
from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.fast.engine import BlkTarget, FastEngine
from csi_vduse.dataplane.reference.engine import ReferenceEngine
from csi_vduse.dataplane.reference.handler import BlkHandler
from csi_vduse.dataplane.server import Server
from csi_vduse.dataplane.stats import StatsFile
from csi_vduse.dataplane.virtio.session import VduseSession
from csi_vduse.vduse.messages import RequestType
from csi_vduse.virtio.blk import ID_BYTES, SECTOR_SIZE, BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from csi_vduse.virtio.spec import DescFlag, Feature, bit
from tests.unit.fake_virtio import (
    QUEUE_SIZE,
    REGION_SPLIT,
    Completion,
    FakeDriver,
    FakeKernel,
    bring_up,
    session_for,
)

DISK = 1 << 20


# "python" is the reference engine; "fast" uses the default asynchronous I/O (io_uring here)
# and its policy of which requests leave the queue's thread; "fast:KIND" sends every read
# and write to that kind.
ENGINES = ["python", "fast", "fast:threads", "fast:none"]


@dataclass(kw_only=True)
class Rig:
    kernel: FakeKernel
    driver: FakeDriver
    server: Server
    session: VduseSession
    backing: Path
    backend: FileBackend
    engine: FastEngine | ReferenceEngine
    fds: list[int] = field(default_factory=list)  # ours to close

    def serve(self) -> None:
        self.server.drain_messages()
        self.engine.serve_pending()

    def interrupts(self) -> int:
        return self.kernel.interrupts + self.kernel.fast_interrupts()

    def close(self) -> None:
        self.session.reset()
        self.engine.close()
        self.server.close()
        self.driver.close()
        self.backend.close()
        self.kernel.close()
        for fd in self.fds:
            os.close(fd)

    def roundtrip(
        self, kind: int, *, sector: int = 0, out: bytes = b"", in_len: int = 0,
        data_at: int | None = None,
    ) -> list[Completion]:  # fmt: skip
        self.driver.request(kind, sector=sector, out=out, in_len=in_len, data_at=data_at)
        self.driver.kick()
        self.serve()
        return self.driver.completions()


def make_rig(
    tmp_path: Path, readonly: bool = False, features: int | None = None,
    engine: str = "python", backing_name: str = "disk.img", *,
    stats: StatsFile | None = None, direct: bool = False, threaded: bool = False,
) -> Rig:  # fmt: skip
    """A device brought up on ``engine``; with ``threaded`` the C queues run on their own
    threads, as in the dataplane, else they serve when the test calls ``serve``."""
    backing = tmp_path / backing_name
    if not backing.exists():
        backing.write_bytes(bytes(range(256)) * (DISK // 256))
    kernel = FakeKernel()
    profile = BlkProfile(readonly=readonly)
    backend = FileBackend(backing, readonly)
    served: FastEngine | ReferenceEngine
    fds = []
    if engine == "python":
        handler = BlkHandler(
            backend, serial=b"serial-0", readonly=readonly, can_flush=not readonly,
            can_discard=not readonly,
        )  # fmt: skip
        served = ReferenceEngine(kernel, handler)
    else:
        io = engine.partition(":")[2] or None
        target = BlkTarget(
            backing_fd=backend.fd, capacity=DISK, readonly=readonly, serial=b"serial-0",
            can_flush=not readonly, can_discard=not readonly,
        )  # fmt: skip
        if direct:  # the backing again with O_DIRECT, as the driver passes it
            flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_DIRECT | os.O_CLOEXEC
            target = replace(target, direct_fd=os.open(backing, flags))
            fds.append(target.direct_fd)
        # A named engine takes every read and write, however small.
        served = FastEngine(
            kernel, target, devfd=-1, irqfd=kernel.irqfd, threaded=threaded, stats=stats,
            io=io, async_min=None if io is None else 0,
        )  # fmt: skip
    session = session_for(kernel, profile, served)
    server = Server(kernel, session)
    driver = FakeDriver(kernel)
    answers = bring_up(
        driver, profile.features if features is None else features, server.drain_messages
    )
    assert features is not None or all(a.ok for a in answers)
    return Rig(
        kernel=kernel, driver=driver, server=server, session=session, backing=backing,
        backend=backend, engine=served, fds=fds,
    )  # fmt: skip


@pytest.fixture(params=ENGINES)
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    made = make_rig(tmp_path, engine=request.param)
    yield made
    made.close()


def test_negotiation_refuses_a_driver_without_version_1(tmp_path: Path) -> None:
    legacy = BlkProfile().features & ~bit(Feature.VERSION_1)
    made = make_rig(tmp_path, features=legacy)
    assert [a.ok for a in made.kernel.responses] == [True, True, False]
    assert not made.session.running and made.engine.queues == {}


def test_negotiation_refuses_features_never_offered(tmp_path: Path) -> None:
    made = make_rig(tmp_path, features=BlkProfile().features | bit(Feature.RING_PACKED))
    assert made.kernel.responses[-1].ok is False


def test_driver_ok_enables_the_queue_and_its_kick_fd(rig: Rig) -> None:
    assert rig.session.running
    assert rig.kernel.kickfd == rig.engine.queues[0].kickfd


def test_write_then_read_returns_the_data_and_lands_in_the_backing_file(rig: Rig) -> None:
    data = os.urandom(8 * SECTOR_SIZE)
    [done] = rig.roundtrip(Blk.OUT, sector=10, out=data)
    assert (done.status, done.written) == (BlkStatus.OK, 1)
    [done] = rig.roundtrip(Blk.IN, sector=10, in_len=len(data))
    assert done.status == BlkStatus.OK and done.data == data
    assert done.written == len(data) + 1
    assert rig.backing.read_bytes()[10 * SECTOR_SIZE : 18 * SECTOR_SIZE] == data
    assert rig.interrupts() >= 1


def test_data_straddling_two_iotlb_regions_is_read_whole(rig: Rig) -> None:
    expected = rig.backing.read_bytes()[: 4 * SECTOR_SIZE]
    at = REGION_SPLIT - 3 * SECTOR_SIZE
    [done] = rig.roundtrip(Blk.IN, sector=0, in_len=4 * SECTOR_SIZE, data_at=at)
    assert done.data == expected


def test_get_id_answers_the_serial_padded_to_20_bytes(rig: Rig) -> None:
    [done] = rig.roundtrip(Blk.GET_ID, in_len=ID_BYTES)
    assert done.data == b"serial-0".ljust(ID_BYTES, b"\0")


def test_flush_succeeds(rig: Rig) -> None:
    [done] = rig.roundtrip(Blk.FLUSH)
    assert done.status == BlkStatus.OK


def test_unknown_request_type_is_unsupported(rig: Rig) -> None:
    [done] = rig.roundtrip(99, out=b"\0" * 16)
    assert done.status == BlkStatus.UNSUPP


@pytest.mark.parametrize(
    ("sector", "length"),
    [(DISK // SECTOR_SIZE, SECTOR_SIZE), (DISK // SECTOR_SIZE - 1, 2 * SECTOR_SIZE), (0, 100)],
    ids=["past-the-end", "straddling-the-end", "not-whole-sectors"],
)
def test_reads_outside_the_disk_or_misaligned_fail_with_ioerr(
    rig: Rig, sector: int, length: int
) -> None:
    [done] = rig.roundtrip(Blk.IN, sector=sector, in_len=length)
    assert done.status == BlkStatus.IOERR


@pytest.mark.parametrize("engine", ENGINES)
def test_readonly_device_fails_writes_and_keeps_the_data(tmp_path: Path, engine: str) -> None:
    made = make_rig(tmp_path, readonly=True, engine=engine)
    before = made.backing.read_bytes()
    [done] = made.roundtrip(Blk.OUT, sector=0, out=b"x" * SECTOR_SIZE)
    assert done.status == BlkStatus.IOERR
    assert made.backing.read_bytes() == before


def test_chain_without_a_writable_byte_is_returned_with_nothing_written(rig: Rig) -> None:
    header = rig.driver.alloc(16)
    head = rig.driver.post_chain([(header, 16, False)])
    rig.driver.kick()
    rig.serve()
    [done] = rig.driver.completions()
    assert (done.head, done.written) == (head, 0)


def test_short_header_fails_with_ioerr(rig: Rig) -> None:
    header, status = rig.driver.alloc(8), rig.driver.alloc(1)
    rig.driver.post_chain([(header, 8, False), (status, 1, True)])
    rig.driver.kick()
    rig.serve()
    [_done] = rig.driver.completions()
    assert rig.driver.mem[status] == BlkStatus.IOERR


def test_looping_chain_is_handed_back_and_the_queue_keeps_serving(rig: Rig) -> None:
    """A loop has no last descriptor, so no status byte: return it untouched, carry on."""
    status = rig.driver.alloc(1)
    rig.driver.mem[status] = 0xFF
    rig.driver.put_desc(0, addr=rig.driver.alloc(16), length=16, flags=DescFlag.NEXT, nxt=1)
    rig.driver.put_desc(1, addr=status, length=1, flags=DescFlag.WRITE | DescFlag.NEXT, nxt=0)
    rig.driver.publish(0)
    rig.driver.next_desc = 2
    rig.driver.kick()
    rig.serve()
    [looped] = rig.driver.completions()
    assert (looped.head, looped.written) == (0, 0)
    assert rig.driver.mem[status] == 0xFF
    [done] = rig.roundtrip(Blk.FLUSH)
    assert done.status == BlkStatus.OK


def test_unmapped_buffer_fails_with_ioerr(rig: Rig) -> None:
    status = rig.driver.alloc(1)
    header = rig.driver.alloc(16)
    rig.driver.mem[header : header + 16] = struct.pack("<IIQ", Blk.IN, 0, 0)
    rig.driver.post_chain([(header, 16, False), (1 << 40, 512, True), (status, 1, True)])
    rig.driver.kick()
    rig.serve()
    assert len(rig.driver.completions()) == 1
    assert rig.driver.mem[status] == BlkStatus.IOERR


def test_reset_forgets_queues_and_reports_the_last_avail_index(rig: Rig) -> None:
    rig.roundtrip(Blk.FLUSH)
    rig.kernel.send(RequestType.GET_VQ_STATE, vq_index=0)
    rig.serve()
    assert rig.kernel.responses[-1].avail_index == 1
    rig.kernel.send(RequestType.SET_STATUS, status=0)
    rig.serve()
    assert rig.kernel.responses[-1].ok
    assert not rig.session.running and rig.engine.queues == {}


def test_iotlb_invalidation_remaps_the_rings(rig: Rig) -> None:
    rig.kernel.send(RequestType.UPDATE_IOTLB, iova_start=0, iova_last=(1 << 64) - 1)
    rig.serve()
    [done] = rig.roundtrip(Blk.IN, sector=1, in_len=SECTOR_SIZE)
    assert done.data == rig.backing.read_bytes()[SECTOR_SIZE : 2 * SECTOR_SIZE]


@pytest.mark.parametrize("io", ["io_uring", "threads", "none"])
def test_requests_posted_before_the_queue_started_are_served_without_a_kick(
    tmp_path: Path, io: str
) -> None:
    """A queue's thread serves what is already posted before it waits for a kick."""
    made = make_rig(tmp_path, engine=f"fast:{io}", threaded=True)
    try:
        made.kernel.send(RequestType.SET_STATUS, status=0)
        made.server.drain_messages()
        made.driver.request(Blk.FLUSH)  # while the device is down, and never kicked
        bring_up(made.driver, BlkProfile().features, made.server.drain_messages)
        deadline = time.monotonic() + 5
        done = made.driver.completions()
        while not done and time.monotonic() < deadline:
            time.sleep(0.001)
            done = made.driver.completions()
        assert [c.status for c in done] == [BlkStatus.OK]
    finally:
        made.close()


def test_random_descriptor_chains_never_crash_and_always_complete(rig: Rig) -> None:
    """Fuzz: every posted chain comes back, whatever garbage it holds."""
    rnd = random.Random(1234)
    for _round in range(300):
        count = rnd.randint(1, 4)
        heads = []
        for _ in range(count):
            head = rig.driver.next_desc
            length = rnd.randint(1, 5)
            for i in range(length):
                index = (head + i) % QUEUE_SIZE  # fmt: skip
                flags = rnd.choice([0, DescFlag.WRITE, DescFlag.NEXT, DescFlag.INDIRECT,
                                    DescFlag.WRITE | DescFlag.NEXT])  # fmt: skip
                addr = rnd.choice([rig.driver.alloc(64), rnd.getrandbits(48), REGION_SPLIT - 7])
                nxt = rnd.choice([(index + 1) % QUEUE_SIZE, rnd.randint(0, 40)])
                rig.driver.put_desc(
                    index,
                    addr=addr,
                    length=rnd.choice([0, 1, 16, 17, 512, 4096]),
                    flags=flags,
                    nxt=nxt,
                )
            if rnd.random() < 0.7:
                kind = rnd.choice([Blk.IN, Blk.OUT, Blk.FLUSH, Blk.GET_ID, 99])
                header = rig.driver.alloc(16)
                rig.driver.mem[header : header + 16] = struct.pack(
                    "<IIQ", kind, 0, rnd.choice([0, 1, DISK // SECTOR_SIZE, 2**63])
                )
                rig.driver.put_desc(
                    head, addr=header, length=16, flags=DescFlag.NEXT, nxt=(head + 1) % QUEUE_SIZE
                )
            rig.driver.next_desc = (head + length) % QUEUE_SIZE
            rig.driver.publish(head)
            heads.append(head)
        rig.driver.kick()
        rig.serve()
        assert [c.head for c in rig.driver.completions()] == heads


def test_indirect_chains_are_served_like_direct_ones(rig: Rig) -> None:
    data = os.urandom(4 * SECTOR_SIZE)
    rig.driver.request(Blk.OUT, sector=20, out=data, indirect=True)
    rig.driver.kick()
    rig.serve()
    [done] = rig.driver.completions()
    assert done.status == BlkStatus.OK
    rig.driver.request(Blk.IN, sector=20, in_len=len(data), indirect=True)
    rig.driver.kick()
    rig.serve()
    [done] = rig.driver.completions()
    assert done.status == BlkStatus.OK and done.data == data


def _ranges(*ranges: tuple[int, int, int]) -> bytes:
    return b"".join(struct.pack("<QII", *r) for r in ranges)


def test_discard_punches_a_hole_that_reads_back_as_zeroes(rig: Rig) -> None:
    [done] = rig.roundtrip(Blk.DISCARD, out=_ranges((8, 16, 0), (64, 8, 0)))
    assert done.status == BlkStatus.OK
    image = rig.backing.read_bytes()
    assert image[8 * SECTOR_SIZE : 24 * SECTOR_SIZE] == bytes(16 * SECTOR_SIZE)
    assert image[64 * SECTOR_SIZE : 72 * SECTOR_SIZE] == bytes(8 * SECTOR_SIZE)
    assert image[7 * SECTOR_SIZE : 8 * SECTOR_SIZE] != bytes(SECTOR_SIZE)  # neighbours kept
    assert image[24 * SECTOR_SIZE : 25 * SECTOR_SIZE] != bytes(SECTOR_SIZE)


@pytest.mark.parametrize("flags", [0, 1], ids=["zero", "zero-unmap"])
def test_write_zeroes_zeroes_exactly_the_range(rig: Rig, flags: int) -> None:
    [done] = rig.roundtrip(Blk.WRITE_ZEROES, out=_ranges((100, 9, flags)))
    assert done.status == BlkStatus.OK
    image = rig.backing.read_bytes()
    assert image[100 * SECTOR_SIZE : 109 * SECTOR_SIZE] == bytes(9 * SECTOR_SIZE)
    assert image[99 * SECTOR_SIZE : 100 * SECTOR_SIZE] != bytes(SECTOR_SIZE)
    assert image[109 * SECTOR_SIZE : 110 * SECTOR_SIZE] != bytes(SECTOR_SIZE)


@pytest.mark.parametrize(
    ("kind", "ranges", "status"),
    [
        (Blk.DISCARD, [(0, 8, 1)], BlkStatus.UNSUPP),  # UNMAP is not a discard flag
        (Blk.WRITE_ZEROES, [(0, 8, 2)], BlkStatus.UNSUPP),  # reserved flag
        (Blk.DISCARD, [(0, 8, 0), (DISK // SECTOR_SIZE, 1, 0)], BlkStatus.IOERR),  # 2nd past end
    ],
    ids=["discard-unmap", "reserved-flag", "past-the-end"],
)
def test_bad_discard_ranges_fail_and_touch_nothing(
    rig: Rig, kind: int, ranges: list[tuple[int, int, int]], status: BlkStatus
) -> None:
    before = rig.backing.read_bytes()
    [done] = rig.roundtrip(kind, out=_ranges(*ranges))
    assert done.status == status
    assert rig.backing.read_bytes() == before


def test_growing_the_backing_serves_and_announces_the_new_capacity(rig: Rig) -> None:
    [done] = rig.roundtrip(Blk.IN, sector=DISK // SECTOR_SIZE, in_len=SECTOR_SIZE)
    assert done.status == BlkStatus.IOERR
    assert grow(rig.backend, rig.engine, rig.kernel) == DISK  # not grown yet
    assert rig.kernel.config_interrupts == 0
    with open(rig.backing, "ab") as backing:
        backing.write(b"\x77" * DISK)
    assert grow(rig.backend, rig.engine, rig.kernel) == 2 * DISK
    assert struct.unpack_from("<Q", rig.kernel.config, 0) == (2 * DISK // SECTOR_SIZE,)
    assert rig.kernel.config_interrupts == 1
    [done] = rig.roundtrip(Blk.IN, sector=DISK // SECTOR_SIZE, in_len=SECTOR_SIZE)
    assert done.status == BlkStatus.OK and done.data == b"\x77" * SECTOR_SIZE


def test_a_header_split_across_descriptors_is_read_whole(rig: Rig) -> None:
    header = rig.driver.alloc(16)
    rig.driver.mem[header : header + 16] = struct.pack("<IIQ", Blk.IN, 0, 3)
    data, status = rig.driver.alloc(SECTOR_SIZE), rig.driver.alloc(1)
    rig.driver.post_chain([(header, 5, False), (header + 5, 11, False),
                           (data, SECTOR_SIZE, True), (status, 1, True)])  # fmt: skip
    rig.driver.kick()
    rig.serve()
    [done] = rig.driver.completions()
    assert (done.written, rig.driver.mem[status]) == (SECTOR_SIZE + 1, BlkStatus.OK)
    expected = rig.backing.read_bytes()[3 * SECTOR_SIZE : 4 * SECTOR_SIZE]
    assert rig.driver.mem[data : data + SECTOR_SIZE] == expected


@pytest.mark.parametrize(
    ("length", "flags"),
    [(2**32 - 1, DescFlag.WRITE), (SECTOR_SIZE, 0)],
    ids=["oversized-buffer", "device-readable-data-for-a-read"],
)
def test_oversized_or_wrongly_flagged_buffers_fail_with_ioerr(
    rig: Rig, length: int, flags: int
) -> None:
    header, data, status = rig.driver.alloc(16), rig.driver.alloc(SECTOR_SIZE), rig.driver.alloc(1)
    rig.driver.mem[header : header + 16] = struct.pack("<IIQ", Blk.IN, 0, 0)
    rig.driver.mem[status] = 0xFF
    rig.driver.put_desc(0, addr=header, length=16, flags=DescFlag.NEXT, nxt=1)
    rig.driver.put_desc(
        1, addr=status, length=1, flags=DescFlag.WRITE | DescFlag.NEXT, nxt=2
    )  # writable, then
    rig.driver.put_desc(
        2, addr=data, length=length, flags=flags | DescFlag.NEXT, nxt=3
    )  # readable or huge
    rig.driver.put_desc(3, addr=status, length=1, flags=DescFlag.WRITE, nxt=0)
    rig.driver.publish(0)
    rig.driver.kick()
    rig.serve()
    [done] = rig.driver.completions()
    assert (done.head, done.written, rig.driver.mem[status]) == (0, 1, BlkStatus.IOERR)


def test_indirect_table_longer_than_the_queue_is_handed_back_untouched(rig: Rig) -> None:
    table, status = rig.driver.alloc(16 * (QUEUE_SIZE + 1)), rig.driver.alloc(1)
    rig.driver.mem[status] = 0xFF
    for i in range(QUEUE_SIZE + 1):
        last = i == QUEUE_SIZE
        struct.pack_into("<QIHH", rig.driver.mem, table + 16 * i, status, 1,
                         DescFlag.WRITE | (0 if last else DescFlag.NEXT), i + 1)  # fmt: skip
    rig.driver.put_desc(0, addr=table, length=16 * (QUEUE_SIZE + 1), flags=DescFlag.INDIRECT, nxt=0)
    rig.driver.publish(0)
    rig.driver.kick()
    rig.serve()
    [done] = rig.driver.completions()
    assert (done.written, rig.driver.mem[status]) == (0, 0xFF)
    [done] = rig.roundtrip(Blk.FLUSH)  # and the queue keeps serving
    assert done.status == BlkStatus.OK
