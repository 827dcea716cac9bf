"""The backends an RBD image's queues serve with (``rbd.c``): what ``BlkTarget.backends``
takes. Made per queue on the image's one librbd handle."""

from __future__ import annotations

from typing import Any

from csi_vduse.ceph.image import RbdImage
from csi_vduse.dataplane.rbd._rbd import ffi, lib


class RbdQueueBackend:
    """One queue's backend; ``address`` is its ``struct dp_backend *`` as an integer, for
    the fast path's own cffi module to cast."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.address = int(ffi.cast("uintptr_t", lib.dp_rbd_backend(backend)))

    def describe(self) -> str:
        return "reads and writes via librbd"

    def free(self) -> None:
        """Wait for what is still in flight, then free; the queue must be gone."""
        if self._backend is not None:
            lib.dp_rbd_backend_free(self._backend)
            self._backend = None


class RbdQueues:
    """Makes queue backends on ``image``, which must stay open until they are freed."""

    def __init__(self, image: RbdImage) -> None:
        self.image = image

    def queue_backend(self, depth: int) -> RbdQueueBackend:
        backend = lib.dp_rbd_backend_new(ffi.cast("void *", self.image.handle), depth)
        if backend == ffi.NULL:
            raise MemoryError("no memory for an RBD queue backend")
        return RbdQueueBackend(backend)
