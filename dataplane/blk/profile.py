"""The virtio-blk device this dataplane emulates: its features and config space.

The control plane creates the VDUSE device from this description and the
dataplane accepts the driver's features against it, so the two always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from csi_vduse.virtio.blk import SECTOR_SIZE, BlkConfig, BlkFeature
from csi_vduse.virtio.spec import Feature, bit

DEFAULT_QUEUE_SIZE = 256


@dataclass(frozen=True)
class BlkProfile:
    capacity_bytes: int
    readonly: bool = False
    queues: int = 1
    queue_size: int = DEFAULT_QUEUE_SIZE

    @property
    def features(self) -> int:
        offered = (
            bit(Feature.VERSION_1)
            | bit(Feature.ACCESS_PLATFORM)
            | bit(Feature.EVENT_IDX)
            | bit(Feature.INDIRECT_DESC)
            | bit(BlkFeature.SEG_MAX)
            | bit(BlkFeature.BLK_SIZE)
            | bit(BlkFeature.FLUSH)
        )
        if self.readonly:
            offered |= bit(BlkFeature.RO)
        return offered

    @property
    def required(self) -> int:
        """Features a driver must accept: this device speaks only modern virtio."""
        return bit(Feature.VERSION_1)

    def config(self) -> BlkConfig:
        return BlkConfig(
            capacity_sectors=self.capacity_bytes // SECTOR_SIZE,
            # Room for the header and status descriptors: a chain, direct or indirect,
            # never exceeds the queue size (the ring code refuses longer ones).
            seg_max=self.queue_size - 2,
            blk_size=SECTOR_SIZE,
            num_queues=self.queues,
        )
