"""What a user asks for: a device name, its backing file, size and access mode."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path

from csi_vduse.devices.errors import DeviceError
from csi_vduse.virtio.blk import SECTOR_SIZE

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


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    backing: Path
    size: int | None = None
    readonly: bool = False

    def __post_init__(self) -> None:
        validate_name(self.name)
