"""Answers a VDUSE device's control messages and hands its virtqueues to a queue engine.

SET_STATUS drives the virtio lifecycle: FEATURES_OK is refused unless the driver
accepted what this device needs; DRIVER_OK hands the ready rings (VQ_GET_INFO, a new
kick eventfd) to the engine; status 0 is a reset, after which the kernel has already
forgotten ring addresses and kick fds. UPDATE_IOTLB makes the engine drop stale mappings.

With a status log (the in-flight log), every status change is recorded before the
driver hears of it, so ``resume`` can take over a device whose previous dataplane died:
it restores the negotiated state and restarts the ready queues from the log.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from csi_vduse.dataplane.virtio.queues import QueueEngine, RingError
from csi_vduse.vduse import VduseError
from csi_vduse.vduse.messages import Request, RequestType, Response
from csi_vduse.vduse.node import VqInfo
from csi_vduse.virtio.blk import BlkFeature
from csi_vduse.virtio.spec import Feature, Status, feature_names

log = logging.getLogger(__name__)


class DeviceControl(Protocol):
    """What the session needs of ``/dev/vduse/$NAME`` (a DeviceNode, or a fake in tests)."""

    def features(self) -> int: ...
    def vq_info(self, index: int) -> VqInfo: ...
    def vq_setup_kickfd(self, index: int, *, fd: int) -> None: ...


class StatusLog(Protocol):
    """Where the device status survives this process (``csi_vduse.dataplane.inflight_log``)."""

    @property
    def status(self) -> int: ...
    @property
    def features(self) -> int: ...
    def record_status(self, status: int, *, features: int) -> None: ...
    def reset(self) -> None: ...


class ResumeError(Exception):
    """The device cannot be taken over from where the previous dataplane left it."""


class VduseSession:
    def __init__(
        self, node: DeviceControl, *, queue_count: int, offered: int, required: int,
        engine: QueueEngine, status_log: StatusLog | None = None,
    ) -> None:  # fmt: skip
        self.node = node
        self.engine = engine
        self.status_log = status_log
        self.queue_count = queue_count
        self.offered = offered
        self.required = required
        self.status = 0
        self.features = 0

    @property
    def running(self) -> bool:
        return bool(self.status & Status.DRIVER_OK)

    def handle(self, request: Request) -> Response:
        if request.type == RequestType.GET_VQ_STATE:
            avail = self.engine.last_avail(request.vq_index) or 0
            packed = self.engine.packed_state(request.vq_index)
            return Response(
                request.request_id, vq_index=request.vq_index, avail_index=avail, packed=packed
            )
        if request.type == RequestType.SET_STATUS:
            return Response(request.request_id, ok=self._set_status(request.status))
        if request.type == RequestType.UPDATE_IOTLB:
            self.engine.invalidate(request.iova_start, request.iova_last)
            return Response(request.request_id)
        log.warning("unknown VDUSE request type %d", request.type)
        return Response(request.request_id, ok=False)

    def _set_status(self, status: int) -> bool:
        if status == 0:
            self.reset()
            return True
        added = status & ~self.status
        if added & Status.FEATURES_OK and not self._accept_features():
            return False
        if added & Status.DRIVER_OK and not self._start_queues():
            return False
        log.info("device status %s", Status(status).name)
        self.status = status
        if self.status_log is not None:
            self.status_log.record_status(status, features=self.features)
        return True

    def resume(self) -> bool:
        """Take over from a predecessor; False when the log shows nothing to take over."""
        if self.status_log is None or not self.status_log.status:
            return False
        status = self.status_log.status
        if status & Status.FEATURES_OK:
            features = self.node.features()
            if features != self.status_log.features:
                raise ResumeError(
                    f"the kernel has features {features:#x}, the log {self.status_log.features:#x}"
                )
            self.features = features
        if status & Status.DRIVER_OK and not self._start_queues(resume=True):
            raise ResumeError("cannot restart the queues from the in-flight log")
        self.status = status
        log.info("resumed device with status %s", Status(status).name)
        return True

    def _accept_features(self) -> bool:
        features = self.node.features()
        if features & ~self.offered:
            log.error("driver accepted features never offered: %#x", features & ~self.offered)
            return False
        if features & self.required != self.required:
            log.error("driver refused required features: %#x", self.required & ~features)
            return False
        self.features = features
        log.info(
            "features negotiated: %#x (%s)",
            features,
            " ".join(feature_names(features, Feature, BlkFeature)),
        )
        return True

    def _start_queues(self, *, resume: bool = False) -> bool:
        try:
            for index in range(self.queue_count):
                info = self.node.vq_info(index)
                if not info.ready:
                    continue
                if info.num == 0 or info.num & (info.num - 1):
                    raise RingError(f"queue {index}: size {info.num} is not a power of two")
                kickfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                try:
                    self.node.vq_setup_kickfd(index, fd=kickfd)
                    self.engine.start_queue(
                        info, kickfd=kickfd, features=self.features, resume=resume
                    )
                except BaseException:
                    os.close(kickfd)
                    raise
                log.info(
                    "queue %d enabled: %d entries, avail %d", index, info.num, info.avail_index
                )
        except (VduseError, RingError, MemoryError) as exc:
            log.error("cannot enable queues: %s", exc)
            if resume:
                self.close()  # the log stays for another attempt
            else:
                self.reset()
            return False
        return True

    def reset(self) -> None:
        """Forget rings, kick fds and mappings (the engine's), as the kernel already has."""
        self.close()
        if self.status_log is not None:
            self.status_log.reset()
        if self.status:
            log.info("device reset")
        self.status = 0
        self.features = 0

    def close(self) -> None:
        """Stop serving, leaving the device and the log for a successor to take over."""
        self.engine.stop()
