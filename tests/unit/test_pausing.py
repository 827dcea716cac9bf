"""The driver's side of a group pause, against real dataplane control loops (Server.run on
threads, their queues stood in for) listening where the state store says."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from csi_vduse.dataplane import control
from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.interface import DataplaneArgs
from csi_vduse.devices import dataplane_process
from csi_vduse.devices.dataplane_process import ProcessId
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.pausing import PauseError, paused
from csi_vduse.devices.state import DeviceRecord, StateStore
from tests.unit.fake_virtio import FakeKernel
from tests.unit.test_hold import PATIENCE
from tests.unit.test_pause_channel import Dataplane, Engine, serve

NAMES = ("vol-a", "vol-b")
LONG = 60_000


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    made = StateStore(tmp_path / ("state-" + "s" * 100))  # longer than a socket address
    made.devices.mkdir(parents=True)
    return made


@pytest.fixture
def engines() -> dict[str, Engine]:
    return {name: Engine() for name in NAMES}


@pytest.fixture
def dataplanes(store: StateStore, engines: dict[str, Engine]) -> Iterator[dict[str, Dataplane]]:
    with ExitStack() as stack:
        running = {}
        for name in NAMES:
            kernel = FakeKernel()
            stack.callback(kernel.close)
            running[name] = serve(store.control_path(name), engines[name], kernel)
            stack.callback(running[name].stop)
        yield running


def test_every_device_pauses_until_the_block_ends(
    store: StateStore, engines: dict[str, Engine], dataplanes: dict[str, Dataplane]
) -> None:
    with paused(store, NAMES, timeout_ms=LONG) as report:
        assert [engines[name].calls for name in NAMES] == [["hold"], ["hold"]]
        assert report.drain_ms.keys() == set(NAMES)
        assert report.total_ms is None and report.elapsed_ms() >= 0
        assert 0 < report.remaining() <= LONG / 1e3
    assert [engines[name].calls for name in NAMES] == [["hold", "release"]] * 2
    assert report.total_ms is not None and report.paused_ms.keys() == set(NAMES)
    # Measured here from the first pause sent to the last resume acknowledged: it covers
    # each dataplane's own measure (rounded to the millisecond).
    assert all(report.total_ms + 1 >= ms for ms in report.paused_ms.values())


def test_a_pause_that_expired_fails_the_block_and_every_device_resumes(
    store: StateStore, engines: dict[str, Engine], dataplanes: dict[str, Dataplane]
) -> None:
    expired = pytest.raises(PauseError, match="vol-a: resumed by itself")
    with expired as caught, paused(store, NAMES, timeout_ms=50):
        assert engines["vol-a"].released.wait(PATIENCE)  # the deadline passed
    assert caught.value.errno == errno.ETIMEDOUT
    assert [engines[name].calls for name in NAMES] == [["hold", "release"]] * 2


def test_an_error_in_the_block_resumes_every_device_and_propagates(
    store: StateStore, engines: dict[str, Engine], dataplanes: dict[str, Dataplane]
) -> None:
    with pytest.raises(KeyError), paused(store, NAMES, timeout_ms=LONG):
        raise KeyError("snapshot failed")
    assert [engines[name].calls for name in NAMES] == [["hold", "release"]] * 2


def test_a_device_without_a_dataplane_fails_the_pause_before_any_device_pauses(
    store: StateStore, engines: dict[str, Engine], dataplanes: dict[str, Dataplane]
) -> None:
    missing = pytest.raises(PauseError, match="vol-c: no dataplane answers")
    with missing as caught, paused(store, (*NAMES, "vol-c"), timeout_ms=LONG):
        pytest.fail("paused without vol-c")
    assert caught.value.errno == errno.ENOENT
    assert [engines[name].calls for name in NAMES] == [[], []]


def test_a_refused_pause_fails_the_pause_and_resumes_the_others(
    store: StateStore, engines: dict[str, Engine], dataplanes: dict[str, Dataplane]
) -> None:
    with dataplanes["vol-b"].connect() as other:  # someone else pauses vol-b
        other.send(control.encode(control.Pause(timeout_ms=LONG)))
        assert isinstance(control.parse_reply(other.recv(control.MAX_MESSAGE)), control.Paused)
        taken = pytest.raises(PauseError, match="vol-b: another connection holds a pause")
        with taken, paused(store, NAMES, timeout_ms=LONG):
            pytest.fail("paused although vol-b was taken")
        assert engines["vol-a"].released.wait(PATIENCE)  # its connection closed
        assert engines["vol-b"].calls == ["hold"]  # still the other's pause
    assert engines["vol-a"].calls == ["hold", "release"]


def test_a_dataplane_that_dies_during_the_pause_fails_the_block(
    store: StateStore, engines: dict[str, Engine], dataplanes: dict[str, Dataplane]
) -> None:
    gone = pytest.raises(PauseError, match=r"vol-b: the (dataplane hung up|connection broke)")
    with gone, paused(store, NAMES, timeout_ms=LONG):
        dataplanes["vol-b"].stop()
    assert engines["vol-a"].calls == ["hold", "release"]


@pytest.mark.parametrize(
    ("names", "timeout_ms"), [(NAMES, 0), (NAMES, LONG + 1), ((), LONG), (("vol-a",) * 2, LONG)]
)
def test_a_pause_that_makes_no_sense_is_refused_before_anything_happens(
    store: StateStore, engines: dict[str, Engine], dataplanes: dict[str, Dataplane],
    names: tuple[str, ...], timeout_ms: int,
) -> None:  # fmt: skip
    with pytest.raises(PauseError) as caught, paused(store, names, timeout_ms=timeout_ms):
        pytest.fail("paused")
    assert caught.value.errno == errno.EINVAL
    assert [engines[name].calls for name in NAMES] == [[], []]


def test_pauses_of_different_groups_run_side_by_side(
    store: StateStore, engines: dict[str, Engine], dataplanes: dict[str, Dataplane]
) -> None:
    inside = threading.Barrier(2, timeout=PATIENCE)
    failures: list[BaseException] = []

    def pause_one(name: str) -> None:
        try:
            with paused(store, [name], timeout_ms=LONG):
                inside.wait()  # both held at once
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=pause_one, args=(name,)) for name in NAMES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert [engines[name].calls for name in NAMES] == [["hold", "release"]] * 2


def test_each_dataplane_started_gets_a_fresh_control_socket_at_the_devices_path(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager passes the path; the starter binds it anew (a predecessor's socket is
    stale), and the successor's descriptor is the one listening there."""
    started: list[DataplaneArgs] = []

    def start(args: DataplaneArgs, log_file: Path, **_: object) -> ProcessId:
        started.append(args)
        return ProcessId(pid=1, start_time=1)

    monkeypatch.setattr(dataplane_process, "start", start)
    record = DeviceRecord(name="vol-a", backing="/pool/a.img", size=1 << 20, profile=BlkProfile())
    DeviceManager(store)._start_dataplane(record)
    assert started[0].control == store.control_path("vol-a")

    class Node:
        def __init__(self, name: str, nonblocking: bool) -> None:
            self.fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    monkeypatch.setattr(dataplane_process, "DeviceNode", Node)
    backing = store.root / "a.img"
    backing.write_bytes(bytes(4096))
    args = replace(started[0], backing=backing, stats=None, inflight_log=None, qos=None)
    control.listen(args.control or Path()).close()  # the predecessor's, left behind
    with ExitStack() as opened:
        args = dataplane_process._open_files(args, opened)
        assert args.control_fd is not None
        with control.connect(store.control_path("vol-a"), timeout=PATIENCE):
            pass  # reached the new socket, still open in the starter
    with pytest.raises(ConnectionRefusedError):  # the dataplane would hold the only copy
        control.connect(store.control_path("vol-a"), timeout=PATIENCE)
