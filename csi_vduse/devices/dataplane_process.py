"""Starting, finding and stopping a device's dataplane process.

The dataplane runs in its own session so it outlives the command that created
it; it is identified by pid plus start time, so a recycled pid is never signalled.

It runs unprivileged: this module opens the files it needs (the device node, the
backing, its counters, its in-flight log, its I/O limits) and binds its control socket,
and util-linux's ``setpriv`` execs it as ``dataplane_user()`` with no supplementary
groups, no capabilities (none inheritable, an empty bounding set) and no-new-privileges,
holding those descriptors and nothing else it could not open as that user. (Not Popen's
own ``user=``: that makes Python fork instead of vfork, and gRPC's fork handlers crash the
child of a serving driver.)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from csi_vduse.dataplane import control, inflight_log, qos, stats
from csi_vduse.dataplane.interface import CHILD_COMM, DataplaneArgs, open_flags, parse_ready
from csi_vduse.devices.errors import DataplaneKilledError, DeviceError, RbdImageError
from csi_vduse.devices.launcher import Launcher, LauncherError
from csi_vduse.vduse.node import DEVICE_DIR, DeviceNode

log = logging.getLogger(__name__)

READY_TIMEOUT = 15.0
# An RBD dataplane first reaches the monitors (RbdSource.connect_timeout, 30 s at most) and
# then takes the image's lock; a holder that died with its node keeps the lock until the
# OSDs drop its watch (osd_client_watch_timeout, 30 s), after which librbd breaks it.
RBD_READY_TIMEOUT = 75.0
STOP_TIMEOUT = 10.0
NOBODY = "65534:65534"

# Dataplanes starting together share the CPUs: past a few, every one of them needs longer
# than READY_TIMEOUT and they all fail at once. One start per CPU at a time; the others wait.
# A start that says it now waits on Ceph (a dead node's lock can take most of a minute)
# gives its slot back, so the volumes of a lost node move over side by side.
_STARTING = threading.BoundedSemaphore(len(os.sched_getaffinity(0)))


class _Slot:
    """One of the ``_STARTING`` slots, taken at once and given back once."""

    def __init__(self) -> None:
        _STARTING.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            _STARTING.release()


# The signals a process gets from its own faults, or abort(); any other that ends a dataplane
# was sent from outside: SIGKILL or SIGTERM by an operator or a test, the OOM killer, ...
FAULT_SIGNALS = frozenset(
    {
        signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGSEGV,
        signal.SIGSYS, signal.SIGTRAP, signal.SIGXCPU, signal.SIGXFSZ,
    }
)  # fmt: skip


def dataplane_user() -> tuple[int, int] | None:
    """uid:gid the dataplane runs as: ``CSI_VDUSE_DATAPLANE_USER``, else nobody when we are
    root; None (our own) when we are not root or it is set to ``inherit``."""
    value = os.environ.get("CSI_VDUSE_DATAPLANE_USER") or NOBODY
    if value == "inherit" or os.geteuid() != 0:
        return None
    uid, _, gid = value.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise DeviceError(
            "start dataplane", f"CSI_VDUSE_DATAPLANE_USER={value!r} is not uid:gid", errno.EINVAL
        ) from None


def direct_io_wanted() -> bool:
    """Whether dataplanes get their backing with O_DIRECT as well (they use it where the
    kernel serves it asynchronously); ``CSI_VDUSE_DIRECT_IO=off`` keeps to the page cache."""
    return os.environ.get("CSI_VDUSE_DIRECT_IO", "auto") != "off"


@dataclass(frozen=True, kw_only=True)
class ProcessId:
    pid: int
    start_time: int
    # What its readiness report said of an RBD image's lock: not part of its identity.
    rbd_client: str | None = field(default=None, compare=False)


class Child(Protocol):
    """A started dataplane as its starter sees it: a Popen, or a LaunchedProcess."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class LaunchedProcess:
    """A dataplane the launcher forked: its parent, the launcher, reports how it ended."""

    def __init__(self, launcher: Launcher, pid: int) -> None:
        self.launcher = launcher
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.launcher.exit_status(self.pid)
            if self.returncode is not None:
                self.launcher.forget(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.poll() is None:
            status = self.launcher.wait_exit(self.pid, 1e9 if timeout is None else timeout)
            if status is None:
                raise subprocess.TimeoutExpired(f"dataplane pid {self.pid}", timeout or 0.0)
            self.poll()
        assert self.returncode is not None
        return self.returncode


# The dataplanes this process started, until their exit status is collected: kept here (not
# left to subprocess, which reaps a dropped Popen's child on the next spawn and loses its
# status) so the supervisor can learn how each one ended.
_children: dict[ProcessId, Child] = {}
_children_lock = threading.Lock()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


# How a dataplane's command line starts: ``python -m csi_vduse.dataplane --protocol ...``, and
# before the dataplane became a subpackage ``-m dataplane``, which an upgraded driver may
# still find running. A launcher's children carry the launcher's command line.
COLD = ([b"-m", b"csi_vduse.dataplane", b"--protocol"], [b"-m", b"dataplane", b"--protocol"])
LAUNCHED = [b"-m", b"csi_vduse.dataplane.launcher"]


def pids_of(name: str) -> list[int]:
    """Processes running a dataplane for device ``name``: started cold, their command line
    names it; forked by the launcher (whose command line they carry), they hold its node."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if _contains(argv, LAUNCHED):
            if _is_launched_dataplane_of(entry, name):
                pids.append(int(entry.name))
            continue
        at = next((i for i in range(len(argv)) if argv[i : i + 3] in COLD), None)
        if at is None or b"--name" not in argv[at:]:
            continue
        if argv[argv.index(b"--name", at) + 1 :][:1] == [name.encode()]:
            pids.append(int(entry.name))
    return pids


def _contains(argv: list[bytes], part: list[bytes]) -> bool:
    return any(argv[i : i + len(part)] == part for i in range(len(argv)))


def _is_launched_dataplane_of(proc: Path, name: str) -> bool:
    node = str(DEVICE_DIR / name)
    try:
        if (proc / "comm").read_text().strip() != CHILD_COMM:
            return False  # the launcher itself, which holds a node only while it forks
        return any(os.readlink(fd) == node for fd in (proc / "fd").iterdir())
    except OSError:
        return False


def find(name: str) -> ProcessId | None:
    """A running dataplane of device ``name`` that no record names: one whose starter died
    before it could record it, which still holds the device node."""
    for pid in pids_of(name):
        process = ProcessId(pid=pid, start_time=start_time(pid) or 0)
        if is_running(process):
            return process
    return None


def is_running(process: ProcessId) -> bool:
    if start_time(process.pid) != process.start_time:
        return False
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # an unreaped zombie has already let go of everything


def _open_files(args: DataplaneArgs, opened: ExitStack) -> DataplaneArgs:
    """Open what the dataplane needs; ``opened`` closes our copies."""

    def keep(fd: int) -> int:
        opened.callback(os.close, fd)
        return fd

    node = DeviceNode(args.name, nonblocking=True)
    args = replace(args, device_fd=keep(node.fd))
    if args.rbd is not None:
        return _open_state_files(replace(args, rbd_fd=keep(args.rbd.to_fd())), keep)
    try:
        backing_fd = keep(os.open(args.backing, open_flags(args.profile.readonly)))
    except OSError as exc:
        raise DeviceError("open backing", f"{args.backing}: {exc.strerror}", exc.errno) from exc
    args = replace(args, backing_fd=backing_fd)
    if direct_io_wanted():
        with contextlib.suppress(OSError):  # a filesystem without O_DIRECT: buffered only
            flags = open_flags(args.profile.readonly) | os.O_DIRECT
            args = replace(args, direct_fd=keep(os.open(args.backing, flags)))
    return _open_state_files(args, keep)


def _open_state_files(args: DataplaneArgs, keep: Callable[[int], int]) -> DataplaneArgs:
    """The files every dataplane gets beside its device and backing."""
    if args.stats is not None:
        args = replace(args, stats_fd=keep(stats.create(args.stats, args.profile.queues)))
    if args.inflight_log is not None:
        args = replace(args, inflight_fd=keep(inflight_log.open_file(args.inflight_log)))
    if args.qos is not None:
        args = replace(args, qos_fd=keep(qos.open_page(args.qos)))
    if args.control is not None:  # a fresh socket: a successor listens at the same path
        args = replace(args, control_fd=keep(control.listen(args.control).detach()))
    return args


def start(
    args: DataplaneArgs, log_file: Path, *, cgroup: Path | None = None,
    launcher: Launcher | None = None,
) -> ProcessId:  # fmt: skip
    """Spawn the dataplane and wait until it reports that it answers device messages.

    ``cgroup`` (a cgroup v2 directory) takes it out of the caller's cgroup: a container
    runtime stopping the driver's container kills every process in that container's
    cgroup, and the dataplane must outlive the driver. A ready ``launcher`` forks it with
    its imports done (it is in that cgroup already); otherwise it starts cold.
    """
    slot = _Slot()
    try:
        return _start(args, log_file, cgroup=cgroup, launcher=launcher, off_cpu=slot.release)
    finally:
        slot.release()


def spawn(
    argv: list[str], log_file: Path, fds: tuple[int, ...], *, cgroup: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run ``argv`` (a Python module's arguments: ``-m ...``) the way dataplanes run: as
    ``dataplane_user()`` with nothing more, in its own session, in ``cgroup``, output
    appended to ``log_file``, holding ``fds``."""
    command = _command(dataplane_user(), argv)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_file, "ab") as log_out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_out,
                stderr=log_out,
                cwd="/",
                start_new_session=True,
                pass_fds=fds,
            )
    except OSError as exc:
        raise DeviceError("start dataplane", f"cannot run {command[0]}: {exc}", exc.errno) from exc
    if cgroup is not None:
        _move_to_cgroup(proc.pid, cgroup)
    return proc


