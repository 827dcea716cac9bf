"""Hostile and malformed requests: each gets the status code the spec names, and the driver
changes nothing on disk (no file in the pool, the state directory or outside them)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi_vduse.csi.proto import pb
from tests.csi.conftest import SanityContext, make_create_volume_req, volume_capability

Code = grpc.StatusCode
TRAVERSAL_IDS = [
    "../../../../etc/passwd",
    "/etc/passwd",
    "vol-../../x",
    "vol-" + "0" * 31 + "/",
    ".",
    "..",
]
OVERSIZED = "v" * 4096
CONTROL = "vol-\x00-\x01"


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (but the server's log), with its size and mtime."""
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            if path.name == "driver.log":
                continue
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture
def unchanged(sc: SanityContext) -> Iterator[SanityContext]:
    before = tree(sc.driver.root)
    passwd = Path("/etc/passwd").stat().st_mtime_ns
    yield sc
    assert tree(sc.driver.root) == before
    assert Path("/etc/passwd").stat().st_mtime_ns == passwd


def refused(call: Callable[[], Any], *codes: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() in codes, error.value.details()
    assert error.value.details(), "a refusal must say why"


def stage(sc: SanityContext, volume_id: str, **fields: Any) -> Callable[[], Any]:
    request = pb.NodeStageVolumeRequest(
        volume_id=volume_id,
        staging_target_path=str(sc.staging_path),
        volume_capability=volume_capability(),
    )
    if "volume_capability" in fields:
        request.volume_capability.CopyFrom(fields.pop("volume_capability"))
    for name, value in fields.items():
        setattr(request, name, value)
    return lambda: sc.node.NodeStageVolume(request)


@pytest.mark.parametrize("volume_id", [*TRAVERSAL_IDS, OVERSIZED, CONTROL])
def test_hostile_volume_ids_find_nothing_anywhere(unchanged: SanityContext, volume_id: str) -> None:
    sc = unchanged
    lookup = (Code.NOT_FOUND, Code.INVALID_ARGUMENT)
    refused(stage(sc, volume_id), *lookup)
    refused(
        lambda: sc.node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(sc.staging_path),
                target_path=sc.target,
                volume_capability=volume_capability(),
            )
        ),
        *lookup,
    )
    refused(
        lambda: sc.node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(sc.staging_path))
        ),
        *lookup,
    )
    refused(
        lambda: sc.controller.ValidateVolumeCapabilities(
            pb.ValidateVolumeCapabilitiesRequest(
                volume_id=volume_id, volume_capabilities=[volume_capability()]
            )
        ),
        *lookup,
    )
    refused(
        lambda: sc.controller.ControllerExpandVolume(
            pb.ControllerExpandVolumeRequest(
                volume_id=volume_id, capacity_range=pb.CapacityRange(required_bytes=1 << 20)
            )
        ),
        *lookup,
    )
    refused(
        lambda: sc.controller.CreateSnapshot(
            pb.CreateSnapshotRequest(name="snap", source_volume_id=volume_id)
        ),
        *lookup,
    )
    refused(
        lambda: sc.controller.ControllerGetVolume(
            pb.ControllerGetVolumeRequest(volume_id=volume_id)
        ),
        *lookup,
    )
    refused(
        lambda: sc.controller.ControllerModifyVolume(
            pb.ControllerModifyVolumeRequest(
                volume_id=volume_id, mutable_parameters={"maxIops": "1"}
            )
        ),
        *lookup,
    )
    # Deleting what does not exist is OK by the spec, unless the id itself is malformed.
    try:
        sc.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume_id))
    except grpc.RpcError as error:
        assert error.code() == Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "request_fields",
    [
        {"name": OVERSIZED},
        {"name": CONTROL},
        {"parameters": {"blockSize": "../../etc"}},
        {"parameters": {"unknown": "x"}},
        {"parameters": {"numQueues": "1" * 100}},
        {"capacity_range": pb.CapacityRange(required_bytes=-1)},
        {"capacity_range": pb.CapacityRange(required_bytes=10, limit_bytes=5)},
        {"mutable_parameters": {"XXX_FakeKey": "XXX_FakeValue"}},
        {"mutable_parameters": {"maxIops": "1e9"}},
        {"mutable_parameters": {"burstSeconds": "86400"}},
    ],
    ids=[
        "oversized-name",
        "control-chars",
        "path-param",
        "unknown-param",
        "huge-number",
        "negative-size",
        "inverted-range",
        "unknown-mutable",
        "malformed-mutable",
        "burst-out-of-range",
    ],
)
def test_bad_create_requests_are_invalid(
    unchanged: SanityContext, request_fields: dict[str, Any]
) -> None:
    request = make_create_volume_req("bad-input")
    for name, value in request_fields.items():
        if isinstance(value, str):
            setattr(request, name, value)
        elif isinstance(value, dict):
            getattr(request, name).clear()
            getattr(request, name).update(value)
        else:
            getattr(request, name).CopyFrom(value)
    refused(lambda: unchanged.controller.CreateVolume(request), Code.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    "capability",
    [
        pb.VolumeCapability(),
        pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume()),
        volume_capability(mode=pb.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER),
        pb.VolumeCapability(
            mount=pb.VolumeCapability.MountVolume(fs_type="../../bin/sh"),
            access_mode=pb.VolumeCapability.AccessMode(
                mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
            ),
        ),
    ],
    ids=["empty", "no-access-mode", "multi-node", "fs-type-path"],
)
def test_unsupported_capabilities_are_invalid_everywhere(
    unchanged: SanityContext, capability: pb.VolumeCapability
) -> None:
    sc = unchanged
    request = make_create_volume_req("bad-capability")
    del request.volume_capabilities[:]
    request.volume_capabilities.append(capability)
    refused(lambda: sc.controller.CreateVolume(request), Code.INVALID_ARGUMENT)
    refused(stage(sc, "vol-" + "0" * 32, volume_capability=capability), Code.INVALID_ARGUMENT)


