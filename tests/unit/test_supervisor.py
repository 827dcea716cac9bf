"""The supervisor's restart policy: at once after a kill from outside, backing off only for
a dataplane that fails by itself."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.devices import dataplane_process
from csi_vduse.devices.dataplane_process import ProcessId, start_time
from csi_vduse.devices.errors import DataplaneKilledError, DeviceError
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.state import DeviceRecord, DeviceState
from csi_vduse.devices.status import DeviceStatus
from csi_vduse.devices.supervisor import BACKOFF_SECONDS, STABLE_SECONDS, Supervisor


@dataclass
class Machine:
    """Stands in for the device manager: one device whose dataplane lives or not."""

    alive: bool = True
    fail: bool = False
    killed_while_starting: int = 0  # this many revives are killed before they are ready
    ending: int | None = None  # how each dataplane ends, as exit_status tells
    revived_at: list[float] = field(default_factory=list)
    now: float = 0.0
    record: DeviceRecord = field(
        default_factory=lambda: DeviceRecord(
            name="vol-a",
            backing="/pool/a.img",
            size=1 << 20,
            profile=BlkProfile(),
            state=DeviceState.RUNNING,
            pid=os.getpid(),
            pid_start_time=start_time(os.getpid()),
        )
    )

    def list(self) -> list[DeviceStatus]:
        status = DeviceStatus(
            record=self.record, dataplane_running=self.alive, vduse_present=True,
            vdpa_attached=True, block_device="/dev/vda",
        )  # fmt: skip
        return [status]

    def revive(self, name: str) -> ProcessId | None:
        self.revived_at.append(self.now)
        if self.killed_while_starting:
            self.killed_while_starting -= 1
            raise DataplaneKilledError("start dataplane", "the dataplane exited with status -9")
        if self.fail:
            raise DeviceError("restart dataplane", "it would not start")
        self.alive = True
        return None


def supervise(machine: Machine) -> Supervisor:
    return Supervisor(
        cast(DeviceManager, cast(Any, machine)),
        clock=lambda: machine.now,
        exit_status=lambda _process: machine.ending,
    )


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


def test_a_killed_dataplane_is_replaced_at_once_every_time() -> None:
    machine = Machine()
    supervisor = supervise(machine)
    for second in range(0, 20, 2):
        machine.now = float(second)
        supervisor.check()  # alive
        machine.alive = False  # killed, after running for a while
        machine.now += STABLE_SECONDS + 0.5
        supervisor.check()
    assert len(machine.revived_at) == 10
    supervisor.stop()


def test_a_dataplane_that_cannot_start_backs_off() -> None:
    machine = Machine(alive=False, fail=True)
    supervisor = supervise(machine)
    for tick in range(0, 1200):
        machine.now = tick / 10
        supervisor.check()
    gaps = [b - a for a, b in zip(machine.revived_at, machine.revived_at[1:], strict=False)]
    expected = [*BACKOFF_SECONDS[1:], BACKOFF_SECONDS[-1]]
    assert [round(gap) for gap in gaps[: len(expected)]] == [round(s) for s in expected]
    supervisor.stop()


def test_a_crash_loop_backs_off_and_a_stable_run_resets_it() -> None:
    machine = Machine(alive=False, ending=1)
    supervisor = supervise(machine)
    for tick in range(0, 100):  # dies 0.1 s after each start, for 10 s
        machine.now = tick / 10
        supervisor.check()
        machine.alive = False
    # Found dead 0.1 s after each start: waits 1 s, then 2 s, ...
    assert machine.revived_at[:3] == [0.0, 1.1, 3.2]
    machine.alive = True
    machine.now = 100.0
    supervisor.check()
    machine.alive = False
    machine.now = 105.0
    supervisor.check()  # it had been up for a long time: at once
    assert machine.revived_at[-1] == 105.0
    supervisor.stop()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_dataplane_killed_soon_after_each_start_is_replaced_at_once_every_time(
    signum: signal.Signals,
) -> None:
    """Kills from outside are no crash loop, however soon after a start they come."""
    machine = Machine(alive=False, ending=-signum)
    supervisor = supervise(machine)
    for tick in range(0, 100):  # killed 0.1 s after each start, for 10 s
        machine.now = tick / 10
        supervisor.check()
        machine.alive = False
    assert len(machine.revived_at) == 100
    assert set(gaps(machine.revived_at)) == {0.1}
    supervisor.stop()


@pytest.mark.parametrize("ending", [1, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS])
def test_a_dataplane_that_fails_by_itself_soon_after_each_start_backs_off(ending: int) -> None:
    machine = Machine(alive=False, ending=ending)
    supervisor = supervise(machine)
    for tick in range(0, 600):
        machine.now = tick / 10
        supervisor.check()
        machine.alive = False
    # found dead 0.1 s after each start, then waits 0, 1, 2, 5, 10, 30 s
    assert gaps(machine.revived_at)[:5] == [0.1 + s for s in BACKOFF_SECONDS[1:]]
    supervisor.stop()


def test_an_adopted_dataplane_that_died_is_replaced_at_once() -> None:
    """Not our child, so how it ended is unknown: no failure is counted against it."""
    machine = Machine(ending=None)
    supervisor = supervise(machine)
    supervisor.check()
    machine.alive = False
    machine.now = 0.2  # soon after the scan that first saw it
    supervisor.check()
    assert machine.revived_at == [0.2]
    supervisor.stop()


def test_a_replacement_killed_while_starting_is_no_failed_restart() -> None:
    machine = Machine(alive=False, ending=-signal.SIGKILL, killed_while_starting=4)
    supervisor = supervise(machine)
    for tick in range(0, 10):
        machine.now = tick / 10
        supervisor.check()
    assert machine.revived_at[:5] == [0.0, 0.1, 0.2, 0.3, 0.4]  # at once, every time
    assert machine.alive
    # Nor do those count when it then fails by itself: its first failure is retried at once.
    machine.ending = 1
    machine.alive = False
    machine.now = 0.5
    supervisor.check()
    assert machine.revived_at[-1] == 0.5
    supervisor.stop()


def test_an_unrecorded_dataplane_is_found_by_its_device_name() -> None:
    """What a driver killed mid-start leaves: a dataplane no record names."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)",
            "-m", "csi_vduse.dataplane", "--protocol", "5", "--name", "vol-orphan"]  # fmt: skip
    with subprocess.Popen(argv) as orphan:
        try:
            deadline = time.monotonic() + 10
            found = None
            while found is None and time.monotonic() < deadline:
                found = dataplane_process.find("vol-orphan")
            assert found is not None and found.pid == orphan.pid
            assert dataplane_process.find("vol-other") is None
        finally:
            orphan.kill()
