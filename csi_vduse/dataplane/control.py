"""The control socket between the driver and a running dataplane: pause every queue of the
device for a bounded time, and resume (crash-consistent group snapshots, issue 14).

**Socket.** The driver binds a listening AF_UNIX SOCK_SEQPACKET socket at
``<state dir>/devices/<name>.ctl`` (``listen``: only its owner may connect) and passes it to
the dataplane as ``--control-fd``; a successor dataplane gets a fresh one at the same path.
Whoever needs the dataplane, a restarted driver too, connects to the path (``connect``).
A socket address holds 108 bytes and a state directory may be longer, so both reach the
path through a descriptor of its directory (``/proc/self/fd/N/NAME``).

**Messages.** One JSON object per packet, at most ``MAX_MESSAGE`` bytes; each request gets
one reply on its connection.

- ``{"pause": {"timeout_ms": T}}``, 1 <= T <= ``MAX_PAUSE_MS``: pause every started queue
  (requests in flight complete, new ones wait in the ring; queues the guest starts meanwhile
  start paused). Reply ``{"paused": true, "drain_ms": D}`` once they all are, D the time
  that took; or ``{"paused": false, "error": "..."}`` when another connection holds a pause
  or the queues did not drain within T, and then nothing stays paused.
- ``{"resume": true}``: reply ``{"resumed": true, "paused_ms": P, "expired": E}``, P the
  time from the pause's arrival to its end. E is true when the dataplane had already resumed
  by itself, T ms after the pause arrived: whatever the driver did meanwhile cannot count
  on the pause. ``{"resumed": false, "error": "..."}`` when this connection holds no pause.
- anything else: ``{"error": "..."}``, and nothing changes.

A pause ends at resume, when its connection closes, or T ms after it arrived, whichever
comes first, so a driver that dies or stalls never leaves a device paused. One pause at a
time per device. An empty packet reads as the end of the connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_MESSAGE = 4096
MAX_PAUSE_MS = 60_000
MODE = 0o600  # the socket file: pausing a device's I/O is the driver's business alone
BACKLOG = 4


class ControlError(Exception):
    """A message that is not this protocol's."""


@dataclass(frozen=True, kw_only=True)
class Pause:
    timeout_ms: int

    def __post_init__(self) -> None:
        value = self.timeout_ms
        if type(value) is not int or not 1 <= value <= MAX_PAUSE_MS:
            raise ControlError(f"timeout_ms must be an integer from 1 to {MAX_PAUSE_MS}")


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True, kw_only=True)
class Paused:
    drain_ms: int


@dataclass(frozen=True, kw_only=True)
class Resumed:
    paused_ms: int
    expired: bool


@dataclass(frozen=True, kw_only=True)
class Refused:
    """A request not carried out; ``to`` names the reply it stands for (None: no request)."""

    error: str
    to: str | None = None


Request = Pause | Resume
Reply = Paused | Resumed | Refused


def encode(message: Request | Reply) -> bytes:
    body: dict[str, Any]
    if isinstance(message, Pause):
        body = {"pause": {"timeout_ms": message.timeout_ms}}
    elif isinstance(message, Resume):
        body = {"resume": True}
    elif isinstance(message, Paused):
        body = {"paused": True, "drain_ms": message.drain_ms}
    elif isinstance(message, Resumed):
        body = {"resumed": True, "paused_ms": message.paused_ms, "expired": message.expired}
    else:
        body = {message.to: False} if message.to else {}
        body["error"] = message.error
    return json.dumps(body).encode()


def _decode(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE:
        raise ControlError(f"a message of more than {MAX_MESSAGE} bytes")
    try:
        message = json.loads(data)
    except ValueError:
        raise ControlError("not a JSON message") from None
    if not isinstance(message, dict):
        raise ControlError("not a JSON object")
    return message


def parse_request(data: bytes) -> Request:
    message = _decode(data)
    if message.keys() == {"resume"} and message["resume"] is True:
        return Resume()
    if message.keys() == {"pause"}:
        pause = message["pause"]
        if not isinstance(pause, dict) or pause.keys() != {"timeout_ms"}:
            raise ControlError('pause takes {"timeout_ms": T} and nothing else')
        return Pause(timeout_ms=pause["timeout_ms"])
    raise ControlError(f"unknown request {sorted(message)}: send pause or resume")


def parse_reply(data: bytes) -> Reply:
    message = _decode(data)
    try:
        if isinstance(message.get("error"), str):
            to = next((key for key in ("paused", "resumed") if message.get(key) is False), None)
            return Refused(error=message["error"], to=to)
        if message.get("paused") is True:
            return Paused(drain_ms=int(message["drain_ms"]))
        if message.get("resumed") is True:
            return Resumed(paused_ms=int(message["paused_ms"]), expired=bool(message["expired"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ControlError(f"malformed reply {message!r}: {exc}") from None
    raise ControlError(f"unknown reply {message!r}")


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[tuple[int, str]]:
    """A descriptor of ``path``'s directory, and ``path`` as a socket address through it
    (short whatever the directory's length); valid until the context ends."""
    dirfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield dirfd, f"/proc/self/fd/{dirfd}/{path.name}"
    finally:
        os.close(dirfd)


def listen(path: Path) -> socket.socket:
    """A listening socket bound at ``path`` (replacing a stale one) for a dataplane."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        # bind() makes the file with the socket's own mode, so nobody else ever could connect.
        os.fchmod(sock.fileno(), MODE)
        with socket_address(path) as (dirfd, address):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.name, dir_fd=dirfd)
            sock.bind(address)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(path: Path, *, timeout: float) -> socket.socket:
    """A connection to the dataplane listening at ``path``; ``timeout`` bounds each call."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        with socket_address(path) as (_, address):
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock
