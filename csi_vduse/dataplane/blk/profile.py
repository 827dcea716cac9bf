"""The virtio-blk device this dataplane emulates: its features and config space.

The control plane creates the VDUSE device from this description and the
dataplane accepts the driver's features against it, so the two always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from csi_vduse.virtio.blk import SECTOR_SIZE, BlkConfig, BlkFeature
from csi_vduse.virtio.spec import Feature, bit

DEFAULT_QUEUE_SIZE = 256
MAX_QUEUE_SIZE = 1024
MAX_QUEUES = 16
BLOCK_SIZES = (512, 4096)
MAX_ZERO_SECTORS = 1 << 23  # 4 GiB per DISCARD / WRITE_ZEROES range
MAX_ZERO_RANGES = 16  # ranges per request, as both ring implementations accept


@dataclass(frozen=True)
class BlkProfile:
    capacity_bytes: int
    readonly: bool = False
    queues: int = 1
    queue_size: int = DEFAULT_QUEUE_SIZE
    block_size: int = SECTOR_SIZE  # the logical block size the guest sees
    packed: bool = False  # offer packed virtqueues (VIRTIO_F_RING_PACKED)

    def __post_init__(self) -> None:
        if not 1 <= self.queues <= MAX_QUEUES:
            raise ValueError(f"{self.queues} queues: use 1 to {MAX_QUEUES}")
        size = self.queue_size
        if not 2 <= size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise ValueError(f"queue size {size}: use a power of two from 2 to {MAX_QUEUE_SIZE}")
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block size {self.block_size}: use one of {BLOCK_SIZES}")

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

    def config(self) -> BlkConfig:
        blocks = self.block_size // SECTOR_SIZE
        return BlkConfig(
            capacity_sectors=self.capacity_bytes // SECTOR_SIZE,
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
