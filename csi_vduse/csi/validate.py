"""Argument checks every RPC starts with, in the order the spec lists its fields."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from csi_vduse.csi.errors import RpcError, invalid
from csi_vduse.csi.proto import pb
from csi_vduse.mounts import filesystem

MAX_STRING_BYTES = 128  # the spec's size limit for string fields
_BANNED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

Mode = pb.VolumeCapability.AccessMode.Mode
SINGLE_NODE_MODES = frozenset(
    {
        Mode.SINGLE_NODE_WRITER,
        Mode.SINGLE_NODE_READER_ONLY,
        Mode.SINGLE_NODE_SINGLE_WRITER,
        Mode.SINGLE_NODE_MULTI_WRITER,
    }
)
READ_ONLY_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY})


def require(value: object, field: str) -> None:
    if not value:
        raise invalid(f"{field} is required")


def require_id(value: str, field: str) -> str:
    """An id the caller got from us: present, and within the spec's limits."""
    require(value, field)
    if len(value.encode()) > MAX_STRING_BYTES or _BANNED.search(value):
        raise invalid(f"{field} is not an id this driver issued")
    return value


def require_name(value: str, field: str = "name") -> str:
    require(value, field)
    if len(value.encode()) > MAX_STRING_BYTES:
        raise invalid(f"{field} is longer than {MAX_STRING_BYTES} bytes")
    if _BANNED.search(value):
        raise invalid(f"{field} contains control characters")
    return value


def require_lookup_path(value: str, field: str) -> Path:
    """A path only compared with where a volume is: anything else is NOT_FOUND later."""
    require(value, field)
    return Path(value)


def require_path(value: str, field: str) -> Path:
    require(value, field)
    if "\x00" in value or not value.startswith("/"):
        raise invalid(f"{field} must be an absolute path")
    return Path(value)


@dataclass(frozen=True, kw_only=True)
class Access:
    """What a VolumeCapability asks for, checked and normalised."""

    block: bool
    fs_type: str
    mount_flags: tuple[str, ...]
    mode: int

    @property
    def readonly_mode(self) -> bool:
        return self.mode in READ_ONLY_MODES

    def describe(self) -> str:
        what = "block" if self.block else f"mount {self.fs_type}"
        return f"{what}, {Mode.Name(self.mode)}"


def access_of(capability: pb.VolumeCapability, field: str = "volume_capability") -> Access:
    """Check one capability; unsupported ones are INVALID_ARGUMENT."""
    kind = capability.WhichOneof("access_type")
    if kind is None:
        raise invalid(f"{field} needs an access type (block or mount)")
    if not capability.HasField("access_mode") or capability.access_mode.mode == Mode.UNKNOWN:
        raise invalid(f"{field} needs an access mode")
    mode = capability.access_mode.mode
    if mode not in SINGLE_NODE_MODES:
        raise invalid(
            f"access mode {Mode.Name(mode)} is not supported: volumes are node-local "
            "(use a SINGLE_NODE_* mode)"
        )
    if kind == "block":
        return Access(block=True, fs_type="", mount_flags=(), mode=mode)
    fs_type = capability.mount.fs_type or filesystem.DEFAULT
    if fs_type not in filesystem.SUPPORTED:
        supported = ", ".join(filesystem.SUPPORTED)
        raise invalid(f"filesystem {fs_type!r} is not supported (use one of {supported})")
    return Access(
        block=False, fs_type=fs_type, mount_flags=tuple(capability.mount.mount_flags), mode=mode
    )


def accesses_of(capabilities: list[pb.VolumeCapability]) -> list[Access]:
    require(capabilities, "volume_capabilities")
    return [access_of(c, f"volume_capabilities[{i}]") for i, c in enumerate(capabilities)]


def unsupported_reason(capabilities: list[pb.VolumeCapability]) -> str | None:
    """Why ValidateVolumeCapabilities cannot confirm, or None when it can."""
    try:
        accesses_of(capabilities)
    except RpcError as exc:
        return exc.message
    return None


def confirmed(
    request: pb.ValidateVolumeCapabilitiesRequest,
) -> pb.ValidateVolumeCapabilitiesResponse:
    """ValidateVolumeCapabilities' yes: all the request asked about, confirmed."""
    return pb.ValidateVolumeCapabilitiesResponse(
        confirmed=pb.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
            mutable_parameters=request.mutable_parameters,
        )
    )