@pytest.mark.parametrize("path", ["", "relative/dir", "/a\x00b"])
def test_bad_staging_paths_are_invalid(unchanged: SanityContext, path: str) -> None:
    refused(stage(unchanged, "vol-" + "0" * 32, staging_target_path=path), Code.INVALID_ARGUMENT)


def test_calls_in_the_wrong_order_are_refused(unchanged: SanityContext) -> None:
    sc = unchanged
    volume = sc.controller.CreateVolume(make_create_volume_req("wrong-order")).volume
    try:
        # Publish before stage: the volume exists but is not staged here.
        refused(
            lambda: sc.node.NodePublishVolume(
                pb.NodePublishVolumeRequest(
                    volume_id=volume.volume_id,
                    staging_target_path=str(sc.staging_path),
                    target_path=sc.target,
                    volume_capability=volume_capability(),
                )
            ),
            Code.FAILED_PRECONDITION,
        )
        assert not Path(sc.target).exists()
        # Stats and expansion of a volume that is nowhere on this node.
        refused(
            lambda: sc.node.NodeGetVolumeStats(
                pb.NodeGetVolumeStatsRequest(volume_id=volume.volume_id, volume_path=sc.target)
            ),
            Code.NOT_FOUND,
        )
        # Unpublish and unstage of what was never done are OK and change nothing.
        sc.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=sc.target)
        )
    finally:
        sc.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id))


def test_a_traversal_id_never_reaches_a_file_outside_the_state_directory(
    unchanged: SanityContext,
) -> None:
    sc = unchanged
    # A record planted where "<state>/volumes/<id>.json" would resolve for a hostile id.
    (sc.driver.state_dir / "volumes").mkdir(parents=True, exist_ok=True)
    decoy = sc.driver.state_dir / "decoy.json"
    decoy.write_text('{"volume_id": "x"}')
    hostile = "../decoy"
    try:
        for call in (
            stage(sc, hostile),
            lambda: sc.node.NodeUnstageVolume(
                pb.NodeUnstageVolumeRequest(
                    volume_id=hostile, staging_target_path=str(sc.staging_path)
                )
            ),
        ):
            refused(call, Code.NOT_FOUND)
        assert decoy.read_text() == '{"volume_id": "x"}'
    finally:
        decoy.unlink()
