"""The Node service: argument checks in spec order, then the node volume lifecycle."""

from __future__ import annotations

import grpc

from csi_vduse.csi import capabilities, mutable, parameters, rbd_parameters, validate
from csi_vduse.csi.edge import rpc
from csi_vduse.csi.errors import failed_precondition, invalid
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.proto import pb
from csi_vduse.devices.spec import default_num_queues
from csi_vduse.rbd.ids import RbdVolumeId
from csi_vduse.rbd.staging import RbdStaging, StagedImage
from csi_vduse.volumes.lifecycle import NodeVolumes, StageRequest

Unit = pb.VolumeUsage.Unit


class NodeService:
    def __init__(
        self,
        volumes: NodeVolumes,
        node_id: str,
        max_volumes: int,
        *,
        rbd: RbdStaging | None = None,  # None: this node serves files only
    ) -> None:
        self.volumes = volumes
        self.node_id = node_id
        self.max_volumes = max_volumes
        self.rbd = rbd
        self.locks = OperationLocks()

    def _shape(
        self, volume_id: str, request: pb.NodeStageVolumeRequest
    ) -> tuple[parameters.VolumeParameters, StagedImage | None]:
        """The device a volume asks for, and for an RBD volume its image: a file volume's
        parameters are in the pool, an RBD volume's in its context."""
        rbd_id = RbdVolumeId.parse(volume_id)
        if rbd_id is None:
            return parameters.parse(self.volumes.parameters(volume_id)), None
        if self.rbd is None:
            raise failed_precondition(
                f"volume {volume_id} is an RBD volume, and this node serves none: its driver "
                "runs without --ceph-clusters"
            )
        context = rbd_parameters.from_context(rbd_id, dict(request.volume_context))
        image = self.rbd.image(
            rbd_id, pool=context.pool, image=context.image, secrets=dict(request.secrets)
        )
        return context.device, image

    @rpc
    def NodeStageVolume(
        self, request: pb.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeStageVolumeResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        staging = validate.require_path(request.staging_target_path, "staging_target_path")
        validate.require(request.HasField("volume_capability"), "volume_capability")
        access = validate.access_of(request.volume_capability)
        with self.locks.hold(volume_id):
            shape, image = self._shape(volume_id, request)
            self.volumes.stage(
                StageRequest(
                    volume_id=volume_id,
                    staging_path=staging,
                    block=access.block,
                    fs_type=access.fs_type,
                    mount_flags=access.mount_flags,
                    mode=access.mode,
                    profile=shape.profile(
                        readonly=access.readonly_mode, default_queues=default_num_queues()
                    ),
                    rbd=image,
                    limits=lambda: mutable.current_limits(self.volumes.pool, volume_id),
                )
            )
        return pb.NodeStageVolumeResponse()

    @rpc
    def NodeUnstageVolume(
        self, request: pb.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeUnstageVolumeResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        staging = validate.require_path(request.staging_target_path, "staging_target_path")
        with self.locks.hold(volume_id):
            self.volumes.unstage(volume_id, staging)
        return pb.NodeUnstageVolumeResponse()

    @rpc
    def NodePublishVolume(
        self, request: pb.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodePublishVolumeResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        staging = validate.require_path(request.staging_target_path, "staging_target_path")
        target = validate.require_path(request.target_path, "target_path")
        validate.require(request.HasField("volume_capability"), "volume_capability")
        access = validate.access_of(request.volume_capability)
        if target == staging:
            raise invalid("target_path must differ from staging_target_path")
        with self.locks.hold(volume_id):
            self.volumes.publish(
                volume_id,
                staging_path=staging,
                target=target,
                block=access.block,
                readonly=request.readonly or access.readonly_mode,
                mount_flags=access.mount_flags,
                mode=access.mode,
            )
        return pb.NodePublishVolumeResponse()

    @rpc
    def NodeUnpublishVolume(
        self, request: pb.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeUnpublishVolumeResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        target = validate.require_path(request.target_path, "target_path")
        with self.locks.hold(volume_id):
            self.volumes.unpublish(volume_id, target)
        return pb.NodeUnpublishVolumeResponse()

    @rpc
    def NodeGetVolumeStats(
        self, request: pb.NodeGetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetVolumeStatsResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        path = validate.require_lookup_path(request.volume_path, "volume_path")
        record, usage = self.volumes.usage(volume_id, path)
        health = self.volumes.health(record)
        entries = [
            pb.VolumeUsage(
                available=usage.available_bytes,
                total=usage.total_bytes,
                used=usage.used_bytes,
                unit=Unit.BYTES,
            )
        ]
        if usage.total_inodes is not None:
            entries.append(
                pb.VolumeUsage(
                    available=usage.available_inodes or 0,
                    total=usage.total_inodes,
                    used=usage.used_inodes or 0,
                    unit=Unit.INODES,
                )
            )
        return pb.NodeGetVolumeStatsResponse(
            usage=entries,
            volume_condition=pb.VolumeCondition(abnormal=health.abnormal, message=health.message),
        )

    @rpc
    def NodeExpandVolume(
        self, request: pb.NodeExpandVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeExpandVolumeResponse:
        volume_id = validate.require_id(request.volume_id, "volume_id")
        path = validate.require_lookup_path(request.volume_path, "volume_path")
        # Without a range the node grows to the size ControllerExpandVolume recorded.
        required = request.capacity_range.required_bytes
        limit = request.capacity_range.limit_bytes
        if required < 0 or limit < 0 or (limit and required > limit):
            raise invalid("capacity_range is not a valid range")
        if request.HasField("volume_capability"):
            validate.access_of(request.volume_capability)
        with self.locks.hold(volume_id):
            capacity = self.volumes.expand(volume_id, path, required or limit)
        return pb.NodeExpandVolumeResponse(capacity_bytes=capacity)

    @rpc
    def NodeGetCapabilities(
        self, request: pb.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetCapabilitiesResponse:
        return pb.NodeGetCapabilitiesResponse(capabilities=capabilities.node())

    @rpc
    def NodeGetInfo(
        self, request: pb.NodeGetInfoRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetInfoResponse:
        # A node without a pool holds no node-local volumes: nothing is reachable from here only.
        topology = None
        if self.volumes.pool is not None:
            topology = pb.Topology(segments={capabilities.TOPOLOGY_KEY: self.node_id})
        return pb.NodeGetInfoResponse(
            node_id=self.node_id,
            max_volumes_per_node=self.max_volumes,
            accessible_topology=topology,
        )