def killed_from_outside(returncode: int | None) -> bool:
    """Whether a Popen-style exit status is a kill by a signal not of the process's own
    making (see FAULT_SIGNALS); False for an exit, a fault, or an unknown status."""
    return returncode is not None and returncode < 0 and -returncode not in FAULT_SIGNALS


def exit_status(process: ProcessId) -> int | None:
    """How a dataplane this process started ended, Popen-style (negative: killed by that
    signal); None while it runs, or when it is not our child (started by the driver's
    previous instance, or by the CLI): no one but its parent can learn that."""
    with _children_lock:
        proc = _children.get(process)
        if proc is None:
            return None
        returncode = proc.poll()
        if returncode is not None:
            del _children[process]
        return returncode


def _start(
    args: DataplaneArgs, log_file: Path, *, cgroup: Path | None, launcher: Launcher | None,
    off_cpu: Callable[[], None],
) -> ProcessId:  # fmt: skip
    log_file.parent.mkdir(parents=True, exist_ok=True)
    timeout = READY_TIMEOUT if args.rbd is None else RBD_READY_TIMEOUT
    with ExitStack() as opened:
        args = _open_files(args, opened)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        opened.callback(os.close, ready_w)
        args = replace(args, ready_fd=ready_w)
        try:
            proc = _launch(args, log_file, cgroup=cgroup, launcher=launcher)
        except DeviceError:
            os.close(ready_r)
            raise
    try:
        line = await_report(ready_r, timeout, off_cpu=off_cpu)
    finally:
        os.close(ready_r)
    report = parse_ready(line) if line else None
    client = report.get("rbd_client") if report else None
    identity = ProcessId(
        pid=proc.pid, start_time=start_time(proc.pid) or 0,
        rbd_client=client if isinstance(client, str) else None,
    )  # fmt: skip
    if report is None or not report.get("ready"):
        # The pipe closes as the process exits, a moment before it can be waited for.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
        silent = proc.returncode is None  # still running: it missed the deadline
        stop(identity)
        proc.wait()
        reason = (
            report["error"]
            if report
            else _describe_exit(proc, log_file, silent=silent, timeout=timeout)
        )
        if not report and not silent and killed_from_outside(proc.returncode):
            raise DataplaneKilledError("start dataplane", str(reason), errno.EINTR)
        code = report.get("errno") if report else None
        if args.rbd is not None and isinstance(code, int) and code:
            # What Ceph said (EBUSY: another client holds the image's lock).
            raise RbdImageError("start dataplane", str(reason), code)
        raise DeviceError("start dataplane", str(reason), errno.EIO)
    with _children_lock:
        _children[identity] = proc
    log.info("dataplane for %s running as pid %d", args.name, proc.pid)
    return identity


