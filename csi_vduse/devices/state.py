"""Durable records of managed devices: one JSON file per device in the state directory.

Records are what ``delete`` and ``list`` work from after the creating process has
exited; a per-name lock file serialises operations on one device.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from csi_vduse.dataplane.blk.profile import DEFAULT_QUEUE_SIZE, BlkProfile
from csi_vduse.devices.errors import DeviceError
from csi_vduse.durable import write_atomic
from csi_vduse.virtio.blk import SECTOR_SIZE

DEFAULT_STATE_DIR = Path("/run/csi-vduse")


def default_state_dir() -> Path:
    return Path(os.environ.get("CSI_VDUSE_STATE_DIR") or DEFAULT_STATE_DIR)


class DeviceState(StrEnum):
    """A record's state (creating -> running; deleting while torn down), and what a running
    device turns out to be on the machine (``DeviceStatus.state``). Records hold the values."""

    CREATING = "creating"
    RUNNING = "running"
    DELETING = "deleting"
    LOST = "lost"  # recorded as running, but the VDUSE device is gone
    DATAPLANE_DEAD = "dataplane-dead"
    DETACHED = "detached"  # not on the vDPA bus, or no block device


@dataclass(kw_only=True)
class DeviceRecord:
    """What was made for one device, and the dataplane serving it now."""

    name: str
    backing: str
    size: int  # bytes; grows with resize, while the profile stays as created
    profile: BlkProfile
    state: DeviceState = DeviceState.CREATING
    pid: int | None = None
    pid_start_time: int | None = None  # guards against pid reuse
    block_device: str | None = None
    created_backing: bool = False
    restarts: int = 0  # dataplanes that took the device over after one died
    restart_error: str | None = None  # why the last attempt to take it over failed
    # An RBD image's backing (RbdSource's fields, never a key) and the address of the
    # client its dataplane holds the image's lock with; None for a file.
    rbd: dict[str, Any] | None = None
    rbd_client: str | None = None

    def __post_init__(self) -> None:
        self.state = DeviceState(self.state)  # a record read back holds the plain string

    def to_json(self) -> dict[str, Any]:
        """The record as every version writes it: one flat object, the profile's fields
        among the others (its ``queues`` as ``num_queues``)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "profile"}
        for name in ("rbd", "rbd_client"):  # a file device's record reads as it always did
            if data[name] is None:
                del data[name]
        profile = self.profile
        data.update(
            readonly=profile.readonly, num_queues=profile.queues,
            queue_size=profile.queue_size, block_size=profile.block_size, packed=profile.packed,
        )  # fmt: skip
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeviceRecord:
        """Read ``to_json``'s object back; records from before the profile's later fields
        existed hold the defaults those versions served."""
        data = dict(data)
        profile = BlkProfile(
            readonly=data.pop("readonly"),
            queues=data.pop("num_queues", 1),
            queue_size=data.pop("queue_size", DEFAULT_QUEUE_SIZE),
            block_size=data.pop("block_size", SECTOR_SIZE),
            packed=data.pop("packed", False),
        )
        return cls(profile=profile, **data)


@contextmanager
def _state_access(what: str) -> Iterator[None]:
    """Report an unusable state directory as such, not as a stray OSError."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise DeviceError(
            "state directory", f"cannot {what}{where}: {exc.strerror or exc}", exc.errno
        ) from exc


class StateStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_state_dir()
        self.devices = self.root / "devices"

    def _path(self, name: str) -> Path:
        return self.devices / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.devices / f"{name}.log"

    def stats_path(self, name: str) -> Path:
        """The dataplane's I/O counters (see dataplane.stats)."""
        return self.devices / f"{name}.stats"

    def inflight_path(self, name: str) -> Path:
        """The dataplane's progress, for a successor to take over (dataplane.inflight_log)."""
        return self.devices / f"{name}.inflight"

    def qos_path(self, name: str) -> Path:
        """The device's live I/O limits, which its dataplane maps (dataplane.qos)."""
        return self.devices / f"{name}.qos"

    def control_path(self, name: str) -> Path:
        """Where the device's dataplane listens for pause and resume (dataplane.control)."""
        return self.devices / f"{name}.ctl"

    def load(self, name: str) -> DeviceRecord | None:
        path = self._path(name)
        with _state_access("read the device record"):
            try:
                text = path.read_text()
            except FileNotFoundError:
                return None
        try:
            return DeviceRecord.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise DeviceError("state directory", f"corrupt device record {path}: {exc}") from exc

    def save(self, record: DeviceRecord) -> None:
        with _state_access("write the device record"):
            self.devices.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path(record.name), json.dumps(record.to_json(), indent=2) + "\n")

    def remove(self, name: str) -> None:
        with _state_access("remove the device record"):
            paths = (
                self.log_path(name), self.stats_path(name), self.inflight_path(name),
                self.qos_path(name), self.control_path(name),
            )  # fmt: skip
            for path in (self._path(name), *paths):
                path.unlink(missing_ok=True)

    def records(self) -> list[DeviceRecord]:
        found = []
        for path in sorted(self.devices.glob("*.json")):
            record = self.load(path.stem)
            if record is not None:
                found.append(record)
        return found

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Exclusive access to one device's lifecycle across processes."""
        locks = self.root / "locks"
        with _state_access("lock the device"):
            locks.mkdir(parents=True, exist_ok=True)
            lock = open(locks / f"{name}.lock", "w")  # noqa: SIM115 -- held across the yield
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
