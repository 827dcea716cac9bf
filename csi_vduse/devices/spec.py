"""What a user asks for: a device name, its backing, its size and the device to serve it.

The device itself is a ``BlkProfile``, which checks itself; this module adds what only a
request has (a name that becomes paths, a bounce buffer, the node's default queue count)
and reports a profile's problems in the command line's words.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from csi_vduse.dataplane.blk.profile import BlkProfile, ProfileError
from csi_vduse.dataplane.qos import UNLIMITED, QosLimits
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.rbd_source import RbdSource
from csi_vduse.vduse.control import MAX_BOUNCE_SIZE, MIN_BOUNCE_SIZE
from csi_vduse.virtio.blk import SECTOR_SIZE

DEFAULT_MAX_QUEUES = 4  # more queues than this buy little for one volume, and cost threads
# Room for every request in flight at the depths we benchmark (2 queues x QD8 x 1 MiB) while
# keeping the dataplane's resident memory small; the kernel's default is 64 MiB.
DEFAULT_BOUNCE_SIZE = 16 << 20
# A profile's fields as the command line (``csi-vduse device create``) names them.
FLAGS = {
    "queues": "--num-queues",
    "queue_size": "--queue-size",
    "block_size": "--block-size",
    "capacity": "size",
}


def default_num_queues() -> int:
    """One queue per CPU, up to a cap: each queue gets its own dataplane thread."""
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_QUEUES))


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def validate_name(name: str) -> str:
    """Names become /dev/vduse/NAME, the vDPA device name and a state file name."""
    if not NAME_PATTERN.fullmatch(name):
        raise DeviceError(
            "validate",
            f"invalid device name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            errno.EINVAL,
        )
    return name


def parse_size(text: str) -> int:
    """Bytes from ``4096``, ``256M``, ``256MiB``, ``1G``...; units are powers of 1024."""
    match = _SIZE_PATTERN.fullmatch(text)
    if not match:
        raise DeviceError("validate", f"invalid size {text!r} (try 256M or 10G)", errno.EINVAL)
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if size <= 0 or size % SECTOR_SIZE:
        raise DeviceError(
            "validate", f"size {size} must be a positive multiple of {SECTOR_SIZE}", errno.EINVAL
        )
    return size


@contextmanager
def as_device_error() -> Iterator[None]:
    """A device description's problems (``ProfileError``) as the devices layer reports them:
    a DeviceError that names the command line's flags."""
    try:
        yield
    except ProfileError as exc:
        raise DeviceError("validate", exc.describe(FLAGS), errno.EINVAL) from exc


@dataclass(frozen=True, kw_only=True)
class DeviceSpec:
    """A request for a device: ``profile`` serves ``backing`` (or the RBD image ``rbd``),
    made ``size`` bytes when it is missing (None: it exists, at its own size), within
    ``limits`` (changed live later)."""

    name: str
    backing: Path | None = None
    rbd: RbdSource | None = None
    profile: BlkProfile = field(default_factory=lambda: BlkProfile(queues=default_num_queues()))
    size: int | None = None
    bounce_size: int = DEFAULT_BOUNCE_SIZE  # bytes of the kernel's bounce buffer
    limits: QosLimits = UNLIMITED

    def __post_init__(self) -> None:
        validate_name(self.name)
        if (self.backing is None) == (self.rbd is None):
            raise DeviceError("validate", "give a backing file or an RBD image", errno.EINVAL)
        if self.size is not None:
            with as_device_error():
                self.profile.check_capacity(self.size)
        bounce = self.bounce_size
        if not MIN_BOUNCE_SIZE <= bounce <= MAX_BOUNCE_SIZE or bounce % 4096:
            raise DeviceError(
                "validate",
                f"--bounce-size {bounce}: use whole 4 KiB pages from "
                f"{MIN_BOUNCE_SIZE >> 20} MiB to {MAX_BOUNCE_SIZE >> 20} MiB",
                errno.EINVAL,
            )

    @property
    def backing_name(self) -> str:
        """What the device's record names as its backing: a file's absolute path, or
        rbd:POOL[/NAMESPACE]/IMAGE."""
        if self.rbd is not None:
            return self.rbd.name
        assert self.backing is not None
        return str(self.backing.absolute())
