"""csi-sanity "ModifyVolume [Controller Server]" (pkg/sanity/controller.go), then ours.

Upstream's six specs check status codes only. Ours check what a modify does to the volume:
its pool record (which the node reads when it stages) holds the merged parameters,
ValidateVolumeCapabilities confirms the new limits and not the old, a refused modify changes
no file, and, in the VM, a staged volume's device gets the limits live. The CreateVolume
specs with a volume attributes class live with the other CreateVolume specs in
test_controller.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi_vduse.csi.proto import pb
from csi_vduse.dataplane import qos
from csi_vduse.dataplane.qos import QosLimits
from tests.csi.conftest import (
    TEST_VOLUME_MUTABLE_PARAMETERS,
    ControllerCap,
    Resources,
    SanityContext,
    expect_error_code,
    make_create_volume_req,
    make_modify_volume_req,
    require_controller,
    unique_string,
    volume_capability,
)
from tests.csi.test_bad_input import tree

Code = grpc.StatusCode
FAKE = {"XXX_FakeKey": "XXX_FakeValue"}  # upstream's unsupported mutable parameter


def record_of(sc: SanityContext, volume_id: str) -> dict[str, Any]:
    """The volume's pool record, as the node will read it when it stages the volume."""
    path = Path(sc.driver.pool_dir) / "volumes" / f"{volume_id}.json"
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def modify(sc: SanityContext, volume_id: str, mutable: dict[str, str]) -> None:
    sc.controller.ControllerModifyVolume(
        pb.ControllerModifyVolumeRequest(volume_id=volume_id, mutable_parameters=mutable)
    )


def confirms(sc: SanityContext, volume_id: str, mutable: dict[str, str]) -> bool:
    """ValidateVolumeCapabilities confirms ``mutable`` for the volume."""
    answer = sc.controller.ValidateVolumeCapabilities(
        pb.ValidateVolumeCapabilitiesRequest(
            volume_id=volume_id,
            volume_capabilities=[volume_capability()],
            mutable_parameters=mutable,
        )
    )
    if answer.HasField("confirmed"):
        assert dict(answer.confirmed.mutable_parameters) == mutable
        return True
    assert answer.message
    return False


def create_with(r: Resources, name: str, mutable: dict[str, str]) -> str:
    request = make_create_volume_req(unique_string(name))
    request.mutable_parameters.update(mutable)
    volume_id: str = r.must_create_volume(request).volume.volume_id
    return volume_id


