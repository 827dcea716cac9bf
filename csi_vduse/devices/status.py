"""What is live on the machine for a recorded device: its dataplane, its VDUSE device,
its vDPA attachment and its block device.

A record says what was made; only these probes say what still exists, so ``list`` and
the supervisor report a device by both.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from pathlib import Path

from csi_vduse.devices import dataplane_process
from csi_vduse.devices.dataplane_process import ProcessId
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.state import DeviceRecord, DeviceState
from csi_vduse.vdpa import sysfs
from csi_vduse.vduse.control import device_exists


@dataclass(frozen=True, kw_only=True)
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


def probe(record: DeviceRecord) -> DeviceStatus:
    """The record's device as the machine has it now."""
    process = process_of(record)
    return DeviceStatus(
        record=record,
        dataplane_running=process is not None and dataplane_process.is_running(process),
        vduse_present=device_exists(record.name),
        vdpa_attached=vdpa_attached(record.name),
        block_device=str(node) if (node := sysfs.block_device(record.name)) else None,
    )


def process_of(record: DeviceRecord | None) -> ProcessId | None:
    """The dataplane the record names, if it names one."""
    if record is None or record.pid is None or record.pid_start_time is None:
        return None
    return ProcessId(pid=record.pid, start_time=record.pid_start_time)


def vdpa_attached(name: str) -> bool:
    return (sysfs.VDPA_BUS / "devices" / name).exists()


def wait_for_size(dev: Path, size: int, timeout: float = 10.0) -> None:
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
