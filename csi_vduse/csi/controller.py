"""The Controller service for node-local pools: volumes, snapshots and clones as files;
the calls about RBD volumes go to its RBD half (``rbd_controller``).

Volumes live on the node that serves them, so this service runs next to the Node
service on every node (external-provisioner in node-deployment mode). Started without a
pool it is the central instance external-resizer talks to: it can only record an
expansion and hand the work to NodeExpandVolume, and, given a ``ModifyRouter``, pass a
ControllerModifyVolume to the volume's node through its PersistentVolume.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from google.protobuf.wrappers_pb2 import Int64Value

from csi_vduse.csi import capabilities, mutable, parameters, validate
from csi_vduse.csi.capacity import capacity_for, fits
from csi_vduse.csi.edge import rpc
from csi_vduse.csi.errors import (
    Code,
    RpcError,
    already_exists,
    failed_precondition,
    invalid,
    not_found,
    unimplemented,
)
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.modify import VolumeModifier
from csi_vduse.csi.modify_routing import ModifyRouter
from csi_vduse.csi.paging import page_of
from csi_vduse.csi.proto import pb
from csi_vduse.csi.rbd_controller import RbdController
from csi_vduse.csi.timestamps import timestamp
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.pool import ids
from csi_vduse.pool.store import SIZE_ALIGNMENT, Pool, SnapshotRecord, VolumeRecord
from csi_vduse.rbd.ids import RbdSnapshotId, RbdVolumeId

log = logging.getLogger(__name__)


def snapshot_of(record: SnapshotRecord) -> pb.Snapshot:
    """A snapshot as CSI describes it."""
    return pb.Snapshot(
        size_bytes=record.size,
        snapshot_id=record.snapshot_id,
        source_volume_id=record.source_volume_id,
        creation_time=timestamp(record.created_ns),
        ready_to_use=True,
        group_snapshot_id=record.group_snapshot_id or "",
    )


RBD_SERVED = {  # what an instance without a pool serves for RBD volumes
    pb.ControllerServiceCapability.RPC.Type.CREATE_DELETE_VOLUME,
    pb.ControllerServiceCapability.RPC.Type.SINGLE_NODE_MULTI_WRITER,
    pb.ControllerServiceCapability.RPC.Type.CREATE_DELETE_SNAPSHOT,
    pb.ControllerServiceCapability.RPC.Type.CLONE_VOLUME,
}

RBD_LISTED = {  # and where it has Ceph credentials of its own, for the calls without secrets
    pb.ControllerServiceCapability.RPC.Type.LIST_VOLUMES,
    pb.ControllerServiceCapability.RPC.Type.GET_VOLUME,
    pb.ControllerServiceCapability.RPC.Type.VOLUME_CONDITION,
    pb.ControllerServiceCapability.RPC.Type.LIST_SNAPSHOTS,
    pb.ControllerServiceCapability.RPC.Type.GET_CAPACITY,
}


class ControllerService:
    def __init__(
        self,
        pool: Pool | None,
        devices: DeviceManager,
        node_id: str,
        *,
        locks: OperationLocks | None = None,
        router: ModifyRouter | None = None,
        rbd: RbdController | None = None,
    ) -> None:
        self.pool = pool
        self.devices = devices
        self.node_id = node_id
        self.locks = locks or OperationLocks()
        self.modifier = VolumeModifier(pool, devices, self.locks) if pool is not None else None
        self.router = router  # without a pool: ControllerModifyVolume goes to the node
        self.rbd = rbd  # RBD volumes' calls go there

    def _rbd(self) -> RbdController:
        if self.rbd is None:
            raise invalid(
                "this driver serves no RBD volumes (start it with --controller --ceph-clusters)"
            )
        return self.rbd

    # -- helpers ------------------------------------------------------------------------

    def _pool(self) -> Pool:
        if self.pool is None:
            raise RpcError(
                Code.UNAVAILABLE,
                "this controller serves no pool (started without --pool-dir); "
                "volumes are managed by the node plugins",
            )
        return self.pool

    def _topology(self) -> pb.Topology:
        return pb.Topology(segments={capabilities.TOPOLOGY_KEY: self.node_id})

    def _reachable(self, topologies: list[pb.Topology]) -> bool:
        return any(
            t.segments.get(capabilities.TOPOLOGY_KEY, self.node_id) == self.node_id
            for t in topologies
        )

    def _volume(self, record: VolumeRecord) -> pb.Volume:
        volume = pb.Volume(
            capacity_bytes=record.capacity,
            volume_id=record.volume_id,
            volume_context=parameters.parse(record.parameters).context(),
            accessible_topology=[self._topology()],
        )
        if record.source_snapshot_id:
            volume.content_source.snapshot.snapshot_id = record.source_snapshot_id
        elif record.source_volume_id:
            volume.content_source.volume.volume_id = record.source_volume_id
        return volume

    def _condition(self, record: VolumeRecord) -> pb.VolumeCondition:
        """The volume's condition as the pool sees it: its backing file and filesystem.

        The spec has controller and node report from different perspectives; the node's
        NodeGetVolumeStats reports the device and the mount (NodeVolumes.health)."""
        problem = self._pool().problem(record)
        if problem is not None:
            return pb.VolumeCondition(abnormal=True, message=problem)
        return pb.VolumeCondition(
            abnormal=False, message="the backing file is present and readable in the pool"
        )

    def _status(self, record: VolumeRecord) -> pb.ListVolumesResponse.VolumeStatus:
        # published_node_ids stays empty: without LIST_VOLUMES_PUBLISHED_NODES (and
        # PUBLISH_UNPUBLISH_VOLUME, which it needs) the CO must not interpret it.
        return pb.ListVolumesResponse.VolumeStatus(volume_condition=self._condition(record))

    @staticmethod
    def _other_limits(given: dict[str, str], record: VolumeRecord) -> str | None:
        """Why a volume does not have the limits ``given`` asks for, or None when it does."""
        try:
            wanted = mutable.limits(given)
        except RpcError as exc:
            return exc.message
        if wanted != mutable.limits(record.mutable_parameters):
            return (
                f"mutable parameters {mutable.check(given)} differ from the volume's "
                f"{record.mutable_parameters}"
            )
        return None

    # -- volumes ------------------------------------------------------------------------

    @rpc
    def CreateVolume(
        self, request: pb.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> pb.CreateVolumeResponse:
        name = validate.require_name(request.name)
        validate.accesses_of(list(request.volume_capabilities))
        capacity_range = request.capacity_range if request.HasField("capacity_range") else None
        size = capacity_for(capacity_range)  # range checks before any lookup
        own = parameters.own(dict(request.parameters))
        if parameters.backend_of(own) == parameters.RBD:
            return self._rbd().create(request, name=name, own=own, size=size)
        parameters.parse(own)  # refuses bad ones; the record keeps the caller's own text
        source_snapshot = source_volume = None
        if request.HasField("volume_content_source"):
            source = request.volume_content_source
            kind = source.WhichOneof("type")
            if kind == "snapshot":
                source_snapshot = validate.require_id(
                    source.snapshot.snapshot_id, "volume_content_source.snapshot.snapshot_id"
                )
            elif kind == "volume":
                source_volume = validate.require_id(
                    source.volume.volume_id, "volume_content_source.volume.volume_id"
                )
            else:
                raise invalid("volume_content_source needs a snapshot or a volume")
        own_mutable = mutable.check(dict(request.mutable_parameters))
        limits = mutable.limits(own_mutable)
        requirement = request.accessibility_requirements
        wanted = [*requirement.requisite, *requirement.preferred]
        if wanted and not self._reachable(wanted):
            raise RpcError(
                Code.RESOURCE_EXHAUSTED,
                f"this node ({self.node_id}) is not in the requested topology",
            )
        pool = self._pool()
        volume_id = ids.volume_id_for(name)
        with self.locks.hold(volume_id):
            existing = pool.volume(volume_id)
            if existing is not None:
                # Mutable parameters "take precedence over the parameters field" (the
                # spec), so they are part of what the volume is: another set names another
                # volume, and ALREADY_EXISTS tells the caller so rather than answering OK for
                # limits the volume does not have (changing them is ControllerModifyVolume's
                # job). They compare by meaning, so {"maxIops": "0"} matches {}. A retry of
                # the original CreateVolume after a modify is refused the same way.
                same = (
                    fits(existing.capacity, capacity_range)
                    and existing.parameters == own
                    and mutable.limits(existing.mutable_parameters) == limits
                    and existing.source_snapshot_id == source_snapshot
                    and existing.source_volume_id == source_volume
                )
                if not same:
                    raise already_exists(
                        f"volume {name!r} exists with other settings "
                        f"({existing.capacity} bytes, parameters {existing.parameters}, "
                        f"mutable parameters {existing.mutable_parameters})"
                    )
                return pb.CreateVolumeResponse(volume=self._volume(existing))
            source_size = 0
            if source_snapshot is not None:
                snapshot = pool.snapshot(source_snapshot)
                if snapshot is None:
                    raise not_found(f"source snapshot {source_snapshot} does not exist")
                source_size = snapshot.size
            elif source_volume is not None:
                volume = pool.volume(source_volume)
                if volume is None:
                    raise not_found(f"source volume {source_volume} does not exist")
                source_size = volume.capacity
            capacity = capacity_for(capacity_range, at_least=source_size)
            record = pool.create_volume(
                name,
                capacity,
                own,
                source_snapshot_id=source_snapshot,
                source_volume_id=source_volume,
                mutable_parameters=own_mutable,
            )
            return pb.CreateVolumeResponse(volume=self._volume(record))

    @rpc
    def DeleteVolume(
        self, request: pb.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVolumeResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        if (rbd_id := RbdVolumeId.parse(volume_id)) is not None:
            return self._rbd().delete(rbd_id, request)
        if self.pool is None and self.rbd is not None:
            return pb.DeleteVolumeResponse()  # no volume of ours has that id: it is gone
        pool = self._pool()
        with self.locks.hold(volume_id):
            if ids.is_volume_id(volume_id) and self.devices.record(volume_id) is not None:
                raise RpcError(
                    Code.FAILED_PRECONDITION,
                    f"volume {volume_id} is staged on this node; unstage it first",
                )
            pool.delete_volume(volume_id)
        return pb.DeleteVolumeResponse()

    @rpc
    def ValidateVolumeCapabilities(
        self, request: pb.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.ValidateVolumeCapabilitiesResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        validate.require(request.volume_capabilities, "volume_capabilities")
        if (rbd_id := RbdVolumeId.parse(volume_id)) is not None:
            return self._rbd().validate(rbd_id, request)
        if self.pool is None and self.rbd is not None:
            raise not_found(f"volume {volume_id} does not exist")
        record = self._pool().volume(volume_id)
        if record is None:
            raise not_found(f"volume {volume_id} does not exist")
        reason = validate.unsupported_reason(list(request.volume_capabilities))
        if reason is not None:
            return pb.ValidateVolumeCapabilitiesResponse(message=reason)
        own = parameters.own(dict(request.parameters))
        if request.parameters and own != record.parameters:
            return pb.ValidateVolumeCapabilitiesResponse(
                message=f"parameters {own} differ from the volume's {record.parameters}"
            )
        if request.mutable_parameters:
            reason = self._other_limits(dict(request.mutable_parameters), record)
            if reason is not None:
                return pb.ValidateVolumeCapabilitiesResponse(message=reason)
        return validate.confirmed(request)

    @rpc
    def ListVolumes(
        self, request: pb.ListVolumesRequest, context: grpc.ServicerContext
    ) -> pb.ListVolumesResponse:
        entries = []
        if self.pool is not None or self.rbd is None:
            entries = [
                (
                    (r.created_ns, r.volume_id),
                    pb.ListVolumesResponse.Entry(volume=self._volume(r), status=self._status(r)),
                )
                for r in self._pool().volume_records()
            ]
        if self.rbd is not None and (self.rbd.lists or self.pool is None):
            entries += self.rbd.volume_entries()
        chosen, token = page_of(
            entries, token=request.starting_token, max_entries=request.max_entries
        )
        return pb.ListVolumesResponse(entries=chosen, next_token=token)

    @rpc
    def ControllerGetVolume(
        self, request: pb.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerGetVolumeResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        if (rbd_id := RbdVolumeId.parse(volume_id)) is not None:
            return self._rbd().get_volume(rbd_id)
        if self.pool is None and self.rbd is not None:
            raise not_found(f"volume {volume_id} does not exist")
        record = self._pool().volume(volume_id)
        if record is None:
            raise not_found(f"volume {volume_id} does not exist")
        return pb.ControllerGetVolumeResponse(
            volume=self._volume(record),
            status=pb.ControllerGetVolumeResponse.VolumeStatus(
                volume_condition=self._condition(record)
            ),
        )

    @rpc
    def GetCapacity(
        self, request: pb.GetCapacityRequest, context: grpc.ServicerContext
    ) -> pb.GetCapacityResponse:
        own = parameters.own(dict(request.parameters))
        rbd = parameters.backend_of(own) == parameters.RBD
        if not rbd:
            parameters.parse(own)
        usable = validate.unsupported_reason(list(request.volume_capabilities)) is None or (
            not request.volume_capabilities
        )
        if rbd or (self.pool is None and self.rbd is not None):  # any node reaches RBD volumes
            if not usable or (own and not rbd):  # capabilities, or a file's class: not here
                return pb.GetCapacityResponse(available_capacity=0)
            return self._rbd().get_capacity(own if rbd else None)
        if request.HasField("accessible_topology"):
            usable = usable and self._reachable([request.accessible_topology])
        pool = self._pool()
        if not usable:
            return pb.GetCapacityResponse(available_capacity=0)
        available, total = pool.space()
        return pb.GetCapacityResponse(
            available_capacity=available,
            maximum_volume_size=Int64Value(value=total),
            minimum_volume_size=Int64Value(value=SIZE_ALIGNMENT),
        )

    @rpc
    def ControllerGetCapabilities(
        self, request: pb.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.ControllerGetCapabilitiesResponse:
        caps = capabilities.controller()
        if self.pool is None:
            served = {pb.ControllerServiceCapability.RPC.Type.EXPAND_VOLUME}
            if self.router is not None:
                served.add(pb.ControllerServiceCapability.RPC.Type.MODIFY_VOLUME)
            if self.rbd is not None:
                served |= RBD_SERVED
                if self.rbd.lists:
                    served |= RBD_LISTED
            caps = [c for c in caps if c.rpc.type in served]
        return pb.ControllerGetCapabilitiesResponse(capabilities=caps)

    @rpc
    def ControllerExpandVolume(
        self, request: pb.ControllerExpandVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerExpandVolumeResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        validate.require(request.HasField("capacity_range"), "capacity_range")
        if request.HasField("volume_capability"):
            validate.access_of(request.volume_capability)
        capacity = capacity_for(request.capacity_range)
        if (rbd_id := RbdVolumeId.parse(volume_id)) is not None:
            return self._rbd().expand(rbd_id, request, capacity)
        if self.pool is None and self.rbd is not None and not ids.is_volume_id(volume_id):
            raise not_found(f"volume {volume_id} does not exist")  # neither RBD nor a file's
        if self.pool is None:
            # The central instance cannot see node-local pools: the node does the work.
            return pb.ControllerExpandVolumeResponse(
                capacity_bytes=capacity, node_expansion_required=True
            )
        with self.locks.hold(volume_id):
            record = self.pool.volume(volume_id)
            if record is None:
                raise not_found(f"volume {volume_id} does not exist")
            record = self.pool.expand_volume(volume_id, max(capacity, record.capacity))
        return pb.ControllerExpandVolumeResponse(
            capacity_bytes=record.capacity, node_expansion_required=True
        )

    @rpc
    def ControllerModifyVolume(
        self, request: pb.ControllerModifyVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerModifyVolumeResponse:
        """Change a volume's I/O limits where its pool is (``VolumeModifier``); the central
        instance, with routing, has the volume's node do it (``ModifyRouter``)."""
        volume_id = validate.require_id(request.volume_id, "volume_id")
        given = dict(request.mutable_parameters)
        if self.modifier is not None:
            self.modifier.modify(volume_id, given)
        elif self.router is not None:
            with self.locks.hold(volume_id):
                self.router.modify(volume_id, given, time_remaining=context.time_remaining())
        else:
            mutable.check(given)  # the arguments first, then the missing pool
            self._pool()
        return pb.ControllerModifyVolumeResponse()

    # -- snapshots ----------------------------------------------------------------------

    @rpc
    def CreateSnapshot(
        self, request: pb.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.CreateSnapshotResponse:
        source = validate.require_id(request.source_volume_id, "source_volume_id")
        name = validate.require_name(request.name)
        if (rbd_id := RbdVolumeId.parse(source)) is not None:
            return self._rbd().create_snapshot(rbd_id, request, name=name)
        if self.pool is None and self.rbd is not None:
            raise not_found(f"source volume {source} does not exist")
        pool = self._pool()
        snapshot_id = ids.snapshot_id_for(name)
        with self.locks.hold(snapshot_id, source):
            existing = pool.snapshot(snapshot_id)
            if existing is not None:
                if existing.source_volume_id != source:
                    raise already_exists(
                        f"snapshot {name!r} exists for another volume ({existing.source_volume_id})"
                    )
                return pb.CreateSnapshotResponse(snapshot=snapshot_of(existing))
            if pool.volume(source) is None:
                raise not_found(f"source volume {source} does not exist")
            record = pool.create_snapshot(name, source_volume_id=source)
        return pb.CreateSnapshotResponse(snapshot=snapshot_of(record))

    @rpc
    def DeleteSnapshot(
        self, request: pb.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSnapshotResponse:
        snapshot_id = validate.require_id(request.snapshot_id, "snapshot_id")
        if (rbd_id := RbdSnapshotId.parse(snapshot_id)) is not None:
            return self._rbd().delete_snapshot(rbd_id, request)
        if self.pool is None and self.rbd is not None:
            return pb.DeleteSnapshotResponse()  # no snapshot of ours has that id: it is gone
        pool = self._pool()
        with self.locks.hold(snapshot_id):
            record = pool.snapshot(snapshot_id)
            if record is not None and record.group_snapshot_id is not None:
                raise failed_precondition(
                    f"snapshot {snapshot_id} belongs to group snapshot "
                    f"{record.group_snapshot_id}: delete the group"
                )
            pool.delete_snapshot(snapshot_id)
        return pb.DeleteSnapshotResponse()

    @rpc
    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        rbd_asked = RbdSnapshotId.parse(request.snapshot_id) or RbdVolumeId.parse(
            request.source_volume_id
        )
        entries = []
        if (self.pool is not None or self.rbd is None) and not rbd_asked:
            records = self._pool().snapshot_records()
            if request.snapshot_id:
                records = [r for r in records if r.snapshot_id == request.snapshot_id]
            if request.source_volume_id:
                records = [r for r in records if r.source_volume_id == request.source_volume_id]
            entries = [
                (
                    (r.created_ns, r.snapshot_id),
                    pb.ListSnapshotsResponse.Entry(snapshot=snapshot_of(r)),
                )
                for r in records
            ]
        if self.rbd is not None and (self.rbd.lists or self.pool is None or rbd_asked):
            entries += self.rbd.snapshot_entries(request)
        chosen, token = page_of(
            entries, token=request.starting_token, max_entries=request.max_entries
        )
        return pb.ListSnapshotsResponse(entries=chosen, next_token=token)

    @rpc
    def GetSnapshot(
        self, request: pb.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.GetSnapshotResponse:
        """Served, not advertised: csi-sanity v5.4.0 fails GET_SNAPSHOT as unknown."""
        snapshot_id = validate.require_id(request.snapshot_id, "snapshot_id")
        if RbdSnapshotId.parse(snapshot_id) is not None or (
            self.pool is None and self.rbd is not None
        ):
            listed = self._rbd().snapshot_entries(
                pb.ListSnapshotsRequest(snapshot_id=snapshot_id, secrets=request.secrets)
            )
            if not listed:
                raise not_found(f"snapshot {snapshot_id} does not exist")
            return pb.GetSnapshotResponse(snapshot=listed[0][1].snapshot)
        record = self._pool().snapshot(snapshot_id)
        if record is None:
            raise not_found(f"snapshot {snapshot_id} does not exist")
        return pb.GetSnapshotResponse(snapshot=snapshot_of(record))

    # -- not offered --------------------------------------------------------------------

    @rpc
    def ControllerPublishVolume(
        self, request: pb.ControllerPublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerPublishVolumeResponse:
        raise unimplemented("volumes are node-local: there is nothing to attach")

    @rpc
    def ControllerUnpublishVolume(
        self, request: pb.ControllerUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerUnpublishVolumeResponse:
        raise unimplemented("volumes are node-local: there is nothing to detach")


__all__ = ["ControllerService", "Path"]
