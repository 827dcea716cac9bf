"""RBD volume and snapshot ids: which cluster, which pool and which image, in the string the
CO keeps.

``rbd-<clusterID>-<pool id: 16 hex digits>-<32 hex digits>`` for a volume, image
``csi-vol-<digits>``; ``rbdsnap-`` and image ``csi-snap-<digits>`` for a snapshot (each CSI
snapshot is an image of its own: ``rbd.snapshots``). The digits are those of the CO's name
(``pool.ids.digest``), so a repeated CreateVolume or CreateSnapshot finds the same image; the
pool is named by id, which survives a rename, as ceph-csi's ids do. The fixed-width tail
makes an id parse unambiguously whatever dashes the clusterID has, and at most 122 bytes
keeps it inside the spec's 128.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Self

from csi_vduse.ceph.clusters import MAX_ID
from csi_vduse.pool.ids import digest

PREFIX = "rbd-"
IMAGE_PREFIX = "csi-vol-"
SNAPSHOT_PREFIX = "rbdsnap-"
SNAPSHOT_IMAGE_PREFIX = "csi-snap-"
_TAIL = (
    rf"(?P<cluster>[A-Za-z0-9._-]{{1,{MAX_ID}}})-(?P<pool>[0-9a-f]{{16}})"
    r"-(?P<digits>[0-9a-f]{32})"
)


@dataclass(frozen=True, kw_only=True)
class _ImageId:
    prefix: ClassVar[str]
    image_prefix: ClassVar[str]
    cluster: str
    pool_id: int
    digits: str

    @classmethod
    def for_name(cls, *, cluster: str, pool_id: int, name: str) -> Self:
        return cls(cluster=cluster, pool_id=pool_id, digits=digest(name))

    @classmethod
    def parse(cls, text: str) -> Self | None:
        """The id ``text`` is, or None where it is not one of this kind."""
        if not text.startswith(cls.prefix):
            return None
        match = re.fullmatch(_TAIL, text[len(cls.prefix) :])
        if match is None:
            return None
        return cls(cluster=match["cluster"], pool_id=int(match["pool"], 16), digits=match["digits"])

    @property
    def image(self) -> str:
        """The image's name in its pool."""
        return self.image_prefix + self.digits

    def __str__(self) -> str:
        return f"{self.prefix}{self.cluster}-{self.pool_id:016x}-{self.digits}"


@dataclass(frozen=True, kw_only=True)
class RbdVolumeId(_ImageId):
    prefix = PREFIX
    image_prefix = IMAGE_PREFIX


@dataclass(frozen=True, kw_only=True)
class RbdSnapshotId(_ImageId):
    prefix = SNAPSHOT_PREFIX
    image_prefix = SNAPSHOT_IMAGE_PREFIX
