"""A dataplane taking over a device from one that died, via the persistent in-flight log.

Each test runs a first dataplane on a fake device, leaves the log the way a crash at a
given instruction would, then starts a second dataplane on the same rings and log and
checks what the driver sees: every request completed exactly once, with its data.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi_vduse.dataplane.blk.backend import FileBackend
from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.fast.engine import BlkTarget, FastEngine
from csi_vduse.dataplane.inflight_log import (
    BLOCK_SIZE,
    HEADER_SIZE,
    QUEUE_HEADER_SIZE,
    InflightLog,
    open_file,
)
from csi_vduse.dataplane.server import Server
from csi_vduse.dataplane.virtio.session import ResumeError, VduseSession
from csi_vduse.vduse.messages import RequestType
from csi_vduse.virtio.blk import SECTOR_SIZE, BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from csi_vduse.virtio.spec import Status
from tests.unit.fake_virtio import FakeDriver, FakeKernel, bring_up, session_for
from tests.unit.test_dataplane import DISK


@dataclass(kw_only=True)
class Dataplane:
    """One dataplane process's worth of objects on a shared fake device and log file."""

    session: VduseSession
    server: Server
    engine: FastEngine
    log: InflightLog
    backend: FileBackend

    def crash(self) -> None:
        """Let go of everything without a word to the device, as SIGKILL would."""
        self.session.close()
        self.engine.close()
        self.server.close()
        self.log.close()
        self.backend.close()


def start(
    kernel: FakeKernel, *, backing: Path, log_path: Path, profile: BlkProfile | None = None,
    io: str | None = None, target: BlkTarget | None = None, qos_page: mmap.mmap | None = None,
) -> Dataplane:  # fmt: skip
    """A dataplane for ``profile``'s device (split rings by default) on the fake kernel.

    ``io`` names an asynchronous engine to take every read and write, however small (None:
    the environment's choice, with its policy); ``target`` replaces the backing file;
    ``qos_page`` limits the device's I/O."""
    profile = profile or BlkProfile()
    backend = FileBackend(backing, readonly=False)
    log = InflightLog(open_file(log_path), queues=1)
    target = target or BlkTarget(
        backing_fd=backend.fd, capacity=DISK, readonly=False, serial=b"serial-0"
    )
    engine = FastEngine(
        kernel, target, devfd=-1, irqfd=kernel.irqfd, threaded=False, inflight=log, io=io,
        async_min=None if io in (None, "none") else 0, qos_page=qos_page,
    )  # fmt: skip
    session = session_for(kernel, profile, engine, log)
    server = Server(kernel, session)
    return Dataplane(session=session, server=server, engine=engine, log=log, backend=backend)


@dataclass(kw_only=True)
class Rig:
    kernel: FakeKernel
    driver: FakeDriver
    backing: Path
    log_path: Path
    first: Dataplane

    def successor(self) -> Dataplane:
        self.first.crash()
        second = start(self.kernel, backing=self.backing, log_path=self.log_path)
        assert second.session.resume()
        return second

    def poke_log(self, *, last_avail: int, used_idx: int, inflight: dict[int, int]) -> None:
        poke_log(self.log_path, last_avail=last_avail, used_idx=used_idx, inflight=inflight)


def poke_log(path: Path, *, last_avail: int, used_idx: int, inflight: dict[int, int]) -> None:
    """Rewrite queue 0's log as the predecessor's last instruction would have left it."""
    with open(path, "r+b") as f:
        f.seek(HEADER_SIZE)
        f.write(struct.pack("<HH", last_avail, used_idx))
        for head, flag in inflight.items():
            f.seek(HEADER_SIZE + QUEUE_HEADER_SIZE + head)
            f.write(bytes([flag]))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(DISK))
    kernel = FakeKernel()
    first = start(kernel, backing=backing, log_path=tmp_path / "vol.inflight")
    driver = FakeDriver(kernel)
    answers = bring_up(driver, BlkProfile().features, first.server.drain_messages)
    assert all(answer.ok for answer in answers)
    made = Rig(
        kernel=kernel, driver=driver, backing=backing, log_path=tmp_path / "vol.inflight",
        first=first,
    )  # fmt: skip
    yield made
    driver.close()
    kernel.close()


def sector(rig: Rig, index: int) -> bytes:
    data = rig.backing.read_bytes()
    return data[index * SECTOR_SIZE : (index + 1) * SECTOR_SIZE]


def test_the_log_records_the_status_the_driver_set(rig: Rig) -> None:
    assert rig.first.log.status == Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | (
        Status.DRIVER_OK
    )
    assert rig.first.log.features == rig.kernel.features_acked


