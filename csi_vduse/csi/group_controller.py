"""The GroupController service: crash-consistent snapshots of several volumes at once.

The dataplane sits on every request, so the volumes of a group that are in use on this node
are paused together (what they have in flight completes, new requests wait in their rings),
every volume is copied at that one instant, and they resume: the copies agree with each
other as after a power cut, without freezing any filesystem. The pause is bounded by
``maxPauseMilliseconds`` (default 5000): each dataplane resumes by itself at that deadline,
and a group whose copies were not all made by then is discarded and the call fails
(UNAVAILABLE, so the CO retries) rather than stalling I/O any longer. Copies are reflinks
where the pool's filesystem has them (XFS, Btrfs), which take milliseconds; elsewhere the
data is copied while paused, and only small volumes fit in the bound.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from csi_vduse import metrics
from csi_vduse.csi import validate
from csi_vduse.csi.controller import snapshot_of
from csi_vduse.csi.edge import rpc
from csi_vduse.csi.errors import Code, RpcError, already_exists, invalid, not_found
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.parameters import KUBERNETES_PREFIX
from csi_vduse.csi.proto import pb
from csi_vduse.csi.timestamps import timestamp
from csi_vduse.dataplane.control import MAX_PAUSE_MS
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.pool import ids
from csi_vduse.pool.groups import GroupSnapshotRecord, GroupSnapshots

log = logging.getLogger(__name__)

MAX_PAUSE = "maxPauseMilliseconds"
DEFAULT_PAUSE_MS = 5000
_DECIMAL = re.compile(r"[1-9][0-9]{0,5}")
_CAPABILITY = pb.GroupControllerServiceCapability
_CREATE_DELETE_GET = _CAPABILITY.RPC.Type.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT


def pause_limit(parameters: dict[str, str]) -> int:
    """The pause bound a VolumeGroupSnapshotClass asks for, in ms; INVALID_ARGUMENT for
    anything else it says."""
    unknown = sorted(
        k for k in parameters if k != MAX_PAUSE and not k.startswith(KUBERNETES_PREFIX)
    )
    if unknown:
        raise invalid(
            f"unknown parameter(s) {', '.join(unknown)}; group snapshots take {MAX_PAUSE} "
            f"(1-{MAX_PAUSE_MS}, default {DEFAULT_PAUSE_MS})"
        )
    text = parameters.get(MAX_PAUSE, str(DEFAULT_PAUSE_MS))
    if not _DECIMAL.fullmatch(text) or int(text) > MAX_PAUSE_MS:
        raise invalid(f"{MAX_PAUSE} must be a whole number from 1 to {MAX_PAUSE_MS}, not {text!r}")
    return int(text)


def _own(parameters: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in parameters.items() if not k.startswith(KUBERNETES_PREFIX)}


class GroupControllerService:
    def __init__(
        self, groups: GroupSnapshots | None, devices: DeviceManager, *, locks: OperationLocks
    ) -> None:
        self.groups = groups
        self.devices = devices
        self.locks = locks  # the Controller's: a group snapshot holds its volumes

    def _groups(self) -> GroupSnapshots:
        if self.groups is None:
            raise RpcError(
                Code.UNAVAILABLE,
                "this controller serves no pool (started without --pool-dir); "
                "group snapshots are taken by the node plugins",
            )
        return self.groups

    def _message(self, record: GroupSnapshotRecord) -> pb.VolumeGroupSnapshot:
        members = self._groups().members(record)
        return pb.VolumeGroupSnapshot(
            group_snapshot_id=record.group_snapshot_id,
            snapshots=[snapshot_of(m) for m in members],
            creation_time=timestamp(record.created_ns),
            ready_to_use=True,
        )

    @contextmanager
    def _paused(self, volume_ids: list[str], timeout_ms: int) -> Iterator[None]:
        """Pause the volumes that have a device on this node; the others have no writer."""
        live = [v for v in volume_ids if self.devices.record(v) is not None]
        if not live:
            yield
            return
        with self.devices.paused(live, timeout_ms=timeout_ms) as report:
            yield
        total = report.total_ms or report.elapsed_ms()
        metrics.GROUP_PAUSE_SECONDS.observe(total / 1e3)
        log.info(
            "group snapshot paused %d volume(s) for %.1f ms (drain %s)", len(live), total,
            ", ".join(f"{v} {report.drain_ms.get(v, 0)} ms" for v in live),
        )  # fmt: skip

    @rpc
    def GroupControllerGetCapabilities(
        self, request: pb.GroupControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.GroupControllerGetCapabilitiesResponse:
        capability = _CAPABILITY(rpc=_CAPABILITY.RPC(type=_CREATE_DELETE_GET))
        return pb.GroupControllerGetCapabilitiesResponse(capabilities=[capability])

    @rpc
    def CreateVolumeGroupSnapshot(
        self, request: pb.CreateVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.CreateVolumeGroupSnapshotResponse:
        name = validate.require_name(request.name)
        validate.require(request.source_volume_ids, "source_volume_ids")
        sources = [validate.require_id(v, "source_volume_ids") for v in request.source_volume_ids]
        if len(set(sources)) != len(sources):
            raise invalid(f"source_volume_ids names a volume twice: {sources}")
        own = _own(dict(request.parameters))
        timeout_ms = pause_limit(own)
        groups = self._groups()
        group_id = ids.group_snapshot_id_for(name)
        with self.locks.hold(group_id, *sources):
            existing = groups.get(group_id)
            if existing is not None:
                if (
                    sorted(existing.source_volume_ids) != sorted(sources)
                    or existing.parameters != own
                ):
                    raise already_exists(
                        f"group snapshot {name!r} exists of other volumes or parameters "
                        f"({existing.source_volume_ids}, {existing.parameters})"
                    )
                return pb.CreateVolumeGroupSnapshotResponse(group_snapshot=self._message(existing))
            missing = [v for v in sources if groups.pool.volume(v) is None]
            if missing:
                raise not_found(f"source volume(s) {', '.join(missing)} do not exist")
            record = groups.create(
                name, sources, parameters=own, hold=lambda: self._paused(sources, timeout_ms)
            )
            return pb.CreateVolumeGroupSnapshotResponse(group_snapshot=self._message(record))

    @rpc
    def GetVolumeGroupSnapshot(
        self, request: pb.GetVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.GetVolumeGroupSnapshotResponse:
        group_id = validate.require_id(request.group_snapshot_id, "group_snapshot_id")
        record = self._groups().get(group_id)
        if record is None:
            raise not_found(f"group snapshot {group_id} does not exist")
        _check_members(record, list(request.snapshot_ids))
        return pb.GetVolumeGroupSnapshotResponse(group_snapshot=self._message(record))

    @rpc
    def DeleteVolumeGroupSnapshot(
        self, request: pb.DeleteVolumeGroupSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVolumeGroupSnapshotResponse:
        group_id = validate.require_id(request.group_snapshot_id, "group_snapshot_id")
        groups = self._groups()
        with self.locks.hold(group_id):
            record = groups.get(group_id)
            if record is not None:
                _check_members(record, list(request.snapshot_ids))
                groups.delete(group_id)
        return pb.DeleteVolumeGroupSnapshotResponse()


def _check_members(record: GroupSnapshotRecord, snapshot_ids: list[str]) -> None:
    """The CO's list of the group's snapshots, when it gives one, must be the group's."""
    if snapshot_ids and sorted(snapshot_ids) != sorted(record.snapshot_ids):
        raise invalid(
            f"snapshot_ids {sorted(snapshot_ids)} are not those of group snapshot "
            f"{record.group_snapshot_id} ({sorted(record.snapshot_ids)})"
        )
