"""The dataplane launcher: dataplanes forked with their imports done, as a takeover wants.

A real launcher process (``csi_vduse.dataplane.launcher.serve``) runs a stand-in dataplane
(``tests/unit/launcher_standin.py``), driven through the driver's side
(``csi_vduse.devices.launcher``) and ``dataplane_process.start``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from csi_vduse.dataplane.interface import DataplaneArgs, parse_ready
from csi_vduse.devices import dataplane_process
from csi_vduse.devices.dataplane_process import ProcessId
from csi_vduse.devices.errors import DataplaneKilledError
from csi_vduse.devices.launcher import Launcher

ROOT = Path(__file__).resolve().parents[2]


def spawn(argv: list[str], log_file: Path, fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    with open(log_file, "ab") as log_out:
        return subprocess.Popen(
            [sys.executable, *argv], stdin=subprocess.DEVNULL, stdout=log_out, stderr=log_out,
            pass_fds=fds, start_new_session=True,
        )  # fmt: skip


def wait_for(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout:.0f} s")
        time.sleep(0.02)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    made = Launcher(tmp_path / "launcher.log", spawn, ["-m", "tests.unit.launcher_standin"])
    made.start()
    wait_for(lambda: made.ready, "ready")
    yield made
    made.close()


def ready_line(fd: int) -> dict[str, object]:
    with os.fdopen(fd, "rb") as pipe:
        return parse_ready(pipe.readline())


def test_a_launched_dataplane_holds_its_descriptors_at_the_numbers_its_argv_names(
    launcher: Launcher, tmp_path: Path
) -> None:
    files = [tmp_path / "device", tmp_path / "backing"]
    for path in files:
        path.write_bytes(b"")
    held = [os.open(path, os.O_RDONLY) for path in files]
    ready_r, ready_w = os.pipe()
    argv = ["--name", "show-fds", "--hold", str(held[0]), "--hold", str(held[1]),
            "--ready-fd", str(ready_w)]  # fmt: skip
    with open(tmp_path / "vol.log", "ab") as log_out:
        pid = launcher.launch(argv, (*held, ready_w), log_out.fileno())
    for fd in (*held, ready_w):
        os.close(fd)
    report = ready_line(ready_r)
    assert json.loads(str(report["error"])) == {
        str(fd): str(p) for fd, p in zip(held, files, strict=True)
    }
    assert launcher.wait_exit(pid, 30) == 0
    # Its own log lines, in its own format, not the launcher's.
    assert "stand-in[dataplane] show-fds running" in (tmp_path / "vol.log").read_text()


@pytest.mark.parametrize(("name", "status"), [("exit-3", 3), ("killed", -signal.SIGKILL)])
def test_how_a_launched_dataplane_ended_is_reported_by_the_launcher(
    launcher: Launcher, tmp_path: Path, name: str, status: int
) -> None:
    ready_r, ready_w = os.pipe()
    with open(tmp_path / "vol.log", "ab") as log_out:
        pid = launcher.launch(["--name", name, "--ready-fd", str(ready_w)], (ready_w,),
                              log_out.fileno())  # fmt: skip
    os.close(ready_w)
    assert ready_line(ready_r)["ready"] is False  # the pipe closed unanswered
    assert launcher.wait_exit(pid, 30) == status


def open_stand_ins(args: DataplaneArgs, opened: object) -> DataplaneArgs:
    """What _open_files would pass, minus the device: descriptors the stand-in ignores."""
    return replace(args, device_fd=os.open("/dev/null", os.O_RDONLY),
                   backing_fd=os.open("/dev/null", os.O_RDONLY))  # fmt: skip


def test_start_forks_from_the_launcher_and_learns_how_the_dataplane_ended(
    launcher: Launcher, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dataplane_process, "_open_files", open_stand_ins)
    args = DataplaneArgs(name="ready-then-sleep", backing=tmp_path / "backing")
    process = dataplane_process.start(args, tmp_path / "vol.log", launcher=launcher)
    parent = int(Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent != os.getpid()  # forked by the launcher, not spawned by us
    assert dataplane_process.exit_status(process) is None
    os.kill(process.pid, signal.SIGKILL)
    wait_for(lambda: dataplane_process.exit_status(process) is not None, "reported")
    assert not dataplane_process.is_running(process)
    with pytest.raises(DataplaneKilledError):
        dataplane_process.start(DataplaneArgs(name="killed", backing=tmp_path / "b"),
                                tmp_path / "vol.log", launcher=launcher)  # fmt: skip


def test_without_a_launcher_dataplanes_start_cold_until_it_is_back(
    launcher: Launcher, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dataplane_process, "_open_files", open_stand_ins)
    process = launcher._process
    assert process is not None
    process.kill()
    wait_for(lambda: not launcher.ready and launcher._socket is None, "seen gone")
    # Cold: a process of our own, the stand-in run as a module by the same arguments.
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        "from tests.unit.launcher_standin import stand_in; sys.exit(stand_in(sys.argv[1:]))"
    )
    monkeypatch.setattr(dataplane_process, "_command",
                        lambda user, argv: [sys.executable, "-c", code, *argv[2:]])  # fmt: skip
    cold = dataplane_process.start(
        DataplaneArgs(name="ready-then-sleep", backing=tmp_path / "b"),
        tmp_path / "vol.log",
        launcher=launcher,
    )
    assert int(Path(f"/proc/{cold.pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == (
        os.getpid()
    )
    dataplane_process.stop(cold)
    wait_for(lambda: launcher.ready, "back")  # started again on demand, after a pause
    assert launcher._process is not process


def test_the_launcher_goes_with_the_driver_and_its_dataplanes_stay(
    launcher: Launcher, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dataplane_process, "_open_files", open_stand_ins)
    process = dataplane_process.start(
        DataplaneArgs(name="ready-then-sleep", backing=tmp_path / "b"),
        tmp_path / "vol.log",
        launcher=launcher,
    )
    own = launcher._process
    assert own is not None
    launcher.close()
    assert own.poll() is not None  # it ended by itself once its socket closed
    assert dataplane_process.is_running(ProcessId(pid=process.pid, start_time=process.start_time))
    os.kill(process.pid, signal.SIGKILL)
