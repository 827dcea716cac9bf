"""csi-sanity "ListSnapshots", "DeleteSnapshot" and "CreateSnapshot" [Controller Server].

From pkg/sanity/controller.go; each class is one ``DescribeSanity``, each test one ``It``.
"""

from __future__ import annotations

import grpc
import pytest

from csi_vduse.csi.proto import pb
from tests.csi.conftest import (
    ALL_BACKENDS,
    MAX_NAME_LENGTH,
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
    verify_snapshot_info,
)

BACKENDS = ALL_BACKENDS  # csi-sanity's: against files and against RBD


def list_snapshots(sc: SanityContext, **fields: object) -> pb.ListSnapshotsResponse:
    res: pb.ListSnapshotsResponse = sc.controller.ListSnapshots(pb.ListSnapshotsRequest(**fields))  # type: ignore[arg-type]
    return res


class TestListSnapshots:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.LIST_SNAPSHOTS, "ListSnapshots not supported")

    # ListSnapshots [Controller Server] should return appropriate values
    # (no optional values added)
    def test_should_return_appropriate_values_no_optional_values_added(
        self, sc: SanityContext
    ) -> None:
        for entry in list_snapshots(sc).entries:
            verify_snapshot_info(entry.snapshot)

    # ListSnapshots [Controller Server] should return snapshots that match the specified
    # snapshot id
    def test_should_return_snapshots_that_match_the_specified_snapshot_id(
        self, sc: SanityContext, r: Resources
    ) -> None:
        r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("listSnapshots-volume-unrelated-s-1")),
            unique_string("listSnapshots-snapshot-unrelated-s-1"),
        )
        target, _ = r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("listSnapshots-volume-target-s")),
            unique_string("listSnapshots-snapshot-target-s"),
        )
        r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("listSnapshots-volume-unrelated-s-2")),
            unique_string("listSnapshots-snapshot-unrelated-s-2"),
        )
        snapshots = list_snapshots(sc, snapshot_id=target.snapshot.snapshot_id)
        assert len(snapshots.entries) == 1
        verify_snapshot_info(snapshots.entries[0].snapshot)
        assert snapshots.entries[0].snapshot.snapshot_id == target.snapshot.snapshot_id

    # ListSnapshots [Controller Server] should return empty when the specified snapshot id
    # does not exist
    def test_should_return_empty_when_the_specified_snapshot_id_does_not_exist(
        self, sc: SanityContext
    ) -> None:
        assert list(list_snapshots(sc, snapshot_id="none-exist-id").entries) == []

    # ListSnapshots [Controller Server] should return snapshots that match the specified
    # source volume id
    def test_should_return_snapshots_that_match_the_specified_source_volume_id(
        self, sc: SanityContext, r: Resources
    ) -> None:
        r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("listSnapshots-volume-unrelated-v-1")),
            unique_string("listSnapshots-snapshot-unrelated-v-1"),
        )
        target, _ = r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("listSnapshots-volume-target-v")),
            unique_string("listSnapshots-snapshot-target-v"),
        )
        r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("listSnapshots-volume-unrelated-v-2")),
            unique_string("listSnapshots-snapshot-unrelated-v-2"),
        )
        source = target.snapshot.source_volume_id
        snapshots = list_snapshots(sc, source_volume_id=source)
        assert len(snapshots.entries) == 1
        verify_snapshot_info(snapshots.entries[0].snapshot)
        assert snapshots.entries[0].snapshot.source_volume_id == source

    # ListSnapshots [Controller Server] should return empty when the specified source volume
    # id does not exist
    def test_should_return_empty_when_the_specified_source_volume_id_does_not_exist(
        self, sc: SanityContext
    ) -> None:
        res = list_snapshots(sc, source_volume_id=unique_valid_volume_id())
        assert list(res.entries) == []

    # ListSnapshots [Controller Server] check the presence of new snapshots in the snapshot
    # list
    def test_check_the_presence_of_new_snapshots_in_the_snapshot_list(
        self, sc: SanityContext, r: Resources
    ) -> None:
        total = len(list_snapshots(sc).entries)
        snapshot, _ = r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("listSnapshots-volume-3")),
            unique_string("listSnapshots-snapshot-3"),
        )
        verify_snapshot_info(snapshot.snapshot)
        assert len(list_snapshots(sc).entries) == total + 1
        r.delete_snapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot.snapshot_id))
        assert len(list_snapshots(sc).entries) == total

    # ListSnapshots [Controller Server] should return next token when a limited number of
    # entries are requested
    def test_should_return_next_token_when_a_limited_number_of_entries_are_requested(
        self, sc: SanityContext, r: Resources
    ) -> None:
        min_snapshot_count, max_entries = 5, 2
        current = initial = len(list_snapshots(sc).entries)
        if initial < min_snapshot_count:
            required = min_snapshot_count - initial
            for i in range(1, required + 1):
                snapshot, _ = r.must_create_snapshot_from_volume_request(
                    make_create_volume_req(unique_string(f"volume{i}")),
                    unique_string(f"snapshot{i}"),
                )
                verify_snapshot_info(snapshot.snapshot)
            current += required

        snapshots = list_snapshots(sc, max_entries=max_entries)
        next_token = snapshots.next_token
        assert len(snapshots.entries) == max_entries

        # With the token and no max_entries, all the rest comes at once.
        snapshots = list_snapshots(sc, starting_token=next_token)
        assert len(snapshots.entries) == current - max_entries


