"""Starting dataplanes: a burst shares the CPUs in turn; the starter learns how each ended."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from csi_vduse.ceph.target import RbdTarget
from csi_vduse.dataplane.__main__ import log_start_up
from csi_vduse.dataplane.interface import PROTOCOL_VERSION, DataplaneArgs
from csi_vduse.devices import dataplane_process
from csi_vduse.devices.dataplane_process import ProcessId
from csi_vduse.devices.errors import DataplaneKilledError, DeviceError, RbdImageError


def test_no_more_dataplanes_start_at_once_than_there_are_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = peak = 0
    lock = threading.Lock()

    def one_start(
        args: DataplaneArgs, log_file: Path, cgroup: Path | None, launcher: object,
        off_cpu: object,
    ) -> ProcessId:  # fmt: skip
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return ProcessId(pid=1, start_time=1)

    monkeypatch.setattr(dataplane_process, "_start", one_start)
    cpus = len(os.sched_getaffinity(0))
    burst = 4 * cpus + 4
    with ThreadPoolExecutor(max_workers=burst) as workers:
        started = [
            workers.submit(dataplane_process.start, None, Path("log"))  # type: ignore[arg-type]
            for _ in range(burst)
        ]
    assert [f.result() for f in started] == [ProcessId(pid=1, start_time=1)] * burst
    assert peak == cpus


def test_starts_waiting_on_ceph_give_their_cpu_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lost node's RBD volumes move over side by side: a start that says it waits on Ceph
    (a dead holder's lock, up to a minute) no longer holds one of the CPUs' slots."""
    waiting = peak = 0
    lock = threading.Lock()
    cpus = len(os.sched_getaffinity(0))
    burst = 2 * cpus + 2
    all_waiting = threading.Event()

    def one_start(
        args: DataplaneArgs, log_file: Path, cgroup: Path | None, launcher: object,
        off_cpu: Callable[[], None],
    ) -> ProcessId:  # fmt: skip
        nonlocal waiting, peak
        off_cpu()
        off_cpu()  # once is enough: the slot is not given back twice
        with lock:
            waiting += 1
            peak = max(peak, waiting)
            if waiting == burst:
                all_waiting.set()
        all_waiting.wait(timeout=30)  # the lock breaks for all of them at once
        return ProcessId(pid=1, start_time=1)

    monkeypatch.setattr(dataplane_process, "_start", one_start)
    with ThreadPoolExecutor(max_workers=burst) as workers:
        started = [
            workers.submit(dataplane_process.start, None, Path("log"))  # type: ignore[arg-type]
            for _ in range(burst)
        ]
    assert [f.result() for f in started] == [ProcessId(pid=1, start_time=1)] * burst
    assert peak == burst
    # Every slot came back: a full set can be taken again without waiting.
    taken = [dataplane_process._STARTING.acquire(blocking=False) for _ in range(cpus)]
    for _ in range(sum(taken)):
        dataplane_process._STARTING.release()
    assert all(taken)


def test_the_readiness_line_is_read_past_a_waiting_line() -> None:
    waiting = b'{"protocol": %d, "waiting": "ceph"}\n' % PROTOCOL_VERSION
    ready = b'{"protocol": %d, "ready": true}\n' % PROTOCOL_VERSION
    calls = []
    r, w = os.pipe()
    try:
        os.write(w, waiting + ready)  # in one read
        line = dataplane_process.await_report(r, 5, off_cpu=lambda: calls.append(1))
        assert line == ready and calls == [1]
        os.write(w, waiting + ready[:10])
        os.close(w)
        w = -1
        # What came of it, for the error to quote.
        assert dataplane_process.await_report(r, 5, off_cpu=lambda: calls.append(2)) == ready[:10]
        assert calls == [1, 2]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# Stand-ins for ``python -m dataplane``: the ready fd is the last argument.
READY_THEN_SLEEP = (
    "import os, sys, time; fd = int(sys.argv[-1]); "
    'os.write(fd, b\'{"protocol": %d, "ready": true}\\n\'); os.close(fd); time.sleep(60)'
)
KILLED_BEFORE_READY = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
FAILS_BEFORE_READY = "import sys; sys.exit(3)"


