"""The serving driver's side of the dataplane launcher (``csi_vduse.dataplane.launcher``).

``serve`` starts one launcher and keeps it: a dataplane that must take a device over after
a crash is then forked from a process whose imports are done, instead of paying for an
interpreter start (most of a takeover's stall in the test VM, see ``bench/takeover.py``).
The launcher starts like a dataplane (``dataplane_process.spawn``: unprivileged, its own
session, the dataplanes' cgroup), so what it forks is confined exactly as before.

Until it reports ready, and whenever it is gone, ``launch`` is simply not offered
(``ready`` is False) and dataplanes start cold; a launcher that died is started again,
after a pause that doubles up to a minute while it keeps dying.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csi_vduse.dataplane import interface

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 10.0
RESTART_PAUSE = (1.0, 60.0)  # first pause before starting a dead launcher again, and cap

# How the launcher's process is made: (argv after the privilege drop, log file, descriptors to
# pass) -> the process. dataplane_process.spawn, or a plain Popen in tests.
Spawner = Callable[[list[str], Path, tuple[int, ...]], "subprocess.Popen[bytes]"]


class LauncherError(Exception):
    """The launcher could not fork a dataplane (the caller starts it cold instead)."""


class Launcher:
    def __init__(self, log_file: Path, spawn: Spawner, command: list[str] | None = None) -> None:
        self.log_file = log_file
        self.spawn = spawn
        self.command = command or ["-m", "csi_vduse.dataplane.launcher"]  # after the interpreter
        self._lock = threading.Lock()  # one request on the socket at a time
        self._state = threading.Condition()
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._replies: dict[int, dict[str, Any]] = {}
        self._exits: dict[int, int] = {}  # pid -> status, for dataplane_process.exit_status
        self._next_id = 1
        self._closing = False
        self._pause = RESTART_PAUSE[0]
        self._restart_at = 0.0

    @property
    def ready(self) -> bool:
        """Whether ``launch`` can be used now; starts the launcher again if it is due."""
        with self._state:
            if self._ready:
                return True
        self._maybe_restart()
        return False

    def start(self) -> Launcher:
        """Start the launcher; it is ready a few seconds later (its imports)."""
        with self._state:
            self._start_locked()
        return self

    def _start_locked(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = [*self.command, "--protocol", str(interface.PROTOCOL_VERSION),
                    "--control-fd", str(theirs.fileno())]  # fmt: skip
            self._process = self.spawn(argv, self.log_file, (theirs.fileno(),))
        except Exception:
            ours.close()
            raise
        finally:
            theirs.close()
        self._socket = ours
        self._ready = False
        threading.Thread(
            target=self._listen, args=(ours, self._process), name="launcher", daemon=True
        ).start()
        log.info("dataplane launcher starting as pid %d", self._process.pid)

    def _maybe_restart(self) -> None:
        with self._state:
            if self._closing or self._socket is not None or time.monotonic() < self._restart_at:
                return
            try:
                self._start_locked()
            except Exception as exc:
                log.warning("cannot start the dataplane launcher: %s", exc)
                self._gone_locked()

    def _gone_locked(self) -> None:
        self._restart_at = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, RESTART_PAUSE[1])

    def _listen(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            try:
                message = json.loads(data)
            except ValueError:
                log.error("unreadable message from the dataplane launcher: %r", data[:200])
                continue
            with self._state:
                if message.get("ready"):
                    self._ready = True
                    self._pause = RESTART_PAUSE[0]
                    log.info("dataplane launcher ready (pid %d)", process.pid)
                elif "exited" in message:
                    self._exits[int(message["exited"])] = int(message["status"])
                elif "launched" in message:
                    self._replies[message["launched"]] = message
                self._state.notify_all()
        with self._state:
            if self._socket is sock:
                self._socket = None
                self._ready = False
                self._gone_locked()
            self._state.notify_all()
        sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5.0)
        if not self._closing:
            log.warning("dataplane launcher pid %d ended (%s)", process.pid, process.returncode)

    def launch(self, argv: list[str], fds: tuple[int, ...], log_fd: int) -> int:
        """Fork a dataplane with ``argv``, holding ``fds`` at the same numbers; its pid."""
        with self._lock:
            with self._state:
                sock = self._socket
                if sock is None or not self._ready:
                    raise LauncherError("the launcher is not ready")
                ident = self._next_id
                self._next_id += 1
            request = {"launch": ident, "argv": argv, "fds": list(fds)}
            try:
                socket.send_fds(sock, [json.dumps(request).encode()], [log_fd, *fds])
            except OSError as exc:
                raise LauncherError(f"cannot reach the launcher: {exc}") from exc
            deadline = time.monotonic() + REPLY_TIMEOUT
            with self._state:
                while ident not in self._replies:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._socket is not sock:
                        raise LauncherError("the launcher did not answer")
                    self._state.wait(left)
                reply = self._replies.pop(ident)
        if "pid" not in reply:
            raise LauncherError(str(reply.get("error", "no pid in the launcher's reply")))
        return int(reply["pid"])

    def exit_status(self, pid: int) -> int | None:
        """How a dataplane this launcher forked ended (Popen-style), once it has."""
        with self._state:
            return self._exits.get(pid)

    def forget(self, pid: int) -> None:
        with self._state:
            self._exits.pop(pid, None)

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self._state:
            while pid not in self._exits:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._state.wait(left)
            return self._exits[pid]

    def close(self) -> None:
        """Stop the launcher (closing its socket); what it launched keeps running."""
        with self._state:
            self._closing = True
            sock, process = self._socket, self._process
            self._socket = None
            self._ready = False
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5.0)
            if process.poll() is None:
                process.kill()
                process.wait()


def wanted() -> bool:
    """``CSI_VDUSE_DATAPLANE_LAUNCHER=off`` starts every dataplane cold (debugging)."""
    return os.environ.get("CSI_VDUSE_DATAPLANE_LAUNCHER", "on") != "off"
