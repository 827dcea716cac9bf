"""csi-sanity "GroupController Server" and "GroupController VolumeGroupSnapshots", and ours.

The first two classes port pkg/sanity/groupcontroller.go (each test one ``It``); upstream
takes no group snapshot, so the rest are ours: a group of volumes not in use (no pause is
needed), its idempotency, its members as snapshots, restoring from one, and bad input
changing nothing. Groups of volumes in use are paused; that is tested under load in the VM
(tests/kernel/test_group_snapshots.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from csi_vduse.csi.proto import pb
from tests.csi.conftest import (
    PluginService,
    Resources,
    SanityContext,
    expect_error_code,
    make_create_volume_req,
    unique_string,
)

Code = grpc.StatusCode
GroupCap = pb.GroupControllerServiceCapability.RPC.Type
INVALID_ID = "fake-vol-id"  # IDGenerator.GenerateInvalidVolumeID


def provides_group_controller(sc: SanityContext) -> bool:
    res = sc.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
    return any(
        c.WhichOneof("type") == "service"
        and c.service.type == PluginService.GROUP_CONTROLLER_SERVICE
        for c in res.capabilities
    )


def group_request(
    name: str, *volume_ids: str, **parameters: str
) -> pb.CreateVolumeGroupSnapshotRequest:
    return pb.CreateVolumeGroupSnapshotRequest(
        name=name, source_volume_ids=list(volume_ids), parameters=parameters
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content: what a refused call must not change."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith((".log", ".sock")):
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


class TestGroupControllerServer:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        if not provides_group_controller(sc):
            pytest.skip("GroupControllerService not supported")

    # GroupControllerGetCapabilities should return appropriate capabilities
    def test_should_return_appropriate_capabilities(self, sc: SanityContext) -> None:
        caps = sc.group_controller.GroupControllerGetCapabilities(
            pb.GroupControllerGetCapabilitiesRequest()
        )
        assert caps.capabilities
        for cap in caps.capabilities:
            assert cap.HasField("rpc")
            assert cap.rpc.type == GroupCap.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT


class TestVolumeGroupSnapshots:
    @pytest.fixture(autouse=True)
    def _gate(self, sc: SanityContext) -> None:
        if not provides_group_controller(sc):
            pytest.skip("GroupControllerService not supported")

    # CreateVolumeGroupSnapshot should fail when no name is provided
    def test_create_should_fail_when_no_name_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.group_controller.CreateVolumeGroupSnapshot(
                pb.CreateVolumeGroupSnapshotRequest()
            ),
            Code.INVALID_ARGUMENT,
        )

    # GetVolumeGroupSnapshot should fail when no volume id is provided
    def test_get_should_fail_when_no_volume_id_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.group_controller.GetVolumeGroupSnapshot(pb.GetVolumeGroupSnapshotRequest()),
            Code.INVALID_ARGUMENT,
        )

    # GetVolumeGroupSnapshot should fail when an invalid volume id is used
    def test_get_should_fail_when_an_invalid_volume_id_is_used(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.group_controller.GetVolumeGroupSnapshot(
                pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=INVALID_ID)
            ),
            Code.NOT_FOUND,
        )

    # DeleteVolumeGroupSnapshot should fail when no volume id is provided
    def test_delete_should_fail_when_no_volume_id_is_provided(self, sc: SanityContext) -> None:
        expect_error_code(
            lambda: sc.group_controller.DeleteVolumeGroupSnapshot(
                pb.DeleteVolumeGroupSnapshotRequest()
            ),
            Code.INVALID_ARGUMENT,
        )

    # DeleteVolumeGroupSnapshot should succeed when an invalid volume id is used
    def test_delete_should_succeed_when_an_invalid_volume_id_is_used(
        self, sc: SanityContext
    ) -> None:
        sc.group_controller.DeleteVolumeGroupSnapshot(
            pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=INVALID_ID)
        )


def two_volumes(r: Resources, prefix: str) -> list[str]:
    return [
        r.must_create_volume(
            make_create_volume_req(unique_string(f"{prefix}-{i}"))
        ).volume.volume_id
        for i in range(2)
    ]


def write_into(sc: SanityContext, volume_id: str, data: bytes) -> None:
    """Put ``data`` at the start of a volume that is not staged, through its backing file."""
    with open(Path(sc.driver.pool_dir) / "volumes" / f"{volume_id}.img", "r+b") as backing:
        backing.write(data)
        os.fsync(backing.fileno())


class TestGroupSnapshotsOfVolumesAtRest:
    """Ours: groups of volumes no node uses, so nothing is paused."""

    def test_a_group_holds_one_snapshot_per_volume_and_is_idempotent(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volumes = two_volumes(r, "group-rest")
        name = unique_string("group")
        group = r.create_group_snapshot(group_request(name, *volumes)).group_snapshot
        assert group.group_snapshot_id and group.ready_to_use
        assert group.creation_time.seconds > 0
        assert sorted(s.source_volume_id for s in group.snapshots) == sorted(volumes)
        for snapshot in group.snapshots:
            assert snapshot.group_snapshot_id == group.group_snapshot_id
            assert snapshot.ready_to_use and snapshot.size_bytes > 0
        # A retry, with the volumes in another order, is the same group.
        again = r.create_group_snapshot(group_request(name, *reversed(volumes))).group_snapshot
        assert again == group
        got = sc.group_controller.GetVolumeGroupSnapshot(
            pb.GetVolumeGroupSnapshotRequest(
                group_snapshot_id=group.group_snapshot_id,
                snapshot_ids=[s.snapshot_id for s in group.snapshots],
            )
        ).group_snapshot
        assert got == group
        listed = sc.controller.ListSnapshots(pb.ListSnapshotsRequest()).entries
        assert {e.snapshot.snapshot_id for e in listed} >= {s.snapshot_id for s in group.snapshots}

    def test_a_member_restores_its_volume_as_it_was(self, sc: SanityContext, r: Resources) -> None:
        volumes = two_volumes(r, "group-restore")
        for index, volume_id in enumerate(volumes):
            write_into(sc, volume_id, f"volume {index} before".encode())
        group = r.create_group_snapshot(
            group_request(unique_string("group-restore"), *volumes)
        ).group_snapshot
        for volume_id in volumes:
            write_into(sc, volume_id, b"overwritten after the group")
        member = next(s for s in group.snapshots if s.source_volume_id == volumes[1])
        request = make_create_volume_req(unique_string("group-restored"))
        request.volume_content_source.snapshot.snapshot_id = member.snapshot_id
        restored = r.must_create_volume(request).volume.volume_id
        data = (Path(sc.driver.pool_dir) / "volumes" / f"{restored}.img").read_bytes()
        assert data.startswith(b"volume 1 before")

    def test_a_member_goes_with_its_group_and_not_alone(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volumes = two_volumes(r, "group-delete")
        group = sc.group_controller.CreateVolumeGroupSnapshot(
            group_request(unique_string("group-delete"), *volumes)
        ).group_snapshot
        member = group.snapshots[0].snapshot_id
        expect_error_code(
            lambda: sc.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=member)),
            Code.FAILED_PRECONDITION,
        )
        ids = [s.snapshot_id for s in group.snapshots]
        expect_error_code(
            lambda: sc.group_controller.DeleteVolumeGroupSnapshot(
                pb.DeleteVolumeGroupSnapshotRequest(
                    group_snapshot_id=group.group_snapshot_id, snapshot_ids=ids[:1]
                )
            ),
            Code.INVALID_ARGUMENT,
        )
        for _ in range(2):  # idempotent
            sc.group_controller.DeleteVolumeGroupSnapshot(
                pb.DeleteVolumeGroupSnapshotRequest(
                    group_snapshot_id=group.group_snapshot_id, snapshot_ids=ids
                )
            )
        listed = sc.controller.ListSnapshots(pb.ListSnapshotsRequest()).entries
        assert not {e.snapshot.snapshot_id for e in listed} & set(ids)
        expect_error_code(
            lambda: sc.group_controller.GetVolumeGroupSnapshot(
                pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=group.group_snapshot_id)
            ),
            Code.NOT_FOUND,
        )

    def test_the_same_name_for_other_volumes_already_exists(
        self, sc: SanityContext, r: Resources
    ) -> None:
        volumes = two_volumes(r, "group-exists")
        name = unique_string("group-exists")
        r.create_group_snapshot(group_request(name, *volumes))
        before = tree(sc.driver.root)
        expect_error_code(
            lambda: r.create_group_snapshot(group_request(name, volumes[0])),
            Code.ALREADY_EXISTS,
        )
        expect_error_code(
            lambda: r.create_group_snapshot(
                group_request(name, *volumes, maxPauseMilliseconds="100")
            ),
            Code.ALREADY_EXISTS,
        )
        assert tree(sc.driver.root) == before

    @pytest.mark.parametrize(
        ("volumes", "parameters", "code"),
        [
            ([], {}, Code.INVALID_ARGUMENT),
            (["first", "first"], {}, Code.INVALID_ARGUMENT),
            (["first", "vol-" + "0" * 32], {}, Code.NOT_FOUND),
            (["first"], {"XXX_FakeKey": "x"}, Code.INVALID_ARGUMENT),
            (["first"], {"maxPauseMilliseconds": "0"}, Code.INVALID_ARGUMENT),
            (["first"], {"maxPauseMilliseconds": "60001"}, Code.INVALID_ARGUMENT),
            (["first"], {"maxPauseMilliseconds": "5s"}, Code.INVALID_ARGUMENT),
        ],
    )
    def test_bad_input_is_refused_and_changes_nothing(
        self, sc: SanityContext, r: Resources, volumes: list[str], parameters: dict[str, str],
        code: grpc.StatusCode,
    ) -> None:  # fmt: skip
        first = r.must_create_volume(make_create_volume_req(unique_string("group-bad")))
        ids = [first.volume.volume_id if v == "first" else v for v in volumes]
        before = tree(sc.driver.root)
        expect_error_code(
            lambda: r.create_group_snapshot(
                group_request(unique_string("group-bad"), *ids, **parameters)
            ),
            code,
        )
        assert tree(sc.driver.root) == before

    def test_kubernetes_bookkeeping_parameters_are_accepted(self, r: Resources) -> None:
        volumes = two_volumes(r, "group-k8s")
        bookkeeping = {"csi.storage.k8s.io/volumegroupsnapshot/name": "nightly"}
        request = group_request(unique_string("group-k8s"), *volumes, **bookkeeping)
        group = r.create_group_snapshot(request).group_snapshot
        assert len(group.snapshots) == 2
