"""The Controller service's RBD half: volumes that are images in a Ceph pool, made by the
central instance (``serve --controller --ceph-clusters FILE``) for any node to reach.

``ControllerService`` hands it the calls about RBD volumes and snapshots: a CreateVolume
whose parameters say ``backend: rbd``, a CreateSnapshot of an RBD volume, and every call
whose volume or snapshot id is an RBD one (``rbd.ids``). Each call reaches the cluster
with the secrets the CO sent with it (the StorageClass's provisioner and controller-expand
secrets, the VolumeSnapshotClass's snapshotter secret); none is kept.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from csi_vduse.csi import parameters, rbd_parameters, validate
from csi_vduse.csi.capacity import capacity_for, fits
from csi_vduse.csi.errors import RpcError, already_exists, invalid, not_found
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.proto import pb
from csi_vduse.csi.timestamps import timestamp
from csi_vduse.rbd import credentials
from csi_vduse.rbd.controller_secret import ControllerSecret
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import IMAGE_PREFIX, SNAPSHOT_IMAGE_PREFIX, RbdSnapshotId, RbdVolumeId

if TYPE_CHECKING:  # only a driver given --ceph-clusters makes one, and loads librbd
    from csi_vduse.ceph.survey import Survey
    from csi_vduse.rbd.inventory import Found
    from csi_vduse.rbd.snapshots import RbdSnapshot, RbdSnapshots
    from csi_vduse.rbd.volumes import RbdVolumes, Source

Key = tuple[int, str]  # how listings are ordered and paged: creation time, id
VolumeEntry = pb.ListVolumesResponse.Entry
SnapshotEntry = pb.ListSnapshotsResponse.Entry

log = logging.getLogger(__name__)
T = TypeVar("T")


class RbdController:
    def __init__(
        self, volumes: RbdVolumes, snapshots: RbdSnapshots, locks: OperationLocks, *,
        own_secret: ControllerSecret | None = None,
    ) -> None:  # fmt: skip
        self.volumes = volumes
        self.snapshots = snapshots
        self.locks = locks
        self.own_secret = own_secret  # for the calls that carry no secrets

    @property
    def lists(self) -> bool:
        """Whether it serves the calls that come without secrets."""
        return self.own_secret is not None

    def _own_secrets(self, cluster_id: str) -> dict[str, str]:
        cluster = credentials.cluster(self.volumes.pools.clusters, cluster_id)
        if self.own_secret is None:
            raise RbdVolumeError(
                "read the controller's Ceph credentials",
                "this call carries no secrets, and the driver has none of its own for Ceph "
                "(start it with --ceph-controller-secret)",
                errno.ENOKEY,
            )
        return self.own_secret.secrets(cluster)

    def create(
        self, request: pb.CreateVolumeRequest, *, name: str, own: dict[str, str], size: int
    ) -> pb.CreateVolumeResponse:
        """``name`` checked, ``own`` the caller's parameters, ``size`` what its capacity
        range asks for."""
        chosen = rbd_parameters.parse(own)
        if request.mutable_parameters:
            raise invalid("RBD volumes take no mutable parameters yet")
        secrets = dict(request.secrets)
        capacity_range = request.capacity_range if request.HasField("capacity_range") else None
        text = json.dumps(own, sort_keys=True)
        with self.locks.hold(f"rbd-name:{name}"):
            source = None
            if request.HasField("volume_content_source"):
                source = self._source_id(request.volume_content_source)
            try:
                # A retry finds its volume even where the source has gone since.
                if source is not None and not self.volumes.existing(
                    name, placement=chosen.placement, secrets=secrets
                ):
                    size = capacity_for(capacity_range, at_least=self._source_size(source, secrets))
                volume = self.volumes.create(
                    name, size=size, placement=chosen.placement, secrets=secrets,
                    parameters=text, source=source,
                )  # fmt: skip
            except RbdVolumeError as exc:
                if exc.errno == errno.ENOENT and source is not None:
                    self._source_size(source, secrets)  # NOT_FOUND where it went meanwhile
                if exc.errno in (errno.ENOENT, errno.ENXIO):  # a pool or cluster named wrong
                    raise invalid(f"{exc.step}: {exc.message}") from exc
                raise
        if not fits(volume.size, capacity_range):
            raise already_exists(
                f"volume {name!r} exists with {volume.size} bytes, outside the capacity range"
            )
        return pb.CreateVolumeResponse(
            volume=pb.Volume(
                capacity_bytes=volume.size,
                volume_id=str(volume.volume_id),
                volume_context=chosen.context(volume.volume_id.image),
                content_source=request.volume_content_source if source is not None else None,
            )
        )

    @staticmethod
    def _source_id(source: pb.VolumeContentSource) -> Source:
        """The snapshot or volume a new volume starts from; NOT_FOUND where it is no RBD
        one (none of ours has that id)."""
        kind = source.WhichOneof("type")
        if kind == "snapshot":
            given = validate.require_id(
                source.snapshot.snapshot_id, "volume_content_source.snapshot.snapshot_id"
            )
            snapshot_id = RbdSnapshotId.parse(given)
            if snapshot_id is None:
                raise not_found(f"source snapshot {given} does not exist")
            return snapshot_id
        if kind == "volume":
            given = validate.require_id(
                source.volume.volume_id, "volume_content_source.volume.volume_id"
            )
            volume_id = RbdVolumeId.parse(given)
            if volume_id is None:
                raise not_found(f"source volume {given} does not exist")
            return volume_id
        raise invalid("volume_content_source needs a snapshot or a volume")

    def _source_size(self, source: Source, secrets: dict[str, str]) -> int:
        """The size of ``source``; NOT_FOUND where it is gone."""
        if isinstance(source, RbdSnapshotId):
            snapshot = self.snapshots.get(source, secrets)
            if snapshot is None:
                raise not_found(f"source snapshot {source} does not exist")
            return snapshot.size
        volume = self.volumes.get(source, secrets)
        if volume is None:
            raise not_found(f"source volume {source} does not exist")
        return volume.size

    def delete(
        self, volume_id: RbdVolumeId, request: pb.DeleteVolumeRequest
    ) -> pb.DeleteVolumeResponse:
        with self.locks.hold(str(volume_id)):
            self.volumes.delete(volume_id, dict(request.secrets))
        return pb.DeleteVolumeResponse()

    def expand(
        self, volume_id: RbdVolumeId, request: pb.ControllerExpandVolumeRequest, size: int
    ) -> pb.ControllerExpandVolumeResponse:
        """The image grows here; a node serving it sees its device grow, and grows the
        filesystem in NodeExpandVolume."""
        with self.locks.hold(str(volume_id)):
            capacity = self.volumes.expand(volume_id, size, dict(request.secrets))
        return pb.ControllerExpandVolumeResponse(
            capacity_bytes=capacity, node_expansion_required=True
        )

    def validate(
        self, volume_id: RbdVolumeId, request: pb.ValidateVolumeCapabilitiesRequest
    ) -> pb.ValidateVolumeCapabilitiesResponse:
        if self.volumes.get(volume_id, dict(request.secrets)) is None:
            raise not_found(f"volume {volume_id} does not exist")
        reason = validate.unsupported_reason(list(request.volume_capabilities))
        own = parameters.own(dict(request.parameters))
        if reason is None and own and parameters.backend_of(own) != parameters.RBD:
            reason = f"volume {volume_id} is an RBD volume; the parameters ask for another"
        if reason is None and request.mutable_parameters:
            reason = "RBD volumes take no mutable parameters yet"
        if reason is not None:
            return pb.ValidateVolumeCapabilitiesResponse(message=reason)
        return validate.confirmed(request)  # no mutable parameters: refused above

    def create_snapshot(
        self, source: RbdVolumeId, request: pb.CreateSnapshotRequest, *, name: str
    ) -> pb.CreateSnapshotResponse:
        with self.locks.hold(f"rbd-snapshot:{name}", str(source)):
            try:
                snapshot = self.snapshots.create(name, source=source, secrets=dict(request.secrets))
            except RbdVolumeError as exc:
                if exc.errno == errno.ENOENT:
                    raise not_found(f"source volume {source} does not exist") from exc
                raise
        return pb.CreateSnapshotResponse(snapshot=_snapshot(snapshot))

    def delete_snapshot(
        self, snapshot_id: RbdSnapshotId, request: pb.DeleteSnapshotRequest
    ) -> pb.DeleteSnapshotResponse:
        with self.locks.hold(str(snapshot_id)):
            self.snapshots.delete(snapshot_id, dict(request.secrets))
        return pb.DeleteSnapshotResponse()

    # -- the calls without secrets, and ListSnapshots -------------------------------------

    def _across_clusters(
        self, what: str, work: Callable[[str, dict[str, str]], list[T]],
        secrets: dict[str, str] | None = None,
    ) -> list[T]:  # fmt: skip
        """``work`` for every cluster the driver knows, with ``secrets`` or its own. A cluster
        that fails (unreachable, no or refused credentials) is left out, with a warning, so
        one cluster gone does not hide the others; when every one fails, so does the call."""
        clusters = sorted(self.volumes.pools.clusters)
        results: list[T] = []
        failed: list[RbdVolumeError] = []
        for cluster_id in clusters:
            try:
                results.extend(work(cluster_id, secrets or self._own_secrets(cluster_id)))
            except RbdVolumeError as exc:
                log.warning("%s: Ceph cluster %s left out: %s", what, cluster_id, exc.message)
                failed.append(exc)
        if failed and len(failed) == len(clusters):
            raise failed[0]
        return results

    def volume_entries(self) -> list[tuple[Key, VolumeEntry]]:
        """Every volume of ours in every cluster the driver knows (and can reach)."""
        from csi_vduse.rbd import inventory  # noqa: PLC0415  (loads librbd)

        def in_cluster(cluster_id: str, secrets: dict[str, str]) -> list[tuple[Key, VolumeEntry]]:
            entries = []
            for found in inventory.images(
                self.volumes.pools, cluster_id, secrets, prefix=IMAGE_PREFIX
            ):
                volume = _volume_of(found)
                if volume is not None:
                    status = pb.ListVolumesResponse.VolumeStatus(volume_condition=_condition(found))
                    entry = VolumeEntry(volume=volume, status=status)
                    entries.append(((found.facts.created_ns, volume.volume_id), entry))
            return entries

        return self._across_clusters("ListVolumes", in_cluster)

    def get_volume(self, volume_id: RbdVolumeId) -> pb.ControllerGetVolumeResponse:
        from csi_vduse.rbd import inventory  # noqa: PLC0415  (loads librbd)

        found = None
        if volume_id.cluster in self.volumes.pools.clusters:
            found = inventory.find(
                self.volumes.pools, volume_id.cluster, self._own_secrets(volume_id.cluster),
                pool=volume_id.pool_id, image=volume_id.image,
            )  # fmt: skip
        volume = _volume_of(found) if found is not None else None
        if found is None or volume is None:
            raise not_found(f"volume {volume_id} does not exist")
        return pb.ControllerGetVolumeResponse(
            volume=volume,
            status=pb.ControllerGetVolumeResponse.VolumeStatus(volume_condition=_condition(found)),
        )

    def snapshot_entries(self, request: pb.ListSnapshotsRequest) -> list[tuple[Key, SnapshotEntry]]:
        """The snapshots ``request`` asks for, with its secrets or else the controller's;
        by id or by volume, ids that are no RBD ones are none of ours here."""
        from csi_vduse.rbd import inventory  # noqa: PLC0415  (loads librbd)

        clusters = sorted(self.volumes.pools.clusters)
        pool: int | None = None
        image: str | None = None
        source: RbdVolumeId | None = None
        if request.snapshot_id:
            snapshot_id = RbdSnapshotId.parse(request.snapshot_id)
            if snapshot_id is None or snapshot_id.cluster not in clusters:
                return []
            clusters, pool, image = [snapshot_id.cluster], snapshot_id.pool_id, snapshot_id.image
        if request.source_volume_id:
            source = RbdVolumeId.parse(request.source_volume_id)
            if (
                source is None
                or source.cluster not in clusters
                or pool not in (None, source.pool_id)
            ):
                return []
            clusters, pool = [source.cluster], source.pool_id

        def in_cluster(cluster_id: str, secrets: dict[str, str]) -> list[tuple[Key, SnapshotEntry]]:
            if image is not None and pool is not None:
                found = inventory.find(
                    self.volumes.pools, cluster_id, secrets, pool=pool, image=image
                )
                everything = [found] if found is not None else []
            else:
                everything = inventory.images(
                    self.volumes.pools, cluster_id, secrets, prefix=SNAPSHOT_IMAGE_PREFIX,
                    pool=pool,
                )  # fmt: skip
            entries = []
            for found in everything:
                snapshot = _snapshot_of(found)
                if snapshot is None or (source and snapshot.source_volume_id != str(source)):
                    continue
                key = (snapshot.creation_time.ToNanoseconds(), snapshot.snapshot_id)
                entries.append((key, SnapshotEntry(snapshot=snapshot)))
            return entries

        if len(clusters) == 1:  # named by the request: its secrets are that cluster's
            return in_cluster(clusters[0], dict(request.secrets) or self._own_secrets(clusters[0]))
        # Every cluster: one user's secrets reach one cluster at best, so the driver's own
        # serve where it has them.
        given = None if self.own_secret is not None else dict(request.secrets) or None
        return self._across_clusters("ListSnapshots", in_cluster, given)

    def get_capacity(self, own: dict[str, str] | None) -> pb.GetCapacityResponse:
        """What the StorageClass's pool (its data pool, where it names one) can still hold,
        as ``ceph df`` says: replication and the full ratio counted. Without parameters:
        the most any pool for RBD of any cluster can."""
        if own is None:

            def in_cluster(cluster_id: str, secrets: dict[str, str]) -> list[int]:
                with self.volumes.pools.survey(cluster_id, secrets) as survey:
                    return [_space(survey, pool) for pool in survey.rbd_pools()]

            largest = max(self._across_clusters("GetCapacity", in_cluster), default=0)
            return pb.GetCapacityResponse(available_capacity=largest)
        placement = rbd_parameters.parse(own).placement
        secrets = self._own_secrets(placement.cluster)
        with self.volumes.pools.survey(placement.cluster, secrets) as survey:
            space = _space(survey, placement.data_pool or placement.pool)
        return pb.GetCapacityResponse(available_capacity=space)


def _space(survey: Survey, pool: str) -> int:
    """The bytes ``pool`` can still take: none where there is no such pool."""
    space = survey.space(pool)
    if space is not None:
        return space.max_avail
    if pool not in survey.pools():
        return 0
    raise RbdVolumeError(
        "measure Ceph pool",
        f"the monitors have no space figures for pool {pool} (they come from ceph-mgr: is "
        "one running?)",
        errno.ENODATA,
    )


def _volume_of(found: Found) -> pb.Volume | None:
    """The volume an image of ours is, as CreateVolume answered with it."""
    volume_id = RbdVolumeId.parse(
        f"{RbdVolumeId.prefix}{found.cluster}-{found.pool_id:016x}-"
        f"{found.image.removeprefix(IMAGE_PREFIX)}"
    )
    if volume_id is None or volume_id.image != found.image:
        return None
    volume = pb.Volume(capacity_bytes=found.facts.size, volume_id=str(volume_id))
    try:
        kept = json.loads(found.labels.parameters or "{}")
        volume.volume_context.update(rbd_parameters.parse(kept).context(found.image))
    except (ValueError, AttributeError, RpcError):
        pass  # labelled by a version that kept other parameters: the id says where it is
    source = found.labels.source or ""
    if RbdSnapshotId.parse(source) is not None:
        volume.content_source.snapshot.snapshot_id = source
    elif RbdVolumeId.parse(source) is not None:
        volume.content_source.volume.volume_id = source
    return volume


def _snapshot_of(found: Found) -> pb.Snapshot | None:
    snapshot_id = RbdSnapshotId.parse(
        f"{RbdSnapshotId.prefix}{found.cluster}-{found.pool_id:016x}-"
        f"{found.image.removeprefix(SNAPSHOT_IMAGE_PREFIX)}"
    )
    source = RbdVolumeId.parse(found.labels.source or "")
    if snapshot_id is None or snapshot_id.image != found.image or source is None:
        return None
    return pb.Snapshot(
        size_bytes=found.facts.size,
        snapshot_id=str(snapshot_id),
        source_volume_id=str(source),
        creation_time=timestamp(found.labels.created_ns or found.facts.created_ns),
        ready_to_use=True,
    )


def _condition(found: Found) -> pb.VolumeCondition:
    """The volume's condition as the controller sees it: its image, opened just now."""
    return pb.VolumeCondition(
        abnormal=False,
        message=f"its RBD image {found.image} is there and opens",
    )


def _snapshot(snapshot: RbdSnapshot) -> pb.Snapshot:
    return pb.Snapshot(
        size_bytes=snapshot.size,
        snapshot_id=str(snapshot.snapshot_id),
        source_volume_id=str(snapshot.source),
        creation_time=timestamp(snapshot.created_ns),
        ready_to_use=True,
    )
