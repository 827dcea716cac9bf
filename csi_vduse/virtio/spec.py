"""Generic virtio numbers: device status bits, transport features, split-ring flags."""

from __future__ import annotations

from enum import IntEnum, IntFlag

VIRTIO_ID_BLOCK = 2
VIRTIO_VENDOR_ID = 0x1AF4  # the virtio vendor id QEMU and libvduse also report


class Status(IntFlag):
    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    NEEDS_RESET = 64
    FAILED = 128


class Feature(IntEnum):
    """Bit numbers of the transport-level feature bits."""

    INDIRECT_DESC = 28
    EVENT_IDX = 29
    VERSION_1 = 32
    ACCESS_PLATFORM = 33
    RING_PACKED = 34


class DescFlag(IntFlag):
    NEXT = 1
    WRITE = 2
    INDIRECT = 4


def bit(feature: int) -> int:
    return 1 << int(feature)


def feature_names(features: int, *enums: type[IntEnum]) -> list[str]:
    """Human-readable names of the bits set in ``features`` (unknown bits as numbers)."""
    names = []
    for number in range(64):
        if features >> number & 1:
            known = [e(number).name for e in enums if number in e._value2member_map_]
            names.append(known[0] if known else str(number))
    return names
