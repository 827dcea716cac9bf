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


# Offsets of struct virtio_blk_config fields (virtio 1.2, 5.2.4; <linux/virtio_blk.h>).
CONFIG_FIELDS = {
    "capacity_sectors": (0, "Q"),
    "size_max": (8, "I"),
    "seg_max": (12, "I"),
    "blk_size": (20, "I"),
    "physical_block_exp": (24, "B"),
    "alignment_offset": (25, "B"),
    "min_io_size": (26, "H"),
    "opt_io_size": (28, "I"),
    "num_queues": (34, "H"),
    "max_discard_sectors": (36, "I"),
    "max_discard_seg": (40, "I"),
    "discard_sector_alignment": (44, "I"),
    "max_write_zeroes_sectors": (48, "I"),
    "max_write_zeroes_seg": (52, "I"),
    "write_zeroes_may_unmap": (56, "B"),
}


@dataclass(frozen=True, kw_only=True)
class BlkConfig:
    """The subset of ``struct virtio_blk_config`` this device fills in.

    Packed to the full 60-byte layout (without secure-erase fields) so every
    offset the driver may read is covered; unused fields stay zero.
    """

    capacity_sectors: int
    seg_max: int
    blk_size: int = SECTOR_SIZE
    num_queues: int = 1
    size_max: int = 0
    physical_block_exp: int = 0
    alignment_offset: int = 0
    min_io_size: int = 0
    opt_io_size: int = 0
    max_discard_sectors: int = 0
    max_discard_seg: int = 0
    discard_sector_alignment: int = 0
    max_write_zeroes_sectors: int = 0
    max_write_zeroes_seg: int = 0
    write_zeroes_may_unmap: int = 0

    SIZE = 60
    CAPACITY_OFFSET = 0

    def pack(self) -> bytes:
        raw = bytearray(self.SIZE)
        for name, (offset, code) in CONFIG_FIELDS.items():
            struct.pack_into("<" + code, raw, offset, getattr(self, name))
        return bytes(raw)

    @classmethod
    def unpack(cls, raw: bytes) -> BlkConfig:
        values = {
            name: struct.unpack_from("<" + code, raw, offset)[0]
            for name, (offset, code) in CONFIG_FIELDS.items()
        }
        return cls(**values)
