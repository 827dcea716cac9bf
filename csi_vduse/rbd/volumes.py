"""RBD volumes as the controller manages them: made (blank, from a snapshot, or as a clone of
a volume), found, grown and removed by the CO's names and our ids, in the pools of the
clusters the driver knows.

Every call is idempotent, as CSI requires. A volume is image ``csi-vol-<digits of the
CO's name>`` (``ids``), labelled with that name in its metadata once made (``labels``), so
a CreateVolume repeated after a crash finds the image and finishes it; the label also shows
``rbd info``'s reader whose image it is. A restored volume is a format-2 clone of its CSI
snapshot's image; a volume's clone is a clone of a snapshot ``csi-clone-<digits>`` of the
source, removed again at once (it waits in the trash namespace for the clone): both are
flattened where their chain grows too long (``chains``). Each call connects with the
credentials the CO passed for it (``pools``); no call holds an image open, so the controller
never shows up as a volume's user.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.ceph.image import RbdError
from csi_vduse.ceph.lineage import Lineage
from csi_vduse.ceph.pool import FEATURES, feature_bits
from csi_vduse.rbd import chains, labels, removal
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import RbdSnapshotId, RbdVolumeId
from csi_vduse.rbd.placement import Placement
from csi_vduse.rbd.pools import OP_TIMEOUT, Pools

log = logging.getLogger(__name__)

SNAPSHOT = "csi-snap"  # the snapshot of a CSI snapshot's image that restores clone
CLONE_PREFIX = "csi-clone-"  # a volume's snapshot that a clone of it is made from
ALL_FEATURES = sum(FEATURES.values())

Source = RbdSnapshotId | RbdVolumeId


@dataclass(frozen=True, kw_only=True)
class RbdVolume:
    volume_id: RbdVolumeId
    size: int
    features: int  # RBD_FEATURE_* bits


class RbdVolumes:
    """The RBD volumes of the clusters in ``clusters`` (by clusterID)."""

    def __init__(
        self, clusters: Mapping[str, CephCluster], *, op_timeout: int = OP_TIMEOUT,
        chain_limit: int = chains.CHAIN_LIMIT,
    ):  # fmt: skip
        self.pools = Pools(clusters, op_timeout=op_timeout)
        self.chain_limit = chain_limit

    def create(
        self, name: str, *, size: int, placement: Placement, secrets: Mapping[str, str],
        parameters: str = "", source: Source | None = None,
    ) -> RbdVolume:  # fmt: skip
        """Volume ``name`` of ``size`` bytes, or the one an earlier call made: its size is
        then what that call gave it, for the caller to judge. ``parameters`` (the caller's
        text) is kept in the image's metadata; another text for the same name is EEXIST.
        With a ``source`` (in the same cluster and pool: EXDEV otherwise), the volume starts
        with its data; ``size`` must be at least the source's."""
        with self.pools.open(placement.cluster, placement.pool, secrets) as pool:
            volume_id = RbdVolumeId.for_name(cluster=placement.cluster, pool_id=pool.id, name=name)
            image = volume_id.image
            wanted = feature_bits(placement.features)
            lineage = Lineage(pool)
            made = pool.stat(image) is None and _make(
                lineage, source, volume_id, features=wanted, size=size, placement=placement
            )
            if made:
                log.info("created RBD image %s/%s for volume %s", pool.name, image, name)
            info = pool.stat(image)
            if info is None:  # removed between the two calls: by a DeleteVolume of ours
                raise RbdVolumeError(
                    "create RBD volume", f"image {pool.name}/{image} went away", errno.EAGAIN
                )
            chosen = info.features & ALL_FEATURES  # librbd adds bits of its own (data-pool)
            if chosen != wanted:
                raise RbdVolumeError(
                    "create RBD volume",
                    f"volume {name} exists with features {describe(chosen)}, "
                    f"not {describe(wanted)}",
                    errno.EEXIST,
                )
            own = labels.read(pool, image)
            if not own.claimed:  # made, but a call died before it could say so
                _check_parent(lineage, source, volume_id)
                labels.claim(pool, image, source=str(source or ""))
                own = labels.read(pool, image)
            _same(own.parameters, parameters, name=name, what="parameters")
            _same(own.source, str(source or ""), name=name, what="source")
            if own.name is None:  # a new image, or one a call that died left half made
                if source is not None:
                    size = max(size, info.size)
                    if info.size < size:
                        pool.resize(image, size)
                    chains.bound(lineage, image, limit=self.chain_limit)
                labels.finish(pool, image, name=name, parameters=parameters)
                info = pool.stat(image) or info
            elif own.name != name:
                raise RbdVolumeError(
                    "create RBD volume",
                    f"image {pool.name}/{image} belongs to volume {own.name!r}",
                    errno.EEXIST,
                )
            if isinstance(source, RbdVolumeId):  # the clone's snapshot, to the trash namespace
                lineage.remove_snapshot(source.image, name=CLONE_PREFIX + volume_id.digits)
            return RbdVolume(volume_id=volume_id, size=info.size, features=info.features)

    def existing(
        self, name: str, *, placement: Placement, secrets: Mapping[str, str]
    ) -> RbdVolume | None:
        """Volume ``name`` where a call before made it, complete; else None."""
        with self.pools.open(placement.cluster, placement.pool, secrets) as pool:
            volume_id = RbdVolumeId.for_name(cluster=placement.cluster, pool_id=pool.id, name=name)
            info = pool.stat(volume_id.image)
            if info is None or labels.read(pool, volume_id.image).name != name:
                return None
            return RbdVolume(volume_id=volume_id, size=info.size, features=info.features)

    def get(self, volume_id: RbdVolumeId, secrets: Mapping[str, str]) -> RbdVolume | None:
        """The volume, or None where its pool or image is gone."""
        try:
            with self.pools.open(volume_id.cluster, volume_id.pool_id, secrets) as pool:
                info = pool.stat(volume_id.image)
        except RbdVolumeError as exc:
            if exc.errno == errno.ENOENT:  # the pool is gone
                return None
            raise
        if info is None:
            return None
        return RbdVolume(volume_id=volume_id, size=info.size, features=info.features)

    def delete(self, volume_id: RbdVolumeId, secrets: Mapping[str, str]) -> None:
        """Remove the volume's image (``removal``); nothing to do where it is gone. Refused
        (EBUSY) while a client has it open: the node still serves it, or a dead client's
        watch has not timed out yet."""
        try:
            with self.pools.open(volume_id.cluster, volume_id.pool_id, secrets) as pool:
                removal.remove(Lineage(pool), volume_id.image, what="RBD volume")
        except RbdVolumeError as exc:
            if exc.errno != errno.ENOENT:
                raise
        log.info("deleted volume %s", volume_id)

    def expand(self, volume_id: RbdVolumeId, size: int, secrets: Mapping[str, str]) -> int:
        """Grow the volume's image to at least ``size`` bytes (a node serving it grows its
        device too); its size after."""
        with self.pools.open(volume_id.cluster, volume_id.pool_id, secrets) as pool:
            info = pool.stat(volume_id.image)
            if info is None:
                raise RbdVolumeError(
                    "expand RBD volume", f"volume {volume_id} does not exist", errno.ENOENT
                )
            if info.size >= size:
                return info.size
            pool.resize(volume_id.image, size)
            log.info("grew volume %s from %d to %d bytes", volume_id, info.size, size)
            return size


