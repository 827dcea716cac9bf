"""csi-sanity "Controller Service [Controller Server]" (pkg/sanity/controller.go).

Each class is one ``Describe``, each test one ``It``; the comment above a test is its full
csi-sanity name. The snapshot and expansion Describes live in test_snapshots.py and
test_expansion.py. All of this runs on the host: no call here needs the kernel.
"""

from __future__ import annotations

import grpc
import pytest

from csi_vduse.csi.proto import pb
from tests.csi.conftest import (
    ALL_BACKENDS,
    INVALID_VOLUME_ID,
    MAX_NAME_LENGTH,
    TEST_VOLUME_MUTABLE_PARAMETERS,
    TEST_VOLUME_PARAMETERS,
    TEST_VOLUME_SIZE,
    ControllerCap,
    Resources,
    SanityContext,
    expect_error_code,
    make_create_snapshot_req,
    make_create_volume_req,
    require_controller,
    unique_string,
    unique_string_with_length,
    unique_valid_volume_id,
    volume_capability,
)

BACKENDS = ALL_BACKENDS  # csi-sanity's: against files and against RBD

KNOWN_CONTROLLER_CAPS = {
    ControllerCap.CREATE_DELETE_VOLUME,
    ControllerCap.PUBLISH_UNPUBLISH_VOLUME,
    ControllerCap.LIST_VOLUMES,
    ControllerCap.GET_CAPACITY,
    ControllerCap.CREATE_DELETE_SNAPSHOT,
    ControllerCap.LIST_SNAPSHOTS,
    ControllerCap.PUBLISH_READONLY,
    ControllerCap.CLONE_VOLUME,
    ControllerCap.EXPAND_VOLUME,
    ControllerCap.MODIFY_VOLUME,
    ControllerCap.LIST_VOLUMES_PUBLISHED_NODES,
    ControllerCap.GET_VOLUME,
    ControllerCap.VOLUME_CONDITION,
    ControllerCap.SINGLE_NODE_MULTI_WRITER,
}


def sized_request(name: str, required: int, limit: int = 0) -> pb.CreateVolumeRequest:
    return pb.CreateVolumeRequest(
        name=name,
        volume_capabilities=[volume_capability()],
        capacity_range=pb.CapacityRange(required_bytes=required, limit_bytes=limit),
        parameters=TEST_VOLUME_PARAMETERS,
    )


def list_volumes(sc: SanityContext, **fields: object) -> pb.ListVolumesResponse:
    vols: pb.ListVolumesResponse = sc.controller.ListVolumes(pb.ListVolumesRequest(**fields))  # type: ignore[arg-type]
    return vols


class TestControllerGetCapabilities:
    # Controller Service [Controller Server] ControllerGetCapabilities should return
    # appropriate capabilities
    def test_should_return_appropriate_capabilities(self, sc: SanityContext) -> None:
        caps = sc.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
        for cap in caps.capabilities:
            assert cap.HasField("rpc")
            assert cap.rpc.type in KNOWN_CONTROLLER_CAPS, f"Unknown capability: {cap.rpc.type}"

    # Not in csi-sanity: pin what issues 4 and 14 say we advertise, so gated tests cannot
    # skip. GET_SNAPSHOT is served but not advertised: csi-sanity v5.4.0 fails it as unknown.
    def test_advertises_the_issue_4_and_14_set(self, sc: SanityContext, backend: str) -> None:
        caps = sc.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
        expected = {
            ControllerCap.CREATE_DELETE_VOLUME,
            ControllerCap.LIST_VOLUMES,
            ControllerCap.GET_CAPACITY,
            ControllerCap.CREATE_DELETE_SNAPSHOT,
            ControllerCap.LIST_SNAPSHOTS,
            ControllerCap.CLONE_VOLUME,
            ControllerCap.EXPAND_VOLUME,
            ControllerCap.GET_VOLUME,
            ControllerCap.VOLUME_CONDITION,
            ControllerCap.SINGLE_NODE_MULTI_WRITER,
        }
        if backend == "file":  # an RBD image has no parameter ModifyVolume could change
            expected.add(ControllerCap.MODIFY_VOLUME)
        assert {c.rpc.type for c in caps.capabilities} == expected


