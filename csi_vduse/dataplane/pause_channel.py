"""The dataplane's end of the control socket (``csi_vduse.dataplane.control``): it pauses
every queue of the device when the driver asks, and never for longer than it asked.

It runs on the server's thread, which it blocks only while the queues drain (at most the
pause's timeout): its epoll set nests in the server's (``fileno``), and ``timeout`` tells
the server when the pause's deadline falls. Under the seccomp filter (fast/sandbox.c) it
needs accept4 on the inherited listening socket and read and write on connections, nothing
more: the listening socket's Python object is made before confinement (CPython asks the
kernel for a wrapped socket's name, which the filter denies), and the connections it
accepts stay bare descriptors for the same reason.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from csi_vduse.dataplane import control
from csi_vduse.dataplane.control import Paused, Refused, Reply, Resumed

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8  # the driver needs one at a time; a few more for its restarts


class Holdable(Protocol):
    """What pauses the device's queues (``FastEngine``)."""

    def hold(self, timeout: float | None = None) -> bool: ...
    def release(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class _Hold:
    connection: int
    since: float  # when the pause arrived
    deadline: float


class PauseChannel:
    def __init__(
        self, listener: socket.socket, engine: Holdable, *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        listener.setblocking(False)
        self.listener = listener
        self.engine = engine
        self.clock = clock
        self.epoll = select.epoll()
        self.epoll.register(listener.fileno(), select.EPOLLIN)
        self._connections: set[int] = set()
        self._hold: _Hold | None = None
        self._expired: dict[int, int] = {}  # connection -> ms its pause lasted, unacknowledged

    @classmethod
    def inherit(cls, fd: int, engine: Holdable) -> PauseChannel:
        """Serve the listening socket the driver passed as ``fd``; call before confinement."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, fileno=fd)
        return cls(listener, engine)

    @property
    def holding(self) -> bool:
        return self._hold is not None

    def fileno(self) -> int:
        """Readable when a connection or a message waits: then call ``handle``."""
        return self.epoll.fileno()

    def timeout(self) -> float | None:
        """Seconds until the pause's deadline, when ``expire`` must run; None: no pause."""
        if self._hold is None:
            return None
        return max(0.0, self._hold.deadline - self.clock())

    def handle(self) -> None:
        """Take new connections, answer what they sent, and end a pause past its time."""
        for fd, _mask in self.epoll.poll(0):
            if fd == self.listener.fileno():
                self._accept()
            elif fd in self._connections:
                self._serve(fd)
        self.expire()

    def expire(self) -> None:
        """End the pause if its deadline passed; its connection learns so at resume."""
        if self._hold is not None and self.clock() >= self._hold.deadline:
            connection = self._hold.connection
            self._expired[connection] = self._end("its deadline passed", warn=True)

    def close(self) -> None:
        if self._hold is not None:
            self._end("the dataplane stops")
        for fd in list(self._connections):
            self._drop(fd)
        self.epoll.close()
        self.listener.close()

    def _accept(self) -> None:
        try:
            # _accept: accept4 alone, where accept() would wrap the result in a socket object.
            fd, _ = self.listener._accept()  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            # The connection stays pending and the socket readable: stop, rather than spin.
            log.error("control socket: cannot accept connections, no more pausing: %s", exc)
            self.epoll.unregister(self.listener.fileno())
            return
        if len(self._connections) >= MAX_CONNECTIONS:
            log.warning("control socket: refused a connection: %d open", len(self._connections))
            os.close(fd)
            return
        # A peer that does not read its replies loses them. (fcntl: os.set_blocking would
        # ioctl, which the filter keeps for the VDUSE device.)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._connections.add(fd)
        self.epoll.register(fd, select.EPOLLIN)

    def _serve(self, fd: int) -> None:
        try:
            data = os.read(fd, control.MAX_MESSAGE + 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        reply = self._answer(fd, data)
        try:
            os.write(fd, control.encode(reply))
        except OSError as exc:
            log.warning("control connection dropped: cannot reply: %s", exc)
            self._drop(fd)

    def _answer(self, fd: int, data: bytes) -> Reply:
        try:
            request = control.parse_request(data)
        except control.ControlError as exc:
            return Refused(error=str(exc))
        if isinstance(request, control.Pause):
            return self._pause(fd, timeout_ms=request.timeout_ms)
        return self._resume(fd)

    def _pause(self, fd: int, *, timeout_ms: int) -> Reply:
        if self._hold is not None:
            holder = "this connection" if self._hold.connection == fd else "another connection"
            return Refused(error=f"{holder} holds a pause already", to="paused")
        self._expired.pop(fd, None)
        since = self.clock()
        if not self.engine.hold(timeout_ms / 1000):
            log.warning("pause refused: the queues did not drain within %d ms", timeout_ms)
            return Refused(error=f"the queues did not drain within {timeout_ms} ms", to="paused")
        drain_ms = round((self.clock() - since) * 1000)
        self._hold = _Hold(connection=fd, since=since, deadline=since + timeout_ms / 1000)
        log.info("paused for the driver: drained in %d ms, resumes within %d ms", drain_ms,
                 timeout_ms)  # fmt: skip
        return Paused(drain_ms=drain_ms)

    def _resume(self, fd: int) -> Reply:
        if self._hold is not None and self._hold.connection == fd:
            return Resumed(paused_ms=self._end("the driver resumed"), expired=False)
        if fd in self._expired:
            return Resumed(paused_ms=self._expired.pop(fd), expired=True)
        return Refused(error="this connection holds no pause", to="resumed")

    def _end(self, why: str, *, warn: bool = False) -> int:
        """Release the pause; the ms it lasted, from its arrival."""
        assert self._hold is not None
        since, self._hold = self._hold.since, None
        self.engine.release()
        paused_ms = round((self.clock() - since) * 1000)
        log.log(logging.WARNING if warn else logging.INFO, "resumed after %d ms: %s",
                paused_ms, why)  # fmt: skip
        return paused_ms

    def _drop(self, fd: int) -> None:
        if self._hold is not None and self._hold.connection == fd:
            self._end("its connection closed", warn=True)
        self._expired.pop(fd, None)
        self._connections.discard(fd)
        self.epoll.unregister(fd)
        os.close(fd)
