"""Sizes: what a CapacityRange asks a new volume to be, and whether one that exists fits it.
Volumes of either kind are whole MiB."""

from __future__ import annotations

from csi_vduse.csi.errors import Code, RpcError, invalid
from csi_vduse.csi.proto import pb
from csi_vduse.pool.store import SIZE_ALIGNMENT

DEFAULT_CAPACITY = 1 << 30


def _round_up(size: int) -> int:
    return -(-size // SIZE_ALIGNMENT) * SIZE_ALIGNMENT


def capacity_for(capacity_range: pb.CapacityRange | None, at_least: int = 0) -> int:
    """The size to provision for a CapacityRange (whole MiB), or OUT_OF_RANGE."""
    required = capacity_range.required_bytes if capacity_range else 0
    limit = capacity_range.limit_bytes if capacity_range else 0
    if required < 0 or limit < 0:
        raise invalid("capacity_range must not be negative")
    if limit and required > limit:
        raise invalid(f"capacity_range required_bytes {required} exceeds limit_bytes {limit}")
    wanted = max(required, at_least) or DEFAULT_CAPACITY
    if limit and not required and not at_least:
        wanted = min(wanted, limit)
    size = _round_up(wanted)
    if limit and size > limit:
        size = limit // SIZE_ALIGNMENT * SIZE_ALIGNMENT
    if size < max(required, at_least) or size <= 0:
        raise RpcError(
            Code.OUT_OF_RANGE,
            f"no size in whole MiB fits required_bytes {required}, limit_bytes {limit}"
            + (f" and the source's {at_least} bytes" if at_least else ""),
        )
    return size


def fits(capacity: int, capacity_range: pb.CapacityRange | None) -> bool:
    if capacity_range is None:
        return True
    required, limit = capacity_range.required_bytes, capacity_range.limit_bytes
    return capacity >= required and (not limit or capacity <= limit)