def test_a_successor_carries_on_where_the_predecessor_stopped(rig: Rig) -> None:
    for index in range(3):
        rig.driver.request(Blk.OUT, sector=index, out=bytes([index + 1]) * SECTOR_SIZE)
    rig.first.engine.serve_pending()
    assert [c.status for c in rig.driver.completions()] == [BlkStatus.OK] * 3
    # Posted while no dataplane runs: the kick went nowhere.
    heads = [
        rig.driver.request(Blk.OUT, sector=index, out=b"\x09" * SECTOR_SIZE) for index in (3, 4)
    ]
    second = rig.successor()
    rig.kernel.fast_interrupts()
    second.engine.serve_pending()
    done = sorted(rig.driver.completions(), key=lambda c: c.head)
    assert [(c.head, c.status) for c in done] == [(head, BlkStatus.OK) for head in heads]
    assert rig.kernel.fast_interrupts() >= 1
    assert [sector(rig, i)[0] for i in range(5)] == [1, 2, 3, 9, 9]
    assert second.engine.queues[0].q.replayed == 0
    second.crash()


@pytest.mark.parametrize("logged_last_avail", [1, 0], ids=["taken", "taken-not-counted"])
def test_a_request_the_predecessor_took_is_served_again_once(
    rig: Rig, logged_last_avail: int
) -> None:
    head = rig.driver.request(Blk.OUT, sector=7, out=b"\x77" * SECTOR_SIZE)
    # It died serving the request: marked in flight, maybe before counting it taken.
    rig.poke_log(last_avail=logged_last_avail, used_idx=0, inflight={head: 1})
    second = rig.successor()
    second.engine.serve_pending()
    [done] = rig.driver.completions()
    assert (done.head, done.status) == (head, BlkStatus.OK)
    assert sector(rig, 7) == b"\x77" * SECTOR_SIZE
    assert second.engine.queues[0].q.replayed == 1
    assert second.log.replayed(0) == 1
    # Nothing is served twice afterwards either.
    rig.driver.request(Blk.FLUSH)
    second.engine.serve_pending()
    assert [c.status for c in rig.driver.completions()] == [BlkStatus.OK]
    second.crash()


def test_a_completion_published_but_not_logged_is_not_served_again(rig: Rig) -> None:
    head = rig.driver.request(Blk.OUT, sector=2, out=b"\x22" * SECTOR_SIZE)
    rig.first.engine.serve_pending()
    [done] = rig.driver.completions()
    assert done.head == head
    # It died after publishing the used element, before clearing its log entry.
    rig.poke_log(last_avail=1, used_idx=0, inflight={head: 1})
    rig.backing.write_bytes(bytes(DISK))  # a replay would write the sector again
    second = rig.successor()
    second.engine.serve_pending()
    assert rig.driver.completions() == []
    assert sector(rig, 2) == bytes(SECTOR_SIZE)
    assert second.engine.queues[0].q.replayed == 0
    second.crash()


def test_a_log_the_rings_contradict_stops_the_queue(rig: Rig) -> None:
    rig.driver.request(Blk.FLUSH)
    rig.driver.request(Blk.FLUSH)
    rig.first.engine.serve_pending()
    assert len(rig.driver.completions()) == 2
    rig.poke_log(last_avail=0, used_idx=0, inflight={})  # two completions it never saw
    second = rig.successor()
    second.engine.serve_pending()
    assert second.engine.queues[0].broken
    second.crash()


def test_a_reset_leaves_nothing_to_take_over(rig: Rig) -> None:
    rig.kernel.send(RequestType.SET_STATUS, status=0)
    rig.first.server.drain_messages()
    assert rig.first.log.status == 0
    rig.first.crash()
    second = start(rig.kernel, backing=rig.backing, log_path=rig.log_path)
    assert not second.session.resume()
    assert second.engine.queues == {}
    second.crash()


def test_a_log_from_another_queue_size_is_refused(rig: Rig) -> None:
    with open(rig.log_path, "r+b") as f:
        f.seek(HEADER_SIZE + 4)
        f.write(struct.pack("<H", 64))  # dp_vqlog.num
    rig.first.crash()
    second = start(rig.kernel, backing=rig.backing, log_path=rig.log_path)
    with pytest.raises(ResumeError):
        second.session.resume()
    second.crash()


def test_a_log_of_another_layout_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "old.inflight"
    path.write_bytes(b"garbage" * 10)
    log = InflightLog(open_file(path), queues=2)
    assert (log.status, log.features) == (0, 0)
    assert os.path.getsize(path) == HEADER_SIZE + 2 * BLOCK_SIZE
    log.close()
