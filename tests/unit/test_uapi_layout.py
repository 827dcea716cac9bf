"""The compiled uAPI matches the kernel ABI, and the Python constants match the headers."""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

import pytest

from csi_vduse.dataplane.reference.handler import WRITE_ZEROES_UNMAP
from csi_vduse.vduse import messages
from csi_vduse.vduse.uapi import ffi, lib
from csi_vduse.virtio import blk, spec

VDUSE_BASE = 0x81

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, kind: int, nr: int, size: int) -> int:
    """Linux ``_IOC`` (asm-generic layout: nr 8 bits, type 8, size 14, dir 2)."""
    return direction << 30 | size << 16 | kind << 8 | nr


def _io(kind: int, nr: int) -> int:
    return _ioc(_IOC_NONE, kind, nr, 0)


def _ior(kind: int, nr: int, size: int) -> int:
    return _ioc(_IOC_READ, kind, nr, size)


def _iow(kind: int, nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, kind, nr, size)


def _iowr(kind: int, nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, kind, nr, size)


def _offset(struct_name: str, field: str) -> int:
    offset: int = ffi.offsetof(f"struct {struct_name}", field)
    return offset


def _size(struct_name: str) -> int:
    size: int = ffi.sizeof(f"struct {struct_name}")
    return size


# -- struct layouts -----------------------------------------------------------------------


def test_create_dev_config_is_336_bytes_before_config_space() -> None:
    assert _size("vduse_dev_config") == 336


@pytest.mark.parametrize(
    ("field", "offset"),
    [
        ("name", 0),
        ("vendor_id", 256),
        ("device_id", 260),
        ("features", 264),
        ("vq_num", 272),
        ("vq_align", 276),
        ("config_size", 332),
    ],
)
def test_dev_config_field_sits_at_its_abi_offset(field: str, offset: int) -> None:
    assert _offset("vduse_dev_config", field) == offset


def test_dev_config_name_holds_vduse_name_max_bytes() -> None:
    name_field = dict(ffi.typeof("struct vduse_dev_config").fields)["name"]
    assert ffi.sizeof(name_field.type) == lib.VDUSE_NAME_MAX == 256


def test_dev_request_is_152_bytes() -> None:
    assert _size("vduse_dev_request") == 152


@pytest.mark.parametrize("member", ["vq_state", "s", "iova"])
def test_dev_request_union_members_all_start_at_offset_24(member: str) -> None:
    assert _offset("vduse_dev_request", member) == 24


def test_dev_request_header_is_type_then_request_id() -> None:
    assert _offset("vduse_dev_request", "type") == 0
    assert _offset("vduse_dev_request", "request_id") == 4


def test_dev_response_is_152_bytes_with_vq_state_at_24() -> None:
    assert _size("vduse_dev_response") == 152
    assert _offset("vduse_dev_response", "request_id") == 0
    assert _offset("vduse_dev_response", "result") == 4
    assert _offset("vduse_dev_response", "vq_state") == 24


def test_messages_module_sizes_match_the_compiled_structs() -> None:
    assert messages.REQUEST_SIZE == 152
    assert messages.RESPONSE_SIZE == 152


def test_iotlb_entry_is_32_bytes_with_perm_at_24() -> None:
    assert _size("vduse_iotlb_entry") == 32
    assert _offset("vduse_iotlb_entry", "offset") == 0
    assert _offset("vduse_iotlb_entry", "start") == 8
    assert _offset("vduse_iotlb_entry", "last") == 16
    assert _offset("vduse_iotlb_entry", "perm") == 24


def test_vq_config_is_32_bytes() -> None:
    assert _size("vduse_vq_config") == 32
    assert _offset("vduse_vq_config", "index") == 0
    assert _offset("vduse_vq_config", "max_size") == 4


@pytest.mark.parametrize(
    ("field", "offset"),
    [
        ("index", 0),
        ("num", 4),
        ("desc_addr", 8),
        ("driver_addr", 16),
        ("device_addr", 24),
        ("split", 32),
        ("ready", 40),
    ],
)
def test_vq_info_field_sits_at_its_abi_offset(field: str, offset: int) -> None:
    assert _offset("vduse_vq_info", field) == offset


def test_vq_info_is_48_bytes() -> None:
    assert _size("vduse_vq_info") == 48


def test_vq_eventfd_is_index_then_fd_in_8_bytes() -> None:
    assert _size("vduse_vq_eventfd") == 8
    assert _offset("vduse_vq_eventfd", "index") == 0
    assert _offset("vduse_vq_eventfd", "fd") == 4