class TestDeleteSnapshot:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.CREATE_DELETE_SNAPSHOT, "DeleteSnapshot not supported")

    # DeleteSnapshot [Controller Server] should fail when no snapshot id is provided
    def test_should_fail_when_no_snapshot_id_is_provided(self, r: Resources) -> None:
        expect_error_code(
            lambda: r.delete_snapshot(pb.DeleteSnapshotRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # DeleteSnapshot [Controller Server] should succeed when an invalid snapshot id is used
    def test_should_succeed_when_an_invalid_snapshot_id_is_used(self, r: Resources) -> None:
        r.delete_snapshot(pb.DeleteSnapshotRequest(snapshot_id="reallyfakesnapshotid"))

    # DeleteSnapshot [Controller Server] should return appropriate values
    # (no optional values added)
    def test_should_return_appropriate_values_no_optional_values_added(self, r: Resources) -> None:
        volume = r.create_volume(make_create_volume_req(unique_string("DeleteSnapshot-volume-1")))
        r.must_create_snapshot(
            make_create_snapshot_req(
                unique_string("DeleteSnapshot-snapshot-1"), volume.volume.volume_id
            )
        )
        # Upstream leaves the deletion to Cleanup, which must succeed.


class TestCreateSnapshot:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        require_controller(sc, ControllerCap.CREATE_DELETE_SNAPSHOT, "CreateSnapshot not supported")

    # CreateSnapshot [Controller Server] should fail when no name is provided
    def test_should_fail_when_no_name_is_provided(self, r: Resources) -> None:
        expect_error_code(
            lambda: r.create_snapshot(pb.CreateSnapshotRequest(source_volume_id="testId")),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # CreateSnapshot [Controller Server] should fail when no source volume id is provided
    def test_should_fail_when_no_source_volume_id_is_provided(self, r: Resources) -> None:
        expect_error_code(
            lambda: r.create_snapshot(pb.CreateSnapshotRequest(name="name")),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    # CreateSnapshot [Controller Server] should succeed when requesting to create a snapshot
    # with already existing name and same source volume ID
    def test_should_succeed_when_requesting_to_create_a_snapshot_with_already_existing_name_and_same_source_volume_id(  # noqa: E501
        self, r: Resources
    ) -> None:
        volume = r.must_create_volume(
            make_create_volume_req(unique_string("CreateSnapshot-volume-1"))
        )
        req = make_create_snapshot_req(
            unique_string("CreateSnapshot-snapshot-1"), volume.volume.volume_id
        )
        first = r.must_create_snapshot(req)
        second = r.must_create_snapshot(req)
        # Not asserted upstream, but what idempotency means (CSI spec, CreateSnapshot).
        assert second.snapshot.snapshot_id == first.snapshot.snapshot_id

    # CreateSnapshot [Controller Server] should fail when requesting to create a snapshot
    # with already existing name and different source volume ID
    def test_should_fail_when_requesting_to_create_a_snapshot_with_already_existing_name_and_different_source_volume_id(  # noqa: E501
        self, r: Resources
    ) -> None:
        name = unique_string("CreateSnapshot-snapshot-2")
        r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("CreateSnapshot-volume-2")), name
        )
        volume2 = r.must_create_volume(
            make_create_volume_req(unique_string("CreateSnapshot-volume-3"))
        )
        req = make_create_snapshot_req(name, volume2.volume.volume_id)
        expect_error_code(lambda: r.create_snapshot(req), grpc.StatusCode.ALREADY_EXISTS)

    # CreateSnapshot [Controller Server] should succeed when creating snapshot with
    # maximum-length name
    def test_should_succeed_when_creating_snapshot_with_maximum_length_name(
        self, r: Resources
    ) -> None:
        volume = r.must_create_volume(
            make_create_volume_req(unique_string("CreateSnapshot-volume-maxlen-name"))
        )
        name = unique_string_with_length("CreateSnapshot-snapshot-maxlen", MAX_NAME_LENGTH)
        req = make_create_snapshot_req(name, volume.volume.volume_id)
        r.must_create_snapshot(req)
        r.must_create_snapshot(req)


class TestGetSnapshot:
    """Not in csi-sanity, whose v5.4.0 fails GET_SNAPSHOT as an unknown capability: the RPC
    is served without being advertised, so these run ungated."""

    def test_no_snapshot_id_is_invalid(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.controller.GetSnapshot(pb.GetSnapshotRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    @pytest.mark.parametrize("snapshot_id", ["reallyfakesnapshotid", "snap-" + "0" * 32])
    def test_a_snapshot_that_does_not_exist_is_not_found(
        self, sc: SanityContext, snapshot_id: str
    ) -> None:
        expect_error_code(
            lambda: sc.controller.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=snapshot_id)),
            grpc.StatusCode.NOT_FOUND,
        )

    def test_returns_the_snapshot_as_created_and_listed_until_deleted(
        self, sc: SanityContext, r: Resources
    ) -> None:
        snap, vol = r.must_create_snapshot_from_volume_request(
            make_create_volume_req(unique_string("GetSnapshot-volume")),
            unique_string("GetSnapshot-snapshot"),
        )
        snapshot_id = snap.snapshot.snapshot_id
        got = sc.controller.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=snapshot_id))
        verify_snapshot_info(got.snapshot)
        assert got.snapshot == snap.snapshot
        assert got.snapshot.source_volume_id == vol.volume.volume_id
        [entry] = list_snapshots(sc, snapshot_id=snapshot_id).entries
        assert entry.snapshot == got.snapshot
        r.delete_snapshot(pb.DeleteSnapshotRequest(snapshot_id=snapshot_id))
        expect_error_code(
            lambda: sc.controller.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=snapshot_id)),
            grpc.StatusCode.NOT_FOUND,
        )
