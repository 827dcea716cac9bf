"""Online capacity change: the backing grew, so serve and announce the new size.

The guest learns it from the config space (VDUSE_DEV_SET_CONFIG) and the config
interrupt (VDUSE_DEV_INJECT_CONFIG_IRQ); virtio_blk then re-reads the capacity.
"""

from __future__ import annotations

import logging
import struct
from typing import Protocol

from csi_vduse.errors import CsiVduseError
from csi_vduse.virtio.blk import SECTOR_SIZE, BlkConfig

log = logging.getLogger(__name__)


class ConfigChannel(Protocol):
    def set_config(self, offset: int, data: bytes) -> None: ...
    def inject_config_irq(self) -> None: ...


class Backing(Protocol):
    """Where the data is: a file, an RBD image."""

    def current_size(self) -> int: ...


class Served(Protocol):
    """What serves the device's requests, and so owns the capacity they are checked against."""

    @property
    def capacity(self) -> int: ...
    def set_capacity(self, capacity: int) -> None: ...


def grow(backend: Backing, served: Served, node: ConfigChannel) -> int:
    """Serve what the backing holds now, if more than before; returns the capacity."""
    capacity = backend.current_size() // SECTOR_SIZE * SECTOR_SIZE
    if capacity <= served.capacity:
        log.info("backing not grown (%d bytes); capacity stays %d", capacity, served.capacity)
        return served.capacity
    served.set_capacity(capacity)
    try:
        node.set_config(BlkConfig.CAPACITY_OFFSET, struct.pack("<Q", capacity // SECTOR_SIZE))
        node.inject_config_irq()
    except CsiVduseError as exc:
        log.error("capacity is now %d bytes but the guest was not told: %s", capacity, exc)
        return capacity
    log.info("capacity grown to %d bytes", capacity)
    return capacity