def stand_in(monkeypatch: pytest.MonkeyPatch, code: str) -> None:

    def command(user: object, argv: list[str]) -> list[str]:
        return [sys.executable, "-c", code.replace("%d", str(PROTOCOL_VERSION)), argv[-1]]

    def open_files(args: DataplaneArgs, opened: object) -> DataplaneArgs:
        return args

    monkeypatch.setattr(dataplane_process, "_command", command)
    monkeypatch.setattr(dataplane_process, "_module_argv", lambda args: [str(args.ready_fd)])
    monkeypatch.setattr(dataplane_process, "_open_files", open_files)


def test_how_a_started_dataplane_ended_is_known_to_its_starter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stand_in(monkeypatch, READY_THEN_SLEEP)
    process = dataplane_process.start(
        DataplaneArgs(name="vol-x", backing=tmp_path / "b"), tmp_path / "log"
    )
    assert dataplane_process.exit_status(process) is None  # running
    os.kill(process.pid, signal.SIGKILL)
    while dataplane_process.is_running(process):
        dataplane_process.reap(process.pid)
    subprocess.run(["true"], check=True)  # subprocess reaps dropped children on a spawn
    assert dataplane_process.exit_status(process) == -signal.SIGKILL
    assert dataplane_process.killed_from_outside(-signal.SIGKILL)
    assert not dataplane_process.killed_from_outside(-signal.SIGSEGV)
    assert not dataplane_process.killed_from_outside(1)


def test_a_dataplane_killed_while_starting_is_told_from_one_that_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stand_in(monkeypatch, KILLED_BEFORE_READY)
    with pytest.raises(DataplaneKilledError, match="status -9"):
        dataplane_process.start(
            DataplaneArgs(name="vol-x", backing=tmp_path / "b"), tmp_path / "log"
        )
    stand_in(monkeypatch, FAILS_BEFORE_READY)
    with pytest.raises(DeviceError) as failed:
        dataplane_process.start(
            DataplaneArgs(name="vol-x", backing=tmp_path / "b"), tmp_path / "log"
        )
    assert not isinstance(failed.value, DataplaneKilledError)


def test_the_dataplane_logs_its_start_up_phases_on_the_monotonic_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """bench/takeover.py lines these stamps up with the kill that made the takeover."""
    caplog.set_level("INFO", logger="dataplane")
    log_start_up(started=10.0, imported=10.25, set_up=10.5, resumed=10.625, ready=11.0)
    [line] = [r.getMessage() for r in caplog.records if "start-up" in r.getMessage()]
    assert "imports 250 ms, set-up 250 ms, resume 125 ms, to ready 375 ms" in line
    assert (
        "CLOCK_MONOTONIC started=10.000000 imported=10.250000 set_up=10.500000 "
        "resumed=10.625000 ready=11.000000" in line
    )


REFUSED_BEFORE_READY = (
    "import os, sys; fd = int(sys.argv[-1]); "
    'os.write(fd, b\'{"protocol": %d, "ready": false, "errno": 16, '
    '"error": "lock RBD image: the RBD image is in use"}\\n\'); sys.exit(1)'
)


def test_what_ceph_said_stopping_an_rbd_dataplane_reaches_its_starter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The readiness report's errno becomes an RbdImageError's (EBUSY: the gRPC edge's
    FAILED_PRECONDITION); a file dataplane's failure stays an EIO DeviceError."""
    stand_in(monkeypatch, REFUSED_BEFORE_READY)
    image = RbdTarget(pool="rbd", image="csi-vol-1")
    with pytest.raises(RbdImageError, match="in use") as refused:
        dataplane_process.start(
            DataplaneArgs(name="rbd-x", backing=Path("rbd:rbd/csi-vol-1"), rbd=image),
            tmp_path / "log",
        )
    assert refused.value.errno == errno.EBUSY
    with pytest.raises(DeviceError) as failed:
        dataplane_process.start(
            DataplaneArgs(name="vol-x", backing=tmp_path / "b"), tmp_path / "log"
        )
    assert not isinstance(failed.value, RbdImageError) and failed.value.errno == errno.EIO
