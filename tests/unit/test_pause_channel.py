"""The dataplane's control socket served by its real control loop (Server.run on a thread),
reached through a real listening socket the way the driver reaches it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csi_vduse.dataplane import control
from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.control import Pause, Paused, Refused, Reply, Request, Resume, Resumed
from csi_vduse.dataplane.pause_channel import Holdable, PauseChannel
from csi_vduse.dataplane.server import Server
from csi_vduse.vduse.node import VqInfo
from csi_vduse.virtio.blk import BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from tests.unit.fake_virtio import FakeKernel, session_for
from tests.unit.test_hold import LOOK, PATIENCE, close, make_device

LONG = 60_000  # ms: a pause that only the test ends


class Engine:
    """A queue engine without queues that records how it is held (drains as told)."""

    def __init__(self, *, drains: bool = True) -> None:
        self.drains = drains
        self.calls: list[str] = []
        self.released = threading.Event()

    def hold(self, timeout: float | None = None) -> bool:
        self.calls.append("hold")
        return self.drains

    def release(self) -> None:
        self.calls.append("release")
        self.released.set()

    def start_queue(
        self, info: VqInfo, *, kickfd: int, features: int, resume: bool = False
    ) -> None:
        os.close(kickfd)

    def last_avail(self, index: int) -> int | None:
        return None

    def packed_state(self, index: int) -> tuple[int, int] | None:
        return None

    def invalidate(self, start: int, last: int) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass(kw_only=True)
class Dataplane:
    """A control loop serving the control socket at ``path``, on its own thread."""

    path: Path
    server: Server
    channel: PauseChannel
    thread: threading.Thread

    def connect(self) -> socket.socket:
        return control.connect(self.path, timeout=PATIENCE)

    def stop(self) -> None:
        if not self.thread.is_alive():
            return  # stopped already
        self.server.stop()
        self.thread.join()
        self.channel.close()
        self.server.close()


def serve(path: Path, engine: Holdable, kernel: FakeKernel) -> Dataplane:
    """The control loop of a dataplane whose queues ``engine`` holds."""
    channel = PauseChannel(control.listen(path), engine)
    session = session_for(kernel, BlkProfile(), Engine())
    server = Server(kernel, session, control=channel)
    thread = threading.Thread(target=server.run, name="control-loop")
    thread.start()
    return Dataplane(path=path, server=server, channel=channel, thread=thread)


@pytest.fixture
def kernel() -> Iterator[FakeKernel]:
    made = FakeKernel()
    yield made
    made.close()


@pytest.fixture
def engine() -> Engine:
    return Engine()


@pytest.fixture
def dataplane(tmp_path: Path, engine: Engine, kernel: FakeKernel) -> Iterator[Dataplane]:
    running = serve(tmp_path / "vol.ctl", engine, kernel)
    yield running
    running.stop()


def ask(connection: socket.socket, request: Request | bytes) -> Reply:
    data = request if isinstance(request, bytes) else control.encode(request)
    connection.send(data)
    return control.parse_reply(connection.recv(control.MAX_MESSAGE))


def test_a_pause_holds_the_queues_until_resume(dataplane: Dataplane, engine: Engine) -> None:
    with dataplane.connect() as driver:
        assert isinstance(ask(driver, Pause(timeout_ms=LONG)), Paused)
        assert engine.calls == ["hold"]
        resumed = ask(driver, Resume())
        assert isinstance(resumed, Resumed) and not resumed.expired
        assert engine.calls == ["hold", "release"]


def test_a_pause_past_its_deadline_resumes_by_itself_and_says_so(
    dataplane: Dataplane, engine: Engine
) -> None:
    with dataplane.connect() as driver:
        assert isinstance(ask(driver, Pause(timeout_ms=50)), Paused)
        assert engine.released.wait(PATIENCE)  # nothing but the deadline woke the loop
        resumed = ask(driver, Resume())
        assert isinstance(resumed, Resumed) and resumed.expired
        assert resumed.paused_ms >= 50
        assert isinstance(ask(driver, Resume()), Refused)  # acknowledged once
        assert engine.calls == ["hold", "release"]


def test_a_connection_that_closes_while_it_holds_a_pause_resumes_at_once(
    dataplane: Dataplane, engine: Engine
) -> None:
    with dataplane.connect() as driver:
        assert isinstance(ask(driver, Pause(timeout_ms=LONG)), Paused)
    assert engine.released.wait(PATIENCE)
    assert engine.calls == ["hold", "release"]


def test_one_pause_at_a_time(dataplane: Dataplane, engine: Engine) -> None:
    with dataplane.connect() as first, dataplane.connect() as second:
        assert isinstance(ask(first, Pause(timeout_ms=LONG)), Paused)
        assert ask(second, Pause(timeout_ms=LONG)) == Refused(
            error="another connection holds a pause already", to="paused"
        )
        assert ask(first, Pause(timeout_ms=LONG)) == Refused(
            error="this connection holds a pause already", to="paused"
        )
        assert ask(second, Resume()) == Refused(
            error="this connection holds no pause", to="resumed"
        )
        assert engine.calls == ["hold"]
        assert isinstance(ask(first, Resume()), Resumed)
        assert isinstance(ask(second, Pause(timeout_ms=LONG)), Paused)
        assert isinstance(ask(second, Resume()), Resumed)
    assert engine.calls == ["hold", "release", "hold", "release"]


@pytest.mark.parametrize(
    "garbage",
    [b"pause", b"[]", b'{"pause": {"timeout_ms": 0}}', b'{"pause": {"timeout_ms": 60001}}',
     b'{"resume": false}', b'{"freeze": true}', b"x" * (2 * control.MAX_MESSAGE)],
)  # fmt: skip
def test_a_malformed_message_is_refused_and_changes_nothing(
    dataplane: Dataplane, engine: Engine, garbage: bytes
) -> None:
    with dataplane.connect() as driver:
        refused = ask(driver, garbage)
        assert isinstance(refused, Refused) and refused.to is None
        assert engine.calls == []
        assert isinstance(ask(driver, Pause(timeout_ms=LONG)), Paused)
        refused = ask(driver, garbage)
        assert isinstance(refused, Refused) and refused.to is None
        assert engine.calls == ["hold"]  # still held, by the same connection
        assert isinstance(ask(driver, Resume()), Resumed)


def test_a_pause_whose_queues_do_not_drain_is_refused(tmp_path: Path, kernel: FakeKernel) -> None:
    engine = Engine(drains=False)  # as FastEngine.hold: timed out, released itself
    running = serve(tmp_path / "vol.ctl", engine, kernel)
    try:
        with running.connect() as driver:
            refused = ask(driver, Pause(timeout_ms=100))
            assert refused == Refused(error="the queues did not drain within 100 ms", to="paused")
            assert isinstance(ask(driver, Resume()), Refused)
            engine.drains = True
            assert isinstance(ask(driver, Pause(timeout_ms=LONG)), Paused)
    finally:
        running.stop()


def test_a_dataplane_that_stops_resumes_first(
    tmp_path: Path, engine: Engine, kernel: FakeKernel
) -> None:
    running = serve(tmp_path / "vol.ctl", engine, kernel)
    with running.connect() as driver:
        assert isinstance(ask(driver, Pause(timeout_ms=LONG)), Paused)
        running.stop()
        assert engine.calls == ["hold", "release"]
        assert driver.recv(control.MAX_MESSAGE) == b""  # hung up


def test_paused_over_the_socket_a_real_device_serves_nothing_until_resumed(
    tmp_path: Path, kernel: FakeKernel
) -> None:
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(1 << 20))
    fd = os.open(backing, os.O_RDWR | os.O_CLOEXEC)
    device = make_device(fd, queues=2)
    running = serve(tmp_path / "vol.ctl", device.engine, kernel)
    try:
        with running.connect() as driver:
            paused = ask(driver, Pause(timeout_ms=LONG))
            assert isinstance(paused, Paused)
            for queue in (0, 1):
                device.drivers[queue].request(Blk.FLUSH)
                device.drivers[queue].kick()
            time.sleep(LOOK)
            assert [d.completions() for d in device.drivers] == [[], []]
            assert isinstance(ask(driver, Resume()), Resumed)
        for queue in (0, 1):
            assert [c.status for c in device.completions(queue)] == [BlkStatus.OK]
    finally:
        running.stop()
        close(device)
        os.close(fd)
