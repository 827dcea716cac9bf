"""The Controller service's RBD half: volumes that are images in a Ceph pool, made by the
central instance (``serve --controller --ceph-clusters FILE``) for any node to reach.

``ControllerService`` hands it the calls about RBD volumes: a CreateVolume whose parameters
say ``backend: rbd``, and every call whose volume id is an RBD volume's (``rbd.ids``).
Each call reaches the cluster with the secrets the CO sent with it (the StorageClass's
provisioner and controller-expand secrets); none is kept.
"""

from __future__ import annotations

import errno
import json
from typing import TYPE_CHECKING

from csi_vduse.csi import parameters, rbd_parameters, validate
from csi_vduse.csi.capacity import fits
from csi_vduse.csi.errors import already_exists, invalid, not_found
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.proto import pb
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import RbdVolumeId

if TYPE_CHECKING:  # only a driver given --ceph-clusters makes one, and loads librbd
    from csi_vduse.rbd.volumes import RbdVolumes


class RbdController:
    def __init__(self, volumes: RbdVolumes, locks: OperationLocks) -> None:
        self.volumes = volumes
        self.locks = locks

    def create(
        self, request: pb.CreateVolumeRequest, *, name: str, own: dict[str, str], size: int
    ) -> pb.CreateVolumeResponse:
        """``name`` checked, ``own`` the caller's parameters, ``size`` what its capacity
        range asks for."""
        chosen = rbd_parameters.parse(own)
        if request.HasField("volume_content_source"):
            raise invalid("RBD volumes are not made from snapshots or volumes yet")
        if request.mutable_parameters:
            raise invalid("RBD volumes take no mutable parameters yet")
        text = json.dumps(own, sort_keys=True)
        with self.locks.hold(f"rbd-name:{name}"):
            try:
                volume = self.volumes.create(
                    name, size=size, placement=chosen.placement, secrets=dict(request.secrets),
                    parameters=text,
                )  # fmt: skip
            except RbdVolumeError as exc:
                if exc.errno in (errno.ENOENT, errno.ENXIO):  # a pool or cluster named wrong
                    raise invalid(f"{exc.step}: {exc.message}") from exc
                raise
        capacity_range = request.capacity_range if request.HasField("capacity_range") else None
        if not fits(volume.size, capacity_range):
            raise already_exists(
                f"volume {name!r} exists with {volume.size} bytes, outside the capacity range"
            )
        return pb.CreateVolumeResponse(
            volume=pb.Volume(
                capacity_bytes=volume.size,
                volume_id=str(volume.volume_id),
                volume_context=chosen.context(volume.volume_id.image),
            )
        )

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
