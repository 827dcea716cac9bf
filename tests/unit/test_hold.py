"""FastEngine.hold: every queue of a device paused for the driver, threads and C loop real.

Requests posted while held wait in the ring; the engine's own pauses (IOTLB updates, a
capacity change, a reset and restart) leave it held; only release() lets it serve again.
A backing that is a pipe read through io_uring keeps a request in flight until the test
writes to the pipe, so a test can hold a request in flight on purpose.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.fast.engine import BlkTarget, FastEngine
from csi_vduse.dataplane.server import Server
from csi_vduse.dataplane.virtio.session import VduseSession
from csi_vduse.vduse.messages import RequestType
from csi_vduse.virtio.blk import ID_BYTES, SECTOR_SIZE, BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from tests.unit.fake_virtio import Completion, FakeDriver, FakeKernel, bring_up, session_for

DISK = 1 << 20
PATIENCE = 30.0  # seconds; generous on a busy machine, never reached when all is well
LOOK = 0.2  # how long a test watches for something that must not happen


def wait_for(done: Callable[[], bool], timeout: float = PATIENCE) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


@dataclass(kw_only=True)
class Device:
    kernel: FakeKernel
    drivers: list[FakeDriver]
    engine: FastEngine
    session: VduseSession
    server: Server
    profile: BlkProfile

    def completions(self, queue: int = 0, *, expect: int = 1) -> list[Completion]:
        """The next ``expect`` completions of ``queue`` (fewer if they do not come)."""
        done: list[Completion] = []

        def enough() -> bool:
            done.extend(self.drivers[queue].completions())
            return len(done) >= expect

        wait_for(enough)
        return done

    def bring_up(self) -> None:
        first, *others = self.drivers
        answers = bring_up(first, self.profile.features, self.server.drain_messages, tuple(others))
        assert all(answer.ok for answer in answers)

    def send(self, kind: RequestType, **fields: int) -> None:
        self.kernel.send(kind, **fields)
        self.server.drain_messages()
        assert self.kernel.responses[-1].ok


def make_device(backing_fd: int, *, queues: int = 1, io: str | None = None) -> Device:
    kernel = FakeKernel()
    profile = BlkProfile(queues=queues)
    target = BlkTarget(backing_fd=backing_fd, capacity=DISK, readonly=False, serial=b"held")
    engine = FastEngine(
        kernel, target, devfd=-1, irqfd=kernel.irqfd, threaded=True, io=io,
        async_min=None if io is None else 0,
    )  # fmt: skip
    session = session_for(kernel, profile, engine)
    drivers = [FakeDriver(kernel, queue) for queue in range(queues)]
    device = Device(
        kernel=kernel, drivers=drivers, engine=engine, session=session,
        server=Server(kernel, session), profile=profile,
    )  # fmt: skip
    device.bring_up()
    return device


def close(device: Device) -> None:
    device.session.reset()
    device.engine.close()
    device.server.close()
    for driver in device.drivers:
        driver.close()
    device.kernel.close()


@pytest.fixture
def backing(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (DISK // 256))
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    yield fd
    os.close(fd)


@pytest.fixture
def device(backing: int) -> Iterator[Device]:
    made = make_device(backing, queues=2)
    yield made
    close(made)


def post_flush(device: Device, queue: int = 0) -> None:
    device.drivers[queue].request(Blk.FLUSH)
    device.drivers[queue].kick()


def test_a_held_device_serves_nothing_until_released(device: Device) -> None:
    assert device.engine.hold(PATIENCE)
    for queue in (0, 1):
        post_flush(device, queue)
    time.sleep(LOOK)
    assert [driver.completions() for driver in device.drivers] == [[], []]
    assert [device.engine.last_avail(queue) for queue in (0, 1)] == [0, 0]  # not even taken
    device.engine.release()
    for queue in (0, 1):
        assert [c.status for c in device.completions(queue)] == [BlkStatus.OK]


def test_iotlb_updates_and_a_capacity_change_leave_a_held_device_paused(device: Device) -> None:
    assert device.engine.hold(PATIENCE)
    post_flush(device)
    device.send(RequestType.UPDATE_IOTLB, iova_start=0, iova_last=(1 << 64) - 1)
    device.engine.set_capacity(2 * DISK)
    time.sleep(LOOK)
    assert device.drivers[0].completions() == []
    device.engine.release()
    assert [c.status for c in device.completions()] == [BlkStatus.OK]


def test_queues_enabled_after_a_reset_during_a_hold_start_paused(device: Device) -> None:
    assert device.engine.hold(PATIENCE)
    device.send(RequestType.SET_STATUS, status=0)
    assert device.engine.queues == {}
    device.engine.release()  # nothing to resume: the stopped queues are gone
    assert device.engine.hold(PATIENCE)
    device.send(RequestType.SET_STATUS, status=0)
    for driver in device.drivers:  # a fresh ring for each queue, as after a real reset
        driver.avail_idx = driver.used_seen = driver.next_desc = 0
    device.bring_up()
    post_flush(device, 1)
    time.sleep(LOOK)
    assert device.drivers[1].completions() == []
    device.engine.release()
    assert [c.status for c in device.completions(1)] == [BlkStatus.OK]


def test_hold_and_release_come_back_while_nothing_was_posted(device: Device) -> None:
    for _ in range(3):
        assert device.engine.hold(PATIENCE)
        device.engine.release()
    post_flush(device)
    assert [c.status for c in device.completions()] == [BlkStatus.OK]


@pytest.fixture
def gated() -> Iterator[tuple[Device, int]]:
    """A device whose backing is a pipe: a read at sector 0 waits in io_uring for the test
    to write its data (the thread pool cannot read a pipe at an offset: io_uring only)."""
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    made = make_device(gate_r, io="io_uring")
    try:
        if made.engine.queues[0].io != "io_uring":
            pytest.skip("io_uring is not available here")
        yield made, gate_w
    finally:
        close(made)
        os.close(gate_w)
        os.close(gate_r)


def test_a_request_in_flight_completes_before_hold_returns(gated: tuple[Device, int]) -> None:
    device, gate = gated
    device.drivers[0].request(Blk.IN, sector=0, in_len=SECTOR_SIZE)
    device.drivers[0].kick()
    assert wait_for(lambda: device.engine.queues[0].q.inflight == 1)
    held = threading.Event()

    def hold() -> None:
        if device.engine.hold(PATIENCE):
            held.set()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert not held.wait(LOOK)  # it waits for the read
        os.write(gate, b"g" * SECTOR_SIZE)
        assert held.wait(PATIENCE)
        # Completed, and published in the used ring, by the time hold returned.
        [done] = device.drivers[0].completions()
        assert (done.status, done.data) == (BlkStatus.OK, b"g" * SECTOR_SIZE)
    finally:
        holder.join()
        device.engine.release()


def test_a_hold_that_cannot_drain_in_time_holds_nothing(gated: tuple[Device, int]) -> None:
    device, gate = gated
    device.drivers[0].request(Blk.IN, sector=0, in_len=SECTOR_SIZE)
    device.drivers[0].kick()
    assert wait_for(lambda: device.engine.queues[0].q.inflight == 1)
    assert not device.engine.hold(LOOK)
    assert not device.engine.held and not device.engine.queues[0].held
    os.write(gate, b"g" * SECTOR_SIZE)
    assert [c.status for c in device.completions()] == [BlkStatus.OK]
    device.drivers[0].request(Blk.GET_ID, in_len=ID_BYTES)  # still serving, not paused
    device.drivers[0].kick()
    assert [c.data[:4] for c in device.completions()] == [b"held"]
