"""The reference queue engine: the session's ``QueueEngine`` contract over the Python ring.

It serves only when asked (``serve_pending``, on the caller's thread), as the C engine
does with ``threaded=False``, so a test can put one device's chains to both and compare.
It serves split rings only and keeps no in-flight log, so it cannot take a device over.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from csi_vduse.dataplane.reference.handler import BlkHandler
from csi_vduse.dataplane.reference.iotlb import Iotlb
from csi_vduse.dataplane.reference.split_ring import RingAddresses, SplitQueue
from csi_vduse.dataplane.virtio.queues import RingError
from csi_vduse.vduse import VduseError
from csi_vduse.vduse.node import IotlbEntry, VqInfo
from csi_vduse.virtio.spec import Feature, bit

log = logging.getLogger(__name__)


class Device(Protocol):
    """Where guest memory is mapped from and interrupts go (a DeviceNode, or a fake)."""

    def iotlb_get_fd(self, iova: int, last: int | None = None) -> tuple[int, IotlbEntry]: ...
    def vq_inject_irq(self, index: int) -> None: ...


@dataclass
class ReferenceQueue:
    ring: SplitQueue
    kickfd: int


class ReferenceEngine:
    """The queues of one device, served by ``handler``; owns their kick fds."""

    def __init__(self, device: Device, handler: BlkHandler) -> None:
        self.device = device
        self.handler = handler
        self.iotlb = Iotlb(device)
        self.queues: dict[int, ReferenceQueue] = {}

    @property
    def capacity(self) -> int:
        return self.handler.capacity

    def set_capacity(self, capacity: int) -> None:
        self.handler.capacity = capacity

    def start_queue(
        self, info: VqInfo, *, kickfd: int, features: int, resume: bool = False
    ) -> None:
        if resume:
            raise RingError(f"queue {info.index}: the reference keeps no in-flight log")
        if features & bit(Feature.RING_PACKED):
            raise RingError("the reference ring serves split virtqueues only")
        addresses = RingAddresses(
            num=info.num, desc=info.desc_addr, driver=info.driver_addr, device=info.device_addr
        )
        ring = SplitQueue(
            info.index, addresses=addresses, iotlb=self.iotlb, last_avail=info.avail_index,
            features=features,
        )  # fmt: skip
        self.queues[info.index] = ReferenceQueue(ring, kickfd)

    def last_avail(self, index: int) -> int | None:
        queue = self.queues.get(index)
        return queue.ring.last_avail if queue else None

    def packed_state(self, index: int) -> tuple[int, int] | None:
        return None

    def invalidate(self, start: int, last: int) -> None:
        self.iotlb.invalidate(start, last)

    def serve_pending(self) -> None:
        """Serve what the driver posted on every queue; one interrupt per queue served."""
        for index in list(self.queues):
            self._serve(index)

    def _serve(self, index: int) -> None:
        queue = self.queues[index]
        served = 0
        try:
            while (chain := queue.ring.pop()) is not None:
                try:
                    written = self.handler.handle(chain)
                finally:
                    chain.release()
                queue.ring.push(chain.head, written=written)
                served += 1
        except RingError as exc:
            log.error("queue %d stopped: %s", index, exc)
            del self.queues[index]
            os.close(queue.kickfd)
        if served:
            self._notify(index)

    def _notify(self, index: int) -> None:
        try:
            self.device.vq_inject_irq(index)
        except VduseError as exc:
            # A reset racing with the batch makes the kernel refuse (EINVAL); harmless.
            level = logging.DEBUG if exc.errno == errno.EINVAL else logging.ERROR
            log.log(level, "interrupt for queue %d not injected: %s", index, exc)

    def stop(self) -> None:
        for queue in self.queues.values():
            os.close(queue.kickfd)
        self.queues.clear()
        self.iotlb.clear()

    def close(self) -> None:
        self.stop()