class TestGetCapacity:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.GET_CAPACITY, "GetCapacity not supported")

    # Controller Service [Controller Server] GetCapacity should return capacity
    # (no optional values added)
    def test_should_return_capacity_no_optional_values_added(self, sc: SanityContext) -> None:
        sc.controller.GetCapacity(pb.GetCapacityRequest())


class TestListVolumes:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.LIST_VOLUMES, "ListVolumes not supported")

    # Controller Service [Controller Server] ListVolumes should return appropriate values
    # (no optional values added)
    def test_should_return_appropriate_values_no_optional_values_added(
        self, sc: SanityContext
    ) -> None:
        for entry in list_volumes(sc).entries:
            assert entry.volume.volume_id

    # Controller Service [Controller Server] ListVolumes should fail when an invalid
    # starting_token is passed
    def test_should_fail_when_an_invalid_starting_token_is_passed(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: list_volumes(sc, starting_token="invalid-token"), grpc.StatusCode.ABORTED
        )

    # Controller Service [Controller Server] ListVolumes check the presence of new volumes
    # and absence of deleted ones in the volume list
    def test_check_the_presence_of_new_volumes_and_absence_of_deleted_ones_in_the_volume_list(
        self, sc: SanityContext, r: Resources
    ) -> None:
        total = len(list_volumes(sc).entries)
        vol = r.must_create_volume(
            pb.CreateVolumeRequest(
                name="sanity",
                volume_capabilities=[volume_capability()],
                parameters=TEST_VOLUME_PARAMETERS,
            )
        )
        assert len(list_volumes(sc).entries) == total + 1
        r.delete_volume(pb.DeleteVolumeRequest(volume_id=vol.volume.volume_id))
        assert len(list_volumes(sc).entries) == total

    # Controller Service [Controller Server] ListVolumes pagination should detect volumes
    # added between pages and accept tokens when the last volume from a page is deleted
    # (an XIt upstream, disabled as fragile for index-based tokens; ported because issue 4
    # asks for paging, with the upstream assertions unchanged.)
    def test_pagination_should_detect_volumes_added_between_pages_and_accept_tokens_when_the_last_volume_from_a_page_is_deleted(  # noqa: E501
        self, sc: SanityContext, r: Resources
    ) -> None:
        min_vol_count, max_entries = 3, 2
        existing = {e.volume.volume_id: True for e in list_volumes(sc).entries}
        initial = len(existing)
        if min_vol_count <= initial:
            min_vol_count = initial
        else:
            for i in range(initial, min_vol_count):
                vol = r.create_volume(
                    pb.CreateVolumeRequest(
                        name=f"sanity{i}",
                        volume_capabilities=[volume_capability()],
                        parameters=TEST_VOLUME_PARAMETERS,
                    )
                )
                existing[vol.volume.volume_id] = True

        vols = list_volumes(sc, max_entries=max_entries)
        assert len(vols.entries) == max_entries
        next_token = vols.next_token

        for entry in vols.entries:
            assert existing.get(entry.volume.volume_id)
            r.delete_volume(pb.DeleteVolumeRequest(volume_id=entry.volume.volume_id))
            existing[entry.volume.volume_id] = False

        vol = r.must_create_volume(
            pb.CreateVolumeRequest(
                name="new-addition",
                volume_capabilities=[volume_capability()],
                parameters=TEST_VOLUME_PARAMETERS,
            )
        )
        existing[vol.volume.volume_id] = True

        vols = list_volumes(sc, starting_token=next_token)
        # Depending on the plugin we may miss volumes, but must not get duplicates.
        assert len(vols.entries) <= min_vol_count - max_entries + 1
        for entry in vols.entries:
            assert existing.get(entry.volume.volume_id)
            existing[entry.volume.volume_id] = False