def start_launcher(log_file: Path, cgroup: Path | None = None) -> Launcher:
    """A dataplane launcher (``csi_vduse.devices.launcher``), run the way dataplanes run."""

    def spawn_in_cgroup(
        argv: list[str], log: Path, fds: tuple[int, ...]
    ) -> subprocess.Popen[bytes]:
        return spawn(argv, log, fds, cgroup=cgroup)

    return Launcher(log_file, spawn_in_cgroup).start()


def _command(user: tuple[int, int] | None, argv: list[str]) -> list[str]:
    return [*_drop_to(user), sys.executable, *argv]


def _launch(
    args: DataplaneArgs, log_file: Path, *, cgroup: Path | None, launcher: Launcher | None
) -> Child:
    """Forked by the launcher when it is ready, else started cold."""
    if launcher is not None and launcher.ready:
        try:
            with open(log_file, "ab") as log_out:
                pid = launcher.launch(args.argv(), args.fds(), log_out.fileno())
            return LaunchedProcess(launcher, pid)
        except (LauncherError, OSError) as exc:
            log.warning("dataplane for %s starts cold: %s", args.name, exc)
    return spawn(_module_argv(args), log_file, args.fds(), cgroup=cgroup)


def _module_argv(args: DataplaneArgs) -> list[str]:
    return ["-m", "csi_vduse.dataplane", *args.argv()]