class TestModifyVolume:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.MODIFY_VOLUME, "ControllerModifyVolume not supported")

    # ModifyVolume [Controller Server] should fail if no volume id is given
    def test_should_fail_if_no_volume_id_is_given(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.controller.ControllerModifyVolume(make_modify_volume_req("")),
            Code.INVALID_ARGUMENT,
        )

    # ModifyVolume [Controller Server] should fail if volume does not exist
    def test_should_fail_if_volume_does_not_exist(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.controller.ControllerModifyVolume(
                make_modify_volume_req("non-existing-volume-id")
            ),
            Code.NOT_FOUND,
        )

    # ModifyVolume [Controller Server] should fail if specified mutable parameters are not
    # supported by the volume
    def test_should_fail_if_specified_mutable_parameters_are_not_supported_by_the_volume(
        self, sc: SanityContext, r: Resources
    ) -> None:
        vol = r.must_create_volume(make_create_volume_req(unique_string("sanity-modify-volume")))
        expect_error_code(lambda: modify(sc, vol.volume.volume_id, FAKE), Code.INVALID_ARGUMENT)

    # ModifyVolume [Controller Server] should modify a volume created without a volume
    # attribute class
    def test_should_modify_a_volume_created_without_a_volume_attribute_class(
        self, sc: SanityContext, r: Resources
    ) -> None:
        vol = r.must_create_volume(make_create_volume_req(unique_string("sanity-modify-volume")))
        response = sc.controller.ControllerModifyVolume(
            make_modify_volume_req(vol.volume.volume_id)
        )
        assert isinstance(response, pb.ControllerModifyVolumeResponse)

    # ModifyVolume [Controller Server] should modify a volume created with a volume
    # attribute class
    def test_should_modify_a_volume_created_with_a_volume_attribute_class(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = create_with(r, "sanity-modify-volume", TEST_VOLUME_MUTABLE_PARAMETERS)
        response = sc.controller.ControllerModifyVolume(make_modify_volume_req(volume_id))
        assert isinstance(response, pb.ControllerModifyVolumeResponse)

    # ModifyVolume [Controller Server] should fail to modify a volume created with a volume
    # attribute class if new mutable parameters are not supported by volume
    def test_should_fail_to_modify_a_volume_created_with_a_volume_attribute_class_if_new_mutable_parameters_are_not_supported_by_volume(  # noqa: E501
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = create_with(r, "sanity-modify-volume", TEST_VOLUME_MUTABLE_PARAMETERS)
        expect_error_code(lambda: modify(sc, volume_id, FAKE), Code.INVALID_ARGUMENT)


class TestModifyVolumeEffects:
    """Not in csi-sanity: what a modify leaves behind, and what a refused one does not."""

    def test_a_modify_is_recorded_and_confirmed_and_the_old_limits_no_longer_are(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = create_with(r, "modify-recorded", {"maxIops": "100"})
        assert record_of(sc, volume_id)["mutable_parameters"] == {"maxIops": "100"}
        assert confirms(sc, volume_id, {"maxIops": "100"})
        modify(sc, volume_id, {"maxIops": "250", "burstSeconds": "4"})
        assert record_of(sc, volume_id)["mutable_parameters"] == {
            "maxIops": "250",
            "burstSeconds": "4",
        }
        assert confirms(sc, volume_id, {"maxIops": "250", "burstSeconds": "4"})
        assert not confirms(sc, volume_id, {"maxIops": "100"})

    def test_keys_left_out_keep_their_value_and_zero_clears_a_limit(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = create_with(
            r, "modify-merge", {"maxIops": "100", "maxReadBytesPerSecond": "1048576"}
        )
        modify(sc, volume_id, {"maxWriteBytesPerSecond": "2097152"})
        modify(sc, volume_id, {"maxIops": "0"})
        assert record_of(sc, volume_id)["mutable_parameters"] == {
            "maxIops": "0",
            "maxReadBytesPerSecond": "1048576",
            "maxWriteBytesPerSecond": "2097152",
        }
        # "0" is no limit: the same limits as leaving the key out.
        assert confirms(
            sc,
            volume_id,
            {"maxReadBytesPerSecond": "1048576", "maxWriteBytesPerSecond": "2097152"},
        )

    def test_a_modify_with_no_parameters_changes_nothing(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = create_with(r, "modify-empty", {"maxIops": "100"})
        before = tree(sc.driver.root)
        modify(sc, volume_id, {})
        assert tree(sc.driver.root) == before

    def test_a_modify_repeated_rewrites_no_record(self, sc: SanityContext, r: Resources) -> None:
        volume_id = create_with(r, "modify-twice", {})
        modify(sc, volume_id, {"maxIops": "300"})
        before = tree(sc.driver.pool_dir)
        modify(sc, volume_id, {"maxIops": "300"})
        assert tree(sc.driver.pool_dir) == before

    @pytest.mark.parametrize(
        "mutable",
        [
            FAKE,
            {"maxIops": "200", **FAKE},
            {"maxIops": "-1"},
            {"maxIops": "10k"},
            {"maxReadBytesPerSecond": ""},
            {"maxWriteBytesPerSecond": "9" * 40},
            {"burstSeconds": "3601"},
        ],
        ids=["unknown", "unknown-beside-good", "negative", "suffix", "empty", "huge", "burst"],
    )
    def test_a_refused_modify_changes_nothing(
        self, sc: SanityContext, r: Resources, mutable: dict[str, str]
    ) -> None:
        volume_id = create_with(r, "modify-refused", {"maxIops": "100"})
        before = tree(sc.driver.root)
        with pytest.raises(grpc.RpcError) as refused:
            modify(sc, volume_id, mutable)
        assert refused.value.code() == Code.INVALID_ARGUMENT
        assert any(key in (refused.value.details() or "") for key in mutable)
        assert tree(sc.driver.root) == before
        assert record_of(sc, volume_id)["mutable_parameters"] == {"maxIops": "100"}

    def test_kubernetes_bookkeeping_keys_are_accepted_and_not_recorded(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = create_with(r, "modify-bookkeeping", {})
        modify(sc, volume_id, {"csi.storage.k8s.io/pvc/name": "data", "maxIops": "7"})
        assert record_of(sc, volume_id)["mutable_parameters"] == {"maxIops": "7"}

    @pytest.mark.vm
    def test_a_staged_volume_s_device_gets_the_new_limits_live(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = create_with(r, "modify-live", {})
        sc.node.NodeStageVolume(
            pb.NodeStageVolumeRequest(
                volume_id=volume_id,
                volume_capability=volume_capability(access_type="block"),
                staging_target_path=str(sc.staging_path),
            )
        )
        modify(sc, volume_id, {"maxIops": "123", "maxReadBytesPerSecond": "4096"})
        page = Path(sc.driver.state_dir) / "devices" / f"{volume_id}.qos"
        assert qos.read(page) == QosLimits(iops=123, read_bps=4096)
        modify(sc, volume_id, {"maxIops": "0"})
        assert qos.read(page) == QosLimits(read_bps=4096)


class TestCreateVolumeWithMutableParameters:
    """Not in csi-sanity: CreateVolume's idempotency takes the mutable parameters in."""

    def test_the_same_name_and_limits_is_the_same_volume(self, r: Resources) -> None:
        request = make_create_volume_req(unique_string("create-vac-twice"))
        request.mutable_parameters.update({"maxIops": "100"})
        first = r.must_create_volume(request).volume.volume_id
        # Written otherwise but meaning the same: "0" is no limit, "1" the default burst.
        request.mutable_parameters.update({"maxReadBytesPerSecond": "0", "burstSeconds": "1"})
        assert r.must_create_volume(request).volume.volume_id == first

    def test_the_same_name_with_other_limits_already_exists(
        self, sc: SanityContext, r: Resources
    ) -> None:
        request = make_create_volume_req(unique_string("create-vac-different"))
        request.mutable_parameters.update({"maxIops": "100"})
        volume_id = r.must_create_volume(request).volume.volume_id
        before = tree(sc.driver.root)
        request.mutable_parameters["maxIops"] = "200"
        expect_error_code(lambda: r.create_volume(request), Code.ALREADY_EXISTS)
        del request.mutable_parameters["maxIops"]
        expect_error_code(lambda: r.create_volume(request), Code.ALREADY_EXISTS)
        assert tree(sc.driver.root) == before
        assert record_of(sc, volume_id)["mutable_parameters"] == {"maxIops": "100"}

    def test_the_volume_context_never_carries_the_limits(self, r: Resources) -> None:
        # The spec has volume_context immutable, so limits that change cannot be in it.
        request = make_create_volume_req(unique_string("create-vac-context"))
        request.mutable_parameters.update({"maxIops": "100"})
        volume = r.must_create_volume(request).volume
        assert not set(volume.volume_context) & {"maxIops"}

    def test_a_volume_without_limits_has_no_field_in_its_record(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = create_with(r, "create-vac-none", {})
        assert "mutable_parameters" not in record_of(sc, volume_id)
