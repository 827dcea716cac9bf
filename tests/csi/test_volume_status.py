"""ControllerGetVolume and the controller's volume condition (GET_VOLUME, VOLUME_CONDITION).

csi-sanity has no ControllerGetVolume specs; these are ours, from the spec: the volume as
CreateVolume returned it, a condition whenever VOLUME_CONDITION is advertised (in
ListVolumes entries too), NOT_FOUND for a volume that does not exist, and no
published_node_ids without LIST_VOLUMES_PUBLISHED_NODES. The condition is the pool's view:
the backing file present, readable and whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from csi_vduse.csi.proto import pb
from tests.csi.conftest import (
    TEST_VOLUME_SIZE,
    ControllerCap,
    Resources,
    SanityContext,
    controller_supports,
    expect_error_code,
    make_create_volume_req,
    require_controller,
    unique_string,
    unique_valid_volume_id,
)

Code = grpc.StatusCode


def get_volume(sc: SanityContext, volume_id: str) -> pb.ControllerGetVolumeResponse:
    answer: pb.ControllerGetVolumeResponse = sc.controller.ControllerGetVolume(
        pb.ControllerGetVolumeRequest(volume_id=volume_id)
    )
    return answer


def listed(sc: SanityContext, volume_id: str) -> pb.ListVolumesResponse.Entry:
    entries = sc.controller.ListVolumes(pb.ListVolumesRequest()).entries
    [entry] = [e for e in entries if e.volume.volume_id == volume_id]
    return entry  # type: ignore[no-any-return]


def backing(sc: SanityContext, volume_id: str) -> Path:
    return Path(sc.driver.pool_dir) / "volumes" / f"{volume_id}.img"


class TestControllerGetVolume:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.GET_VOLUME, "ControllerGetVolume not supported")

    def test_no_volume_id_is_invalid(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.controller.ControllerGetVolume(pb.ControllerGetVolumeRequest()),
            Code.INVALID_ARGUMENT,
        )

    @pytest.mark.parametrize(
        "volume_id", ["non-existing-volume-id", "vol-" + "0" * 32, unique_valid_volume_id()]
    )
    def test_a_volume_that_does_not_exist_is_not_found(
        self, sc: SanityContext, volume_id: str
    ) -> None:
        expect_error_code(lambda: get_volume(sc, volume_id), Code.NOT_FOUND)

    def test_a_deleted_volume_is_not_found(self, sc: SanityContext, r: Resources) -> None:
        volume_id = r.must_create_volume(
            make_create_volume_req(unique_string("get-volume-deleted"))
        ).volume.volume_id
        r.delete_volume(pb.DeleteVolumeRequest(volume_id=volume_id))
        expect_error_code(lambda: get_volume(sc, volume_id), Code.NOT_FOUND)

    def test_returns_the_volume_as_created_with_a_normal_condition(
        self, sc: SanityContext, r: Resources
    ) -> None:
        request = make_create_volume_req(unique_string("get-volume"))
        request.mutable_parameters.update({"maxIops": "100"})
        created = r.must_create_volume(request).volume
        answer = get_volume(sc, created.volume_id)
        assert answer.volume == created
        assert answer.volume.capacity_bytes == TEST_VOLUME_SIZE
        assert answer.HasField("status")
        assert list(answer.status.published_node_ids) == []
        assert controller_supports(sc, ControllerCap.VOLUME_CONDITION)
        assert answer.status.HasField("volume_condition")
        assert not answer.status.volume_condition.abnormal
        assert answer.status.volume_condition.message
        assert listed(sc, created.volume_id).volume == created

    def test_a_clone_reports_its_source(self, sc: SanityContext, r: Resources) -> None:
        source = r.must_create_volume(
            make_create_volume_req(unique_string("get-volume-source"))
        ).volume
        request = make_create_volume_req(unique_string("get-volume-clone"))
        request.volume_content_source.volume.volume_id = source.volume_id
        clone = r.must_create_volume(request).volume
        answer = get_volume(sc, clone.volume_id)
        assert answer.volume.content_source.volume.volume_id == source.volume_id


class TestVolumeCondition:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.VOLUME_CONDITION, "VOLUME_CONDITION not supported")

    def test_every_listed_volume_carries_a_condition(self, sc: SanityContext, r: Resources) -> None:
        for name in ("condition-a", "condition-b"):
            r.must_create_volume(make_create_volume_req(unique_string(name)))
        entries = sc.controller.ListVolumes(pb.ListVolumesRequest()).entries
        assert len(entries) == 2
        for entry in entries:
            assert entry.status.HasField("volume_condition")
            assert not entry.status.volume_condition.abnormal
            assert list(entry.status.published_node_ids) == []

    def test_a_missing_backing_file_is_abnormal_and_says_so(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = r.must_create_volume(
            make_create_volume_req(unique_string("condition-missing"))
        ).volume.volume_id
        backing(sc, volume_id).unlink()
        for condition in (
            get_volume(sc, volume_id).status.volume_condition,
            listed(sc, volume_id).status.volume_condition,
        ):
            assert condition.abnormal
            assert "missing" in condition.message and volume_id in condition.message

    def test_a_backing_file_shorter_than_the_volume_is_abnormal(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = r.must_create_volume(
            make_create_volume_req(unique_string("condition-short"))
        ).volume.volume_id
        os.truncate(backing(sc, volume_id), TEST_VOLUME_SIZE // 2)
        condition = get_volume(sc, volume_id).status.volume_condition
        assert condition.abnormal and str(TEST_VOLUME_SIZE) in condition.message

    def test_a_backing_file_that_is_no_file_is_abnormal(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volume_id = r.must_create_volume(
            make_create_volume_req(unique_string("condition-not-a-file"))
        ).volume.volume_id
        path = backing(sc, volume_id)
        path.unlink()
        path.mkdir()
        try:
            condition = get_volume(sc, volume_id).status.volume_condition
            assert condition.abnormal and "not a regular file" in condition.message
        finally:
            path.rmdir()