def _drop_to(user: tuple[int, int] | None) -> list[str]:
    """The command prefix that runs the rest as ``user`` with nothing more."""
    if user is None:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise DeviceError(
            "start dataplane",
            "setpriv (util-linux) is needed to run dataplanes unprivileged; "
            "CSI_VDUSE_DATAPLANE_USER=inherit runs them as this user instead",
            errno.ENOENT,
        )
    return [
        setpriv, f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
    ]  # fmt: skip


def _move_to_cgroup(pid: int, cgroup: Path) -> None:
    try:
        cgroup.mkdir(parents=True, exist_ok=True)
        (cgroup / "cgroup.procs").write_text(f"{pid}\n")
    except OSError as exc:
        log.error(
            "dataplane pid %d stays in the driver's cgroup (it will not survive the driver's "
            "container): cannot join %s: %s", pid, cgroup, exc.strerror or exc,
        )  # fmt: skip


def await_report(fd: int, timeout: float, *, off_cpu: Callable[[], None]) -> bytes:
    """The readiness line written to ``fd`` within ``timeout`` seconds (what came of it, or
    b"", when none did); ``off_cpu`` is called for a waiting line before it."""
    for line in _read_lines(fd, time.monotonic() + timeout):
        if parse_ready(line).get("waiting") is not None:
            off_cpu()
            continue
        return line
    return b""


def _read_lines(fd: int, deadline: float) -> Iterator[bytes]:
    """The lines written to ``fd`` until its end or ``deadline``; a last unfinished one too."""
    data = b""
    while True:
        while b"\n" in data:
            line, data = data.split(b"\n", 1)
            yield line + b"\n"
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    if data:
        yield data


def _describe_exit(proc: Child, log_file: Path, *, silent: bool, timeout: float) -> str:
    tail = (
        log_file.read_text(errors="replace").strip().splitlines()[-5:] if log_file.exists() else []
    )
    state = (
        f"did not report readiness within {timeout:.0f} s"
        if silent
        else f"exited with status {proc.poll()}"
    )
    return f"the dataplane {state}" + (": " + " | ".join(tail) if tail else "")


def stop(process: ProcessId, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; returns once the process is gone."""
    _stop(process, timeout)
    with _children_lock:  # stopped on purpose: how it ended is of no interest
        proc = _children.pop(process, None)
    if proc is not None:
        proc.poll()


def _stop(process: ProcessId, timeout: float) -> None:
    for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not is_running(process):
            return
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            reap(process.pid)
            if not is_running(process):
                return
            time.sleep(0.02)
    raise DeviceError("stop dataplane", f"pid {process.pid} survived SIGKILL", errno.EBUSY)


def announce_growth(process: ProcessId) -> None:
    """Tell a running dataplane its backing grew (SIGHUP, see dataplane.interface)."""
    if not is_running(process):
        raise DeviceError(
            "resize device", f"dataplane pid {process.pid} is not running", errno.ESRCH
        )
    try:
        os.kill(process.pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise DeviceError(
            "resize device", f"dataplane pid {process.pid} is gone", errno.ESRCH
        ) from exc


def reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie (a dataplane's
    is kept for ``exit_status``)."""
    with _children_lock:
        procs = [proc for process, proc in _children.items() if process.pid == pid]
    if procs:
        procs[0].poll()
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