def test_config_data_header_is_8_bytes() -> None:
    assert _size("vduse_config_data") == 8


# -- ioctl numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("VDUSE_GET_API_VERSION", _ior(VDUSE_BASE, 0x00, 8)),
        ("VDUSE_SET_API_VERSION", _iow(VDUSE_BASE, 0x01, 8)),
        ("VDUSE_CREATE_DEV", _iow(VDUSE_BASE, 0x02, 336)),
        ("VDUSE_DESTROY_DEV", _iow(VDUSE_BASE, 0x03, 256)),
        ("VDUSE_IOTLB_GET_FD", _iowr(VDUSE_BASE, 0x10, 32)),
        ("VDUSE_DEV_GET_FEATURES", _ior(VDUSE_BASE, 0x11, 8)),
        ("VDUSE_DEV_SET_CONFIG", _iow(VDUSE_BASE, 0x12, 8)),
        ("VDUSE_DEV_INJECT_CONFIG_IRQ", _io(VDUSE_BASE, 0x13)),
        ("VDUSE_VQ_SETUP", _iow(VDUSE_BASE, 0x14, 32)),
        ("VDUSE_VQ_GET_INFO", _iowr(VDUSE_BASE, 0x15, 48)),
        ("VDUSE_VQ_SETUP_KICKFD", _iow(VDUSE_BASE, 0x16, 8)),
        ("VDUSE_VQ_INJECT_IRQ", _iow(VDUSE_BASE, 0x17, 4)),
    ],
)
def test_ioctl_number_matches_the_ioc_formula(name: str, expected: int) -> None:
    assert getattr(lib, name) == expected, f"{name} = {getattr(lib, name):#x}"


def test_create_dev_ioctl_has_its_well_known_value() -> None:
    # Cross-check of the formula helper itself against a number seen in straces.
    assert _iow(VDUSE_BASE, 0x02, 336) == 0x41508102
    assert lib.VDUSE_CREATE_DEV == 0x41508102


def test_vduse_base_and_api_version() -> None:
    assert lib.VDUSE_BASE == VDUSE_BASE
    assert lib.VDUSE_API_VERSION == 0


def test_iotlb_access_permissions() -> None:
    assert (lib.VDUSE_ACCESS_RO, lib.VDUSE_ACCESS_WO, lib.VDUSE_ACCESS_RW) == (1, 2, 3)


def test_request_result_codes() -> None:
    assert lib.VDUSE_REQ_RESULT_OK == 0
    assert lib.VDUSE_REQ_RESULT_FAILED == 1


# -- Python enums against the headers -----------------------------------------------------


def _members(enum: type[IntEnum] | type[IntFlag], names: list[str]) -> list[int]:
    return [int(enum[name]) for name in names]


def test_transport_feature_bits_match_virtio_headers() -> None:
    assert spec.Feature.VERSION_1 == lib.VIRTIO_F_VERSION_1
    assert spec.Feature.ACCESS_PLATFORM == lib.VIRTIO_F_ACCESS_PLATFORM
    assert spec.Feature.INDIRECT_DESC == lib.VIRTIO_RING_F_INDIRECT_DESC
    assert spec.Feature.EVENT_IDX == lib.VIRTIO_RING_F_EVENT_IDX


@pytest.mark.parametrize(
    "name", ["ACKNOWLEDGE", "DRIVER", "DRIVER_OK", "FEATURES_OK", "NEEDS_RESET", "FAILED"]
)
def test_status_bit_matches_virtio_config_header(name: str) -> None:
    assert spec.Status[name] == getattr(lib, f"VIRTIO_CONFIG_S_{name}")


@pytest.mark.parametrize("name", ["NEXT", "WRITE", "INDIRECT"])
def test_descriptor_flag_matches_virtio_ring_header(name: str) -> None:
    assert spec.DescFlag[name] == getattr(lib, f"VRING_DESC_F_{name}")


def test_block_device_id_matches_virtio_ids_header() -> None:
    assert spec.VIRTIO_ID_BLOCK == lib.VIRTIO_ID_BLOCK


@pytest.mark.parametrize(
    "name",
    ["SIZE_MAX", "SEG_MAX", "RO", "BLK_SIZE", "FLUSH", "MQ", "DISCARD", "WRITE_ZEROES", "TOPOLOGY"],
)
def test_blk_feature_bit_matches_virtio_blk_header(name: str) -> None:
    assert blk.BlkFeature[name] == getattr(lib, f"VIRTIO_BLK_F_{name}")


