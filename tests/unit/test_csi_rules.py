"""The CSI edge's rules without a server: capacity ranges, paging, parameters, capabilities."""

from __future__ import annotations

import errno

import grpc
import pytest

from csi_vduse.csi import parameters, validate
from csi_vduse.csi.capacity import capacity_for
from csi_vduse.csi.errors import RpcError, status_of
from csi_vduse.csi.paging import page
from csi_vduse.csi.proto import pb
from csi_vduse.devices.errors import DeviceError, RbdImageError
from csi_vduse.mounts.errors import MountError
from csi_vduse.pool.errors import PoolError
from csi_vduse.volumes.errors import VolumeError

MiB = 1 << 20
Mode = pb.VolumeCapability.AccessMode


def code_of(exc: pytest.ExceptionInfo[RpcError]) -> grpc.StatusCode:
    return exc.value.code


@pytest.mark.parametrize(
    ("required", "limit", "expected"),
    [
        (0, 0, 1 << 30),
        (1, 0, MiB),
        (MiB, MiB, MiB),
        (MiB + 1, 0, 2 * MiB),
        (0, 5 * MiB, 5 * MiB),
        (MiB + 1, 3 * MiB + 7, 2 * MiB),
    ],
)
def test_capacity_is_whole_mib_within_the_range(required: int, limit: int, expected: int) -> None:
    assert capacity_for(pb.CapacityRange(required_bytes=required, limit_bytes=limit)) == expected


@pytest.mark.parametrize(
    ("required", "limit", "code"),
    [
        (-1, 0, grpc.StatusCode.INVALID_ARGUMENT),
        (0, -1, grpc.StatusCode.INVALID_ARGUMENT),
        (2 * MiB, MiB, grpc.StatusCode.INVALID_ARGUMENT),
        (MiB + 1, MiB + 2, grpc.StatusCode.OUT_OF_RANGE),
    ],
)
def test_impossible_ranges_are_refused(required: int, limit: int, code: grpc.StatusCode) -> None:
    with pytest.raises(RpcError) as refused:
        capacity_for(pb.CapacityRange(required_bytes=required, limit_bytes=limit))
    assert code_of(refused) == code


def test_a_source_larger_than_the_limit_is_out_of_range() -> None:
    with pytest.raises(RpcError) as refused:
        capacity_for(pb.CapacityRange(limit_bytes=MiB), at_least=2 * MiB)
    assert code_of(refused) == grpc.StatusCode.OUT_OF_RANGE
    assert capacity_for(None, at_least=3 * MiB) == 3 * MiB


def test_paging_walks_everything_once_despite_deletes_and_additions() -> None:
    keys = [(i, f"vol-{i:032x}") for i in range(7)]
    first, token = page(keys, keys=keys, token="", max_entries=3)
    assert first == keys[:3] and token
    # The last entry of the page is deleted and a new one added before the next call.
    keys = [k for k in keys if k != keys[2]] + [(99, f"vol-{99:032x}")]
    second, token = page(keys, keys=keys, token=token, max_entries=3)
    assert second == [(3, f"vol-{3:032x}"), (4, f"vol-{4:032x}"), (5, f"vol-{5:032x}")]
    third, token = page(keys, keys=keys, token=token, max_entries=3)
    assert third == [(6, f"vol-{6:032x}"), (99, f"vol-{99:032x}")] and token == ""
    assert page(keys, keys=keys, token="", max_entries=0) == (keys, "")


@pytest.mark.parametrize("token", ["garbage", "1:vol-xyz", "../../etc", "-1:vol-" + "0" * 32])
def test_tokens_we_did_not_issue_are_aborted(token: str) -> None:
    with pytest.raises(RpcError) as refused:
        page([], keys=[], token=token, max_entries=1)
    assert code_of(refused) == grpc.StatusCode.ABORTED


def test_negative_max_entries_is_invalid() -> None:
    with pytest.raises(RpcError) as refused:
        page([], keys=[], token="", max_entries=-1)
    assert code_of(refused) == grpc.StatusCode.INVALID_ARGUMENT


