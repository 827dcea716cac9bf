"""Stage, publish, unpublish, unstage, stats and expand: the node's half of a volume's life.

Stage maps the pool's backing file onto a VDUSE device (the device layer's lifecycle)
and, for mount access, makes sure it holds the requested filesystem and mounts it at
the staging path. Block and mount access share every step up to the filesystem.
Publish bind-mounts the staged filesystem, or the device node, onto the target.
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
from csi_vduse.devices.backing import block_device_size
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.spec import DeviceSpec
from csi_vduse.devices.state import DeviceState
from csi_vduse.mounts import filesystem, mounter, mountinfo
from csi_vduse.pool import ids
from csi_vduse.pool.store import SIZE_ALIGNMENT, Pool
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


@dataclass(frozen=True)
class Health:
    abnormal: bool
    message: str


class NodeVolumes:
    def __init__(
        self, pool: Pool, devices: DeviceManager, store: NodeVolumeStore, *, max_volumes: int
    ) -> None:
        self.pool = pool
        self.devices = devices
        self.store = store
        self.max_volumes = max_volumes

    def _known(self, volume_id: str) -> NodeVolume | None:
        """The node record, or None for a pool volume not staged here; ENOENT otherwise."""
        if not ids.is_volume_id(volume_id):  # never let a caller's string become a path
            raise VolumeError("find volume", f"volume {volume_id!r} does not exist", errno.ENOENT)
        record = self.store.load(volume_id)
        if record is None and self.pool.volume(volume_id) is None:
            raise VolumeError("find volume", f"volume {volume_id} does not exist", errno.ENOENT)
        return record

    def parameters(self, volume_id: str) -> dict[str, str]:
        """The parameters the volume was created with; {} for one the pool does not know."""
        volume = self.pool.volume(volume_id)
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
        spec = DeviceSpec(
            name=record.volume_id,
            backing=self.pool.backing_path(record.volume_id),
            profile=request.profile,
            limits=request.limits(),
        )
        device = self.devices.create(spec)
        self.devices.apply_limits(record.volume_id, request.limits)
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
            self.devices.delete(record.volume_id)
            self.store.remove(record.volume_id)
        except Exception as exc:
            log.error("undoing the stage of %s failed: %s", record.volume_id, exc)

    # -- unstage ------------------------------------------------------------------------

    def unstage(self, volume_id: str, staging_path: Path) -> None:
        record = self._known(volume_id)
        if record is None:
            # Not staged; a crash between device creation and the first record save
            # would still have left a device behind under this name.
            self.devices.delete(volume_id)
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
        self.devices.delete(record.volume_id)
        self.store.remove(record.volume_id)

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
        device = self.devices.record(record.volume_id)
        if device is None:
            return Health(True, "the volume's device is gone")
        state = self.devices.status(device).state
        if state == DeviceState.DATAPLANE_DEAD:
            why = f" (last attempt: {device.restart_error})" if device.restart_error else ""
            return Health(True, f"the volume's dataplane is down and being restarted{why}")
        if state != DeviceState.RUNNING:
            return Health(True, f"the volume's device is {state}")
        if not record.block and not mountinfo.is_mount_point(record.staging_path):
            return Health(True, f"the filesystem is no longer mounted at {record.staging_path}")
        restarts = (
            f"; its dataplane was replaced {device.restarts} times" if device.restarts else ""
        )
        return Health(False, f"the device is running{restarts}")

    def expand(self, volume_id: str, path: Path, capacity: int) -> int:
        record = self._at(volume_id, path)
        capacity = -(-capacity // SIZE_ALIGNMENT) * SIZE_ALIGNMENT
        volume = self.pool.expand_volume(volume_id, capacity)
        if record.state == VolumeState.STAGED and record.device is not None:
            self.devices.resize(volume_id, volume.capacity)
            if not record.block:
                filesystem.grow(
                    Path(record.device), Path(record.staging_path), fs_type=record.fs_type
                )
        return volume.capacity


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
