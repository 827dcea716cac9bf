"""The control messages read from and written to ``/dev/vduse/$NAME``."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from enum import IntEnum

from csi_vduse.vduse.uapi import ffi, lib

REQUEST_SIZE: int = ffi.sizeof("struct vduse_dev_request")
RESPONSE_SIZE: int = ffi.sizeof("struct vduse_dev_response")


class RequestType(IntEnum):
    GET_VQ_STATE = lib.VDUSE_GET_VQ_STATE
    SET_STATUS = lib.VDUSE_SET_STATUS
    UPDATE_IOTLB = lib.VDUSE_UPDATE_IOTLB


@dataclass(frozen=True)
class Request:
    """One kernel request; the union member that ``type`` selects is decoded."""

    type: int
    _: KW_ONLY
    request_id: int
    vq_index: int = 0
    status: int = 0
    iova_start: int = 0
    iova_last: int = 0

    @classmethod
    def decode(cls, raw: bytes) -> Request:
        if len(raw) != REQUEST_SIZE:
            raise ValueError(f"short VDUSE request: {len(raw)} of {REQUEST_SIZE} bytes")
        req = ffi.cast("struct vduse_dev_request *", ffi.from_buffer(raw))
        if req.type == RequestType.GET_VQ_STATE:
            return cls(req.type, request_id=req.request_id, vq_index=req.vq_state.index)
        if req.type == RequestType.SET_STATUS:
            return cls(req.type, request_id=req.request_id, status=req.s.status)
        if req.type == RequestType.UPDATE_IOTLB:
            return cls(
                req.type,
                request_id=req.request_id,
                iova_start=req.iova.start,
                iova_last=req.iova.last,
            )
        return cls(req.type, request_id=req.request_id)

    def encode(self) -> bytes:
        """The kernel's wire form; used by tests that stand in for the kernel."""
        req = ffi.new("struct vduse_dev_request *")
        req.type = self.type
        req.request_id = self.request_id
        if self.type == RequestType.GET_VQ_STATE:
            req.vq_state.index = self.vq_index
        elif self.type == RequestType.SET_STATUS:
            req.s.status = self.status
        elif self.type == RequestType.UPDATE_IOTLB:
            req.iova.start = self.iova_start
            req.iova.last = self.iova_last
        return bytes(ffi.buffer(req))


@dataclass(frozen=True)
class Response:
    request_id: int
    _: KW_ONLY
    ok: bool = True
    vq_index: int = 0
    avail_index: int = 0  # split rings: the next avail entry the device reads
    # Packed rings: where the device reads and writes next, as position | wrap counter << 15
    # (the kernel's vduse_vq_state_packed splits each into counter and index).
    packed: tuple[int, int] | None = None

    def encode(self) -> bytes:
        resp = ffi.new("struct vduse_dev_response *")
        resp.request_id = self.request_id
        resp.result = lib.VDUSE_REQ_RESULT_OK if self.ok else lib.VDUSE_REQ_RESULT_FAILED
        resp.vq_state.index = self.vq_index
        if self.packed is None:
            resp.vq_state.split.avail_index = self.avail_index
        else:
            avail, used = self.packed
            resp.vq_state.packed.last_avail_counter = avail >> 15
            resp.vq_state.packed.last_avail_idx = avail & 0x7FFF
            resp.vq_state.packed.last_used_counter = used >> 15
            resp.vq_state.packed.last_used_idx = used & 0x7FFF
        return bytes(ffi.buffer(resp))

    @classmethod
    def decode(cls, raw: bytes) -> Response:
        if len(raw) != RESPONSE_SIZE:
            raise ValueError(f"short VDUSE response: {len(raw)} of {RESPONSE_SIZE} bytes")
        resp = ffi.cast("struct vduse_dev_response *", ffi.from_buffer(raw))
        return cls(
            request_id=resp.request_id,
            ok=resp.result == lib.VDUSE_REQ_RESULT_OK,
            vq_index=resp.vq_state.index,
            avail_index=resp.vq_state.split.avail_index,
        )
