"""The vdpa generic netlink messages, checked byte by byte without a kernel."""

from __future__ import annotations

import struct

import pytest

from csi_vduse.vdpa.netlink import (
    VDPA_CMD_DEV_DEL,
    VDPA_CMD_DEV_GET,
    VDPA_CMD_DEV_NEW,
    VdpaDevice,
    device_from_message,
    request,
    vdpamsg,
)

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
GENLMSGHDR = struct.Struct("=BBH")  # cmd, version, reserved
NLATTR = struct.Struct("=HH")  # len, type

# enum vdpa_attr, include/uapi/linux/vdpa.h as of Linux 6.12
ATTR_MGMTDEV_DEV_NAME = 2
ATTR_DEV_NAME = 4
ATTR_DEV_ID = 5
ATTR_DEV_VENDOR_ID = 6
ATTR_DEV_MAX_VQS = 7
ATTR_DEV_MAX_VQ_SIZE = 8


def _parse(raw: bytes) -> tuple[int, int, list[tuple[int, bytes]]]:
    """(cmd, version, [(attr type, payload)]) of one generic netlink message."""
    length, _type, _flags, _seq, _pid = NLMSGHDR.unpack_from(raw, 0)
    assert length == len(raw)
    cmd, version, _reserved = GENLMSGHDR.unpack_from(raw, NLMSGHDR.size)
    attrs = []
    offset = NLMSGHDR.size + GENLMSGHDR.size
    while offset < length:
        attr_len, attr_type = NLATTR.unpack_from(raw, offset)
        assert attr_len >= NLATTR.size
        attrs.append((attr_type, bytes(raw[offset + NLATTR.size : offset + attr_len])))
        offset += (attr_len + 3) & ~3
    assert offset == length
    return cmd, version, attrs


def _nla(attr_type: int, payload: bytes) -> bytes:
    raw = NLATTR.pack(NLATTR.size + len(payload), attr_type) + payload
    return raw + bytes(-len(raw) % 4)


def _message(cmd: int, *attrs: bytes, msg_type: int = 0x1C) -> bytes:
    body = GENLMSGHDR.pack(cmd, 1, 0) + b"".join(attrs)
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, 0, 1, 0) + body


def _encoded(msg: vdpamsg) -> bytes:
    msg.encode()
    return bytes(msg.data)


# -- requests -----------------------------------------------------------------------------


def test_dev_new_request_encodes_cmd_3_version_1_and_name_attributes() -> None:
    raw = _encoded(request(VDPA_CMD_DEV_NEW, dev_name="v0", mgmtdev_dev_name="vduse"))
    cmd, version, attrs = _parse(raw)
    assert (cmd, version) == (3, 1)
    assert attrs == [(ATTR_DEV_NAME, b"v0\0"), (ATTR_MGMTDEV_DEV_NAME, b"vduse\0")]


def test_dev_new_request_pads_attributes_to_4_bytes() -> None:
    raw = _encoded(request(VDPA_CMD_DEV_NEW, dev_name="v0", mgmtdev_dev_name="vduse"))
    # 16 + 4 + (4 + 3, padded to 8) + (4 + 6, padded to 12)
    assert len(raw) == 40


def test_dev_del_request_carries_only_the_device_name() -> None:
    cmd, version, attrs = _parse(_encoded(request(VDPA_CMD_DEV_DEL, dev_name="pvc-1")))
    assert (cmd, version) == (4, 1)
    assert attrs == [(ATTR_DEV_NAME, b"pvc-1\0")]


def test_dev_get_request_has_cmd_5_and_no_attributes() -> None:
    cmd, version, attrs = _parse(_encoded(request(VDPA_CMD_DEV_GET)))
    assert (cmd, version, attrs) == (5, 1, [])


# -- attribute numbering ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("VDPA_ATTR_UNSPEC", 0),
        ("VDPA_ATTR_MGMTDEV_BUS_NAME", 1),
        ("VDPA_ATTR_MGMTDEV_DEV_NAME", 2),
        ("VDPA_ATTR_DEV_NAME", 4),
        ("VDPA_ATTR_DEV_ID", 5),
        ("VDPA_ATTR_DEV_VENDOR_ID", 6),
        ("VDPA_ATTR_DEV_MAX_VQS", 7),
        ("VDPA_ATTR_DEV_MAX_VQ_SIZE", 8),
        ("VDPA_ATTR_DEV_NEGOTIATED_FEATURES", 14),
        ("VDPA_ATTR_DEV_FEATURES", 20),
        ("VDPA_ATTR_DEV_BLK_CFG_CAPACITY", 21),
        ("VDPA_ATTR_DEV_BLK_READ_ONLY", 35),
        ("VDPA_ATTR_DEV_BLK_FLUSH", 36),
    ],
)
def test_attribute_number_matches_linux_6_12_enum(name: str, number: int) -> None:
    names = [entry[0] for entry in vdpamsg.nla_map]
    assert names.index(name) == number


def test_attribute_names_are_unique() -> None:
    names = [entry[0] for entry in vdpamsg.nla_map]
    assert len(names) == len(set(names))


# -- replies ------------------------------------------------------------------------------


def _dev_get_reply() -> bytes:
    return _message(
        VDPA_CMD_DEV_GET,
        _nla(ATTR_DEV_NAME, b"v0\0"),
        _nla(ATTR_MGMTDEV_DEV_NAME, b"vduse\0"),
        _nla(ATTR_DEV_ID, struct.pack("=I", 2)),
        _nla(ATTR_DEV_VENDOR_ID, struct.pack("=I", 0x1AF4)),
        _nla(ATTR_DEV_MAX_VQS, struct.pack("=I", 4)),
        _nla(ATTR_DEV_MAX_VQ_SIZE, struct.pack("=H", 256)),
    )


def test_dev_get_reply_decodes_to_a_vdpa_device() -> None:
    msg = vdpamsg(_dev_get_reply())
    msg.decode()
    assert device_from_message(msg) == VdpaDevice(
        name="v0",
        mgmtdev="vduse",
        device_id=2,
        vendor_id=0x1AF4,
        max_vqs=4,
        max_vq_size=256,
    )


def test_dev_get_reply_exposes_cmd_and_attributes_by_name() -> None:
    msg = vdpamsg(_dev_get_reply())
    msg.decode()
    assert msg["cmd"] == VDPA_CMD_DEV_GET
    assert msg.get_attr("VDPA_ATTR_DEV_MAX_VQ_SIZE") == 256


def test_sparse_dev_get_reply_fills_missing_fields_with_defaults() -> None:
    msg = vdpamsg(_message(VDPA_CMD_DEV_GET, _nla(ATTR_DEV_NAME, b"lonely\0")))
    msg.decode()
    assert device_from_message(msg) == VdpaDevice(
        name="lonely", mgmtdev="", device_id=0, vendor_id=0, max_vqs=0, max_vq_size=0
    )


def test_encoded_request_decodes_back_through_the_same_message_class() -> None:
    raw = _encoded(request(VDPA_CMD_DEV_NEW, dev_name="v9", mgmtdev_dev_name="vduse"))
    msg = vdpamsg(raw)
    msg.decode()
    assert msg.get_attr("VDPA_ATTR_DEV_NAME") == "v9"
    assert msg.get_attr("VDPA_ATTR_MGMTDEV_DEV_NAME") == "vduse"
