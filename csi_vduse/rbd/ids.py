"""RBD volume ids: which cluster, which pool and which image, in the string the CO keeps.

``rbd-<clusterID>-<pool id: 16 hex digits>-<32 hex digits>``. The digits are those of the
CO's name (``pool.ids.digest``), so a repeated CreateVolume finds the same image,
``csi-vol-<digits>``; the pool is named by id, which survives a rename, as ceph-csi's ids
do. The fixed-width tail makes an id parse unambiguously whatever dashes the clusterID has,
and at most 118 bytes keeps it inside the spec's 128.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from csi_vduse.ceph.clusters import MAX_ID
from csi_vduse.pool.ids import digest

PREFIX = "rbd-"
IMAGE_PREFIX = "csi-vol-"
_ID = re.compile(
    rf"rbd-(?P<cluster>[A-Za-z0-9._-]{{1,{MAX_ID}}})-(?P<pool>[0-9a-f]{{16}})"
    r"-(?P<digits>[0-9a-f]{32})"
)


@dataclass(frozen=True, kw_only=True)
class RbdVolumeId:
    cluster: str
    pool_id: int
    digits: str

    @classmethod
    def for_name(cls, *, cluster: str, pool_id: int, name: str) -> RbdVolumeId:
        return cls(cluster=cluster, pool_id=pool_id, digits=digest(name))

    @classmethod
    def parse(cls, text: str) -> RbdVolumeId | None:
        """The id ``text`` is, or None where it is not an RBD volume's."""
        match = _ID.fullmatch(text)
        if match is None:
            return None
        return cls(cluster=match["cluster"], pool_id=int(match["pool"], 16), digits=match["digits"])

    @property
    def image(self) -> str:
        """The image's name in its pool."""
        return IMAGE_PREFIX + self.digits

    def __str__(self) -> str:
        return f"{PREFIX}{self.cluster}-{self.pool_id:016x}-{self.digits}"
