"""Keeps every running device served: a dataplane that dies is replaced, with backoff.

The supervisor works from the device records, not from its own children, so after the
driver itself restarts it adopts the dataplanes an earlier instance started: they keep
running (they live in their own session) and are watched through pidfds, which wake
the supervisor the moment one exits. A periodic scan covers devices created since and
pids that could not be watched.

Backoff is for a dataplane that fails by itself: one that exits with an error, cannot
start (an error report, or no readiness in time) or dies of its own fault (SIGSEGV,
SIGABRT, ...; ``dataplane_process.FAULT_SIGNALS``). One killed from outside (SIGKILL,
SIGTERM, ... by an operator, a test or the OOM killer), running or starting, is replaced
at once and does not count: a volume whose dataplanes are killed now and then must not
stall its guest for a growing backoff.

Only a process's parent learns how it ended. The dataplanes this driver started are its
children and tell (``dataplane_process.exit_status``); one it adopted (started by its
previous instance, or by the CLI) does not, and counts as killed: it is replaced at once,
and its replacement is this driver's child, so a dataplane that keeps failing by itself
is seen doing so from its second failure on and backs off from then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from csi_vduse.devices import dataplane_process
from csi_vduse.devices.dataplane_process import ProcessId
from csi_vduse.devices.errors import DataplaneKilledError
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.state import DeviceRecord, DeviceState
from csi_vduse.errors import CsiVduseError

log = logging.getLogger(__name__)

SCAN_SECONDS = 1.0
# The wait before restart n+1 after n failed ones in a row; then the last, forever.
BACKOFF_SECONDS = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
# A dataplane that ran this long before it failed resets the count of failures in a row.
STABLE_SECONDS = 1.0


@dataclass
class _Attempts:
    failures: int = 0  # dataplanes in a row that failed by themselves
    started_at: float = 0.0
    next_at: float | None = None  # when the dead dataplane is due for a restart


class Supervisor:
    def __init__(
        self, manager: DeviceManager, *, scan_seconds: float = SCAN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        exit_status: Callable[[ProcessId], int | None] = dataplane_process.exit_status,
    ) -> None:  # fmt: skip
        self.manager = manager
        self.scan_seconds = scan_seconds
        self.clock = clock
        self.exit_status = exit_status
        self._attempts: dict[str, _Attempts] = {}
        self._watched: dict[ProcessId, int] = {}  # dataplane -> pidfd
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching; the dataplanes themselves keep running."""
        self._stop.set()
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
        for fd in self._watched.values():
            os.close(fd)
        self._watched.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:
                log.exception("supervisor scan failed")
            watched = [*self._watched.values(), self._wake_r]
            select.select(watched, [], [], self._timeout())
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 64)

    def _timeout(self) -> float:
        now = self.clock()
        waits = [a.next_at - now for a in self._attempts.values() if a.next_at is not None]
        return max(0.0, min([self.scan_seconds, *waits]))

    def check(self) -> None:
        """One pass over the devices: restart what is due, watch what runs."""
        now = self.clock()
        alive: set[ProcessId] = set()
        names = set()
        for status in self.manager.list():
            record = status.record
            names.add(record.name)
            if record.state != DeviceState.RUNNING or not status.vduse_present:
                continue
            attempts = self._attempts.setdefault(record.name, _Attempts(started_at=now))
            if status.dataplane_running and record.pid and record.pid_start_time is not None:
                process = ProcessId(pid=record.pid, start_time=record.pid_start_time)
                alive.add(process)
                self._watch(process)
                continue
            if attempts.next_at is None:  # just found dead
                self._found_dead(record, attempts, now)
            if attempts.next_at is not None and now >= attempts.next_at:
                self._revive(record.name, attempts, now)
        for process in set(self._watched) - alive:
            os.close(self._watched.pop(process))
        for name in set(self._attempts) - names:
            del self._attempts[name]

    def _found_dead(self, record: DeviceRecord, attempts: _Attempts, now: float) -> None:
        """Decide when the device's dead dataplane is replaced, by how it ended."""
        name = record.name
        status = None
        if record.pid and record.pid_start_time is not None:
            status = self.exit_status(ProcessId(pid=record.pid, start_time=record.pid_start_time))
        if now - attempts.started_at >= STABLE_SECONDS:
            attempts.failures = 0
        if status is None or dataplane_process.killed_from_outside(status):
            attempts.next_at = now  # killed (or adopted, so not known): no fault of its own
            log.warning("device %s: dataplane %s; replacing it", name, _ending(status))
            return
        attempts.next_at = now + _backoff(attempts.failures)
        attempts.failures += 1
        log.error(
            "device %s: dataplane %s (%d failures in a row); replacing it in %.0f s",
            name, _ending(status), attempts.failures, attempts.next_at - now,
        )  # fmt: skip

    def _revive(self, name: str, attempts: _Attempts, now: float) -> None:
        try:
            process = self.manager.revive(name)
        except DataplaneKilledError as exc:
            attempts.next_at = now  # killed while starting: not a failed restart
            log.warning("device %s: replacement dataplane killed while starting: %s", name, exc)
            return
        except CsiVduseError as exc:
            attempts.failures += 1
            attempts.next_at = now + _backoff(attempts.failures)
            log.error(
                "device %s: dataplane restart failed %d times in a row, next try in %.0f s: %s",
                name, attempts.failures, attempts.next_at - now, exc,
            )  # fmt: skip
            return
        attempts.next_at = None
        attempts.started_at = self.clock()
        if process is not None:
            self._watch(process)

    def _watch(self, process: ProcessId) -> None:
        if process in self._watched:
            return
        try:
            self._watched[process] = os.pidfd_open(process.pid)
        except OSError:
            pass  # gone already, or not visible from here: the scan covers it
        else:
            if not dataplane_process.is_running(process):  # a recycled pid
                os.close(self._watched.pop(process))


def _backoff(failures: int) -> float:
    return BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]


def _ending(status: int | None) -> str:
    if status is None:
        return "ended (not this driver's child: how is not known)"
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"
