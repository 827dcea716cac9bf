"""Pausing the I/O of several devices at once, for a crash-consistent group snapshot.

``paused(store, names, timeout_ms=T)`` connects to each device's dataplane through its
control socket (``csi_vduse.dataplane.control``), sends every pause before it waits for any
reply, so the devices pause together, and yields once all of them are paused: what they had
in flight has completed, and new requests wait in their rings. On exit it resumes them all
and raises ``PauseError`` if any pause did not hold throughout (its dataplane had resumed by
itself at its deadline, or the connection broke): what the caller did meanwhile, a snapshot
of the backings, cannot count on the pause and must be thrown away.

T bounds the pause: each dataplane resumes by itself T ms after the pause reached it, and
gives up waiting for its queues to drain then. This side waits ``GRACE`` longer for the
replies, so that the dataplanes' deadlines decide, and ``PauseReport.remaining`` tells the
caller how much of T is left for its work. A pause that fails closes every connection,
which resumes the devices that did pause.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from csi_vduse.dataplane import control
from csi_vduse.dataplane.control import ControlError, Paused, Reply, Resumed
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.spec import validate_name
from csi_vduse.devices.state import StateStore

log = logging.getLogger(__name__)

GRACE = 5.0  # seconds this side waits for a pause's reply past its timeout
RESUME_TIMEOUT = 10.0  # seconds for the resume replies: the dataplanes answer at once


class PauseError(DeviceError):
    """Devices could not be paused, or not for all the time their pause was relied on."""


@dataclass(kw_only=True)
class PauseReport:
    """A group pause as measured here: from the first pause sent to the last resume
    acknowledged (CLOCK_MONOTONIC), with what each dataplane reported."""

    names: tuple[str, ...]
    timeout_ms: int
    started: float
    drain_ms: dict[str, int] = field(default_factory=dict)  # what each pause waited for
    paused_ms: dict[str, int] = field(default_factory=dict)  # each one's, once resumed
    ended: float | None = None

    def elapsed_ms(self) -> float:
        """The pause so far; its total once it ended."""
        end = time.monotonic() if self.ended is None else self.ended
        return (end - self.started) * 1e3

    @property
    def total_ms(self) -> float | None:
        return None if self.ended is None else self.elapsed_ms()

    def remaining(self) -> float:
        """Seconds before the first dataplane may resume by itself (its deadline runs from
        when the pause reached it, after ``started``): work past it cannot count on the pause."""
        return self.started + self.timeout_ms / 1e3 - time.monotonic()


@contextmanager
def paused(store: StateStore, names: Sequence[str], *, timeout_ms: int) -> Iterator[PauseReport]:
    """Pause every queue of the devices ``names`` for at most ``timeout_ms``; see the module."""
    try:
        pause = control.Pause(timeout_ms=timeout_ms)
    except ControlError as exc:
        raise PauseError("pause devices", str(exc), errno.EINVAL) from None
    if not names or len(set(names)) != len(names):
        raise PauseError("pause devices", f"not a set of device names: {list(names)}", errno.EINVAL)
    with ExitStack() as connections:
        peers = {name: connections.enter_context(_connect(store, name)) for name in names}
        report = PauseReport(names=tuple(names), timeout_ms=timeout_ms, started=time.monotonic())
        replies = _exchange(peers, pause, deadline=report.started + timeout_ms / 1e3 + GRACE)
        pauses = {name: reply for name, reply in replies.items() if isinstance(reply, Paused)}
        if len(pauses) < len(names):
            # Leaving closes every connection, which resumes those that did pause.
            refused = _describe({n: replies[n] for n in names if n not in pauses})
            log.warning("cannot pause %s: %s", ", ".join(names), refused)
            raise PauseError("pause devices", refused, errno.EBUSY)
        report.drain_ms = {name: pauses[name].drain_ms for name in names}
        log.info("paused %s (drained in: %s)", ", ".join(names), _per_device(report.drain_ms))
        try:
            yield report
        finally:
            replies = _exchange(peers, control.Resume(), deadline=time.monotonic() + RESUME_TIMEOUT)
            report.ended = time.monotonic()
            broken = _collect_resumed(report, replies)
        if broken:
            raise PauseError(
                "resume devices",
                f"the pause did not hold throughout: {_describe(broken)}",
                errno.ETIMEDOUT,
            )


@contextmanager
def _connect(store: StateStore, name: str) -> Iterator[socket.socket]:
    path = store.control_path(validate_name(name))
    try:
        connection = control.connect(path, timeout=GRACE)
    except OSError as exc:
        raise PauseError(
            "pause devices", f"{name}: no dataplane answers at {path}: {exc.strerror}", exc.errno
        ) from exc
    with connection:
        yield connection


def _exchange(
    peers: dict[str, socket.socket], request: control.Request, *, deadline: float
) -> dict[str, Reply | str]:
    """Send ``request`` to every peer, then collect their replies until ``deadline``; a
    string stands for a reply that did not come."""
    data = control.encode(request)
    replies: dict[str, Reply | str] = {}
    waiting: dict[int, str] = {}
    poller = select.poll()
    for name, connection in peers.items():
        try:
            connection.send(data)
        except OSError as exc:
            replies[name] = f"the connection broke: {exc.strerror or exc}"
            continue
        waiting[connection.fileno()] = name
        poller.register(connection, select.POLLIN)
    while waiting and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1e3):
            name = waiting.pop(fd)
            poller.unregister(fd)
            replies[name] = _receive(peers[name])
    for name in waiting.values():
        replies[name] = "no reply in time"
    return replies


def _receive(connection: socket.socket) -> Reply | str:
    try:
        data = connection.recv(control.MAX_MESSAGE)
    except OSError as exc:
        return f"the connection broke: {exc.strerror or exc}"
    if not data:
        return "the dataplane hung up"
    try:
        return control.parse_reply(data)
    except ControlError as exc:
        return str(exc)


def _collect_resumed(report: PauseReport, replies: dict[str, Reply | str]) -> dict[str, str]:
    """Note each device's pause time; the devices whose pause did not hold, and why."""
    broken: dict[str, str] = {}
    for name in report.names:
        reply = replies[name]
        if isinstance(reply, Resumed):
            report.paused_ms[name] = reply.paused_ms
            if reply.expired:
                broken[name] = f"resumed by itself after {reply.paused_ms} ms"
        else:
            broken[name] = _why(reply)
    level = logging.WARNING if broken else logging.INFO
    log.log(level, "resumed %s after %.1f ms (each as its dataplane saw it: %s)%s",
            ", ".join(report.names), report.elapsed_ms(), _per_device(report.paused_ms),
            f"; not throughout: {_describe(broken)}" if broken else "")  # fmt: skip
    return broken


def _why(reply: Reply | str) -> str:
    if isinstance(reply, str):
        return reply
    if isinstance(reply, control.Refused):
        return reply.error
    return f"unexpected reply {reply}"


def _describe(failures: Mapping[str, Reply | str]) -> str:
    return "; ".join(f"{name}: {_why(reply)}" for name, reply in failures.items())


def _per_device(values: dict[str, int]) -> str:
    return ", ".join(f"{name} {value} ms" for name, value in values.items())
