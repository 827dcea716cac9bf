"""An RBD image as a device's backing, as the driver keeps it.

The device record holds where the image is and where its configuration and key are read
from (``RbdSource``), never the key itself: each dataplane start reads them afresh into the
target it hands over (``csi_vduse.ceph.target``), the monitors too where a clusters file
names them, so a successor started after the monitors moved reaches them. The driver opens the image
itself only to measure and grow it; librbd is loaded on first use, so a node that serves
files only never loads it.
"""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csi_vduse.ceph import clusters
from csi_vduse.ceph.target import RbdTarget, TargetError
from csi_vduse.devices.errors import DeviceError, RbdImageError

if TYPE_CHECKING:
    from csi_vduse.ceph.image import RbdImage

log = logging.getLogger(__name__)

DEFAULT_CONF = Path("/etc/ceph/ceph.conf")
PREFIX = "rbd:"  # how a device's backing names an image: rbd:POOL[/NAMESPACE]/IMAGE
MAX_KEYFILE = 64 << 10
_KEY_LINE = re.compile(r"^\s*key\s*=\s*(\S+)\s*$")


@dataclass(frozen=True, kw_only=True)
class RbdSource:
    pool: str
    image: str
    namespace: str = ""
    user: str = "admin"
    conf: str | None = None  # a ceph.conf path; None with no mon_host: DEFAULT_CONF
    keyfile: str | None = None  # the key alone, or a keyring holding the user's key
    mon_host: str = ""  # where no clusters file says otherwise
    # A clusters file (ceph-csi's config.json), read at each start: entry cluster_id's
    # monitors. None: mon_host (or the conf) alone.
    clusters_file: str | None = None
    cluster_id: str = ""
    connect_timeout: int = 30  # seconds to reach the monitors
    # The pool's id where the caller knows it (an RBD volume's id holds it): an image found
    # under the pool's name in a pool of another id is not this one.
    pool_id: int | None = None

    def __post_init__(self) -> None:
        self._checked(key="")  # the names are the target's to judge

    @classmethod
    def parse(cls, spec: str, **settings: Any) -> RbdSource:
        """``POOL/IMAGE`` or ``POOL/NAMESPACE/IMAGE``, as ``rbd`` takes them."""
        parts = spec.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise DeviceError(
                "validate", f"--rbd {spec!r}: use POOL/IMAGE or POOL/NAMESPACE/IMAGE", errno.EINVAL
            )
        namespace = parts[1] if len(parts) == 3 else ""
        return cls(pool=parts[0], namespace=namespace, image=parts[-1], **settings)

    @property
    def name(self) -> str:
        """What the record's ``backing`` says: rbd:POOL[/NAMESPACE]/IMAGE."""
        return PREFIX + self._checked(key="").spec

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RbdSource:
        """A record's source; fields a later release added are left out, so a driver rolled
        back still restarts the dataplanes of the devices its successor made."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.info("RBD image %s: ignoring the record's fields %s", data.get("image"), unknown)
        return cls(**{name: value for name, value in data.items() if name in known})

    def target(self, *, dead_owner: str = "") -> RbdTarget:
        """What a dataplane needs, read now: the configuration's text and the key."""
        conf_path = Path(self.conf) if self.conf else None
        if conf_path is None and not self.mon_host:
            conf_path = DEFAULT_CONF
        conf = _read("read the Ceph configuration", conf_path) if conf_path else ""
        key = self._key() if self.keyfile else ""
        return self._checked(key=key, conf=conf, dead_owner=dead_owner, mon_host=self.monitors())

    def monitors(self) -> str:
        """The monitors as the clusters file has them now; those the device was made with
        where it cannot say (logged: a start may then miss monitors that moved)."""
        if not self.clusters_file:
            return self.mon_host
        try:
            current = clusters.load(Path(self.clusters_file)).get(self.cluster_id)
        except clusters.ClusterConfigError as exc:
            log.warning("RBD image %s: %s; using the monitors it was staged with", self.image, exc)
            return self.mon_host
        if current is None:
            log.warning(
                "RBD image %s: cluster %s is no longer in %s; using the monitors it was "
                "staged with", self.image, self.cluster_id, self.clusters_file,
            )  # fmt: skip
            return self.mon_host
        return current.mon_host

    def _key(self) -> str:
        """The user's key from ``keyfile``: the key alone (as ``rbd --keyfile`` reads it) or
        a keyring's ``key = ...`` line. Messages never quote the file's content."""
        assert self.keyfile is not None
        text = _read("read the Ceph key file", Path(self.keyfile))
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) == 1 and "=" not in lines[0].rstrip("="):
            return lines[0].strip()
        keys = [m.group(1) for m in map(_KEY_LINE.match, lines) if m]
        if len(keys) != 1:
            raise DeviceError(
                "read the Ceph key file",
                f"{self.keyfile} holds neither a key alone nor a keyring with one key",
                errno.EINVAL,
            )
        return keys[0]

    def _checked(
        self, *, key: str, conf: str = "", dead_owner: str = "", mon_host: str | None = None
    ) -> RbdTarget:
        try:
            return RbdTarget(
                pool=self.pool, image=self.image, namespace=self.namespace, user=self.user,
                mon_host=self.mon_host if mon_host is None else mon_host, key=key, conf=conf,
                dead_owner=dead_owner,
                connect_timeout=self.connect_timeout,
            )  # fmt: skip
        except TargetError as exc:
            raise RbdImageError("validate", str(exc), errno.EINVAL) from None


def _read(step: str, path: Path) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_KEYFILE + 1)
    except OSError as exc:
        raise DeviceError(step, f"{path}: {exc.strerror}", exc.errno) from None
    if len(data) > MAX_KEYFILE:
        raise DeviceError(step, f"{path} is too large", errno.EFBIG)
    return data.decode(errors="replace")


@contextmanager
def _opened(source: RbdSource, *, readonly: bool) -> Iterator[RbdImage]:
    """The image open in this process, its failures as RbdImageErrors."""
    from csi_vduse.ceph.image import RbdError, RbdImage  # noqa: PLC0415

    try:
        image = RbdImage(source.target(), readonly=readonly)
    except RbdError as exc:
        raise RbdImageError("open RBD image", exc.message, exc.errno) from None
    try:
        yield image
    except RbdError as exc:
        raise RbdImageError(exc.step, exc.message, exc.errno) from None
    finally:
        image.close()


def image_size(source: RbdSource) -> int:
    """The image's size in bytes, opened read-only (no lock taken): also proves the monitors,
    the key, the pool and the image before anything is made for a device."""
    with _opened(source, readonly=True) as image:
        if source.pool_id is not None and image.pool_id != source.pool_id:
            raise RbdImageError(
                "open RBD image",
                f"pool {source.pool} has id {image.pool_id}, not {source.pool_id}: RBD image "
                f"{source.pool}/{source.image} is not the one asked for",
                errno.ENOENT,
            )
        return image.size


def grow_image(source: RbdSource, size: int) -> None:
    """Grow the image to ``size`` bytes (never shrinks it). librbd has the client holding
    the image's lock, the device's dataplane, do it; the dataplane sees it grow."""
    with _opened(source, readonly=False) as image:
        if image.current_size() < size:
            image.resize(size)
