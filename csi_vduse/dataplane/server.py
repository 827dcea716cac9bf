"""The dataplane's event loop: control messages, kicks, requests, interrupts, signals.

One thread, one epoll set: the device node (control messages) and each enabled
queue's kick eventfd. A kick drains its queue; one interrupt follows each batch.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
from collections.abc import Callable
from typing import Protocol

from csi_vduse.dataplane.blk.handler import BlkHandler
from csi_vduse.dataplane.virtio.session import ActiveQueue, VduseSession
from csi_vduse.dataplane.virtio.split_ring import RingError
from csi_vduse.vduse import VduseError
from csi_vduse.vduse.messages import Request, Response

log = logging.getLogger(__name__)

BATCH = 256  # requests served before control messages get a look-in


class MessageChannel(Protocol):
    def fileno(self) -> int: ...
    def read_request(self) -> Request | None: ...
    def write_response(self, response: Response) -> None: ...
    def vq_inject_irq(self, index: int) -> None: ...


class Server:
    def __init__(self, channel: MessageChannel, session: VduseSession, handler: BlkHandler):
        self.channel = channel
        self.session = session
        self.handler = handler
        self.epoll = select.epoll()
        self.epoll.register(channel.fileno(), select.EPOLLIN)
        self._watched: dict[int, tuple[int, ActiveQueue]] = {}  # kick fd -> (index, queue)
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
                events = self.epoll.poll()
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
                elif (watched := self._watched.get(fd)) is not None:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(fd)
                    self.serve_queue(watched[0])

    def drain_messages(self) -> None:
        while (request := self.channel.read_request()) is not None:
            response = self.session.handle(request)
            self.channel.write_response(response)
            self._sync_kickfds()
            if self.session.running:
                # Requests posted before the kick fd existed have no kick of their own.
                for index in list(self.session.queues):
                    self.serve_queue(index)

    def _sync_kickfds(self) -> None:
        """Watch exactly the session's kick fds; a closed fd may come back with a new queue."""
        wanted = {queue.kickfd: (index, queue) for index, queue in self.session.queues.items()}
        for fd, (_, queue) in list(self._watched.items()):
            if wanted.get(fd, (0, None))[1] is not queue:
                with contextlib.suppress(OSError):  # closing the fd already removed it
                    self.epoll.unregister(fd)
                del self._watched[fd]
        for fd, entry in wanted.items():
            if fd not in self._watched:
                self.epoll.register(fd, select.EPOLLIN)
                self._watched[fd] = entry

    def serve_queue(self, index: int) -> None:
        queue = self.session.queues.get(index)
        if queue is None or not self.session.running:
            return
        served = 0
        try:
            while served < BATCH and (chain := queue.ring.pop()) is not None:
                try:
                    written = self.handler.handle(chain)
                finally:
                    chain.release()
                queue.ring.push(chain.head, written)
                served += 1
        except RingError as exc:
            log.error("queue %d stopped: %s", index, exc)
            self._disable(index, queue)
        if served:
            self._notify(index)
        if served == BATCH:
            os.eventfd_write(queue.kickfd, 1)  # come back after pending messages

    def _notify(self, index: int) -> None:
        try:
            self.channel.vq_inject_irq(index)
        except VduseError as exc:
            # A reset racing with the batch makes the kernel refuse (EINVAL); harmless.
            level = logging.DEBUG if exc.errno == errno.EINVAL else logging.ERROR
            log.log(level, "interrupt for queue %d not injected: %s", index, exc)

    def _disable(self, index: int, queue: ActiveQueue) -> None:
        self.session.queues.pop(index, None)
        self._sync_kickfds()
        os.close(queue.kickfd)

    def close(self) -> None:
        self.epoll.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
