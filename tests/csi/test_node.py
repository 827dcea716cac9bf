"""csi-sanity "Node Service" (pkg/sanity/node.go), without NodeExpandVolume (test_expansion.py).

Tests that stage or publish need the real kernel and are marked ``vm``; argument checks
run on the host. csi-sanity has no ControllerPublish step here because we do not
advertise PUBLISH_UNPUBLISH_VOLUME, so none is made.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import grpc
import pytest

from csi_vduse.csi.proto import pb
from tests.csi.conftest import (
    ALL_BACKENDS,
    IDEMPOTENT_COUNT,
    Mode,
    NodeCap,
    PluginService,
    Resources,
    SanityContext,
    expect_error_code,
    make_create_volume_req,
    mount_runs_only,
    node_supports,
    plugin_supports,
    require_node,
    unique_string,
    unique_valid_volume_id,
    volume_capability,
)

BACKENDS = ALL_BACKENDS  # csi-sanity's: against files and against RBD

# node.go passes a made-up device in publish_context to the argument-check tests.
MOCK_PUBLISH_CONTEXT = {"device": "/dev/mock"}

KNOWN_NODE_CAPS = {
    NodeCap.UNKNOWN,
    NodeCap.STAGE_UNSTAGE_VOLUME,
    NodeCap.GET_VOLUME_STATS,
    NodeCap.EXPAND_VOLUME,
    NodeCap.VOLUME_CONDITION,
    NodeCap.SINGLE_NODE_MULTI_WRITER,
    NodeCap.VOLUME_MOUNT_GROUP,
}


# -- the closures of node.go's Describe("Node Service") -------------------------------------


def create_volume_with_capability(
    r: Resources, name: str, cap: pb.VolumeCapability
) -> pb.CreateVolumeResponse:
    req = make_create_volume_req(name)
    del req.volume_capabilities[:]
    req.volume_capabilities.append(cap)
    return r.must_create_volume(req)


def create_volume(r: Resources, name: str) -> pb.CreateVolumeResponse:
    return create_volume_with_capability(r, name, volume_capability())


def node_stage_volume(
    sc: SanityContext, vol: pb.CreateVolumeResponse, cap: pb.VolumeCapability | None = None
) -> None:
    if node_supports(sc, NodeCap.STAGE_UNSTAGE_VOLUME):
        sc.node.NodeStageVolume(
            pb.NodeStageVolumeRequest(
                volume_id=vol.volume.volume_id,
                volume_capability=cap or volume_capability(),
                staging_target_path=str(sc.staging_path),
                volume_context=vol.volume.volume_context,
            )
        )


def node_publish_volume(
    sc: SanityContext, vol: pb.CreateVolumeResponse, cap: pb.VolumeCapability | None = None
) -> None:
    staging = str(sc.staging_path) if node_supports(sc, NodeCap.STAGE_UNSTAGE_VOLUME) else ""
    sc.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=vol.volume.volume_id,
            target_path=sc.target,
            staging_target_path=staging,
            volume_capability=cap or volume_capability(),
            volume_context=vol.volume.volume_context,
        )
    )


def node_id(sc: SanityContext) -> str:
    nid = sc.node.NodeGetInfo(pb.NodeGetInfoRequest())
    assert nid.node_id
    return str(nid.node_id)


def run_controller_test(
    sc: SanityContext, r: Resources, count: int, access_type: str | None = None
) -> pb.CreateVolumeResponse:
    """runControllerTest: create, stage ``count`` times, publish ``count`` times, stats."""
    ni = sc.node.NodeGetInfo(pb.NodeGetInfoRequest())
    assert ni.node_id
    req = make_create_volume_req(unique_string(f"sanity-node-full-{count}"), access_type)
    if ni.HasField("accessible_topology"):
        # Topology requirements are honoured if the driver reports any.
        req.accessibility_requirements.requisite.append(ni.accessible_topology)
    vol = r.must_create_volume(req)
    cap = volume_capability(access_type=access_type)
    stage = node_supports(sc, NodeCap.STAGE_UNSTAGE_VOLUME)
    if stage:
        for _ in range(count):
            sc.node.NodeStageVolume(
                pb.NodeStageVolumeRequest(
                    volume_id=vol.volume.volume_id,
                    volume_capability=cap,
                    staging_target_path=str(sc.staging_path),
                    volume_context=vol.volume.volume_context,
                )
            )
    for _ in range(count):
        sc.node.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=vol.volume.volume_id,
                target_path=sc.target,
                staging_target_path=str(sc.staging_path) if stage else "",
                volume_capability=cap,
                volume_context=vol.volume.volume_context,
            )
        )
    if node_supports(sc, NodeCap.GET_VOLUME_STATS):
        stats = sc.node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=vol.volume.volume_id, volume_path=sc.target)
        )
        assert len(stats.usage) > 0  # Go: GetUsage() is not nil
    return vol


class TestNodeGetCapabilities:
    # Node Service NodeGetCapabilities should return appropriate capabilities
    def test_should_return_appropriate_capabilities(self, sc: SanityContext) -> None:
        caps = sc.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest())
        for cap in caps.capabilities:
            assert cap.HasField("rpc")
            assert cap.rpc.type in KNOWN_NODE_CAPS, f"Unknown capability: {cap.rpc.type}"

    # Not in csi-sanity: pin what issue 4 says we advertise, so gated tests cannot skip.
    def test_advertises_the_issue_4_set(self, sc: SanityContext) -> None:
        caps = sc.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest())
        assert {c.rpc.type for c in caps.capabilities} == {
            NodeCap.STAGE_UNSTAGE_VOLUME,
            NodeCap.GET_VOLUME_STATS,
            NodeCap.EXPAND_VOLUME,
            NodeCap.VOLUME_CONDITION,
            NodeCap.SINGLE_NODE_MULTI_WRITER,
        }


class TestNodeGetInfo:
    # Node Service NodeGetInfo should return appropriate values
    def test_should_return_appropriate_values(self, sc: SanityContext) -> None:
        accessibility = plugin_supports(sc, PluginService.VOLUME_ACCESSIBILITY_CONSTRAINTS)
        ninfo = sc.node.NodeGetInfo(pb.NodeGetInfoRequest())
        assert ninfo.node_id
        assert ninfo.max_volumes_per_node >= 0
        if accessibility:
            assert ninfo.HasField("accessible_topology")


class TestNodePublishVolume:
    # Node Service NodePublishVolume should fail when no volume id is provided
    def test_should_fail_when_no_volume_id_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodePublishVolume(pb.NodePublishVolumeRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodePublishVolume should fail when no target path is provided
    def test_should_fail_when_no_target_path_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodePublishVolume(
                pb.NodePublishVolumeRequest(volume_id=unique_valid_volume_id())
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodePublishVolume should fail when no volume capability is provided
    def test_should_fail_when_no_volume_capability_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodePublishVolume(
                pb.NodePublishVolumeRequest(
                    volume_id=unique_valid_volume_id(), target_path=sc.target
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodePublishVolume with single node multi writer capability should fail
    # when volume with single node single writer access mode is already mounted at a
    # different target path
    @pytest.mark.vm
    def test_with_single_node_multi_writer_capability_should_fail_when_volume_with_single_node_single_writer_access_mode_is_already_mounted_at_a_different_target_path(  # noqa: E501
        self, sc: SanityContext, r: Resources
    ) -> None:
        require_node(
            sc,
            NodeCap.SINGLE_NODE_MULTI_WRITER,
            "Service does not have single node multi writer capability",
        )
        name = unique_string("sanity-node-publish-single-node-single-writer")
        cap = volume_capability(Mode.SINGLE_NODE_SINGLE_WRITER)
        vol = create_volume_with_capability(r, name, cap)
        node_id(sc)
        node_stage_volume(sc, vol, cap)
        node_publish_volume(sc, vol, cap)
        other = str(sc.target_path / "other_target")
        staging = str(sc.staging_path) if node_supports(sc, NodeCap.STAGE_UNSTAGE_VOLUME) else ""
        try:
            expect_error_code(
                lambda: sc.node.NodePublishVolume(
                    pb.NodePublishVolumeRequest(
                        volume_id=vol.volume.volume_id,
                        target_path=other,
                        staging_target_path=staging,
                        volume_capability=cap,
                        volume_context=vol.volume.volume_context,
                    )
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        finally:
            # csi-sanity's Cleanup only knows <target>/target: undo a wrong success here.
            if os.path.lexists(other):
                sc.node.NodeUnpublishVolume(
                    pb.NodeUnpublishVolumeRequest(volume_id=vol.volume.volume_id, target_path=other)
                )


class TestNodeUnpublishVolume:
    # Node Service NodeUnpublishVolume should fail when no volume id is provided
    def test_should_fail_when_no_volume_id_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodeUnpublishVolume should fail when no target path is provided
    def test_should_fail_when_no_target_path_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeUnpublishVolume(
                pb.NodeUnpublishVolumeRequest(volume_id=unique_valid_volume_id())
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodeUnpublishVolume should remove target path
    @pytest.mark.vm
    def test_should_remove_target_path(self, sc: SanityContext, r: Resources) -> None:
        vol = create_volume(r, unique_string("sanity-node-unpublish-volume"))
        node_id(sc)
        node_stage_volume(sc, vol)
        node_publish_volume(sc, vol)
        volpath = Path(sc.target)
        assert volpath.exists(), f"path {volpath} should have been created by the CSI driver"
        sc.node.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=vol.volume.volume_id, target_path=sc.target)
        )
        # The SP MUST delete the file or directory it created at this path.
        assert not volpath.exists(), f"path {volpath} should have been removed by the driver"


class TestNodeStageVolume:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_node(sc, NodeCap.STAGE_UNSTAGE_VOLUME, "NodeStageVolume not supported")

    # Node Service NodeStageVolume should fail when no volume id is provided
    def test_should_fail_when_no_volume_id_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeStageVolume(
                pb.NodeStageVolumeRequest(
                    staging_target_path=str(sc.staging_path),
                    volume_capability=volume_capability(),
                    publish_context=MOCK_PUBLISH_CONTEXT,
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodeStageVolume should fail when no staging target path is provided
    def test_should_fail_when_no_staging_target_path_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeStageVolume(
                pb.NodeStageVolumeRequest(
                    volume_id=unique_valid_volume_id(),
                    volume_capability=volume_capability(),
                    publish_context=MOCK_PUBLISH_CONTEXT,
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodeStageVolume should fail when no volume capability is provided
    def test_should_fail_when_no_volume_capability_is_provided(
        self, sc: SanityContext, r: Resources
    ) -> None:
        vol = r.must_create_volume(
            make_create_volume_req(unique_string("sanity-node-stage-nocaps"))
        )
        expect_error_code(
            lambda: sc.node.NodeStageVolume(
                pb.NodeStageVolumeRequest(
                    volume_id=vol.volume.volume_id,
                    staging_target_path=str(sc.staging_path),
                    publish_context=MOCK_PUBLISH_CONTEXT,
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )


class TestNodeUnstageVolume:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_node(sc, NodeCap.STAGE_UNSTAGE_VOLUME, "NodeUnstageVolume not supported")

    # Node Service NodeUnstageVolume should fail when no volume id is provided
    def test_should_fail_when_no_volume_id_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeUnstageVolume(
                pb.NodeUnstageVolumeRequest(staging_target_path=str(sc.staging_path))
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodeUnstageVolume should fail when no staging target path is provided
    def test_should_fail_when_no_staging_target_path_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeUnstageVolume(
                pb.NodeUnstageVolumeRequest(volume_id=unique_valid_volume_id())
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )


class TestNodeGetVolumeStats:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_node(sc, NodeCap.GET_VOLUME_STATS, "NodeGetVolume not supported")

    # Node Service NodeGetVolumeStats should fail when no volume id is provided
    def test_should_fail_when_no_volume_id_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeGetVolumeStats(
                pb.NodeGetVolumeStatsRequest(volume_path="some/path")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodeGetVolumeStats should fail when no volume path is provided
    def test_should_fail_when_no_volume_path_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeGetVolumeStats(
                pb.NodeGetVolumeStatsRequest(volume_id=unique_valid_volume_id())
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Node Service NodeGetVolumeStats should fail when volume is not found
    def test_should_fail_when_volume_is_not_found(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.node.NodeGetVolumeStats(
                pb.NodeGetVolumeStatsRequest(
                    volume_id=unique_valid_volume_id(), volume_path="some/path"
                )
            ),
            grpc.StatusCode.NOT_FOUND,
        )

    # Node Service NodeGetVolumeStats should fail when volume does not exist on the
    # specified path
    @pytest.mark.vm
    def test_should_fail_when_volume_does_not_exist_on_the_specified_path(
        self, sc: SanityContext, r: Resources
    ) -> None:
        vol = create_volume(r, unique_string("sanity-node-get-volume-stats"))
        node_id(sc)
        node_stage_volume(sc, vol)
        node_publish_volume(sc, vol)
        expect_error_code(
            lambda: sc.node.NodeGetVolumeStats(
                pb.NodeGetVolumeStatsRequest(
                    volume_id=vol.volume.volume_id, volume_path="some/path"
                )
            ),
            grpc.StatusCode.NOT_FOUND,
        )

    # Not in csi-sanity (which never looks at the condition): with VOLUME_CONDITION and
    # GET_VOLUME_STATS advertised, a healthy published mount reports bytes and inodes and
    # a normal condition (CSI spec, NodeGetVolumeStats).
    @pytest.mark.vm
    def test_published_mount_reports_bytes_inodes_and_a_normal_condition(
        self, sc: SanityContext, r: Resources, backend: str
    ) -> None:
        mount_runs_only(backend)
        vol = create_volume(r, unique_string("sanity-node-volume-condition"))
        node_stage_volume(sc, vol)
        node_publish_volume(sc, vol)
        stats = sc.node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=vol.volume.volume_id, volume_path=sc.target)
        )
        units = {u.unit: u for u in stats.usage}
        assert set(units) == {pb.VolumeUsage.BYTES, pb.VolumeUsage.INODES}
        assert 0 < units[pb.VolumeUsage.BYTES].total <= 64 << 20
        assert stats.HasField("volume_condition")
        assert not stats.volume_condition.abnormal


class TestNodeService:
    # Node Service should work
    @pytest.mark.vm
    @pytest.mark.parametrize("access_type", ["mount", "block"])
    def test_should_work(
        self, sc: SanityContext, r: Resources, access_type: str, backend: str
    ) -> None:
        mount_runs_only(backend)  # it names its access types itself
        # csi-sanity runs this once per --csi.testvolumeaccesstype; we run both types.
        run_controller_test(sc, r, 1, access_type)
        if access_type == "block":
            assert stat.S_ISBLK(os.stat(sc.target).st_mode)
        else:
            assert os.path.ismount(sc.target)

    # Node Service should be idempotent
    @pytest.mark.vm
    def test_should_be_idempotent(self, sc: SanityContext, r: Resources) -> None:
        run_controller_test(sc, r, IDEMPOTENT_COUNT)
