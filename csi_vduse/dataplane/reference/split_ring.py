"""The device side of a split virtqueue: take descriptor chains off the available ring,
put them on the used ring.

Layouts (virtio 1.x, little-endian): descriptor table of {addr u64, len u32,
flags u16, next u16}; available ring {flags, idx, ring[num] u16}; used ring
{flags, idx, ring[num] of {id u32, len u32}}.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import KW_ONLY, dataclass, field

from csi_vduse.dataplane.reference.iotlb import Iotlb, IotlbError
from csi_vduse.dataplane.virtio.queues import RingError
from csi_vduse.virtio.spec import DescFlag, Feature, bit

DESC = struct.Struct("<QIHH")
U16 = struct.Struct("<H")
USED_ELEM = struct.Struct("<II")


@dataclass
class Chain:
    """One request: the buffers the device reads, then those it writes."""

    head: int
    _: KW_ONLY
    readable: list[memoryview] = field(default_factory=list)
    writable: list[memoryview] = field(default_factory=list)
    error: str | None = None  # why the chain is malformed, if it is
    status_mapped: bool = False  # the final descriptor is mapped and device-writable

    def release(self) -> None:
        for view in (*self.readable, *self.writable):
            view.release()


@dataclass(kw_only=True)
class RingAddresses:
    num: int
    desc: int
    driver: int
    device: int


class SplitQueue:
    """One enabled split virtqueue, resuming from ``last_avail``."""

    def __init__(
        self, index: int, *, addresses: RingAddresses, iotlb: Iotlb, last_avail: int = 0,
        features: int = 0,
    ) -> None:  # fmt: skip
        if addresses.num == 0 or addresses.num & (addresses.num - 1):
            raise RingError(f"queue {index}: size {addresses.num} is not a power of two")
        self.index = index
        self.addr = addresses
        self.num = addresses.num
        self.iotlb = iotlb
        self.last_avail = last_avail
        self.used_idx = last_avail
        self.event_idx = bool(features & bit(Feature.EVENT_IDX))
        self.indirect = bool(features & bit(Feature.INDIRECT_DESC))
        self._generation = -1
        self._resolve()

    def _resolve(self) -> None:
        """(Re)locate the three ring areas; needed again after an IOTLB invalidation."""
        num = self.num
        try:
            self._desc, self._desc_off = self.iotlb.locate(self.addr.desc, 16 * num, False)
            self._avail, self._avail_off = self.iotlb.locate(self.addr.driver, 6 + 2 * num, False)
            self._used, self._used_off = self.iotlb.locate(self.addr.device, 6 + 8 * num, True)
        except IotlbError as exc:
            raise RingError(f"queue {self.index}: {exc}") from exc
        self._generation = self.iotlb.generation

    def _fresh(self) -> None:
        if self._generation != self.iotlb.generation:
            self._resolve()

    def avail_idx(self) -> int:
        self._fresh()
        (idx,) = U16.unpack_from(self._avail, self._avail_off + 2)
        return int(idx)

    def pending(self) -> int:
        count = (self.avail_idx() - self.last_avail) & 0xFFFF
        if count > self.num:
            raise RingError(f"queue {self.index}: avail idx ran {count} ahead of a {self.num} ring")
        return count

    def pop(self) -> Chain | None:
        """The next available chain, or None when the driver has posted nothing new."""
        if self.pending() == 0:
            if not self.event_idx:
                return None
            # Ask for a kick at the next request (avail_event), then look once more.
            U16.pack_into(self._used, self._used_off + 4 + 8 * self.num, self.last_avail)
            if self.pending() == 0:
                return None
        slot = self._avail_off + 4 + 2 * (self.last_avail % self.num)
        (head,) = U16.unpack_from(self._avail, slot)
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if head >= self.num:
            raise RingError(f"queue {self.index}: head {head} out of range")
        chain = Chain(head)
        try:
            self._walk(chain)
        except (RingError, IotlbError) as exc:
            chain.error = str(exc)
        return chain

    def _walk(self, chain: Chain) -> None:
        self._walk_table(
            chain, table=self._desc, base=self._desc_off, count=self.num, first=chain.head,
            nested=False,
        )  # fmt: skip

    def _walk_table(
        self, chain: Chain, *, table: mmap.mmap, base: int, count: int, first: int, nested: bool
    ) -> None:
        """Collect the chain's buffers; a bad buffer is noted and skipped so the final
        descriptor (the status byte, for virtio-blk) can still be found."""
        index = first
        for _ in range(count):
            addr, length, flags, nxt = DESC.unpack_from(table, base + 16 * index)
            mapped = False
            try:
                if flags & DescFlag.INDIRECT:
                    inner, offset, entries = self._indirect_table(
                        addr=addr, length=length, flags=flags, nested=nested
                    )
                    self._walk_table(
                        chain, table=inner, base=offset, count=entries, first=0, nested=True
                    )
                    return
                if flags & DescFlag.WRITE:
                    chain.writable += self.iotlb.views(addr, length, writable=True)
                elif chain.writable:
                    raise RingError("a device-readable descriptor follows a writable one")
                else:
                    chain.readable += self.iotlb.views(addr, length, writable=False)
                mapped = True
            except (RingError, IotlbError) as exc:
                chain.error = chain.error or f"descriptor {index}: {exc}"
            if not flags & DescFlag.NEXT:
                chain.status_mapped = mapped and bool(flags & DescFlag.WRITE) and length > 0
                return
            if nxt >= count:
                raise RingError(f"descriptor {index} links to {nxt}, beyond its table")
            index = nxt
        raise RingError(f"descriptor chain from {chain.head} loops")

    def _indirect_table(
        self, *, addr: int, length: int, flags: int, nested: bool
    ) -> tuple[mmap.mmap, int, int]:
        """Where an indirect table lies, and its entry count, once it passed every check."""
        if not self.indirect:
            raise RingError("indirect descriptors were not negotiated")
        if nested or flags & DescFlag.NEXT:
            raise RingError("an indirect descriptor inside a table or with NEXT")
        if length == 0 or length % 16 or length // 16 > self.num:
            raise RingError(f"indirect table of {length} bytes")
        memory, offset = self.iotlb.locate(addr, length, writable=False)
        return memory, offset, length // 16

    def push(self, head: int, *, written: int) -> None:
        """Return a chain to the driver; ``written`` is what the device wrote into it."""
        self._fresh()
        slot = self._used_off + 4 + 8 * (self.used_idx % self.num)
        USED_ELEM.pack_into(self._used, slot, head, written)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        # The element is stored before the index that publishes it (x86 keeps store order).
        U16.pack_into(self._used, self._used_off + 2, self.used_idx)
