"""The device lifecycle, in the order the kernel's VDUSE guide prescribes.

create: VDUSE_CREATE_DEV -> VDUSE_VQ_SETUP -> dataplane answering messages ->
VDPA_CMD_DEV_NEW -> the block device appears. Each step registers its undo; a
failure runs the undos in reverse, so nothing half-made is left behind.

delete: VDPA_CMD_DEV_DEL -> dataplane stopped (closing the node) ->
VDUSE_DESTROY_DEV. Every step tolerates its object being gone already, so
delete is idempotent and also clears what a crashed create left.

revive: a running device whose dataplane died gets a new one, which takes the
device over from the in-flight log the old one kept (see dataplane.inflight_log).

resize: the backing grows, then the dataplane announces the new capacity to the guest.

The backing's handling lives in ``backing``, the probes of what is live in ``status``,
and the step reporting in ``steps``.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from csi_vduse.dataplane import qos, stats
from csi_vduse.dataplane.blk.profile import ProfileError
from csi_vduse.dataplane.interface import DataplaneArgs
from csi_vduse.dataplane.qos import QosLimits
from csi_vduse.devices import backing, dataplane_process, pausing, rbd_source
from csi_vduse.devices.dataplane_process import ProcessId
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.launcher import Launcher
from csi_vduse.devices.pausing import PauseReport
from csi_vduse.devices.spec import DeviceSpec, validate_name
from csi_vduse.devices.state import DeviceRecord, DeviceState, StateStore
from csi_vduse.devices.status import (
    DeviceStatus,
    probe,
    process_of,
    vdpa_attached,
    wait_for_size,
)
from csi_vduse.devices.steps import as_step, quietly, step
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
            record.backing == spec.backing_name
            and spec.size in (None, record.size)
            and spec.profile == record.profile
        )
        if not same:
            raise DeviceError(
                "create device",
                f"device {spec.name} already exists with other settings "
                f"(backing {record.backing}, {record.size} bytes, "
                f"readonly={record.profile.readonly})",
                errno.EEXIST,
            )
        live = self.status(record)
        if live.state != DeviceState.RUNNING:
            raise DeviceError(
                "create device",
                f"device {spec.name} exists but is {live.state}; delete it and create again",
                errno.EEXIST,
            )
        self._write_limits(spec.name, spec.limits)  # limits are not fixed at creation
        return record

    def _create(self, spec: DeviceSpec, undo: ExitStack) -> DeviceRecord:
        name = spec.name
        self._preflight()
        created_backing, size = self._prepare_backing(spec, undo)
        profile = spec.profile
        try:
            profile.check_capacity(size)
        except ProfileError as exc:
            raise DeviceError(
                "validate",
                f"backing {spec.backing_name} holds {size} bytes, not whole "
                f"{profile.block_size}-byte blocks",
                errno.EINVAL,
            ) from exc
        record = DeviceRecord(
            name=name, backing=spec.backing_name, size=size, profile=profile,
            created_backing=created_backing, rbd=spec.rbd.to_json() if spec.rbd else None,
        )  # fmt: skip

        with as_step(name, "open /dev/vduse/control"), VduseControl() as control:
            config = DeviceConfig(
                name=spec.name,
                device_id=VIRTIO_ID_BLOCK,
                vendor_id=VIRTIO_VENDOR_ID,
                features=profile.features,
                vq_num=profile.queues,
                vq_align=VQ_ALIGN,
                config=profile.config(size).pack(),
            )
            step(name, "create VDUSE device", control.create_device, config)
        undo.callback(quietly, "destroy VDUSE device", self._destroy, name)
        if not step(name, "set bounce size", set_bounce_size, name, spec.bounce_size):
            log.warning("%s: this kernel has no bounce_size attribute: 64 MiB it is", name)
        self.store.save(record)
        undo.callback(self.store.remove, spec.name)

        with as_step(name, "set up virtqueues"), DeviceNode(name) as node:
            for index in range(profile.queues):
                node.vq_setup(index, max_size=profile.queue_size)

        # A log left by an earlier device of this name must not be taken for this one's.
        step(name, "reset in-flight log", self.store.inflight_path(name).unlink, True)
        step(name, "write I/O limits", qos.create, self.store.qos_path(name), spec.limits)
        process = step(name, "start dataplane", self._start_dataplane, record)
        undo.callback(quietly, "stop dataplane", dataplane_process.stop, process)
        record.pid, record.pid_start_time = process.pid, process.start_time
        record.rbd_client = process.rbd_client
        self.store.save(record)

        with as_step(name, "attach to vDPA bus"), _vdpa_client() as vdpa:
            vdpa.attach(name)
        undo.callback(quietly, "detach from vDPA bus", self._detach, name)
        step(name, "bind virtio_vdpa", sysfs.bind, name)
        node_path = step(
            name, "wait for block device", sysfs.wait_for_block_device, name, _block_timeout()
        )
        record.block_device = str(node_path)
        record.state = DeviceState.RUNNING
        self.store.save(record)
        log.info("device %s is %s", spec.name, node_path)
        return record

    def _prepare_backing(self, spec: DeviceSpec, undo: ExitStack) -> tuple[bool, int]:
        """The backing made or measured: whether it was created, and its size."""
        name = spec.name
        if spec.rbd is not None:
            size = step(name, "open RBD image", rbd_source.image_size, spec.rbd)
            if spec.size not in (None, size):
                raise DeviceError(
                    "open RBD image",
                    f"{spec.backing_name} holds {size} bytes, not the {spec.size} asked for "
                    "(refusing to resize)",
                    errno.EINVAL,
                )
            return False, size
        assert spec.backing is not None
        path = spec.backing.absolute()
        created, size = step(name, "prepare backing file", backing.prepare, path, spec.size)
        if created:
            undo.callback(quietly, f"remove {path}", path.unlink, missing_ok=True)
        return created, size

    def _start_dataplane(self, record: DeviceRecord) -> ProcessId:
        """The device's dataplane, started from its record (fresh, or taking over: then
        the lock a dead predecessor holds on an RBD image may be broken)."""
        rbd = None
        if record.rbd is not None:
            source = rbd_source.RbdSource.from_json(record.rbd)
            rbd = source.target(dead_owner=record.rbd_client or "")
        args = DataplaneArgs(
            name=record.name,
            backing=Path(record.backing),
            rbd=rbd,
            profile=record.profile,
            serial=record.name[:20],
            stats=self.store.stats_path(record.name),
            inflight_log=self.store.inflight_path(record.name),
            qos=self.store.qos_path(record.name),
            control=self.store.control_path(record.name),
        )
        return dataplane_process.start(
            args,
            self.store.log_path(record.name),
            cgroup=self.dataplane_cgroup,
            launcher=self.launcher,
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
            process = process_of(record)
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
                process = step(name, "restart dataplane", self._start_dataplane, record)
            except DeviceError as exc:
                record.restart_error = exc.message
                self.store.save(record)
                raise
            record.pid, record.pid_start_time = process.pid, process.start_time
            record.rbd_client = process.rbd_client
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
            try:
                record.profile.check_capacity(size)
            except ProfileError as exc:
                raise DeviceError(
                    "resize device",
                    f"{size} is not a multiple of the {record.profile.block_size}-byte block",
                    errno.EINVAL,
                ) from exc
            process = process_of(record)
            if process is None or record.block_device is None:
                raise DeviceError("resize device", f"{name} is not running", errno.ESRCH)
            if record.rbd is not None:
                source = rbd_source.RbdSource.from_json(record.rbd)
                step(name, "grow RBD image", rbd_source.grow_image, source, size)
            else:
                step(name, "grow backing", backing.grow, Path(record.backing), size)
            record.size = size
            self.store.save(record)
            dataplane_process.announce_growth(process)
            step(name, "wait for the new size", wait_for_size, Path(record.block_device), size)
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
            process = process_of(record)
            dataplane_alive = process is not None and dataplane_process.is_running(process)
            vduse_present = device_exists(name)
            # Without a dataplane, someone must answer the reset that detaching sends.
            responder = (
                StandInResponder(name)
                if vduse_present and not dataplane_alive and vdpa_attached(name)
                else nullcontext()
            )
            with responder:
                found |= self._detach(name)
            if process is not None:
                step(name, "stop dataplane", dataplane_process.stop, process)
            found |= self._destroy(name)
            if record is not None and record.created_backing:
                log.info("keeping backing file %s (data is never deleted here)", record.backing)
            self.store.remove(name)
            return found

    def _detach(self, name: str) -> bool:
        if not vdpa_attached(name):
            return False
        with _vdpa_client() as vdpa:
            return bool(step(name, "detach from vDPA bus", vdpa.detach, name))

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

    # -- pause --------------------------------------------------------------------------

    @contextmanager
    def paused(self, names: Sequence[str], *, timeout_ms: int) -> Iterator[PauseReport]:
        """Pause the I/O of the running devices ``names`` together, for at most
        ``timeout_ms`` (see ``devices.pausing``); each is held under its lock meanwhile, so
        none is deleted, resized or replaced under the caller."""
        with ExitStack() as locks:
            for name in sorted(names):
                locks.enter_context(self.store.locked(name))
            with pausing.paused(self.store, names, timeout_ms=timeout_ms) as report:
                yield report

    # -- limits -------------------------------------------------------------------------

    def set_limits(self, name: str, limits: QosLimits) -> bool:
        """Change a device's I/O limits where its dataplane reads them, live; False when
        this node has no device of that name."""
        with self.store.locked(name):
            if self.store.load(name) is None:
                return False
            self._write_limits(name, limits)
            return True

    def apply_limits(self, name: str, read: Callable[[], QosLimits]) -> bool:
        """Write the limits ``read`` returns, read under the device's lock: a stage that
        made the device applies the volume's limits as they are now, and a change
        ``set_limits`` wrote meanwhile (from a newer record) is never overwritten by an
        older read. False when this node has no device of that name."""
        with self.store.locked(name):
            if self.store.load(name) is None:
                return False
            self._write_limits(name, read())
            return True

    def _write_limits(self, name: str, limits: QosLimits) -> None:
        path = self.store.qos_path(name)
        with suppress(OSError, qos.QosError):  # unreadable: written afresh below
            if qos.read(path) == limits:
                return
        try:
            qos.update(path, limits)
        except OSError as exc:
            raise DeviceError("set I/O limits", f"device {name}: {exc}", errno.EIO) from exc
        log.info("device %s: I/O limits now %s", name, limits)

    # -- list ---------------------------------------------------------------------------

    def record(self, name: str) -> DeviceRecord | None:
        """The device's record, or None when this node has no device of that name."""
        return self.store.load(name)

    def status(self, record: DeviceRecord) -> DeviceStatus:
        return probe(record)

    def waiting_ns(self, record: DeviceRecord) -> int:
        """How long requests have waited on the device's backend with none finishing, from
        its dataplane's counters; 0 when none waits or the counters cannot be read."""
        try:
            counters = stats.read(self.store.stats_path(record.name))
        except (OSError, stats.StatsError):
            return 0
        return counters.waiting_ns(time.monotonic_ns())

    def list(self) -> list[DeviceStatus]:
        return [self.status(record) for record in self.store.records()]


def vdpa_problem() -> str | None:
    """Why the vDPA side of the kernel cannot give us a host block device, or None."""
    if sysfs.driver_loaded():
        return None
    what = "vdpa" if not sysfs.VDPA_BUS.exists() else "virtio_vdpa"
    return f"the {what} module is not loaded (modprobe vduse virtio_vdpa)"


def _block_timeout() -> float:
    return float(os.environ.get("CSI_VDUSE_BLOCK_DEVICE_TIMEOUT") or BLOCK_DEVICE_TIMEOUT)


def _vdpa_client() -> VdpaClient:
    """A vdpa netlink client. pyroute2 is imported here, not at module load: importing it
    costs more than everything else a `device list` or a dataplane revive does."""
    from csi_vduse.vdpa.netlink import VdpaClient  # noqa: PLC0415

    return VdpaClient()
