"""virtio-blk: feature bits, request types and status codes, and the config space layout."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

SECTOR_SIZE = 512
ID_BYTES = 20
REQUEST_HEADER = struct.Struct("<IIQ")  # type, ioprio, sector


class BlkFeature(IntEnum):
    SIZE_MAX = 1
    SEG_MAX = 2
    GEOMETRY = 4
    RO = 5
    BLK_SIZE = 6
    FLUSH = 9
    TOPOLOGY = 10
    CONFIG_WCE = 11
    MQ = 12
    DISCARD = 13
    WRITE_ZEROES = 14


class RequestType(IntEnum):
    IN = 0
    OUT = 1
    FLUSH = 4
    GET_ID = 8
    DISCARD = 11
    WRITE_ZEROES = 13


class BlkStatus(IntEnum):
    OK = 0
    IOERR = 1
    UNSUPP = 2


@dataclass(frozen=True)
class BlkConfig:
    """The subset of ``struct virtio_blk_config`` this device fills in.

    Packed to the full 60-byte layout (without secure-erase fields) so every
    offset the driver may read is covered; unused fields stay zero.
    """

    capacity_sectors: int
    seg_max: int
    blk_size: int = SECTOR_SIZE
    num_queues: int = 1

    SIZE = 60

    def pack(self) -> bytes:
        raw = bytearray(self.SIZE)
        struct.pack_into("<Q", raw, 0, self.capacity_sectors)
        struct.pack_into("<I", raw, 12, self.seg_max)
        struct.pack_into("<I", raw, 20, self.blk_size)
        struct.pack_into("<H", raw, 34, self.num_queues)
        return bytes(raw)

    @classmethod
    def unpack(cls, raw: bytes) -> BlkConfig:
        (capacity,) = struct.unpack_from("<Q", raw, 0)
        (seg_max,) = struct.unpack_from("<I", raw, 12)
        (blk_size,) = struct.unpack_from("<I", raw, 20)
        (num_queues,) = struct.unpack_from("<H", raw, 34)
        return cls(capacity, seg_max, blk_size, num_queues)
