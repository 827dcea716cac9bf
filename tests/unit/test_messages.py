"""VDUSE control messages: the kernel's request and response wire formats."""

from __future__ import annotations

import struct

import pytest

from csi_vduse.vduse.messages import (
    REQUEST_SIZE,
    RESPONSE_SIZE,
    Request,
    RequestType,
    Response,
)

UNION = 24  # offset of the request/response union


# -- Request ------------------------------------------------------------------------------


def test_get_vq_state_request_round_trips_its_vq_index() -> None:
    decoded = Request.decode(Request(RequestType.GET_VQ_STATE, request_id=7, vq_index=3).encode())
    assert decoded.type == RequestType.GET_VQ_STATE
    assert decoded.request_id == 7
    assert decoded.vq_index == 3


def test_set_status_request_round_trips_its_status() -> None:
    decoded = Request.decode(
        Request(RequestType.SET_STATUS, request_id=0x1234, status=0x8F).encode()
    )
    assert decoded.type == RequestType.SET_STATUS
    assert decoded.request_id == 0x1234
    assert decoded.status == 0x8F


def test_update_iotlb_request_round_trips_its_iova_range() -> None:
    request = Request(
        RequestType.UPDATE_IOTLB,
        request_id=0xFFFFFFFF,
        iova_start=0x1000,
        iova_last=0xFFFF_FFFF_FFFF_FFFF,
    )
    decoded = Request.decode(request.encode())
    assert decoded.type == RequestType.UPDATE_IOTLB
    assert decoded.request_id == 0xFFFFFFFF
    assert (decoded.iova_start, decoded.iova_last) == (0x1000, 0xFFFF_FFFF_FFFF_FFFF)


def test_request_encodes_to_the_kernel_layout() -> None:
    raw = Request(RequestType.UPDATE_IOTLB, request_id=5, iova_start=0x10, iova_last=0x2F).encode()
    assert len(raw) == REQUEST_SIZE == 152
    assert struct.unpack_from("<II", raw, 0) == (RequestType.UPDATE_IOTLB, 5)
    assert struct.unpack_from("<QQ", raw, UNION) == (0x10, 0x2F)
    assert raw[UNION + 16 :] == bytes(len(raw) - UNION - 16)


def test_get_vq_state_request_puts_vq_index_at_union_start() -> None:
    raw = Request(RequestType.GET_VQ_STATE, request_id=1, vq_index=0xABCD).encode()
    assert struct.unpack_from("<I", raw, UNION) == (0xABCD,)


def test_set_status_request_puts_status_byte_at_union_start() -> None:
    raw = Request(RequestType.SET_STATUS, request_id=1, status=0x0F).encode()
    assert raw[UNION] == 0x0F
    assert raw[UNION + 1 :] == bytes(len(raw) - UNION - 1)


def test_request_decodes_kernel_bytes_built_by_hand() -> None:
    raw = bytearray(REQUEST_SIZE)
    struct.pack_into("<II", raw, 0, RequestType.SET_STATUS, 99)
    raw[UNION] = 0x07
    decoded = Request.decode(bytes(raw))
    assert (decoded.type, decoded.request_id, decoded.status) == (RequestType.SET_STATUS, 99, 7)


@pytest.mark.parametrize("length", [0, 1, REQUEST_SIZE - 1, REQUEST_SIZE + 1, 2 * REQUEST_SIZE])
def test_request_decode_rejects_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match="VDUSE request"):
        Request.decode(bytes(length))


def test_request_decode_round_trips_to_an_equal_request() -> None:
    request = Request(RequestType.GET_VQ_STATE, request_id=7, vq_index=3)
    assert Request.decode(request.encode()) == request


# -- Response -----------------------------------------------------------------------------


def test_response_encodes_request_id_result_and_vq_state_at_kernel_offsets() -> None:
    raw = Response(request_id=0xDEADBEEF, ok=True, vq_index=2, avail_index=0x1234).encode()
    assert len(raw) == RESPONSE_SIZE == 152
    assert struct.unpack_from("<I", raw, 0) == (0xDEADBEEF,)
    assert struct.unpack_from("<I", raw, 4) == (0,)
    assert struct.unpack_from("<I", raw, 24) == (2,)
    assert struct.unpack_from("<H", raw, 28) == (0x1234,)


def test_packed_vq_state_splits_each_position_into_wrap_counter_and_index() -> None:
    """struct vduse_vq_state_packed: last_avail_counter, last_avail_idx, last_used_counter,
    last_used_idx, each 16 bits, where the split state's avail_index would be."""
    avail, used = 1 << 15 | 200, 0 << 15 | 190
    raw = Response(request_id=9, vq_index=1, packed=(avail, used)).encode()
    assert struct.unpack_from("<I4H", raw, 24) == (1, 1, 200, 0, 190)
    assert raw[36:] == bytes(RESPONSE_SIZE - 36)


def test_failed_response_carries_result_1() -> None:
    raw = Response(request_id=3, ok=False).encode()
    assert struct.unpack_from("<II", raw, 0) == (3, 1)


def test_response_leaves_reserved_bytes_zero() -> None:
    raw = Response(request_id=1, ok=False, vq_index=0xFFFFFFFF, avail_index=0xFFFF).encode()
    assert raw[8:24] == bytes(16)
    assert raw[30:] == bytes(RESPONSE_SIZE - 30)


@pytest.mark.parametrize(
    "response",
    [
        Response(request_id=0),
        Response(request_id=42, ok=False),
        Response(request_id=0xFFFFFFFF, ok=True, vq_index=7, avail_index=0xFFFF),
    ],
)
def test_response_decode_round_trips_encode(response: Response) -> None:
    assert Response.decode(response.encode()) == response


def test_response_decode_reads_hand_built_kernel_bytes() -> None:
    raw = bytearray(RESPONSE_SIZE)
    struct.pack_into("<II", raw, 0, 17, 1)
    struct.pack_into("<IH", raw, 24, 5, 300)
    assert Response.decode(bytes(raw)) == Response(17, ok=False, vq_index=5, avail_index=300)


@pytest.mark.parametrize("length", [0, 151, 153])
def test_response_decode_rejects_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match="short VDUSE response"):
        Response.decode(b"\0" * length)
