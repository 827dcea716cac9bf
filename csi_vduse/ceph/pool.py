"""A pool's RBD images as the controller manages them (``pool.c``): create, measure, label,
grow, list, see who uses, remove.

Every call opens what it needs and closes it again, so the controller never appears as an
image's user; a call that reaches the OSDs gives up after ``access.op_timeout`` seconds
(the controller sets one) instead of hanging while the cluster is down. Failures are
``RbdError`` with the errno librbd gave, for the caller to map (ENOENT, EEXIST, EBUSY,
ENOTEMPTY, ETIMEDOUT, EACCES...).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from csi_vduse.ceph._librbd import ffi, lib
from csi_vduse.ceph.connection import c_target
from csi_vduse.ceph.image import ERROR_BYTES, RbdError
from csi_vduse.ceph.target import CephAccess

# Feature names as ``rbd --image-feature`` and ceph-csi's imageFeatures write them
# (rbd.placement.FEATURE_NAMES).
FEATURES = {
    "layering": lib.RBD_FEATURE_LAYERING,
    "exclusive-lock": lib.RBD_FEATURE_EXCLUSIVE_LOCK,
    "object-map": lib.RBD_FEATURE_OBJECT_MAP,
    "fast-diff": lib.RBD_FEATURE_FAST_DIFF,
    "deep-flatten": lib.RBD_FEATURE_DEEP_FLATTEN,
    "journaling": lib.RBD_FEATURE_JOURNALING,
}
METADATA_BYTES = 4096  # a value we store: a CO's name and the like
WATCHERS_BYTES = 4096
POOL_NAME_BYTES = 256  # a data pool's name longer than this fails with ERANGE


def feature_bits(names: tuple[str, ...]) -> int:
    """The RBD_FEATURE_* bits of features named as FEATURES names them."""
    bits = 0
    for name in names:
        bits |= FEATURES[name]
    return bits


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    size: int
    features: int


@dataclass(frozen=True, kw_only=True)
class ImageFacts:
    """What a listing shows of an image, read in one open."""

    size: int
    features: int
    created_ns: int  # when it was made
    metadata: dict[str, str]


class RbdPool:
    """``pool`` (and ``namespace``) on ``access``'s cluster, connected until ``close``."""

    def __init__(self, access: CephAccess, pool: str | int, namespace: str = "") -> None:
        """``pool`` by name, or by id (what stays the same when a pool is renamed)."""
        self.name = str(pool)
        self.namespace = namespace
        out = ffi.new("struct cv_pool **")
        err = ffi.new("char[]", ERROR_BYTES)
        by_name, pool_id = (ffi.NULL, pool) if isinstance(pool, int) else (pool.encode(), -1)
        with c_target(access) as target:
            opened = lib.cv_pool_open(
                out, target, by_name, pool_id, namespace.encode(), err, ERROR_BYTES
            )
        if opened:
            raise RbdError("open Ceph pool", ffi.string(err).decode(errors="replace"), -opened)
        self._pool: Any = out[0]

    def __enter__(self) -> RbdPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            lib.cv_pool_close(self._pool)
            self._pool = None

    @property
    def handle(self) -> Any:
        """The C pool (``struct cv_pool *``), for ``lineage``: valid until ``close``."""
        return self._pool

    @property
    def id(self) -> int:
        """The pool's id: what stays the same if the pool is renamed."""
        return int(lib.cv_pool_id(self._pool))

    def create(self, image: str, *, size: int, features: int, data_pool: str = "") -> None:
        """A new image; RbdError with EEXIST where the name is taken."""
        err = ffi.new("char[]", ERROR_BYTES)
        rc = lib.cv_pool_create(
            self._pool, image.encode(), size, features, data_pool.encode(), err, ERROR_BYTES
        )
        if rc:
            raise RbdError("create RBD image", ffi.string(err).decode(errors="replace"), -rc)

    def remove(self, image: str) -> None:
        """Remove ``image`` and its data: RbdError with ENOENT (no such image), EBUSY (a
        client has it open) or ENOTEMPTY (it has snapshots)."""
        rc = lib.cv_pool_remove(self._pool, image.encode())
        self._check(rc, "remove RBD image", image=image)

    def stat(self, image: str) -> ImageInfo | None:
        """``image``'s size and features; None where there is no such image."""
        size, features = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        rc = lib.cv_pool_stat(self._pool, image.encode(), size, features)
        if rc == -errno.ENOENT:
            return None
        self._check(rc, "open RBD image", image=image)
        return ImageInfo(size=int(size[0]), features=int(features[0]))

    def data_pool(self, image: str) -> str:
        """The separate pool ``image`` keeps its data in, "" where it is this one."""
        out = ffi.new("char[]", POOL_NAME_BYTES)
        rc = lib.cv_pool_data_pool(self._pool, image.encode(), out, POOL_NAME_BYTES)
        self._check(rc, "open RBD image", image=image)
        return str(ffi.string(out).decode())

    def describe(self, image: str) -> ImageFacts | None:
        """``image``'s size, features, creation time and metadata; None where there is no
        such image."""
        facts = ffi.new("struct cv_image_facts *")
        keys_len, values_len = (
            ffi.new("size_t *", METADATA_BYTES),
            ffi.new("size_t *", METADATA_BYTES),
        )
        while True:
            keys, values = ffi.new("char[]", keys_len[0]), ffi.new("char[]", values_len[0])
            rc = lib.cv_pool_describe(
                self._pool, image.encode(), facts, keys, keys_len, values, values_len
            )
            if rc != -errno.ERANGE:
                break
        if rc == -errno.ENOENT:
            return None
        self._check(rc, "describe RBD image", image=image)
        names = ffi.unpack(keys, keys_len[0]).split(b"\0")[:-1]
        texts = ffi.unpack(values, values_len[0]).split(b"\0")[:-1]
        metadata = {}
        if len(names) == len(texts):  # else a value holds a NUL (no one of ours does)
            metadata = {
                k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in zip(names, texts, strict=True)
            }
        return ImageFacts(
            size=int(facts.size),
            features=int(facts.features),
            created_ns=int(facts.created),
            metadata=metadata,
        )

    def resize(self, image: str, size: int) -> None:
        """Make ``image`` ``size`` bytes; a client holding its lock does it for us."""
        rc = lib.cv_pool_resize(self._pool, image.encode(), size)
        self._check(rc, "resize RBD image", image=image)

    def metadata(self, image: str, *, key: str) -> str | None:
        """``image``'s metadata ``key``; None where the image has no such key."""
        value = ffi.new("char[]", METADATA_BYTES)
        rc = lib.cv_pool_metadata_get(
            self._pool, image.encode(), key.encode(), value, METADATA_BYTES
        )
        if rc == -errno.ENOENT and self.stat(image) is not None:
            return None
        self._check(rc, f"read metadata {key} of RBD image", image=image)
        return str(ffi.string(value).decode())

    def set_metadata(self, image: str, *, key: str, value: str) -> None:
        rc = lib.cv_pool_metadata_set(self._pool, image.encode(), key.encode(), value.encode())
        self._check(rc, f"set metadata {key} of RBD image", image=image)

    def images(self) -> list[str]:
        """The names of the pool's (namespace's) images."""
        size = ffi.new("size_t *", 4096)
        while True:
            buf = ffi.new("char[]", size[0])
            rc = lib.cv_pool_list(self._pool, buf, size)
            if rc != -errno.ERANGE:
                break
        if rc:
            raise RbdError("list RBD images", f"pool {self.name}: {os.strerror(-rc)}", -rc)
        names = ffi.unpack(buf, size[0]).split(b"\0")[:-1]
        return [name.decode() for name in names]

    def watchers(self, image: str) -> list[str]:
        """The addresses of the clients that have ``image`` open for writing."""
        buf = ffi.new("char[]", WATCHERS_BYTES)
        rc = lib.cv_pool_watchers(self._pool, image.encode(), buf, WATCHERS_BYTES)
        self._check(min(rc, 0), "list watchers of RBD image", image=image)
        raw = ffi.unpack(buf, WATCHERS_BYTES).split(b"\0")[:rc]
        return [address.decode() for address in raw]

    def _check(self, rc: int, step: str, *, image: str) -> None:
        if rc == -errno.ENOENT:
            raise RbdError(step, f"RBD image {self.name}/{image} does not exist", errno.ENOENT)
        if rc:
            raise RbdError(step, f"{self.name}/{image}: {os.strerror(-rc)}", -rc)
