"""A driver that breaks the virtio rules must not corrupt the dataplane or hang it.

Each test reproduces a defect found by review and fuzzing (issue 12) through the fake
driver: a head posted again while in flight, ring areas that overlap or are misaligned, a
successor's log that the rings contradict, packed start positions outside the ring, a
queue larger than the in-flight log holds, a used length beyond 32 bits. The rule in
every case: the offending queue is refused or stopped with a clear error, what was in
flight completes untouched, and nothing outside the rings and buffers is written.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi_vduse.dataplane.blk.profile import MAX_QUEUE_SIZE, BlkProfile
from csi_vduse.dataplane.fast.engine import BlkTarget
from csi_vduse.dataplane.virtio.session import ResumeError
from csi_vduse.vduse.messages import RequestType
from csi_vduse.vduse.node import VqInfo
from csi_vduse.virtio.blk import SECTOR_SIZE, BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from csi_vduse.virtio.spec import Status
from tests.unit.fake_virtio import FakeDriver, FakeKernel, PackedDriver, bring_up
from tests.unit.test_takeover import Dataplane, poke_log, start

DISK = 1 << 20
PACKED = BlkProfile(packed=True)
SPLIT = BlkProfile()


@dataclass
class Plane(Dataplane):
    """A dataplane on the test's fake kernel, served on the test's thread."""

    kernel: FakeKernel

    def serve(self) -> None:
        self.server.drain_messages()
        self.engine.serve_pending()

    def broken(self, index: int = 0) -> bool:
        return self.engine.queues[index].broken


def start_plane(
    kernel: FakeKernel, tmp_path: Path, profile: BlkProfile = SPLIT, io: str = "none",
    target: BlkTarget | None = None,
) -> Plane:  # fmt: skip
    backing = tmp_path / "disk.img"
    if not backing.exists():
        backing.write_bytes(bytes(DISK))
    made = start(
        kernel,
        backing=backing,
        log_path=tmp_path / "vol.inflight",
        profile=profile,
        io=io,
        target=target,
    )
    return Plane(**vars(made), kernel=kernel)


@pytest.fixture
def kernel() -> Iterator[FakeKernel]:
    made = FakeKernel()
    yield made
    made.close()


def driver_ok(plane: Plane, features: int) -> bool:
    """Walk the status to DRIVER_OK; whether the device accepted it."""
    plane.kernel.features_acked = features
    status = Status(0)
    for step in (Status.ACKNOWLEDGE, Status.DRIVER, Status.FEATURES_OK, Status.DRIVER_OK):
        status |= step
        plane.kernel.send(RequestType.SET_STATUS, status=int(status))
        plane.server.drain_messages()
        if not plane.kernel.responses[-1].ok:
            return False
    return True


def read_sector(plane: Plane, index: int) -> bytes:
    with open(plane.backend.path, "rb") as f:
        f.seek(index * SECTOR_SIZE)
        return f.read(SECTOR_SIZE)


# -- 1. a head posted again while it is in flight --------------------------------------


@pytest.mark.parametrize("io", ["threads", "io_uring"])
def test_a_head_posted_again_while_in_flight_stops_the_queue_and_spares_the_first(
    kernel: FakeKernel, tmp_path: Path, io: str
) -> None:
    plane = start_plane(kernel, tmp_path, io=io)
    with open(plane.backend.path, "r+b") as f:
        f.seek(3 * SECTOR_SIZE)
        f.write(b"\x5a" * 4096)
    driver = FakeDriver(kernel)
    assert all(a.ok for a in bring_up(driver, SPLIT.features, plane.server.drain_messages))
    head = driver.request(Blk.IN, sector=3, in_len=4096)
    driver.publish(head)  # the same head again, its first request not completed yet
    plane.serve()
    done = driver.completions()
    # The first request completes with its own data; the repeat is refused, not served.
    assert [(c.head, c.status, c.written) for c in done] == [(head, BlkStatus.OK, 4097)]
    assert done[0].data == b"\x5a" * 4096
    assert plane.broken()
    plane.crash()
    driver.close()


# -- 2. ring areas, and a successor's log the rings contradict --------------------------


@pytest.mark.parametrize(
    ("ring", "moved_to"),
    [("used", "avail"), ("desc", "desc+1"), ("avail", "avail+1"), ("used", "used+1")],
    ids=["used-over-avail", "desc-misaligned", "avail-misaligned", "used-misaligned"],
)
def test_ring_areas_that_overlap_or_are_misaligned_are_refused(
    kernel: FakeKernel, tmp_path: Path, ring: str, moved_to: str
) -> None:
    plane = start_plane(kernel, tmp_path)
    driver = FakeDriver(kernel)
    driver.request(Blk.OUT, sector=1, out=b"\x11" * SECTOR_SIZE)  # laid out before the move
    # Over the avail ring, each used-ring store would bump the avail index.
    area, _, offset = moved_to.partition("+")
    setattr(driver, ring, getattr(driver, area) + int(offset or 0))
    driver.enable_queue()
    assert not driver_ok(plane, SPLIT.features)
    plane.serve()
    assert read_sector(plane, 1) == bytes(SECTOR_SIZE)
    plane.crash()
    driver.close()


def serve_or_stop(plane: Plane, seconds: float = 20.0) -> bool:
    """Serve on a thread; False if the pass had to be stopped from outside (a livelock)."""
    thread = threading.Thread(target=plane.engine.serve_pending, daemon=True)
    thread.start()
    thread.join(seconds)
    if not thread.is_alive():
        return True
    for queue in plane.engine.queues.values():
        queue.q.pause_req = 1
    thread.join()
    return False


def test_a_successor_on_aliased_rings_does_not_serve_forever(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    first = start_plane(kernel, tmp_path)
    driver = FakeDriver(kernel)
    assert all(a.ok for a in bring_up(driver, SPLIT.features, first.server.drain_messages))
    first.crash()
    # A hostile VMM moves the used ring onto the avail ring while no dataplane runs, and
    # posts a request: its avail index 1 also reads as a used index one ahead of the log.
    driver.used = driver.avail
    driver.enable_queue()
    driver.request(Blk.OUT, sector=2, out=b"\x22" * SECTOR_SIZE)
    second = start_plane(kernel, tmp_path)
    try:
        resumed = second.session.resume()
    except ResumeError:
        resumed = False
    if resumed:
        assert serve_or_stop(second), "the successor served the aliased ring forever"
    assert not resumed or second.broken()
    assert read_sector(second, 2) == bytes(SECTOR_SIZE)
    second.crash()
    driver.close()


@pytest.mark.parametrize(
    ("last_avail", "used_idx", "inflight"),
    [(0, 3, {}), (2, 0, {0: 1}), (1, 0, {0: 1, 5: 1}), (40, 0, {})],
    ids=["used-past-avail", "fewer-flags-than-taken", "more-flags-than-taken", "more-than-ring"],
)
def test_a_log_that_disagrees_with_itself_stops_the_queue(
    kernel: FakeKernel, tmp_path: Path, last_avail: int, used_idx: int, inflight: dict[int, int]
) -> None:
    first = start_plane(kernel, tmp_path)
    driver = FakeDriver(kernel)
    assert all(a.ok for a in bring_up(driver, SPLIT.features, first.server.drain_messages))
    first.crash()
    # Rings that match the log's used index, so only the log's own counts disagree.
    struct.pack_into("<H", driver.mem, driver.used + 2, used_idx)
    for _ in range(last_avail):
        driver.request(Blk.OUT, sector=9, out=b"\x99" * SECTOR_SIZE)
    poke_log(tmp_path / "vol.inflight", last_avail=last_avail, used_idx=used_idx,
             inflight=inflight)  # fmt: skip
    second = start_plane(kernel, tmp_path)
    assert second.session.resume()
    assert serve_or_stop(second)
    assert second.broken()
    assert read_sector(second, 9) == bytes(SECTOR_SIZE)
    second.crash()
    driver.close()


# -- 3. packed start positions outside the ring ------------------------------------------


def packed_info(driver: PackedDriver, avail: int, used: int) -> VqInfo:
    return VqInfo(
        index=driver.queue, num=driver.size, desc_addr=driver.desc,
        driver_addr=driver.driver_event, device_addr=driver.device_event, avail_index=0,
        ready=True, packed_avail=avail, packed_used=used,
    )  # fmt: skip


@pytest.mark.parametrize(
    "position", [1 << 15 | 16, 1 << 15 | 100, 0x7FFF, 0xFFFF], ids=["num", "100", "max", "wrap"]
)
def test_packed_start_positions_outside_the_ring_are_refused(
    kernel: FakeKernel, tmp_path: Path, position: int
) -> None:
    plane = start_plane(kernel, tmp_path, PACKED)
    driver = PackedDriver(kernel)
    # A valid-looking available descriptor where an unchecked position would land.
    at = driver.desc + 16 * (position & 0x7FFF)
    canary = struct.pack("<QIHH", 0x1000, 16, 0, 1 << 7)
    if at + 16 <= len(driver.mem):
        driver.mem[at : at + 16] = canary
    kernel.vqs[0] = packed_info(driver, position, position)
    assert not driver_ok(plane, PACKED.features)
    plane.serve()
    if at + 16 <= len(driver.mem):
        assert driver.mem[at : at + 16] == canary
    plane.crash()
    driver.close()


def test_a_packed_log_with_positions_outside_the_ring_is_refused(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    first = start_plane(kernel, tmp_path, PACKED)
    driver = PackedDriver(kernel)
    driver.enable_queue()
    assert driver_ok(first, PACKED.features)
    first.crash()
    poke_log(tmp_path / "vol.inflight", last_avail=1 << 15 | 300, used_idx=1 << 15 | 300,
             inflight={})  # fmt: skip
    second = start_plane(kernel, tmp_path, PACKED)
    with pytest.raises(ResumeError):
        second.session.resume()
    second.crash()
    driver.close()


# -- 4. a queue larger than the in-flight log holds --------------------------------------


def test_a_queue_larger_than_the_log_holds_is_refused(kernel: FakeKernel, tmp_path: Path) -> None:
    plane = start_plane(kernel, tmp_path)
    driver = FakeDriver(kernel, size=2 * MAX_QUEUE_SIZE)
    driver.enable_queue()
    assert not driver_ok(plane, SPLIT.features)
    assert plane.engine.queues == {}
    plane.crash()
    driver.close()


# -- 5. a used length beyond 32 bits -----------------------------------------------------

GiB = 1 << 30
BIG = 8 << 20  # one guest buffer, above the rings, that every data descriptor points at
BIG_AT = 4 << 20


@pytest.mark.parametrize("io", ["none", "threads"])
def test_a_read_of_4_gib_or_more_reports_the_largest_used_length(tmp_path: Path, io: str) -> None:
    kernel = FakeKernel(memory=BIG_AT + BIG)
    # Reads of /dev/zero fill the guest buffer fastest; only the used length is at stake.
    zero = os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC)
    target = BlkTarget(
        backing_fd=zero, capacity=5 * GiB, readonly=True, serial=b"serial-0", can_flush=False,
        can_discard=False,
    )  # fmt: skip
    plane = start_plane(kernel, tmp_path, io=io, target=target)
    driver = FakeDriver(kernel, size=MAX_QUEUE_SIZE)
    assert all(a.ok for a in bring_up(driver, SPLIT.features, plane.server.drain_messages))
    count = 4 * GiB // BIG + 1  # 4 GiB and 8 MiB: the low 32 bits alone say 8 MiB
    header = driver.alloc(16)
    driver.mem[header : header + 16] = struct.pack("<IIQ", Blk.IN, 0, 0)
    status = driver.alloc(1)
    head = driver.post_indirect(
        [(header, 16, False), *[(BIG_AT, BIG, True)] * count, (status, 1, True)]
    )
    driver.inflight[head] = (status, 0, 0)
    plane.serve()
    [done] = driver.completions()
    assert (done.status, done.written) == (BlkStatus.OK, 2**32 - 1)
    plane.crash()
    driver.close()
    kernel.close()
    os.close(zero)
