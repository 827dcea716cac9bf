"""CSI snapshots of RBD volumes, as ceph-csi makes them: each one an image of its own.

A snapshot named N of volume V is image ``csi-snap-<digits of N>`` (``ids``): a format-2
clone of V's snapshot of the same name, which is removed again at once (it waits in V's
trash namespace while the clone reads from it), with a snapshot ``csi-snap`` of its own
that restores clone. So a snapshot outlives its volume and a volume its snapshots, in any
order, as Kubernetes lets them: deleting either never waits for the other
(``removal``). The image's metadata name the snapshot and its volume, so a repeated
CreateSnapshot finds it, and one for another volume under the same name is refused.

Making a snapshot copies nothing (unless the chain grows too long: ``chains``), so it is
ready to use when CreateSnapshot returns. A snapshot's image keeps its data in its volume's
data pool, if the volume has one.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from csi_vduse.ceph.image import RbdError
from csi_vduse.ceph.lineage import Lineage
from csi_vduse.ceph.pool import FEATURES
from csi_vduse.rbd import chains, labels, removal
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import RbdSnapshotId, RbdVolumeId
from csi_vduse.rbd.pools import Pools
from csi_vduse.rbd.volumes import SNAPSHOT

log = logging.getLogger(__name__)

# A snapshot's image is never written or mapped: layering to be cloned, deep-flatten so
# that it can be flattened with its snapshot (no other feature would be used).
FEATURES_OF_SNAPSHOTS = FEATURES["layering"] | FEATURES["deep-flatten"]


@dataclass(frozen=True, kw_only=True)
class RbdSnapshot:
    snapshot_id: RbdSnapshotId
    source: RbdVolumeId
    size: int
    created_ns: int


class RbdSnapshots:
    def __init__(self, pools: Pools, *, chain_limit: int = chains.CHAIN_LIMIT) -> None:
        self.pools = pools
        self.chain_limit = chain_limit

    def create(self, name: str, *, source: RbdVolumeId, secrets: Mapping[str, str]) -> RbdSnapshot:
        """Snapshot ``name`` of volume ``source``, or the one an earlier call made: ENOENT
        where the volume is gone, EEXIST where ``name`` is another volume's snapshot."""
        with self.pools.open(source.cluster, source.pool_id, secrets) as pool:
            lineage = Lineage(pool)
            snapshot_id = RbdSnapshotId.for_name(cluster=source.cluster, pool_id=pool.id, name=name)
            image = snapshot_id.image
            if pool.stat(image) is None:
                if pool.stat(source.image) is None:
                    raise RbdVolumeError(
                        "create RBD snapshot", f"volume {source} does not exist", errno.ENOENT
                    )
                self._clone(lineage, image, source)
            own = labels.read(pool, image)
            if not own.claimed:  # cloned, but a call died before it could say so
                parent = lineage.parent(image)
                if parent is not None and (parent.image, parent.snapshot) != (source.image, image):
                    raise RbdVolumeError(
                        "create RBD snapshot",
                        f"image {pool.name}/{image} is a clone of {parent.image}, not of "
                        f"volume {source}",
                        errno.EEXIST,
                    )
                labels.claim(pool, image, source=str(source), created_ns=time.time_ns())
                own = labels.read(pool, image)
            if own.source != str(source):
                raise RbdVolumeError(
                    "create RBD snapshot",
                    f"snapshot {name} exists, of another volume ({own.source})",
                    errno.EEXIST,
                )
            if own.name is None:
                chains.bound(lineage, image, limit=self.chain_limit)
                try:
                    lineage.snapshot(image, name=SNAPSHOT)
                except RbdError as exc:
                    if exc.errno != errno.EEXIST:
                        raise
                lineage.remove_snapshot(source.image, name=image)  # kept while the clone reads it
                labels.finish(pool, image, name=name)
                log.info("created snapshot %s (image %s/%s) of volume %s", name, pool.name,
                         image, source)  # fmt: skip
            elif own.name != name:
                raise RbdVolumeError(
                    "create RBD snapshot",
                    f"image {pool.name}/{image} belongs to snapshot {own.name!r}",
                    errno.EEXIST,
                )
            info = lineage.snapshot_info(image, name=SNAPSHOT)
            if info is None:
                raise RbdVolumeError(
                    "create RBD snapshot", f"image {pool.name}/{image} went away", errno.EAGAIN
                )
            return _snapshot(snapshot_id, source, size=info.size, own=own, taken=info.created_ns)

    @staticmethod
    def _clone(lineage: Lineage, image: str, source: RbdVolumeId) -> None:
        """The snapshot's image: a clone of a snapshot of the volume taken for it, claimed at
        once with the time the data is from. Its data, once flattened, goes where the
        volume's goes (its StorageClass's ``dataPool``)."""
        data_pool = lineage.pool.data_pool(source.image)
        taken = time.time_ns()
        try:
            lineage.snapshot(source.image, name=image)
        except RbdError as exc:
            if exc.errno != errno.EEXIST:
                raise
        try:
            lineage.clone(
                source.image,
                snapshot=image,
                child=image,
                features=FEATURES_OF_SNAPSHOTS,
                data_pool=data_pool,
            )
        except RbdError as exc:
            if exc.errno != errno.EEXIST:
                raise
            return  # another call made it meanwhile
        labels.claim(lineage.pool, image, source=str(source), created_ns=taken)

    def get(self, snapshot_id: RbdSnapshotId, secrets: Mapping[str, str]) -> RbdSnapshot | None:
        """The snapshot, or None where it is gone (or was never finished)."""
        try:
            with self.pools.open(snapshot_id.cluster, snapshot_id.pool_id, secrets) as pool:
                image = snapshot_id.image
                own = labels.read(pool, image) if pool.stat(image) is not None else None
                if own is None or own.name is None:
                    return None
                source = RbdVolumeId.parse(own.source or "")
                info = Lineage(pool).snapshot_info(image, name=SNAPSHOT)
        except RbdVolumeError as exc:
            if exc.errno == errno.ENOENT:  # the pool is gone
                return None
            raise
        if info is None or source is None:
            return None
        return _snapshot(snapshot_id, source, size=info.size, own=own, taken=info.created_ns)

    def delete(self, snapshot_id: RbdSnapshotId, secrets: Mapping[str, str]) -> None:
        """Remove the snapshot; volumes restored from it keep their data (``removal``).
        Nothing to do where it is gone."""
        try:
            with self.pools.open(snapshot_id.cluster, snapshot_id.pool_id, secrets) as pool:
                lineage = Lineage(pool)
                image = snapshot_id.image
                if pool.stat(image) is not None:
                    source = RbdVolumeId.parse(labels.read(pool, image).source or "")
                    if source is not None:  # a crash's leftover; none where the volume is gone
                        lineage.remove_snapshot(source.image, name=image)
                    lineage.remove_snapshot(image, name=SNAPSHOT)
                    removal.remove(lineage, image, what="RBD snapshot")
                else:
                    removal.reap(lineage)
        except RbdVolumeError as exc:
            if exc.errno != errno.ENOENT:
                raise
        log.info("deleted snapshot %s", snapshot_id)


def _snapshot(
    snapshot_id: RbdSnapshotId, source: RbdVolumeId, *, size: int, own: labels.Labels,
    taken: int,
) -> RbdSnapshot:  # fmt: skip
    """The snapshot as the controller answers with it: its time is when its data was taken
    from the volume (the label), not when a retry or a flatten finished it."""
    return RbdSnapshot(
        snapshot_id=snapshot_id, source=source, size=size, created_ns=own.created_ns or taken
    )