@pytest.mark.parametrize("name", ["IN", "OUT", "FLUSH", "GET_ID", "DISCARD", "WRITE_ZEROES"])
def test_blk_request_type_matches_virtio_blk_header(name: str) -> None:
    assert blk.RequestType[name] == getattr(lib, f"VIRTIO_BLK_T_{name}")


@pytest.mark.parametrize("name", ["OK", "IOERR", "UNSUPP"])
def test_blk_status_matches_virtio_blk_header(name: str) -> None:
    assert blk.BlkStatus[name] == getattr(lib, f"VIRTIO_BLK_S_{name}")


def test_blk_id_length_matches_virtio_blk_header() -> None:
    assert blk.ID_BYTES == lib.VIRTIO_BLK_ID_BYTES


def test_vduse_request_types_have_their_abi_numbers() -> None:
    # enum vduse_req_type is ABI: the numbers themselves, not just the names, must hold.
    assert _members(messages.RequestType, ["GET_VQ_STATE", "SET_STATUS", "UPDATE_IOTLB"]) == [
        0,
        1,
        2,
    ]
    assert messages.RequestType.GET_VQ_STATE == lib.VDUSE_GET_VQ_STATE
    assert messages.RequestType.SET_STATUS == lib.VDUSE_SET_STATUS
    assert messages.RequestType.UPDATE_IOTLB == lib.VDUSE_UPDATE_IOTLB


def test_feature_names_lists_set_bits_by_name_and_unknown_bits_by_number() -> None:
    features = spec.bit(spec.Feature.VERSION_1) | spec.bit(blk.BlkFeature.FLUSH) | spec.bit(3)
    assert spec.feature_names(features, spec.Feature, blk.BlkFeature) == [
        "3",
        "FLUSH",
        "VERSION_1",
    ]


# -- virtio-blk config space --------------------------------------------------------------


def test_blk_config_packs_to_60_bytes_with_fields_at_spec_offsets() -> None:
    config = blk.BlkConfig(
        capacity_sectors=0x0102030405060708, seg_max=126, blk_size=4096, num_queues=3
    )
    raw = config.pack()
    assert len(raw) == 60 == blk.BlkConfig.SIZE
    assert struct.unpack_from("<Q", raw, 0) == (0x0102030405060708,)
    assert struct.unpack_from("<I", raw, 12) == (126,)
    assert struct.unpack_from("<I", raw, 20) == (4096,)
    assert struct.unpack_from("<H", raw, 34) == (3,)
    filled = set(range(0, 8)) | set(range(12, 16)) | set(range(20, 24)) | set(range(34, 36))
    stray = {i: raw[i] for i in range(60) if i not in filled and raw[i] != 0}
    assert stray == {}


@pytest.mark.parametrize("name", sorted(blk.CONFIG_FIELDS))
def test_blk_config_field_offsets_and_sizes_match_virtio_blk_header(name: str) -> None:
    offset, code = blk.CONFIG_FIELDS[name]
    header_name = "capacity" if name == "capacity_sectors" else name
    assert offset == ffi.offsetof("struct virtio_blk_config", header_name)
    field = dict(ffi.typeof("struct virtio_blk_config").fields)[header_name]
    assert struct.calcsize("<" + code) == ffi.sizeof(field.type)


def test_write_zeroes_unmap_flag_matches_virtio_blk_header() -> None:
    assert lib.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP == WRITE_ZEROES_UNMAP


def test_blk_config_capacity_is_little_endian() -> None:
    raw = blk.BlkConfig(capacity_sectors=1, seg_max=0).pack()
    assert raw[:8] == b"\x01" + b"\0" * 7


def test_blk_config_defaults_to_512_byte_blocks_and_one_queue() -> None:
    raw = blk.BlkConfig(capacity_sectors=8, seg_max=1).pack()
    assert struct.unpack_from("<I", raw, 20) == (512,)
    assert struct.unpack_from("<H", raw, 34) == (1,)


def test_blk_config_unpack_round_trips_pack() -> None:
    config = blk.BlkConfig(capacity_sectors=(1 << 40) + 7, seg_max=254, blk_size=4096, num_queues=4)
    assert blk.BlkConfig.unpack(config.pack()) == config


def test_blk_request_header_is_16_bytes() -> None:
    assert blk.REQUEST_HEADER.size == 16