class TestCreateVolume:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.CREATE_DELETE_VOLUME, "CreateVolume not supported")

    # Controller Service [Controller Server] CreateVolume should fail when no name is provided
    def test_should_fail_when_no_name_is_provided(self, r: Resources) -> None:
        expect_error_code(
            lambda: r.create_volume(pb.CreateVolumeRequest(parameters=TEST_VOLUME_PARAMETERS)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Controller Service [Controller Server] CreateVolume should fail when no volume
    # capabilities are provided
    def test_should_fail_when_no_volume_capabilities_are_provided(self, r: Resources) -> None:
        name = unique_string("sanity-controller-create-no-volume-capabilities")
        expect_error_code(
            lambda: r.create_volume(
                pb.CreateVolumeRequest(name=name, parameters=TEST_VOLUME_PARAMETERS)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Controller Service [Controller Server] CreateVolume should return appropriate values
    # SingleNodeWriter NoCapacity
    def test_should_return_appropriate_values_single_node_writer_no_capacity(
        self, r: Resources
    ) -> None:
        name = unique_string("sanity-controller-create-single-no-capacity")
        r.must_create_volume(sized_request(name, TEST_VOLUME_SIZE))

    # Controller Service [Controller Server] CreateVolume should return appropriate values
    # SingleNodeWriter WithCapacity 1Gi
    def test_should_return_appropriate_values_single_node_writer_with_capacity_1gi(
        self, r: Resources
    ) -> None:
        name = unique_string("sanity-controller-create-single-with-capacity")
        try:
            vol = r.create_volume(sized_request(name, TEST_VOLUME_SIZE))
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED):
                pytest.skip("Required bytes not supported")
            raise
        assert vol.volume.volume_id
        assert vol.volume.capacity_bytes >= TEST_VOLUME_SIZE or vol.volume.capacity_bytes == 0

    # Controller Service [Controller Server] CreateVolume should not fail when requesting to
    # create a volume with already existing name and same capacity
    def test_should_not_fail_when_requesting_to_create_a_volume_with_already_existing_name_and_same_capacity(  # noqa: E501
        self, r: Resources
    ) -> None:
        name = unique_string("sanity-controller-create-twice")
        vol1 = r.must_create_volume(sized_request(name, TEST_VOLUME_SIZE))
        assert vol1.volume.capacity_bytes >= TEST_VOLUME_SIZE or vol1.volume.capacity_bytes == 0
        vol2 = r.must_create_volume(sized_request(name, TEST_VOLUME_SIZE))
        assert vol2.volume.capacity_bytes >= TEST_VOLUME_SIZE or vol2.volume.capacity_bytes == 0
        assert vol1.volume.volume_id == vol2.volume.volume_id

    # Controller Service [Controller Server] CreateVolume should fail when requesting to
    # create a volume with already existing name and different capacity
    def test_should_fail_when_requesting_to_create_a_volume_with_already_existing_name_and_different_capacity(  # noqa: E501
        self, r: Resources
    ) -> None:
        name = unique_string("sanity-controller-create-twice-different")
        r.must_create_volume(sized_request(name, TEST_VOLUME_SIZE, TEST_VOLUME_SIZE))
        size2 = 2 * TEST_VOLUME_SIZE
        expect_error_code(
            lambda: r.create_volume(sized_request(name, size2, size2)),
            grpc.StatusCode.ALREADY_EXISTS,
        )

    # Controller Service [Controller Server] CreateVolume should not fail when creating
    # volume with maximum-length name
    def test_should_not_fail_when_creating_volume_with_maximum_length_name(
        self, r: Resources
    ) -> None:
        name = unique_string_with_length("sanity-controller-create-maxlen", MAX_NAME_LENGTH)
        assert len(name) == MAX_NAME_LENGTH
        vol = r.must_create_volume(sized_request(name, TEST_VOLUME_SIZE))
        assert vol.volume.capacity_bytes >= TEST_VOLUME_SIZE or vol.volume.capacity_bytes == 0

    # Controller Service [Controller Server] CreateVolume should create volume from an
    # existing source snapshot
    def test_should_create_volume_from_an_existing_source_snapshot(
        self, sc: SanityContext, r: Resources
    ) -> None:
        require_controller(sc, ControllerCap.CREATE_DELETE_SNAPSHOT, "Snapshot not supported")
        vol1 = r.must_create_volume(
            make_create_volume_req(unique_string("sanity-controller-source-vol"))
        )
        snap_req = make_create_snapshot_req(
            unique_string("sanity-controller-snap-from-vol"), vol1.volume.volume_id
        )
        # Upstream re-sends CreateSnapshot every 5 s until ready_to_use; bounded here.
        for _ in range(12):
            snap = r.must_create_snapshot(snap_req)
            if snap.snapshot.ready_to_use:
                break
        else:
            pytest.fail("snapshot never became ready_to_use")
        vol2_req = make_create_volume_req(unique_string("sanity-controller-vol-from-snap"))
        vol2_req.volume_content_source.snapshot.snapshot_id = snap.snapshot.snapshot_id
        vol = r.create_volume(vol2_req)
        assert vol.volume.HasField("content_source")

    # Controller Service [Controller Server] CreateVolume should fail when the volume source
    # snapshot is not found
    def test_should_fail_when_the_volume_source_snapshot_is_not_found(
        self, sc: SanityContext, r: Resources
    ) -> None:
        require_controller(sc, ControllerCap.CREATE_DELETE_SNAPSHOT, "Snapshot not supported")
        req = make_create_volume_req(unique_string("sanity-controller-vol-from-snap"))
        req.volume_content_source.snapshot.snapshot_id = "non-existing-snapshot-id"
        expect_error_code(lambda: r.create_volume(req), grpc.StatusCode.NOT_FOUND)

    # Controller Service [Controller Server] CreateVolume should create volume from an
    # existing source volume
    def test_should_create_volume_from_an_existing_source_volume(
        self, sc: SanityContext, r: Resources
    ) -> None:
        require_controller(sc, ControllerCap.CLONE_VOLUME, "Volume Cloning not supported")
        volume1 = r.must_create_volume(
            make_create_volume_req(unique_string("sanity-controller-source-vol"))
        )
        req = make_create_volume_req(unique_string("sanity-controller-vol-from-vol"))
        req.volume_content_source.volume.volume_id = volume1.volume.volume_id
        r.create_volume(req)

    # Controller Service [Controller Server] CreateVolume should fail when the volume source
    # volume is not found
    def test_should_fail_when_the_volume_source_volume_is_not_found(
        self, sc: SanityContext, r: Resources
    ) -> None:
        require_controller(sc, ControllerCap.CLONE_VOLUME, "Volume Cloning not supported")
        req = make_create_volume_req(unique_string("sanity-controller-vol-from-snap"))
        req.volume_content_source.volume.volume_id = unique_valid_volume_id()
        expect_error_code(lambda: r.create_volume(req), grpc.StatusCode.NOT_FOUND)

    # Controller Service [Controller Server] CreateVolume should create volume with a volume
    # attribute class
    def test_should_create_volume_with_a_volume_attribute_class(
        self, sc: SanityContext, r: Resources
    ) -> None:
        require_controller(sc, ControllerCap.MODIFY_VOLUME, "Modify volume not supported")
        req = make_create_volume_req(unique_string("sanity-controller-vol-with-mutable-parameters"))
        req.mutable_parameters.update(TEST_VOLUME_MUTABLE_PARAMETERS)
        r.create_volume(req)

    # Controller Service [Controller Server] CreateVolume should not create volume with an
    # invalid volume attribute class
    def test_should_not_create_volume_with_an_invalid_volume_attribute_class(
        self, sc: SanityContext, r: Resources
    ) -> None:
        require_controller(sc, ControllerCap.MODIFY_VOLUME, "Modify Volume not supported")
        req = make_create_volume_req(unique_string("sanity-controller-vol-with-mutable-parameters"))
        req.mutable_parameters.update({"XXX_FakeKey": "XXX_FakeValue"})
        expect_error_code(lambda: r.create_volume(req), grpc.StatusCode.INVALID_ARGUMENT)


class TestDeleteVolume:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.CREATE_DELETE_VOLUME, "DeleteVolume not supported")

    # Controller Service [Controller Server] DeleteVolume should fail when no volume id is
    # provided
    def test_should_fail_when_no_volume_id_is_provided(self, r: Resources) -> None:
        expect_error_code(
            lambda: r.delete_volume(pb.DeleteVolumeRequest()), grpc.StatusCode.INVALID_ARGUMENT
        )

    # Controller Service [Controller Server] DeleteVolume should succeed when an invalid
    # volume id is used
    def test_should_succeed_when_an_invalid_volume_id_is_used(self, r: Resources) -> None:
        r.delete_volume(pb.DeleteVolumeRequest(volume_id=INVALID_VOLUME_ID))

    # Controller Service [Controller Server] DeleteVolume should return appropriate values
    # (no optional values added)
    def test_should_return_appropriate_values_no_optional_values_added(self, r: Resources) -> None:
        vol = r.must_create_volume(
            sized_request(unique_string("sanity-controller-create-appropriate"), TEST_VOLUME_SIZE)
        )
        r.delete_volume(pb.DeleteVolumeRequest(volume_id=vol.volume.volume_id))


class TestValidateVolumeCapabilities:
    # Controller Service [Controller Server] ValidateVolumeCapabilities should fail when no
    # volume id is provided
    def test_should_fail_when_no_volume_id_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.controller.ValidateVolumeCapabilities(
                pb.ValidateVolumeCapabilitiesRequest()
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Controller Service [Controller Server] ValidateVolumeCapabilities should fail when no
    # volume capabilities are provided
    def test_should_fail_when_no_volume_capabilities_are_provided(
        self, sc: SanityContext, r: Resources
    ) -> None:
        vol = r.must_create_volume(
            sized_request(unique_string("sanity-controller-validate-nocaps"), TEST_VOLUME_SIZE)
        )
        expect_error_code(
            lambda: sc.controller.ValidateVolumeCapabilities(
                pb.ValidateVolumeCapabilitiesRequest(volume_id=vol.volume.volume_id)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # Controller Service [Controller Server] ValidateVolumeCapabilities should return
    # appropriate values (no optional values added)
    def test_should_return_appropriate_values_no_optional_values_added(
        self, sc: SanityContext, r: Resources
    ) -> None:
        vol = r.must_create_volume(
            sized_request(unique_string("sanity-controller-validate"), TEST_VOLUME_SIZE)
        )
        res = sc.controller.ValidateVolumeCapabilities(
            pb.ValidateVolumeCapabilitiesRequest(
                volume_id=vol.volume.volume_id, volume_capabilities=[volume_capability()]
            )
        )
        # If confirmed is set, it must carry the volume capabilities.
        if res.HasField("confirmed"):
            assert len(res.confirmed.volume_capabilities) > 0

    # Controller Service [Controller Server] ValidateVolumeCapabilities should fail when the
    # requested volume does not exist
    def test_should_fail_when_the_requested_volume_does_not_exist(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.controller.ValidateVolumeCapabilities(
                pb.ValidateVolumeCapabilitiesRequest(
                    volume_id=unique_valid_volume_id(), volume_capabilities=[volume_capability()]
                )
            ),
            grpc.StatusCode.NOT_FOUND,
        )
