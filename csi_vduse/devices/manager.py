"""The device lifecycle, in the order the kernel's VDUSE guide prescribes.

create: VDUSE_CREATE_DEV -> VDUSE_VQ_SETUP -> dataplane answering messages ->
VDPA_CMD_DEV_NEW -> the block device appears. Each step registers its undo; a
failure runs the undos in reverse, so nothing half-made is left behind.

delete: VDPA_CMD_DEV_DEL -> dataplane stopped (closing the node) ->
VDUSE_DESTROY_DEV. Every step tolerates its object being gone already, so
delete is idempotent and also clears what a crashed create left.

revive: a running device whose dataplane died gets a new one, which takes the
device over from the in-flight log the old one kept (see dataplane.inflight_log).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.interface import DataplaneArgs
from csi_vduse.devices import dataplane_process
from csi_vduse.devices.dataplane_process import ProcessId
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.launcher import Launcher
from csi_vduse.devices.spec import DeviceSpec, validate_name
from csi_vduse.devices.state import DeviceRecord, DeviceState, StateStore
from csi_vduse.errors import CsiVduseError
from csi_vduse.vdpa import sysfs
from csi_vduse.vduse.control import DeviceConfig, VduseControl, device_exists, set_bounce_size
from csi_vduse.vduse.node import DeviceNode
from csi_vduse.vduse.responder import StandInResponder
from csi_vduse.virtio.spec import VIRTIO_ID_BLOCK, VIRTIO_VENDOR_ID

if TYPE_CHECKING:
    from csi_vduse.vdpa.netlink import VdpaClient

log = logging.getLogger(__name__)

BLOCK_DEVICE_TIMEOUT = 20.0  # seconds; CSI_VDUSE_BLOCK_DEVICE_TIMEOUT overrides
DESTROY_RETRY = 5.0
VQ_ALIGN = 4096


@dataclass(frozen=True)
class DeviceStatus:
    """A record together with what is live on the machine right now."""

    record: DeviceRecord
    dataplane_running: bool
    vduse_present: bool
    vdpa_attached: bool
    block_device: str | None

    @property
    def state(self) -> DeviceState:
        if self.record.state != DeviceState.RUNNING:
            return self.record.state
        if not self.vduse_present:
            return DeviceState.LOST
        if not self.dataplane_running:
            return DeviceState.DATAPLANE_DEAD
        if not self.vdpa_attached or self.block_device is None:
            return DeviceState.DETACHED
        return DeviceState.RUNNING


class DeviceManager:
    def __init__(
        self, store: StateStore | None = None, *, dataplane_cgroup: Path | None = None,
        launcher: Launcher | None = None,
    ) -> None:  # fmt: skip
        self.store = store or StateStore()
        self.dataplane_cgroup = dataplane_cgroup  # see dataplane_process.start
        self.launcher = launcher

    # -- create -------------------------------------------------------------------------

    def create(self, spec: DeviceSpec) -> DeviceRecord:
        """Create, serve and attach a device; returns its record with the block device."""
        with self.store.locked(spec.name):
            existing = self.store.load(spec.name)
            if existing is not None:
                return self._existing(spec, existing)
            with ExitStack() as undo:
                record = self._create(spec, undo)
                undo.pop_all()
            return record

    def _existing(self, spec: DeviceSpec, record: DeviceRecord) -> DeviceRecord:
        """Create is idempotent for an identical request on a healthy device."""
        same = (
            Path(record.backing) == spec.backing.absolute()
            and record.readonly == spec.readonly
            and spec.size in (None, record.size)
            and spec.num_queues in (None, record.num_queues)
            and (spec.queue_size, spec.block_size) == (record.queue_size, record.block_size)
            and spec.packed == record.packed
        )
        if not same:
            raise DeviceError(
                "create device",
                f"device {spec.name} already exists with other settings "
                f"(backing {record.backing}, {record.size} bytes, readonly={record.readonly})",
                errno.EEXIST,
            )
        status = self.status(record)
        if status.state != DeviceState.RUNNING:
            raise DeviceError(
                "create device",
                f"device {spec.name} exists but is {status.state}; delete it and create again",
                errno.EEXIST,
            )
        return record

    def _create(self, spec: DeviceSpec, undo: ExitStack) -> DeviceRecord:
        name = spec.name
        self._preflight()
        backing = spec.backing.absolute()
        created_backing, size = _step(
            name, "prepare backing file", _prepare_backing, backing, spec.size
        )
        if created_backing:
            undo.callback(_quietly, f"remove {backing}", backing.unlink, missing_ok=True)
        if size % spec.block_size:
            raise DeviceError(
                "validate",
                f"backing {backing} holds {size} bytes, not whole {spec.block_size}-byte blocks",
                errno.EINVAL,
            )
        profile = BlkProfile(
            size, spec.readonly, spec.queues, spec.queue_size, spec.block_size, spec.packed
        )
        record = DeviceRecord(
            spec.name, str(backing), size, spec.readonly, created_backing=created_backing,
            num_queues=profile.queues, queue_size=profile.queue_size, block_size=spec.block_size,
            packed=spec.packed,
        )  # fmt: skip

        with _as_step(name, "open /dev/vduse/control"), VduseControl() as control:
            config = DeviceConfig(
                name=spec.name,
                device_id=VIRTIO_ID_BLOCK,
                vendor_id=VIRTIO_VENDOR_ID,
                features=profile.features,
                vq_num=profile.queues,
                vq_align=VQ_ALIGN,
                config=profile.config().pack(),
            )
            _step(name, "create VDUSE device", control.create_device, config)
        undo.callback(_quietly, "destroy VDUSE device", self._destroy, name)
        if not _step(name, "set bounce size", set_bounce_size, name, spec.bounce_size):
            log.warning("%s: this kernel has no bounce_size attribute: 64 MiB it is", name)
        self.store.save(record)
        undo.callback(self.store.remove, spec.name)

        with _as_step(name, "set up virtqueues"), DeviceNode(name) as node:
            for index in range(profile.queues):
                node.vq_setup(index, profile.queue_size)

        # A log left by an earlier device of this name must not be taken for this one's.
        _step(name, "reset in-flight log", self.store.inflight_path(name).unlink, True)
        process = _step(name, "start dataplane", self._start_dataplane, record)
        undo.callback(_quietly, "stop dataplane", dataplane_process.stop, process)
        record.pid, record.pid_start_time = process.pid, process.start_time
        self.store.save(record)

        with _as_step(name, "attach to vDPA bus"), _vdpa_client() as vdpa:
            vdpa.attach(name)
        undo.callback(_quietly, "detach from vDPA bus", self._detach, name)
        _step(name, "bind virtio_vdpa", sysfs.bind, name)
        node_path = _step(
            name, "wait for block device", sysfs.wait_for_block_device, name, _block_timeout()
        )
        record.block_device = str(node_path)
        record.state = DeviceState.RUNNING
        self.store.save(record)
        log.info("device %s is %s", spec.name, node_path)
        return record

    def _start_dataplane(self, record: DeviceRecord) -> ProcessId:
        """The device's dataplane, started from its record (fresh, or taking over)."""
        args = DataplaneArgs(
            name=record.name,
            backing=Path(record.backing),
            readonly=record.readonly,
            queues=record.num_queues,
            queue_size=record.queue_size,
            serial=record.name[:20],
            stats=self.store.stats_path(record.name),
            inflight_log=self.store.inflight_path(record.name),
            packed=record.packed,
        )
        return dataplane_process.start(
            args, self.store.log_path(record.name), self.dataplane_cgroup, self.launcher
        )

    def _preflight(self) -> None:
        """Refuse early, before anything is made, when the kernel cannot finish the job."""
        problem = vdpa_problem()
        if problem:
            raise DeviceError("check kernel", problem, errno.ENODEV)

    # -- revive -------------------------------------------------------------------------

    def revive(self, name: str) -> ProcessId | None:
        """Give a running device whose dataplane died a new one; None if it needs none.

        The new dataplane reopens the device node, restores the queues from the in-flight
        log and serves again every request the dead one took but did not complete; the
        guest sees a stall, not an error.
        """
        validate_name(name)
        with self.store.locked(name):
            record = self.store.load(name)
            if record is None or record.state != DeviceState.RUNNING:
                return None
            process = _process_of(record)
            if process is not None and dataplane_process.is_running(process):
                return None
            if not device_exists(name):
                raise DeviceError("restart dataplane", f"VDUSE device {name} is gone", errno.ENODEV)
            if process is not None:
                dataplane_process.reap(process.pid)
            orphan = dataplane_process.find(name)
            if orphan is not None:
                # Started by a driver that died before recording it: it serves already.
                record.pid, record.pid_start_time = orphan.pid, orphan.start_time
                self.store.save(record)
                log.warning("device %s: adopted unrecorded dataplane pid %d", name, orphan.pid)
                return orphan
            try:
                process = _step(name, "restart dataplane", self._start_dataplane, record)
            except DeviceError as exc:
                record.restart_error = exc.message
                self.store.save(record)
                raise
            record.pid, record.pid_start_time = process.pid, process.start_time
            record.restarts += 1
            record.restart_error = None
            self.store.save(record)
            log.warning("device %s: dataplane restarted as pid %d", name, process.pid)
            return process

    # -- resize -------------------------------------------------------------------------

    def resize(self, name: str, size: int) -> DeviceRecord:
        """Grow a running device to ``size`` bytes without detaching it; never shrinks."""
        validate_name(name)
        with self.store.locked(name):
            record = self.store.load(name)
            if record is None:
                raise DeviceError("resize device", f"no device {name}", errno.ENOENT)
            if size < record.size:
                raise DeviceError(
                    "resize device",
                    f"{name} holds {record.size} bytes; shrinking to {size} would lose data",
                    errno.EINVAL,
                )
            if size % record.block_size:
                raise DeviceError(
                    "resize device",
                    f"{size} is not a multiple of the {record.block_size}-byte block",
                    errno.EINVAL,
                )
            process = _process_of(record)
            if process is None or record.block_device is None:
                raise DeviceError("resize device", f"{name} is not running", errno.ESRCH)
            _step(name, "grow backing", _grow_backing, Path(record.backing), size)
            record.size = size
            self.store.save(record)
            dataplane_process.announce_growth(process)
            _step(name, "wait for the new size", _wait_for_size, Path(record.block_device), size)
            log.info("device %s grown to %d bytes", name, size)
            return record

    # -- delete -------------------------------------------------------------------------

    def delete(self, name: str) -> bool:
        """Tear down whatever exists of ``name``; False when nothing did."""
        validate_name(name)
        with self.store.locked(name):
            record = self.store.load(name)
            if record is not None:
                record.state = DeviceState.DELETING
                self.store.save(record)
            found = record is not None
            process = _process_of(record)
            dataplane_alive = process is not None and dataplane_process.is_running(process)
            vduse_present = device_exists(name)
            # Without a dataplane, someone must answer the reset that detaching sends.
            responder = (
                StandInResponder(name)
                if vduse_present and not dataplane_alive and _vdpa_attached(name)
                else nullcontext()
            )
            with responder:
                found |= self._detach(name)
            if process is not None:
                _step(name, "stop dataplane", dataplane_process.stop, process)
            found |= self._destroy(name)
            if record is not None and record.created_backing:
                log.info("keeping backing file %s (data is never deleted here)", record.backing)
            self.store.remove(name)
            return found

    def _detach(self, name: str) -> bool:
        if not _vdpa_attached(name):
            return False
        with _vdpa_client() as vdpa:
            return bool(_step(name, "detach from vDPA bus", vdpa.detach, name))

    def _destroy(self, name: str) -> bool:
        if not device_exists(name):
            return False
        deadline = time.monotonic() + DESTROY_RETRY
        with VduseControl() as control:
            while True:
                try:
                    return control.destroy_device(name)
                except CsiVduseError as exc:
                    # The node closes as the dataplane exits; give the kernel a moment.
                    if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                        raise DeviceError(
                            "destroy VDUSE device", f"{name}: {exc.message}", exc.errno
                        ) from exc
                    time.sleep(0.05)

    # -- list ---------------------------------------------------------------------------

    def record(self, name: str) -> DeviceRecord | None:
        """The device's record, or None when this node has no device of that name."""
        return self.store.load(name)

    def status(self, record: DeviceRecord) -> DeviceStatus:
        process = _process_of(record)
        return DeviceStatus(
            record=record,
            dataplane_running=process is not None and dataplane_process.is_running(process),
            vduse_present=device_exists(record.name),
            vdpa_attached=_vdpa_attached(record.name),
            block_device=str(node) if (node := sysfs.block_device(record.name)) else None,
        )

    def list(self) -> list[DeviceStatus]:
        return [self.status(record) for record in self.store.records()]


