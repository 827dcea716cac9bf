"""Snapshots, clones and their chains in one pool (``lineage.c``), for the controller.

Clones are format 2: their parent snapshot needs no protecting, and a snapshot removed
while clones of it live waits in the image's trash namespace until the last goes. An image
that must go while such a snapshot waits is moved to the pool's trash, and ``reap`` removes
it once nothing needs it. Failures are ``RbdError`` with librbd's errno.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from csi_vduse.ceph._librbd import ffi, lib
from csi_vduse.ceph.image import ERROR_BYTES, RbdError
from csi_vduse.ceph.pool import RbdPool

NAME_BYTES = 256  # an image or snapshot name of ours, or anybody's


@dataclass(frozen=True, kw_only=True)
class SnapshotInfo:
    size: int  # bytes: the image's size when the snapshot was taken
    created_ns: int  # since the epoch


@dataclass(frozen=True, kw_only=True)
class Snapshots:
    names: list[str]  # but those in the trash namespace: ours, or anybody's
    kept: int  # in the trash namespace: removed, kept for clones of them


@dataclass(frozen=True, kw_only=True)
class Parent:
    image: str
    snapshot: str


class Lineage:
    """The snapshots and clones of ``pool``'s images (open as long as ``pool`` is)."""

    def __init__(self, pool: RbdPool) -> None:
        self.pool = pool

    def snapshot(self, image: str, *, name: str) -> None:
        """Snapshot ``image`` as ``name``; RbdError EEXIST where it has one of that name."""
        rc = lib.cv_lineage_snap_create(self.pool.handle, image.encode(), name.encode())
        self._check(rc, f"snapshot RBD image {image} as {name}", image=image)

    def remove_snapshot(self, image: str, *, name: str) -> bool:
        """Remove ``image``'s snapshot ``name`` (kept in its trash namespace while clones of
        it live); whether there was one."""
        rc = lib.cv_lineage_snap_remove(self.pool.handle, image.encode(), name.encode())
        if rc == -errno.ENOENT:
            return False
        self._check(rc, f"remove snapshot {name} of RBD image", image=image)
        return True

    def snapshot_info(self, image: str, *, name: str) -> SnapshotInfo | None:
        """``image@name``'s size and time; None where there is no such image or snapshot."""
        size, seconds, nanos = ffi.new("uint64_t *"), ffi.new("int64_t *"), ffi.new("int32_t *")
        rc = lib.cv_lineage_snap_stat(
            self.pool.handle, image.encode(), name.encode(), size, seconds, nanos
        )
        if rc == -errno.ENOENT:
            return None
        self._check(rc, f"read snapshot {name} of RBD image", image=image)
        return SnapshotInfo(size=int(size[0]), created_ns=int(seconds[0]) * 10**9 + int(nanos[0]))

    def snapshots(self, image: str) -> Snapshots:
        """``image``'s snapshots."""
        size, kept = ffi.new("size_t *", 1024), ffi.new("int *")
        while True:
            buf = ffi.new("char[]", size[0])
            rc = lib.cv_lineage_snap_names(self.pool.handle, image.encode(), buf, size, kept)
            if rc != -errno.ERANGE:
                break
        self._check(rc, "list snapshots of RBD image", image=image)
        names = ffi.unpack(buf, size[0]).split(b"\0")[:-1]
        return Snapshots(names=[name.decode() for name in names], kept=int(kept[0]))

    def clone(
        self, parent: str, *, snapshot: str, child: str, features: int, data_pool: str = ""
    ) -> None:
        """A format-2 clone ``child`` of ``parent@snapshot``; RbdError EEXIST where ``child``
        exists, ENOENT where the parent or its snapshot does not."""
        err = ffi.new("char[]", ERROR_BYTES)
        rc = lib.cv_lineage_clone(
            self.pool.handle, parent.encode(), snapshot.encode(), child.encode(), features,
            data_pool.encode(), err, ERROR_BYTES,
        )  # fmt: skip
        if rc:
            raise RbdError("clone RBD image", ffi.string(err).decode(errors="replace"), -rc)

    def parent(self, image: str) -> Parent | None:
        """The image and snapshot ``image`` was cloned from, in this pool; None where it has
        no parent (never had, or was flattened)."""
        name, snap = ffi.new("char[]", NAME_BYTES), ffi.new("char[]", NAME_BYTES)
        rc = lib.cv_lineage_parent(
            self.pool.handle, image.encode(), name, NAME_BYTES, snap, NAME_BYTES
        )
        if rc == -errno.ENOENT and self.pool.stat(image) is not None:
            return None
        if rc == -errno.EXDEV:
            raise RbdError("parent of RBD image", f"{image}'s is in another pool", errno.EXDEV)
        self._check(rc, "parent of RBD image", image=image)
        return Parent(image=ffi.string(name).decode(), snapshot=ffi.string(snap).decode())

    def ancestors(self, image: str) -> int:
        """How many images are above ``image`` in its chain (trashed ones too)."""
        rc = lib.cv_lineage_ancestors(self.pool.handle, image.encode())
        self._check(min(rc, 0), "ancestors of RBD image", image=image)
        return int(rc)

    def flatten(self, image: str) -> None:
        """Copy into ``image`` what it reads from its parents, and unlink it from them."""
        rc = lib.cv_lineage_flatten(self.pool.handle, image.encode())
        if rc == -errno.EINVAL and self.parent(image) is None:
            return  # flat already: a call before us finished
        self._check(rc, "flatten RBD image", image=image)

    def trash(self, image: str) -> None:
        """Move ``image`` to the pool's trash, for ``reap`` to remove once nothing needs it."""
        rc = lib.cv_lineage_trash(self.pool.handle, image.encode())
        self._check(rc, "move RBD image to the trash", image=image)

    def reap(self, prefix: str, *, owner_key: str) -> int:
        """Remove the images in the pool's trash whose names start with ``prefix``, whose
        metadata ``owner_key`` holds their own name, and that nothing needs any more; how
        many."""
        rc = lib.cv_lineage_reap(self.pool.handle, prefix.encode(), owner_key.encode())
        if rc < 0:
            raise RbdError("reap the trash", f"pool {self.pool.name}: {os.strerror(-rc)}", -rc)
        return int(rc)

    def _check(self, rc: int, step: str, *, image: str) -> None:
        if rc == -errno.ENOENT:
            raise RbdError(step, f"RBD image {self.pool.name}/{image} does not exist", errno.ENOENT)
        if rc:
            raise RbdError(step, f"{self.pool.name}/{image}: {os.strerror(-rc)}", -rc)
