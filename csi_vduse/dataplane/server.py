"""The dataplane's control loop: VDUSE control messages, the driver's control socket and
signals.

One thread, one epoll set: the device node, the control socket's connections (a
``PauseChannel``, whose pause deadline is the loop's timeout) and a self-pipe that signal
handlers write to. Requests never come here: the session's queue engine serves each
enabled queue on its own thread, from its kick fd to its interrupts.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable
from typing import Protocol

from csi_vduse.dataplane.pause_channel import PauseChannel
from csi_vduse.dataplane.virtio.session import VduseSession
from csi_vduse.vduse.messages import Request, Response


class MessageChannel(Protocol):
    def fileno(self) -> int: ...
    def read_request(self) -> Request | None: ...
    def write_response(self, response: Response) -> None: ...


class Server:
    def __init__(
        self, channel: MessageChannel, session: VduseSession, *,
        control: PauseChannel | None = None,
    ) -> None:  # fmt: skip
        self.channel = channel
        self.session = session
        self.control = control
        self.epoll = select.epoll()
        self.epoll.register(channel.fileno(), select.EPOLLIN)
        if control is not None:
            self.epoll.register(control.fileno(), select.EPOLLIN)
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self._stop_r, select.EPOLLIN)
        self.stopping = False
        self.on_hangup: Callable[[], object] | None = None
        self._hangup = False

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.hangup())

    def stop(self) -> None:
        self.stopping = True
        os.write(self._stop_w, b"x")

    def hangup(self) -> None:
        """Run ``on_hangup`` from the loop, not from the signal handler."""
        self._hangup = True
        os.write(self._stop_w, b"x")

    def run(self) -> None:
        while not self.stopping:
            try:
                events = self.epoll.poll(None if self.control is None else self.control.timeout())
            except InterruptedError:
                continue
            for fd, _mask in events:
                if fd == self._stop_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._stop_r, 64)
                    if self._hangup and self.on_hangup is not None:
                        self._hangup = False
                        self.on_hangup()
                elif fd == self.channel.fileno():
                    self.drain_messages()
                elif self.control is not None and fd == self.control.fileno():
                    self.control.handle()
            if self.control is not None:
                self.control.expire()

    def drain_messages(self) -> None:
        while (request := self.channel.read_request()) is not None:
            self.channel.write_response(self.session.handle(request))

    def close(self) -> None:
        self.epoll.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