def vdpa_problem() -> str | None:
    """Why the vDPA side of the kernel cannot give us a host block device, or None."""
    if sysfs.driver_loaded():
        return None
    what = "vdpa" if not sysfs.VDPA_BUS.exists() else "virtio_vdpa"
    return f"the {what} module is not loaded (modprobe vduse virtio_vdpa)"


def block_device_size(path: Path | str) -> int:
    """A block device's size in bytes (its stat says 0)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _block_timeout() -> float:
    return float(os.environ.get("CSI_VDUSE_BLOCK_DEVICE_TIMEOUT") or BLOCK_DEVICE_TIMEOUT)


def _process_of(record: DeviceRecord | None) -> ProcessId | None:
    if record is None or record.pid is None or record.pid_start_time is None:
        return None
    return ProcessId(record.pid, record.pid_start_time)


def _grow_backing(path: Path, size: int) -> None:
    """Extend a file (sparse) to ``size``; a block device must already be that large."""
    with open(path, "rb+") as backing:
        if stat.S_ISBLK(os.fstat(backing.fileno()).st_mode):
            have = os.lseek(backing.fileno(), 0, os.SEEK_END)
            if have < size:
                raise DeviceError(
                    "grow backing", f"{path} holds only {have} bytes, not {size}", errno.ENOSPC
                )
        elif os.fstat(backing.fileno()).st_size < size:
            os.truncate(backing.fileno(), size)


def _wait_for_size(dev: Path, size: int, timeout: float = 10.0) -> None:
    """Until the guest kernel reports ``size`` bytes for ``dev``."""
    attribute = Path(f"/sys/block/{dev.name}/size")
    deadline = time.monotonic() + timeout
    while int(attribute.read_text()) * 512 != size:
        if time.monotonic() >= deadline:
            raise DeviceError(
                "resize device",
                f"{dev} still reports {int(attribute.read_text()) * 512} bytes, not {size}",
                errno.ETIMEDOUT,
            )
        time.sleep(0.02)


def _vdpa_attached(name: str) -> bool:
    return (sysfs.VDPA_BUS / "devices" / name).exists()


def _prepare_backing(path: Path, size: int | None) -> tuple[bool, int]:
    """Use ``path`` as it is, or create it sparse when missing; never truncates data."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if size is None:
            raise DeviceError(
                "prepare backing file",
                f"{path} does not exist and no --size was given",
                errno.ENOENT,
            ) from None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DeviceError(
                "prepare backing file", f"cannot create {path}: {exc.strerror}", exc.errno
            ) from exc
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        log.info("created sparse backing file %s of %d bytes", path, size)
        return True, size
    if stat.S_ISREG(info.st_mode):
        actual = info.st_size
    elif stat.S_ISBLK(info.st_mode):
        actual = block_device_size(path)
    else:
        raise DeviceError(
            "prepare backing file", f"{path} is neither a file nor a block device", errno.EINVAL
        )
    if size is not None and size != actual:
        raise DeviceError(
            "prepare backing file",
            f"{path} exists with {actual} bytes, not the {size} asked for (refusing to resize)",
            errno.EINVAL,
        )
    if actual == 0 or actual % 512:
        raise DeviceError(
            "prepare backing file",
            f"{path} has {actual} bytes, not a positive multiple of 512",
            errno.EINVAL,
        )
    return False, actual


T = TypeVar("T")


@contextmanager
def _as_step(name: str, step: str) -> Iterator[None]:
    """Report any failure inside as ``step``'s DeviceError."""
    try:
        yield
    except DeviceError:
        raise
    except CsiVduseError as exc:
        raise DeviceError(step, f"{name}: {exc.message}", exc.errno) from exc
    except OSError as exc:
        raise DeviceError(step, f"{name}: {exc.strerror or exc}", exc.errno) from exc


def _step(name: str, step: str, fn: Callable[..., T], *args: object) -> T:
    with _as_step(name, step):
        return fn(*args)


def _vdpa_client() -> VdpaClient:
    """A vdpa netlink client. pyroute2 is imported here, not at module load: importing it
    costs more than everything else a `device list` or a dataplane revive does."""
    from csi_vduse.vdpa.netlink import VdpaClient  # noqa: PLC0415

    return VdpaClient()


def _quietly(what: str, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Undo steps must not hide the original failure; log theirs instead."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        log.error("cleanup step %r failed: %s", what, exc)
