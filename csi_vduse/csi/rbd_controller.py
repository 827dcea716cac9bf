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
from typing import TYPE_CHECKING

from csi_vduse.csi import parameters, rbd_parameters, validate
from csi_vduse.csi.capacity import capacity_for, fits
from csi_vduse.csi.errors import already_exists, invalid, not_found
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.proto import pb
from csi_vduse.csi.timestamps import timestamp
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import RbdSnapshotId, RbdVolumeId

if TYPE_CHECKING:  # only a driver given --ceph-clusters makes one, and loads librbd
    from csi_vduse.rbd.snapshots import RbdSnapshot, RbdSnapshots
    from csi_vduse.rbd.volumes import RbdVolumes, Source


class RbdController:
    def __init__(self, volumes: RbdVolumes, snapshots: RbdSnapshots, locks: OperationLocks) -> None:
        self.volumes = volumes
        self.snapshots = snapshots
        self.locks = locks

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


def _snapshot(snapshot: RbdSnapshot) -> pb.Snapshot:
    return pb.Snapshot(
        size_bytes=snapshot.size,
        snapshot_id=str(snapshot.snapshot_id),
        source_volume_id=str(snapshot.source),
        creation_time=timestamp(snapshot.created_ns),
        ready_to_use=True,
    )