def test_parameters_are_checked_and_kubernetes_bookkeeping_ignored() -> None:
    assert parameters.parse({}) == parameters.VolumeParameters(
        block_size=512, num_queues=0, packed_rings=False
    )
    parsed = parameters.parse(
        {"blockSize": "4096", "numQueues": "4", "packedRings": "true",
         "csi.storage.k8s.io/pvc/name": "data"}
    )  # fmt: skip
    assert parsed == parameters.VolumeParameters(block_size=4096, num_queues=4, packed_rings=True)
    assert parameters.parse(parsed.context()) == parsed
    for bad in ({"blockSize": "1024"}, {"numQueues": "x"}, {"numQueues": "999"}, {"color": "red"},
                {"packedRings": "yes"}):  # fmt: skip
        with pytest.raises(RpcError) as refused:
            parameters.parse(bad)
        assert code_of(refused) == grpc.StatusCode.INVALID_ARGUMENT


def cap(mode: int, fs: str | None = "") -> pb.VolumeCapability:
    capability = pb.VolumeCapability(access_mode=Mode(mode=mode))  # type: ignore[arg-type]
    if fs is None:
        capability.block.SetInParent()
    else:
        capability.mount.fs_type = fs
    return capability


def test_capabilities_supported_and_not() -> None:
    assert validate.access_of(cap(Mode.SINGLE_NODE_WRITER)).fs_type == "ext4"
    assert validate.access_of(cap(Mode.SINGLE_NODE_READER_ONLY, None)).block
    assert validate.access_of(cap(Mode.SINGLE_NODE_READER_ONLY, "xfs")).readonly_mode
    for bad in (
        cap(Mode.MULTI_NODE_MULTI_WRITER),
        cap(Mode.UNKNOWN),
        cap(Mode.SINGLE_NODE_WRITER, "ntfs"),
        pb.VolumeCapability(access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER)),
    ):
        with pytest.raises(RpcError) as refused:
            validate.access_of(bad)
        assert code_of(refused) == grpc.StatusCode.INVALID_ARGUMENT
        assert validate.unsupported_reason([bad])


@pytest.mark.parametrize("value", ["", "x" * 129, "a\x00b", "a\x1fb"])
def test_ids_out_of_the_spec_limits_are_invalid(value: str) -> None:
    with pytest.raises(RpcError) as refused:
        validate.require_id(value, "volume_id")
    assert code_of(refused) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("path"), ["", "relative/path", "/a\x00b"])
def test_paths_must_be_absolute(path: str) -> None:
    with pytest.raises(RpcError):
        validate.require_path(path, "target_path")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PoolError("x", "y", errno.ENOENT), grpc.StatusCode.NOT_FOUND),
        (PoolError("x", "y", errno.ENOSPC), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (VolumeError("x", "y", errno.EEXIST), grpc.StatusCode.ALREADY_EXISTS),
        (VolumeError("x", "y", errno.ENXIO), grpc.StatusCode.FAILED_PRECONDITION),
        (DeviceError("x", "y", errno.ENODEV), grpc.StatusCode.FAILED_PRECONDITION),
        (DeviceError("x", "y", errno.ENOENT), grpc.StatusCode.INTERNAL),
        (DeviceError("x", "y", errno.EBUSY), grpc.StatusCode.INTERNAL),
        (RbdImageError("x", "y", errno.ENOENT), grpc.StatusCode.NOT_FOUND),
        (RbdImageError("x", "y", errno.EBUSY), grpc.StatusCode.FAILED_PRECONDITION),
        (RbdImageError("x", "y", errno.EACCES), grpc.StatusCode.PERMISSION_DENIED),
        (RbdImageError("x", "y", errno.ETIMEDOUT), grpc.StatusCode.UNAVAILABLE),
        (RbdImageError("x", "y", errno.EIO), grpc.StatusCode.INTERNAL),
        (MountError("x", "y", errno.ENOENT), grpc.StatusCode.INTERNAL),
        (ValueError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_errors_map_to_status_codes_by_layer(error: Exception, code: grpc.StatusCode) -> None:
    assert status_of(error)[0] == code
