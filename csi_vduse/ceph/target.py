"""Which RBD image a dataplane serves, and how it reaches the cluster: part of the
dataplane contract (``csi_vduse.dataplane.interface``).

The driver hands it over as a sealed memfd holding one JSON object (``--rbd-fd``), never
on a command line: it carries the cephx key. Nothing here logs or prints the key, and its
``repr`` leaves it out.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_BYTES = 1 << 20  # a ceph.conf and a key: far less
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class TargetError(ValueError):
    """A target that cannot be used: malformed, or missing what it needs."""


@dataclass(frozen=True, kw_only=True)
class CephAccess:
    """Who we are to a cluster and where its monitors are."""

    user: str = "admin"  # the cephx id, without "client."
    key: str = field(default="", repr=False)  # a secret
    mon_host: str = ""  # overrides the configuration's monitors
    conf: str = field(default="", repr=False)  # a ceph.conf's text, or none
    connect_timeout: int = 30  # seconds to reach the monitors
    op_timeout: int = 0  # seconds an OSD request may take; 0: as long as it takes

    def __post_init__(self) -> None:
        for name in ("user", "key", "mon_host", "conf"):
            if not isinstance(getattr(self, name), str):
                raise TargetError(f"Ceph access field {name} is not a string")
        for name in ("connect_timeout", "op_timeout"):
            if type(getattr(self, name)) is not int:
                raise TargetError(f"Ceph access field {name} is not an integer")
        if not self.user or self.user.startswith("client."):
            raise TargetError(f"the Ceph user {self.user!r} must be an id without client.")
        if self.key and not _is_cephx_secret(self.key):
            # Said without the key: librados would print a key it cannot decode.
            raise TargetError("the Ceph key is malformed: not a base64 cephx secret")
        if not 1 <= self.connect_timeout <= 3600:
            raise TargetError(f"connect timeout {self.connect_timeout} s is not 1-3600")
        if not 0 <= self.op_timeout <= 3600:
            raise TargetError(f"operation timeout {self.op_timeout} s is not 0-3600")


@dataclass(frozen=True, kw_only=True)
class RbdTarget:
    pool: str
    image: str
    namespace: str = ""
    user: str = "admin"  # the cephx id, without "client."
    key: str = field(default="", repr=False)  # a secret
    mon_host: str = ""  # overrides the configuration's monitors
    conf: str = field(default="", repr=False)  # a ceph.conf's text, or none
    connect_timeout: int = 30  # seconds to reach the monitors
    # A dead predecessor's client address: the image's lock may be broken if it holds it.
    dead_owner: str = ""

    def __post_init__(self) -> None:
        for name in ("pool", "image", "namespace", "dead_owner"):
            if not isinstance(getattr(self, name), str):
                raise TargetError(f"RBD target field {name} is not a string")
        for name in ("pool", "image"):
            value = getattr(self, name)
            if not value or "/" in value or "@" in value:
                raise TargetError(f"RBD {name} {value!r} is not a plain name")
        if "/" in self.namespace or "@" in self.namespace:
            raise TargetError(f"RBD namespace {self.namespace!r} is not a plain name")
        self.access  # noqa: B018 -- checks the fields that say how to reach the cluster

    @property
    def access(self) -> CephAccess:
        """How to reach the image's cluster."""
        return CephAccess(
            user=self.user, key=self.key, mon_host=self.mon_host, conf=self.conf,
            connect_timeout=self.connect_timeout,
        )  # fmt: skip

    @property
    def spec(self) -> str:
        """POOL[/NAMESPACE]/IMAGE, as ``rbd`` writes it."""
        parts = (
            [self.pool, self.namespace, self.image] if self.namespace else [self.pool, self.image]
        )
        return "/".join(parts)

    def to_fd(self) -> int:
        """A sealed memfd holding this target, at offset 0; the caller closes it."""
        data = json.dumps(asdict(self)).encode()
        fd = os.memfd_create("rbd-target", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        return fd

    @classmethod
    def read_fd(cls, fd: int) -> RbdTarget:
        """The target in ``fd`` (from ``to_fd``), read from offset 0."""
        data = os.pread(fd, MAX_BYTES + 1, 0)
        if len(data) > MAX_BYTES:
            raise TargetError("the RBD target is too large")
        try:
            fields: Any = json.loads(data)
        except ValueError as exc:
            raise TargetError(f"the RBD target is not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise TargetError("the RBD target is not a JSON object")
        try:
            return cls(**fields)
        except TypeError as exc:
            raise TargetError(f"the RBD target has unknown or missing fields: {exc}") from None


def _is_cephx_secret(key: str) -> bool:
    """Whether ``key`` decodes as Ceph encodes a secret: a 2-byte type, an 8-byte creation
    time, a 2-byte length, then that many bytes."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) > 12 and len(raw) == 12 + int.from_bytes(raw[10:12], "little")
