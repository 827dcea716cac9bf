"""Packed virtqueues in the C loop, driven by a fake packed-ring driver.

The reference ring is split-only, so these tests check the packed path against the
backing file and the virtio spec's rules directly: ids from the last descriptor, used
descriptors over the first, wrap counters, event suppression, and takeover after a crash.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.vduse.messages import Request, RequestType
from csi_vduse.virtio.blk import SECTOR_SIZE, BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from csi_vduse.virtio.spec import Feature, Status, bit
from tests.unit import test_takeover as takeover
from tests.unit.fake_virtio import QUEUE_SIZE, FakeKernel, PackedDriver
from tests.unit.test_dataplane import DISK
from tests.unit.test_takeover import Dataplane

PROFILE = BlkProfile(packed=True)


def start(kernel: FakeKernel, *, backing: Path, log_path: Path) -> Dataplane:
    return takeover.start(kernel, backing=backing, log_path=log_path, profile=PROFILE)


@dataclass(kw_only=True)
class Rig:
    kernel: FakeKernel
    driver: PackedDriver
    plane: Dataplane
    backing: Path
    log_path: Path

    def serve(self) -> None:
        self.plane.engine.serve_pending()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(DISK))
    kernel = FakeKernel()
    plane = start(kernel, backing=backing, log_path=tmp_path / "log")
    driver = PackedDriver(kernel)
    driver.enable_queue()
    kernel.features_acked = PROFILE.features
    status = 0
    for step in (Status.ACKNOWLEDGE, Status.DRIVER, Status.FEATURES_OK, Status.DRIVER_OK):
        status |= step
        kernel.send(RequestType.SET_STATUS, status=status)
        plane.server.drain_messages()
        assert kernel.responses[-1].ok
    made = Rig(
        kernel=kernel, driver=driver, plane=plane, backing=backing, log_path=tmp_path / "log"
    )
    yield made
    made.plane.crash()
    driver.close()
    kernel.close()


def test_packed_is_offered_only_when_asked() -> None:
    assert PROFILE.features & bit(Feature.RING_PACKED)
    assert not BlkProfile().features & bit(Feature.RING_PACKED)


@pytest.mark.parametrize("indirect", [False, True], ids=["chained", "indirect"])
def test_requests_round_trip_through_many_wraps(rig: Rig, indirect: bool) -> None:
    for round_ in range(3 * QUEUE_SIZE // 3):
        data = os.urandom(2 * SECTOR_SIZE)
        sector = 8 * (round_ % 7)
        rig.driver.request(Blk.OUT, sector=sector, out=data, indirect=indirect)
        rig.driver.request(Blk.IN, sector=sector, in_len=len(data), indirect=indirect)
        rig.driver.request(Blk.FLUSH, indirect=indirect)
        rig.serve()
        write, read, flush = rig.driver.completions()
        assert (write.status, read.status, flush.status) == (BlkStatus.OK,) * 3
        assert read.data == data and read.written == len(data) + 1
    assert rig.driver.avail_wrap == rig.driver.used_wrap
    assert rig.plane.engine.queues[0].q.served == 3 * QUEUE_SIZE


def test_a_full_ring_of_requests_is_served_in_one_go(rig: Rig) -> None:
    ids = [rig.driver.request(Blk.FLUSH, indirect=True) for _ in range(QUEUE_SIZE)]
    rig.serve()
    assert [c.head for c in rig.driver.completions()] == ids


def test_get_vq_state_answers_packed_positions_with_their_wrap_counters(rig: Rig) -> None:
    for _ in range(QUEUE_SIZE // 2 + 3):
        rig.driver.request(Blk.FLUSH)
        rig.serve()
        rig.driver.completions()
    # As many flushes of two descriptors each: once around the ring (the wrap counters
    # start at 1, now 0), then 6 descriptors on.
    answer = rig.plane.session.handle(Request(RequestType.GET_VQ_STATE, request_id=1, vq_index=0))
    assert answer.packed == (6, 6)
    raw = answer.encode()
    assert struct.unpack_from("<4H", raw, 28) == (0, 6, 0, 6)


def test_driver_event_suppression_is_honoured(rig: Rig) -> None:
    rig.kernel.fast_interrupts()
    rig.driver.set_event(1)  # RING_EVENT_FLAGS_DISABLE
    rig.driver.request(Blk.FLUSH)
    rig.serve()
    assert rig.kernel.fast_interrupts() == 0
    rig.driver.set_event(0)  # ENABLE
    rig.driver.request(Blk.FLUSH)
    rig.serve()
    assert rig.kernel.fast_interrupts() == 1
    assert len(rig.driver.completions()) == 2


def test_a_chain_around_the_whole_ring_breaks_only_the_queue(rig: Rig) -> None:
    segments = [(0x1000, 16, False)] * (QUEUE_SIZE - 1) + [(0x2000, 1, True)]
    rig.driver.post(segments)
    # The driver's last descriptor claims to continue into the first again.
    flags_at = rig.driver.desc + 16 * (QUEUE_SIZE - 1) + 14
    flags = struct.unpack_from("<H", rig.driver.mem, flags_at)[0]
    struct.pack_into("<H", rig.driver.mem, flags_at, flags | 1)
    rig.serve()
    assert rig.plane.engine.queues[0].broken


def _poke(rig: Rig, *, last_avail: int, used: int, inflight: dict[int, int]) -> None:
    takeover.poke_log(rig.log_path, last_avail=last_avail, used_idx=used, inflight=inflight)


def _successor(rig: Rig) -> Dataplane:
    rig.plane.crash()
    rig.plane = start(rig.kernel, backing=rig.backing, log_path=rig.log_path)
    assert rig.plane.session.resume()
    return rig.plane


START = 1 << 15  # position 0, wrap counter 1


@pytest.mark.parametrize("counted", [True, False], ids=["taken", "taken-not-counted"])
def test_a_taken_request_is_replayed_once_by_a_successor(rig: Rig, counted: bool) -> None:
    buffer_id = rig.driver.request(Blk.OUT, sector=3, out=b"\x33" * SECTOR_SIZE)
    spans = rig.driver.chains[buffer_id]
    _poke(rig, last_avail=START + spans if counted else START, used=START, inflight={buffer_id: 1})
    plane = _successor(rig)
    rig.serve()
    [done] = rig.driver.completions()
    assert (done.head, done.status) == (buffer_id, BlkStatus.OK)
    assert rig.backing.read_bytes()[3 * SECTOR_SIZE : 4 * SECTOR_SIZE] == b"\x33" * SECTOR_SIZE
    assert plane.engine.queues[0].q.replayed == 1
    rig.driver.request(Blk.FLUSH)
    rig.serve()
    assert [c.status for c in rig.driver.completions()] == [BlkStatus.OK]


def test_a_published_completion_is_not_replayed(rig: Rig) -> None:
    buffer_id = rig.driver.request(Blk.OUT, sector=5, out=b"\x55" * SECTOR_SIZE)
    rig.serve()
    [done] = rig.driver.completions()
    assert done.head == buffer_id
    spans = rig.driver.chains.get(buffer_id, 3)
    _poke(
        rig, last_avail=START + spans, used=START, inflight={buffer_id: 1}
    )  # died before logging the completion
    rig.backing.write_bytes(bytes(DISK))
    plane = _successor(rig)
    rig.serve()
    assert rig.driver.completions() == []
    assert rig.backing.read_bytes()[5 * SECTOR_SIZE : 6 * SECTOR_SIZE] == bytes(SECTOR_SIZE)
    assert plane.engine.queues[0].q.replayed == 0
    assert not plane.engine.queues[0].broken
    rig.driver.request(Blk.FLUSH)
    rig.serve()
    assert [c.status for c in rig.driver.completions()] == [BlkStatus.OK]
