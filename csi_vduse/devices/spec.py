"""What a user asks for: a device name, its backing file, size and access mode."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from csi_vduse.dataplane.blk.profile import (
    BLOCK_SIZES,
    DEFAULT_QUEUE_SIZE,
    MAX_QUEUE_SIZE,
    MAX_QUEUES,
)
from csi_vduse.devices.errors import DeviceError
from csi_vduse.vduse.control import MAX_BOUNCE_SIZE, MIN_BOUNCE_SIZE
from csi_vduse.virtio.blk import SECTOR_SIZE

DEFAULT_MAX_QUEUES = 4  # more queues than this buy little for one volume, and cost threads
# Room for every request in flight at the depths we benchmark (2 queues x QD8 x 1 MiB) while
# keeping the dataplane's resident memory small; the kernel's default is 64 MiB.
DEFAULT_BOUNCE_SIZE = 16 << 20


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


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    backing: Path
    size: int | None = None
    readonly: bool = False
    num_queues: int | None = None  # None: default_num_queues()
    queue_size: int = DEFAULT_QUEUE_SIZE
    block_size: int = SECTOR_SIZE  # logical block size the guest sees: 512 or 4096
    packed: bool = False  # offer packed virtqueues as well as split ones
    bounce_size: int = DEFAULT_BOUNCE_SIZE  # bytes of the kernel's bounce buffer

    def __post_init__(self) -> None:
        validate_name(self.name)
        problems = []
        if self.num_queues is not None and not 1 <= self.num_queues <= MAX_QUEUES:
            problems.append(f"--num-queues {self.num_queues}: use 1 to {MAX_QUEUES}")
        size = self.queue_size
        if not 2 <= size <= MAX_QUEUE_SIZE or size & (size - 1):
            problems.append(f"--queue-size {size}: use a power of two from 2 to {MAX_QUEUE_SIZE}")
        if self.block_size not in BLOCK_SIZES:
            problems.append(f"--block-size {self.block_size}: use 512 or 4096")
        elif self.size is not None and self.size % self.block_size:
            problems.append(
                f"size {self.size} is not a multiple of the {self.block_size}-byte block"
            )
        bounce = self.bounce_size
        if not MIN_BOUNCE_SIZE <= bounce <= MAX_BOUNCE_SIZE or bounce % 4096:
            problems.append(
                f"--bounce-size {bounce}: use whole 4 KiB pages from "
                f"{MIN_BOUNCE_SIZE >> 20} MiB to {MAX_BOUNCE_SIZE >> 20} MiB"
            )
        if problems:
            raise DeviceError("validate", "; ".join(problems), errno.EINVAL)

    @property
    def queues(self) -> int:
        return self.num_queues if self.num_queues is not None else default_num_queues()
