"""Userspace views of the device's IOVA space, mapped with VDUSE_IOTLB_GET_FD.

Regions are mapped on first touch and cached until the kernel invalidates them
(UPDATE_IOTLB) or the device resets. With the virtio_vdpa driver the data lives
in the kernel's bounce buffer at IOVA [0, bounce_size) and the rings above it.
"""

from __future__ import annotations

import bisect
import logging
import mmap
import os
from dataclasses import dataclass
from typing import Protocol

from csi_vduse.errors import CsiVduseError
from csi_vduse.vduse.node import IotlbEntry

log = logging.getLogger(__name__)


class IotlbSource(Protocol):
    def iotlb_get_fd(self, iova: int, last: int | None = None) -> tuple[int, IotlbEntry]: ...


class IotlbError(Exception):
    """An IOVA range the device may not access as asked."""


@dataclass(kw_only=True)
class Region:
    start: int
    last: int
    memory: mmap.mmap
    writable: bool

    def close(self) -> None:
        try:
            self.memory.close()
        except BufferError:
            # A view still points into it; the mapping goes when the view does.
            log.warning("IOTLB region %#x-%#x still referenced at unmap", self.start, self.last)


class Iotlb:
    """IOVA -> mmap translation with a cache of mapped regions, ordered by start."""

    def __init__(self, source: IotlbSource) -> None:
        self.source = source
        self._starts: list[int] = []
        self._regions: list[Region] = []
        self.generation = 0  # bumped on every invalidation, so holders of ring views re-resolve

    def _find(self, iova: int) -> Region | None:
        i = bisect.bisect_right(self._starts, iova) - 1
        if i >= 0 and self._regions[i].last >= iova:
            return self._regions[i]
        return None

    def _map(self, iova: int) -> Region:
        try:
            fd, entry = self.source.iotlb_get_fd(iova)
        except (OSError, CsiVduseError) as exc:
            raise IotlbError(f"IOVA {iova:#x} is not mapped: {exc}") from exc
        try:
            prot = (mmap.PROT_READ if entry.readable else 0) | (
                mmap.PROT_WRITE if entry.writable else 0
            )
            memory = mmap.mmap(
                fd, entry.size, flags=mmap.MAP_SHARED, prot=prot, offset=entry.offset
            )
        except (OSError, ValueError) as exc:
            raise IotlbError(f"cannot map IOVA {entry.start:#x}-{entry.last:#x}: {exc}") from exc
        finally:
            os.close(fd)
        region = Region(start=entry.start, last=entry.last, memory=memory, writable=entry.writable)
        i = bisect.bisect_right(self._starts, region.start)
        self._starts.insert(i, region.start)
        self._regions.insert(i, region)
        log.debug("mapped IOVA %#x-%#x perm %d", entry.start, entry.last, entry.perm)
        return region

    def region(self, iova: int) -> Region:
        return self._find(iova) or self._map(iova)

    def locate(self, iova: int, length: int, writable: bool) -> tuple[mmap.mmap, int]:
        """The mapping and offset of a range that must lie within one region (ring areas)."""
        region = self.region(iova)
        if iova + length - 1 > region.last:
            raise IotlbError(f"IOVA range {iova:#x}+{length} crosses a region boundary")
        if writable and not region.writable:
            raise IotlbError(f"IOVA {iova:#x} is read-only to the device")
        return region.memory, iova - region.start

    def views(self, iova: int, length: int, writable: bool) -> list[memoryview]:
        """Memoryviews covering [iova, iova+length), split where regions end."""
        views = []
        while length > 0:
            region = self.region(iova)
            if writable and not region.writable:
                raise IotlbError(f"IOVA {iova:#x} is read-only to the device")
            offset = iova - region.start
            chunk = min(length, region.last - iova + 1)
            views.append(memoryview(region.memory)[offset : offset + chunk])
            iova += chunk
            length -= chunk
        return views

    def invalidate(self, start: int, last: int) -> None:
        """Drop every cached region overlapping [start, last]."""
        keep_starts, keep_regions = [], []
        for region in self._regions:
            if region.start <= last and region.last >= start:
                region.close()
            else:
                keep_starts.append(region.start)
                keep_regions.append(region)
        if len(keep_regions) != len(self._regions):
            self.generation += 1
        self._starts, self._regions = keep_starts, keep_regions

    def clear(self) -> None:
        self.invalidate(0, 2**64 - 1)
