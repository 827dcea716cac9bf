"""The virtio-blk device both processes agree on: its shape, features and config space.

One ``BlkProfile`` describes a device from the request that asks for it to the dataplane
that serves it: the control plane checks a request by building one, creates the VDUSE
device from it and records it; the dataplane gets it in its arguments
(``interface.DataplaneArgs``) and accepts the driver's features against it. The capacity
is not part of it: that is the backing's size, which grows while the device runs.

Every rule a device's shape must follow is checked here and nowhere else. A broken one
raises ``ProfileError``, which says which fields are wrong, so that each layer reports it
as its own error in its own words (a command-line flag, a StorageClass parameter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from csi_vduse.virtio.blk import SECTOR_SIZE, BlkConfig, BlkFeature
from csi_vduse.virtio.spec import Feature, bit

DEFAULT_QUEUE_SIZE = 256
MAX_QUEUE_SIZE = 1024
MAX_QUEUES = 16
BLOCK_SIZES = (512, 4096)
MAX_ZERO_SECTORS = 1 << 23  # 4 GiB per DISCARD / WRITE_ZEROES range
MAX_ZERO_RANGES = 16  # ranges per request, as both ring implementations accept


class ProfileError(ValueError):
    """Values no device can have: ``problems`` maps each wrong field (``queues``,
    ``queue_size``, ``block_size``, ``capacity``) to ``"VALUE: the rule"``."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__(self.describe())

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        """The problems, each field called by its name in ``names`` (by default its own)."""
        names = names or {}
        return "; ".join(
            f"{names.get(field, field.replace('_', ' '))} {problem}"
            for field, problem in self.problems.items()
        )


@dataclass(frozen=True, kw_only=True)
class BlkProfile:
    """A virtio-blk device's shape, fixed for its life; valid once constructed."""

    readonly: bool = False
    queues: int = 1
    queue_size: int = DEFAULT_QUEUE_SIZE  # descriptors per virtqueue
    block_size: int = SECTOR_SIZE  # the logical block size the guest sees
    packed: bool = False  # offer packed virtqueues (VIRTIO_F_RING_PACKED) besides split ones

    def __post_init__(self) -> None:
        problems = {}
        if not 1 <= self.queues <= MAX_QUEUES:
            problems["queues"] = f"{self.queues}: use 1 to {MAX_QUEUES}"
        size = self.queue_size
        if not 2 <= size <= MAX_QUEUE_SIZE or size & (size - 1):
            problems["queue_size"] = f"{size}: use a power of two from 2 to {MAX_QUEUE_SIZE}"
        if self.block_size not in BLOCK_SIZES:
            sizes = " or ".join(map(str, BLOCK_SIZES))
            problems["block_size"] = f"{self.block_size}: use {sizes}"
        if problems:
            raise ProfileError(problems)

    def check_capacity(self, capacity_bytes: int) -> None:
        """Refuse a capacity of partial blocks: the guest addresses the device in blocks."""
        if capacity_bytes % self.block_size:
            problem = f"{capacity_bytes}: not a multiple of the {self.block_size}-byte block"
            raise ProfileError({"capacity": problem})

    @property
    def features(self) -> int:
        offered = (
            bit(Feature.VERSION_1)
            | bit(Feature.ACCESS_PLATFORM)
            | bit(Feature.EVENT_IDX)
            | bit(Feature.INDIRECT_DESC)
            | bit(BlkFeature.SEG_MAX)
            | bit(BlkFeature.BLK_SIZE)
            | bit(BlkFeature.TOPOLOGY)
            | bit(BlkFeature.MQ)
        )
        if self.packed:
            offered |= bit(Feature.RING_PACKED)
        if self.readonly:
            offered |= bit(BlkFeature.RO)
        else:
            # A volatile cache to flush, and space to give back, exist only for writers.
            offered |= bit(BlkFeature.FLUSH) | bit(BlkFeature.DISCARD)
            offered |= bit(BlkFeature.WRITE_ZEROES)
        return offered

    @property
    def required(self) -> int:
        """Features a driver must accept: this device speaks only modern virtio."""
        return bit(Feature.VERSION_1)

    def config(self, capacity_bytes: int) -> BlkConfig:
        """The config space of this device holding ``capacity_bytes``."""
        blocks = self.block_size // SECTOR_SIZE
        return BlkConfig(
            capacity_sectors=capacity_bytes // SECTOR_SIZE,
            # Room for the header and status descriptors: a chain, direct or indirect,
            # never exceeds the queue size (the ring code refuses longer ones). No
            # SIZE_MAX: the ring code takes any segment length the IOTLB maps.
            seg_max=self.queue_size - 2,
            blk_size=self.block_size,
            num_queues=self.queues,
            min_io_size=1,
            max_discard_sectors=MAX_ZERO_SECTORS,
            max_discard_seg=MAX_ZERO_RANGES,
            discard_sector_alignment=blocks,
            max_write_zeroes_sectors=MAX_ZERO_SECTORS,
            max_write_zeroes_seg=MAX_ZERO_RANGES,
            write_zeroes_may_unmap=1,
        )
