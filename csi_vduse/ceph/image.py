"""An RBD image, open: the RADOS connection and the image (``image.c``), for the driver to
measure and grow images and for a dataplane to serve one.

The connection is made as ``connection`` hands it to ``cluster.c``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from csi_vduse.ceph._librbd import ffi, lib
from csi_vduse.ceph.connection import c_target
from csi_vduse.ceph.target import RbdTarget
from csi_vduse.errors import CsiVduseError

log = logging.getLogger(__name__)

ERROR_BYTES = 512
MALLOC_ARENAS = 2


class RbdError(CsiVduseError):
    """The image could not be reached, opened, measured, grown or locked."""


def cap_malloc_arenas(count: int = MALLOC_ARENAS) -> None:
    """Let this process's threads share ``count`` glibc malloc arenas from now on.

    glibc gives a thread that finds the arenas busy one of its own, up to eight per CPU, and
    an arena keeps what was freed in it. librados's and librbd's threads each allocate
    message buffers: a dataplane's arenas held some 20 MiB it no longer used after 1 MiB
    transfers (bench/compare_rbd.py). For a process serving one image; call before its
    first connection starts those threads."""
    if not lib.mallopt(lib.M_ARENA_MAX, count):
        log.warning("glibc refused to cap malloc arenas at %d", count)


class RbdImage:
    """``target``'s image, open (read-only when ``readonly``: no exclusive lock is taken)."""

    def __init__(self, target: RbdTarget, *, readonly: bool) -> None:
        self.target = target
        self.readonly = readonly
        self.path = f"rbd:{target.spec}"  # for messages, as a file backing's path is
        out = ffi.new("struct cv_image **")
        err = ffi.new("char[]", ERROR_BYTES)
        with c_target(target.access) as cluster:
            names = (target.pool, target.namespace, target.image)
            keep = [ffi.new("char[]", name.encode()) for name in names]
            spec = ffi.new("struct cv_image_target *")
            spec.cluster = cluster[0]
            spec.pool, spec.pool_namespace, spec.image = keep
            spec.readonly = int(readonly)
            rc = lib.cv_image_open(out, spec, err, ERROR_BYTES)
        if rc:
            raise RbdError("open RBD image", ffi.string(err).decode(errors="replace"), -rc)
        self._image: Any = out[0]
        self.size = self.current_size()

    @property
    def pool_id(self) -> int:
        """The id of the pool the image was found in."""
        return int(lib.cv_image_pool_id(self._image))

    def current_size(self) -> int:
        """The image's size now (``rbd resize`` may have grown it since it was opened)."""
        size = ffi.new("uint64_t *")
        rc = lib.cv_image_size(self._image, size)
        if rc:
            raise RbdError("size of RBD image", os.strerror(-rc), -rc)
        return int(size[0])

    def resize(self, size: int) -> None:
        """Grow the image to ``size`` bytes."""
        rc = lib.cv_image_resize(self._image, size)
        if rc:
            raise RbdError("resize RBD image", os.strerror(-rc), -rc)

    def watch_growth(self) -> None:
        """Raise SIGHUP in this process whenever the image grows (see image.h)."""
        rc = lib.cv_image_watch_growth(self._image)
        if rc:
            raise RbdError("watch RBD image", os.strerror(-rc), -rc)

    def client_address(self) -> str:
        """Our RADOS client's address: how the image's lock names its owner, and what a
        successor may break should we die."""
        buf = ffi.new("char[]", 256)
        rc = lib.cv_image_client_address(self._image, buf, 256)
        if rc:
            raise RbdError("RADOS client address", os.strerror(-rc), -rc)
        return str(ffi.string(buf).decode())

    def lock(self, dead_owner: str = "") -> bool:
        """Hold the image's exclusive lock from now on (see image.h); ``dead_owner``'s lock is
        broken first: whether there was one."""
        err = ffi.new("char[]", ERROR_BYTES)
        rc = lib.cv_image_lock(self._image, dead_owner.encode(), err, ERROR_BYTES)
        if rc < 0:
            raise RbdError("lock RBD image", ffi.string(err).decode(errors="replace"), -rc)
        return bool(rc == 1)

    @property
    def handle(self) -> int:
        """librbd's rbd_image_t, as an address: what the dataplane's backends serve I/O on
        (valid until ``close``)."""
        return int(ffi.cast("uintptr_t", lib.cv_image_handle(self._image)))

    def close(self) -> None:
        """Close the image and the connection; nothing may use ``handle`` any more."""
        if self._image is not None:
            lib.cv_image_close(self._image)
            self._image = None