def _make(
    lineage: Lineage, source: Source | None, volume_id: RbdVolumeId, *, features: int,
    size: int, placement: Placement,
) -> bool:  # fmt: skip
    """Make ``volume_id``'s image, blank or a clone of ``source``, and claim it; whether this
    call made it (False: another made it meanwhile)."""
    pool, image = lineage.pool, volume_id.image
    try:
        if source is None:
            pool.create(image, size=size, features=features, data_pool=placement.data_pool)
        else:
            parent, snapshot = _parent_of(source, volume_id)
            _check_source(lineage, source, volume_id, features=features, placement=placement)
            if isinstance(source, RbdVolumeId):
                try:
                    lineage.snapshot(parent, name=snapshot)
                except RbdError as exc:
                    if exc.errno != errno.EEXIST:
                        raise
            lineage.clone(parent, snapshot=snapshot, child=image, features=features,
                          data_pool=placement.data_pool)  # fmt: skip
    except RbdError as exc:
        if exc.errno != errno.EEXIST:
            raise
        return False
    labels.claim(pool, image, source=str(source or ""))
    return True


def _parent_of(source: Source, volume_id: RbdVolumeId) -> tuple[str, str]:
    """The image and snapshot a volume made from ``source`` is a clone of: a snapshot's
    image's, or the one taken of a volume's image for it."""
    if isinstance(source, RbdSnapshotId):
        return source.image, SNAPSHOT
    return source.image, CLONE_PREFIX + volume_id.digits


def _check_source(
    lineage: Lineage, source: Source, volume_id: RbdVolumeId, *, features: int,
    placement: Placement,
) -> None:  # fmt: skip
    if source.pool_id != lineage.pool.id or source.cluster != volume_id.cluster:
        raise RbdVolumeError(
            "create RBD volume",
            f"{source} is in another cluster or pool than the StorageClass's {placement.pool}: "
            "restores and clones are made in their source's pool",
            errno.EXDEV,
        )
    if not features & FEATURES["layering"]:
        raise RbdVolumeError(
            "create RBD volume",
            "a volume made from a snapshot or a volume is a clone: imageFeatures needs layering",
            errno.EINVAL,
        )


def _check_parent(lineage: Lineage, source: Source | None, volume_id: RbdVolumeId) -> None:
    """EEXIST where an unclaimed image is not what this call would have made: a clone of
    another parent, or a clone where a blank image was asked for."""
    parent = lineage.parent(volume_id.image)
    wanted = _parent_of(source, volume_id) if source is not None else None
    if parent is not None and (parent.image, parent.snapshot) != wanted:
        raise RbdVolumeError(
            "create RBD volume",
            f"image {lineage.pool.name}/{volume_id.image} is a clone of "
            f"{parent.image}@{parent.snapshot}, not of {source or 'nothing'}",
            errno.EEXIST,
        )


def _same(kept: str | None, wanted: str, *, name: str, what: str) -> None:
    """EEXIST where the image's label holds another value than ``wanted``."""
    if kept is not None and kept != wanted:
        raise RbdVolumeError(
            "create RBD volume", f"volume {name} exists with {what} {kept}, not {wanted}",
            errno.EEXIST,
        )  # fmt: skip


def describe(features: int) -> str:
    """Feature bits as ``rbd --image-feature`` names them."""
    return ",".join(name for name, bit in FEATURES.items() if features & bit) or "none"
