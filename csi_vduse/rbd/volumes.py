"""RBD volumes as the controller manages them: made, found, grown and removed by the CO's
names and our ids, in the pools of the clusters the driver knows.

Every call is idempotent, as CSI requires. A volume is image ``csi-vol-<digits of the
CO's name>`` (``ids``), labelled with that name in its metadata (``NAME_KEY``) once made, so
a CreateVolume repeated after a crash finds the image and finishes the label; the label
also shows ``rbd info``'s reader whose image it is. Each call connects with the
credentials the CO passed for it and disconnects when done; no call holds an image open,
so the controller never shows up as a volume's user.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.ceph.image import RbdError
from csi_vduse.ceph.pool import FEATURES, RbdPool, feature_bits
from csi_vduse.rbd import credentials
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import RbdVolumeId
from csi_vduse.rbd.placement import Placement

log = logging.getLogger(__name__)

NAME_KEY = "csi.vduse.name"  # image metadata: the CO's name for the volume
PARAMETERS_KEY = "csi.vduse.parameters"  # and the parameters it was made with
OP_TIMEOUT = 60  # seconds a controller call waits on an OSD or a monitor
ALL_FEATURES = sum(FEATURES.values())


@dataclass(frozen=True, kw_only=True)
class RbdVolume:
    volume_id: RbdVolumeId
    size: int
    features: int  # RBD_FEATURE_* bits


class RbdVolumes:
    """The RBD volumes of the clusters in ``clusters`` (by clusterID)."""

    def __init__(self, clusters: Mapping[str, CephCluster], *, op_timeout: int = OP_TIMEOUT):
        self.clusters = dict(clusters)
        self.op_timeout = op_timeout

    @contextmanager
    def _pool(
        self, cluster_id: str, pool: str | int, secrets: Mapping[str, str]
    ) -> Iterator[RbdPool]:
        cluster = credentials.cluster(self.clusters, cluster_id)
        access = credentials.access(
            secrets,
            cluster,
            op_timeout=self.op_timeout,
            connect_timeout=credentials.CONNECT_TIMEOUT,
        )
        try:
            opened = RbdPool(access, pool, cluster.rados_namespace)
        except RbdError as exc:
            raise _volume_error(exc) from exc
        with opened:
            try:
                yield opened
            except RbdError as exc:
                raise _volume_error(exc) from exc

    def create(
        self, name: str, *, size: int, placement: Placement, secrets: Mapping[str, str],
        parameters: str = "",
    ) -> RbdVolume:  # fmt: skip
        """Volume ``name`` of ``size`` bytes, or the one an earlier call made: its size is
        then what that call gave it, for the caller to judge. ``parameters`` (the caller's
        text) is kept in the image's metadata; another text for the same name is EEXIST."""
        with self._pool(placement.cluster, placement.pool, secrets) as pool:
            volume_id = RbdVolumeId.for_name(cluster=placement.cluster, pool_id=pool.id, name=name)
            image = volume_id.image
            wanted = feature_bits(placement.features)
            try:
                pool.create(image, size=size, features=wanted, data_pool=placement.data_pool)
                log.info("created RBD image %s/%s for volume %s", pool.name, image, name)
            except RbdError as exc:
                if exc.errno != errno.EEXIST:
                    raise
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
            kept = pool.metadata(image, key=PARAMETERS_KEY)
            if kept is not None and kept != parameters:
                raise RbdVolumeError(
                    "create RBD volume",
                    f"volume {name} exists with parameters {kept}, not {parameters}",
                    errno.EEXIST,
                )
            labelled = pool.metadata(image, key=NAME_KEY)
            if labelled is None:  # a new image, or one a call that died left half made
                pool.set_metadata(image, key=PARAMETERS_KEY, value=parameters)
                pool.set_metadata(image, key=NAME_KEY, value=name)  # last: the image is complete
            elif labelled != name:
                raise RbdVolumeError(
                    "create RBD volume",
                    f"image {pool.name}/{image} belongs to volume {labelled!r}",
                    errno.EEXIST,
                )
            return RbdVolume(volume_id=volume_id, size=info.size, features=info.features)

    def get(self, volume_id: RbdVolumeId, secrets: Mapping[str, str]) -> RbdVolume | None:
        """The volume, or None where its pool or image is gone."""
        try:
            with self._pool(volume_id.cluster, volume_id.pool_id, secrets) as pool:
                info = pool.stat(volume_id.image)
        except RbdVolumeError as exc:
            if exc.errno == errno.ENOENT:  # the pool is gone
                return None
            raise
        if info is None:
            return None
        return RbdVolume(volume_id=volume_id, size=info.size, features=info.features)

    def delete(self, volume_id: RbdVolumeId, secrets: Mapping[str, str]) -> None:
        """Remove the volume's image; nothing to do where it is gone. Refused (EBUSY) while
        a client has it open: the node still serves it, or a dead client's watch has not
        timed out yet."""
        try:
            with self._pool(volume_id.cluster, volume_id.pool_id, secrets) as pool:
                self._remove(pool, volume_id.image)
        except RbdVolumeError as exc:
            if exc.errno != errno.ENOENT:
                raise
        log.info("deleted volume %s", volume_id)

    @staticmethod
    def _remove(pool: RbdPool, image: str) -> None:
        try:
            pool.remove(image)
        except RbdError as exc:
            if exc.errno == errno.EBUSY:
                users = ", ".join(pool.watchers(image)) or "a client"
                raise RbdVolumeError(
                    "delete RBD volume",
                    f"image {pool.name}/{image} is in use by {users}: unstage it first",
                    errno.EBUSY,
                ) from exc
            if exc.errno == errno.ENOTEMPTY:
                raise RbdVolumeError(
                    "delete RBD volume",
                    f"image {pool.name}/{image} has snapshots: delete them first",
                    errno.ENOTEMPTY,
                ) from exc
            raise

    def expand(self, volume_id: RbdVolumeId, size: int, secrets: Mapping[str, str]) -> int:
        """Grow the volume's image to at least ``size`` bytes (a node serving it grows its
        device too); its size after."""
        with self._pool(volume_id.cluster, volume_id.pool_id, secrets) as pool:
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


def describe(features: int) -> str:
    """Feature bits as ``rbd --image-feature`` names them."""
    return ",".join(name for name, bit in FEATURES.items() if features & bit) or "none"


def _volume_error(exc: RbdError) -> RbdVolumeError:
    return RbdVolumeError(exc.step, exc.message, exc.errno)
