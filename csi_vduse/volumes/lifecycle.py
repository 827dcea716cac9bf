"""Stage, publish, unpublish, unstage, stats and expand: the node's half of a volume's life.

Stage maps the volume's data, the pool's backing file or an RBD image, onto a VDUSE device
(the device layer's lifecycle) and, for mount access, makes sure it holds the requested
filesystem and mounts it at the staging path. Block and mount access share every step up
to the filesystem. Publish bind-mounts the staged filesystem, or the device node, onto the target.
Every step is idempotent, and a failed stage undoes what it made.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.qos import UNLIMITED, QosLimits
from csi_vduse.devices import rbd_source
from csi_vduse.devices.backing import block_device_size
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.spec import DeviceSpec
from csi_vduse.devices.state import DeviceRecord, DeviceState
from csi_vduse.mounts import filesystem, mounter, mountinfo
from csi_vduse.pool.store import SIZE_ALIGNMENT, Pool, VolumeRecord
from csi_vduse.rbd.keyfiles import KeyFiles
from csi_vduse.rbd.staging import StagedImage
from csi_vduse.volumes import kinds
from csi_vduse.volumes.errors import VolumeError
from csi_vduse.volumes.records import (
    SINGLE_WRITER,
    NodeVolume,
    NodeVolumeStore,
    Publication,
    VolumeState,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StageRequest:
    volume_id: str
    staging_path: Path
    block: bool
    fs_type: str
    mount_flags: tuple[str, ...]
    mode: int
    profile: BlkProfile  # the device to serve the volume; read-only for a read-only stage
    rbd: StagedImage | None = None  # an RBD volume's image; None: the pool's file
    # The volume's I/O limits as they stand, read again once its device exists, so a change
    # made while the stage ran is not lost.
    limits: Callable[[], QosLimits] = lambda: UNLIMITED


@dataclass(frozen=True, kw_only=True)
class Usage:
    total_bytes: int
    available_bytes: int
    used_bytes: int
    total_inodes: int | None = None
    available_inodes: int | None = None
    used_inodes: int | None = None


# I/O that has waited this long on the backend, none of it finishing, makes a volume
# abnormal: Ceph's own threshold for a slow request (osd_op_complaint_time).
STALL_ABNORMAL_S = 30


@dataclass(frozen=True)
class Health:
    abnormal: bool
    message: str


class NodeVolumes:
    def __init__(
        self,
        pool: Pool | None,  # None: a node of RBD volumes only
        devices: DeviceManager,
        store: NodeVolumeStore,
        *,
        max_volumes: int,
        node_id: str,
        keys: KeyFiles | None = None,  # where staged RBD volumes' keys are kept
    ) -> None:
        self.pool = pool
        self.node_id = node_id
        self.devices = devices
        self.store = store
        self.max_volumes = max_volumes
        self.keys = keys

    def _known(self, volume_id: str) -> NodeVolume | None:
        """The node record, or None for a volume not staged here that may exist (a pool
        volume, or any RBD volume: its cluster is asked when staging); ENOENT otherwise."""
        if not kinds.is_volume_id(volume_id):  # never let a caller's string become a path
            raise VolumeError("find volume", f"volume {volume_id!r} does not exist", errno.ENOENT)
        record = self.store.load(volume_id)
        if record is None and not kinds.is_rbd(volume_id) and self._pool_volume(volume_id) is None:
            raise VolumeError("find volume", f"volume {volume_id} does not exist", errno.ENOENT)
        return record

    def _pool_volume(self, volume_id: str) -> VolumeRecord | None:
        return self.pool.volume(volume_id) if self.pool is not None else None

    def _file_pool(self, volume_id: str) -> Pool:
        """The pool holding file volume ``volume_id``: the caller found its record."""
        if self.pool is None:
            raise VolumeError("find volume", f"volume {volume_id} does not exist", errno.ENOENT)
        return self.pool

    def _device(self, volume_id: str) -> str:
        return kinds.device_name(volume_id, node_id=self.node_id)

    def parameters(self, volume_id: str) -> dict[str, str]:
        """The parameters the volume was created with; {} for one the pool does not know."""
        volume = self._pool_volume(volume_id)
        return volume.parameters if volume else {}

    # -- restart ------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish or undo what a driver that died mid-call left, before serving again.

        A stage that never completed is rolled back (the CO retries it); an unstage that
        began is completed. Staged volumes are left exactly as they are: pods use them.
        """
        for record in self.store.records():
            if record.state == VolumeState.STAGING:
                log.warning("volume %s: rolling back an unfinished stage", record.volume_id)
                self._undo_stage(record)
            elif record.state == VolumeState.UNSTAGING:
                log.warning("volume %s: completing an unfinished unstage", record.volume_id)
                try:
                    self._finish_unstage(record)
                except Exception as exc:
                    log.error("volume %s: unstage still fails: %s", record.volume_id, exc)
            else:
                health = self.health(record)
                log.info(
                    "volume %s staged at %s: %s",
                    record.volume_id,
                    record.staging_path,
                    health.message,
                )

    # -- stage --------------------------------------------------------------------------

    def stage(self, request: StageRequest) -> None:
        record = self._known(request.volume_id)
        if record is not None:
            same = (
                record.staging_path == str(request.staging_path)
                and record.block == request.block
                and record.fs_type == request.fs_type
                and tuple(record.mount_flags) == request.mount_flags
                and record.readonly == request.profile.readonly
            )
            if not same:
                raise VolumeError(
                    "stage",
                    f"volume {request.volume_id} is already staged at {record.staging_path} "
                    f"({'block' if record.block else record.fs_type}); unstage it first",
                    errno.EEXIST,
                )
            if record.state == VolumeState.STAGED and self._stage_intact(record):
                if request.rbd is not None and self.keys is not None:
                    # Lost with a key directory that did not outlive the driver: a successor
                    # dataplane needs it. A key that is there stays; the one the running
                    # dataplane was proven with.
                    self.keys.keep(record.volume_id, key=request.rbd.key)
                return
        elif self.max_volumes and len(self.store.records()) >= self.max_volumes:
            raise VolumeError(
                "stage",
                f"this node already has its maximum of {self.max_volumes} volumes staged",
                errno.ENOSPC,
            )
        record = record or NodeVolume(
            volume_id=request.volume_id,
            staging_path=str(request.staging_path),
            block=request.block,
            fs_type=request.fs_type,
            mount_flags=list(request.mount_flags),
            mode=request.mode,
            readonly=request.profile.readonly,
        )
        record.state = VolumeState.STAGING
        self.store.save(record)
        with ExitStack() as undo:
            undo.callback(self._undo_stage, record)
            self._bring_up(record, request)
            undo.pop_all()
        record.state = VolumeState.STAGED
        self.store.save(record)
        log.info(
            "volume %s staged at %s (%s)", record.volume_id, record.staging_path, record.device
        )

    def _stage_intact(self, record: NodeVolume) -> bool:
        """A staged volume is intact when its device runs and its mount is in place."""
        if record.device is None or not Path(record.device).exists():
            return False
        return record.block or mountinfo.is_mount_point(record.staging_path)

    def _bring_up(self, record: NodeVolume, request: StageRequest) -> None:
        name = self._device(record.volume_id)
        backing = None
        if request.rbd is None:
            backing = self._file_pool(record.volume_id).backing_path(record.volume_id)
        elif self.keys is None:
            raise VolumeError(
                "stage", "this node serves no RBD volumes (no --ceph-clusters)", errno.EINVAL
            )
        else:
            self.keys.write(record.volume_id, key=request.rbd.key)
        spec = DeviceSpec(
            name=name,
            backing=backing,
            rbd=request.rbd.source if request.rbd else None,
            profile=request.profile,
            limits=request.limits(),
        )
        device = self.devices.create(spec)
        self.devices.apply_limits(name, request.limits)
        record.device = device.block_device
        self.store.save(record)
        if record.block:
            return
        assert record.device is not None
        staging = Path(record.staging_path)
        if mountinfo.is_mount_point(staging):
            return
        if record.readonly:
            found = filesystem.probe(Path(record.device))
            if found is None:
                raise VolumeError(
                    "stage",
                    f"volume {record.volume_id} is blank and read-only: nothing to mount",
                    errno.EINVAL,
                )
            fs_type = found
        else:
            fs_type = filesystem.ensure(Path(record.device), record.fs_type)
        mounter.mount_filesystem(
            Path(record.device), staging, fs_type=fs_type, readonly=record.readonly,
            flags=record.mount_flags,
        )  # fmt: skip

    def _undo_stage(self, record: NodeVolume) -> None:
        try:
            if not record.block:
                mounter.unmount(Path(record.staging_path))
            self._end_device(record.volume_id)
            self.store.remove(record.volume_id)
        except Exception as exc:
            log.error("undoing the stage of %s failed: %s", record.volume_id, exc)

    # -- unstage ------------------------------------------------------------------------

    def unstage(self, volume_id: str, staging_path: Path) -> None:
        record = self._known(volume_id)
        if record is None:
            # Not staged; a crash between device creation and the first record save
            # would still have left a device behind under this name.
            self._end_device(volume_id)
            return
        if record.staging_path != str(staging_path):
            log.warning(
                "unstage of %s at %s: it is staged at %s, leaving that alone",
                volume_id,
                staging_path,
                record.staging_path,
            )
            return
        if record.publications:
            raise VolumeError(
                "unstage",
                f"volume {volume_id} is still published at {', '.join(record.publications)}",
                errno.EBUSY,
            )
        record.state = VolumeState.UNSTAGING
        self.store.save(record)
        self._finish_unstage(record)
        log.info("volume %s unstaged", volume_id)

    def _finish_unstage(self, record: NodeVolume) -> None:
        if not record.block:
            mounter.unmount(Path(record.staging_path))
        self._end_device(record.volume_id)
        self.store.remove(record.volume_id)

    def _end_device(self, volume_id: str) -> None:
        """Tear the volume's device down, and forget the key it was served with."""
        self.devices.delete(self._device(volume_id))
        if self.keys is not None and kinds.is_rbd(volume_id):
            self.keys.remove(volume_id)

    # -- publish ------------------------------------------------------------------------

    def publish(
        self,
        volume_id: str,
        *,
        staging_path: Path,
        target: Path,
        block: bool,
        readonly: bool,
        mount_flags: tuple[str, ...],
        mode: int,
    ) -> None:
        """Publish at ``target`` with the CSI access ``mode`` the CO asks for now."""
        record = self._known(volume_id)
        if (
            record is None
            or record.state != VolumeState.STAGED
            or record.staging_path != str(staging_path)
        ):
            raise VolumeError(
                "publish", f"volume {volume_id} is not staged at {staging_path}", errno.ENXIO
            )
        if record.block != block:
            raise VolumeError(
                "publish",
                f"volume {volume_id} was staged for {'block' if record.block else 'mount'} "
                "access; publish it the same way",
                errno.EINVAL,
            )
        readonly = readonly or record.readonly
        wanted = Publication(str(target), readonly, list(mount_flags))
        existing = record.publications.get(str(target))
        others = [t for t in record.publications if t != str(target)]
        if others and SINGLE_WRITER in (mode, record.mode):
            raise VolumeError(
                "publish",
                f"volume {volume_id} is single-writer and already published at {others[0]}",
                errno.EBUSY,
            )
        if existing is not None and existing != wanted:
            raise VolumeError(
                "publish",
                f"{target} already publishes volume {volume_id} with other options",
                errno.EEXIST,
            )
        if not mountinfo.is_mount_point(target):
            if block:
                assert record.device is not None
                mounter.be_file(target)
                mounter.bind(Path(record.device), target, readonly=readonly, flags=())
            else:
                mounter.be_directory(target)
                mounter.bind(staging_path, target, readonly=readonly, flags=mount_flags)
        record.publications[str(target)] = wanted
        self.store.save(record)

    def unpublish(self, volume_id: str, target: Path) -> None:
        record = self._known(volume_id)
        if record is None or str(target) not in record.publications:
            if record is not None and mountinfo.is_mount_point(target):
                log.warning(
                    "%s is mounted but not a publication of %s; left alone", target, volume_id
                )
                return
            if _is_empty_target(target):
                mounter.be_absent(target)
            return
        mounter.unmount(target)
        mounter.be_absent(target)
        del record.publications[str(target)]
        self.store.save(record)

    # -- stats and expansion ------------------------------------------------------------

    def _at(self, volume_id: str, path: Path) -> NodeVolume:
        record = self._known(volume_id)
        paths = [] if record is None else [record.staging_path, *record.publications]
        if record is None or str(path) not in paths:
            raise VolumeError(
                "find volume",
                f"volume {volume_id} is not staged or published at {path}",
                errno.ENOENT,
            )
        return record

    def usage(self, volume_id: str, path: Path) -> tuple[NodeVolume, Usage]:
        record = self._at(volume_id, path)
        if record.block:
            size = _device_size(record.device)
            return record, Usage(total_bytes=size, available_bytes=0, used_bytes=size)
        try:
            stats = os.statvfs(path)
        except OSError as exc:
            raise VolumeError("volume stats", f"{path}: {exc.strerror}", exc.errno) from exc
        total = stats.f_blocks * stats.f_frsize
        available = stats.f_bavail * stats.f_frsize
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        return record, Usage(
            total_bytes=total,
            available_bytes=available,
            used_bytes=used,
            total_inodes=stats.f_files,
            available_inodes=stats.f_favail,
            used_inodes=stats.f_files - stats.f_ffree,
        )

    def health(self, record: NodeVolume) -> Health:
        device = self.devices.record(self._device(record.volume_id))
        if device is None:
            return Health(True, "the volume's device is gone")
        state = self.devices.status(device).state
        if state == DeviceState.DATAPLANE_DEAD:
            why = f" (last attempt: {device.restart_error})" if device.restart_error else ""
            return Health(True, f"the volume's dataplane is down and being restarted{why}")
        if state != DeviceState.RUNNING:
            return Health(True, f"the volume's device is {state}")
        waited = self.devices.waiting_ns(device) // 1_000_000_000
        if waited >= STALL_ABNORMAL_S:
            return Health(True, _stalled(device, waited))
        if not record.block and not mountinfo.is_mount_point(record.staging_path):
            return Health(True, f"the filesystem is no longer mounted at {record.staging_path}")
        restarts = (
            f"; its dataplane was replaced {device.restarts} times" if device.restarts else ""
        )
        return Health(False, f"the device is running{restarts}")

    def expand(self, volume_id: str, path: Path, capacity: int) -> int:
        """Grow the volume to ``capacity`` (0: to what its data already holds), its device
        and filesystem with it; the size it has after."""
        record = self._at(volume_id, path)
        capacity = -(-capacity // SIZE_ALIGNMENT) * SIZE_ALIGNMENT
        staged = record.state == VolumeState.STAGED and record.device is not None
        if kinds.is_rbd(volume_id):
            if not staged:
                raise VolumeError("expand", f"volume {volume_id} is not staged here", errno.ENXIO)
            size = self._rbd_size(volume_id, capacity)
        else:
            size = self._file_pool(volume_id).expand_volume(volume_id, capacity).capacity
        if staged:
            assert record.device is not None
            self.devices.resize(self._device(volume_id), size)
            if not record.block:
                filesystem.grow(
                    Path(record.device), Path(record.staging_path), fs_type=record.fs_type
                )
        return size

    def _rbd_size(self, volume_id: str, capacity: int) -> int:
        """What an RBD volume's device grows to: the image's size, which ControllerExpandVolume
        set, or ``capacity`` where that is more (the image grows with the device)."""
        device = self.devices.record(self._device(volume_id))
        if device is None or device.rbd is None:
            raise VolumeError("expand", f"volume {volume_id} has no device here", errno.ENXIO)
        held = rbd_source.image_size(rbd_source.RbdSource.from_json(device.rbd))
        return max(capacity, held, device.size)


def _is_empty_target(target: Path) -> bool:
    """Removing an unpublished target is safe only for an empty directory or empty file."""
    try:
        if target.is_dir():
            return not any(target.iterdir())
        return target.is_file() and target.stat().st_size == 0
    except OSError:
        return False


def _device_size(device: str | None) -> int:
    if device is None:
        return 0
    try:
        return block_device_size(device)
    except OSError:
        return 0


def _stalled(device: DeviceRecord, waited: int) -> str:
    """What a volume whose backend stopped answering tells its user, and where to look."""
    if device.rbd is not None:
        source = rbd_source.RbdSource.from_json(device.rbd)
        monitors = source.monitors()  # as its next dataplane would find them
        conf = source.conf or rbd_source.DEFAULT_CONF
        cluster = f"at {monitors}" if monitors else f"of {conf}"
        return (
            f"I/O has waited {waited} s on RBD image {device.backing.removeprefix('rbd:')} "
            f"with none finishing: the Ceph cluster {cluster} is unreachable or cannot serve it"
        )
    return (
        f"I/O has waited {waited} s on the backing file {device.backing} with none "
        "finishing: the storage under the pool is not answering"
    )
