"""The central RBD instance's answers that need no cluster: what it advertises, and ids
that are none of its volumes' or snapshots' (csi-sanity's fake ids among them)."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.rbd_controller import RbdController
from csi_vduse.rbd.controller_secret import ControllerSecret
from csi_vduse.rbd.errors import RbdVolumeError
from tests.driver import Driver, mount_capability, pb

RPC = pb.ControllerServiceCapability.RPC.Type
SECRETS = {"userID": "k8s", "userKey": "AQAAAAAAAAAAABAAc2l4dGVlbiBieXRlIGtleQ=="}


def clusters_file(directory: Path) -> Path:
    clusters = directory / "config.json"
    clusters.write_text('[{"clusterID": "east-1", "monitors": ["192.0.2.1:6789"]}]')
    return clusters


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Driver]:
    extra = ["--ceph-clusters", str(clusters_file(tmp_path))]
    driver = Driver(tmp_path / "driver", node=False, extra=extra)
    driver.start()
    yield driver
    driver.stop()


def test_it_advertises_what_it_serves_for_rbd_volumes(central: Driver) -> None:
    caps = central.controller_stub.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    assert {c.rpc.type for c in caps.capabilities} == {
        RPC.CREATE_DELETE_VOLUME, RPC.EXPAND_VOLUME, RPC.CREATE_DELETE_SNAPSHOT,
        RPC.CLONE_VOLUME, RPC.SINGLE_NODE_MULTI_WRITER,
    }  # fmt: skip


def test_with_credentials_of_its_own_it_advertises_the_calls_without_secrets(
    tmp_path: Path,
) -> None:
    own = tmp_path / "own"
    own.mkdir()
    extra = ["--ceph-clusters", str(clusters_file(tmp_path)), "--ceph-controller-secret", str(own)]
    driver = Driver(tmp_path / "driver", node=False, extra=extra).start()
    try:
        stub = driver.controller_stub
        caps = stub.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
        assert {c.rpc.type for c in caps.capabilities} == {
            RPC.CREATE_DELETE_VOLUME, RPC.EXPAND_VOLUME, RPC.CREATE_DELETE_SNAPSHOT,
            RPC.CLONE_VOLUME, RPC.LIST_VOLUMES, RPC.GET_VOLUME, RPC.VOLUME_CONDITION,
            RPC.LIST_SNAPSHOTS, RPC.GET_CAPACITY, RPC.SINGLE_NODE_MULTI_WRITER,
        }  # fmt: skip
        # The directory holds no userID and userKey yet (a Secret not yet mounted, say).
        with pytest.raises(grpc.RpcError) as failed:
            stub.ListVolumes(pb.ListVolumesRequest())
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "userID and userKey" in (failed.value.details() or "")
    finally:
        driver.stop()


def test_without_credentials_of_its_own_the_calls_without_secrets_fail_precondition(
    central: Driver,
) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        central.controller_stub.ListVolumes(pb.ListVolumesRequest())
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--ceph-controller-secret" in (failed.value.details() or "")


def test_a_missing_credentials_directory_stops_the_start(tmp_path: Path) -> None:
    extra = ["--ceph-clusters", str(clusters_file(tmp_path)),
             "--ceph-controller-secret", str(tmp_path / "nowhere")]  # fmt: skip
    driver = Driver(tmp_path / "driver", node=False, extra=extra)
    with pytest.raises(AssertionError, match="exited at start"):
        driver.start()
    assert "--ceph-controller-secret" in driver.log()


def test_ids_of_nothing_of_ours_are_gone_or_not_found(central: Driver) -> None:
    stub = central.controller_stub
    stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id="reallyfakevolumeid", secrets=SECRETS))
    stub.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id="fake-snapshot", secrets=SECRETS))
    calls: dict[str, Callable[[], object]] = {
        "a snapshot of a volume not ours": lambda: stub.CreateSnapshot(
            pb.CreateSnapshotRequest(name="s", source_volume_id="vol-" + "0" * 32)
        ),
        "a restore of a snapshot not ours": lambda: stub.CreateVolume(
            pb.CreateVolumeRequest(
                name="v", volume_capabilities=[mount_capability()],
                parameters={"backend": "rbd", "clusterID": "east-1", "pool": "rbd"},
                volume_content_source=pb.VolumeContentSource(
                    snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id="fake")
                ),
            )
        ),
        "a clone of a volume not ours": lambda: stub.CreateVolume(
            pb.CreateVolumeRequest(
                name="v", volume_capabilities=[mount_capability()],
                parameters={"backend": "rbd", "clusterID": "east-1", "pool": "rbd"},
                volume_content_source=pb.VolumeContentSource(
                    volume=pb.VolumeContentSource.VolumeSource(volume_id="fake")
                ),
            )
        ),
    }  # fmt: skip
    calls |= {
        "a volume's capabilities": lambda: stub.ValidateVolumeCapabilities(
            pb.ValidateVolumeCapabilitiesRequest(
                volume_id="fake-vol-id", volume_capabilities=[mount_capability()]
            )
        ),
        "a volume's growth": lambda: stub.ControllerExpandVolume(
            pb.ControllerExpandVolumeRequest(
                volume_id="fake-vol-id", capacity_range=pb.CapacityRange(required_bytes=1 << 30)
            )
        ),
        "a volume": lambda: stub.ControllerGetVolume(
            pb.ControllerGetVolumeRequest(volume_id="fake-vol-id")
        ),
    }
    for what, call in calls.items():
        with pytest.raises(grpc.RpcError) as failed:
            call()
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND, what
    # ListSnapshots by an id not ours is empty, without reaching a cluster.
    for request in (
        pb.ListSnapshotsRequest(snapshot_id="fake-snapshot"),
        pb.ListSnapshotsRequest(source_volume_id="fake-vol-id"),
        pb.ListSnapshotsRequest(snapshot_id="rbdsnap-west-9-" + "0" * 16 + "-" + "0" * 32),
    ):
        assert list(stub.ListSnapshots(request).entries) == []


@pytest.mark.parametrize("limit", ["0", "17"])
def test_a_chain_limit_out_of_range_stops_the_start(tmp_path: Path, limit: str) -> None:
    extra = ["--ceph-clusters", str(clusters_file(tmp_path)), "--rbd-chain-limit", limit]
    driver = Driver(tmp_path / "driver", node=False, extra=extra)
    with pytest.raises(AssertionError, match="exited at start"):
        driver.start()
    assert "--rbd-chain-limit" in driver.log()


def test_a_cluster_that_fails_is_left_out_of_a_listing_unless_every_one_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One cluster gone (or without credentials of the driver's) does not hide the
    others' volumes; when none answers, the call fails with the first one's reason."""
    own = tmp_path / "own"
    for cluster_id in ("east-1", "west-2"):
        (own / cluster_id).mkdir(parents=True)
        for key, value in SECRETS.items():
            (own / cluster_id / key).write_text(value)
    clusters = {
        name: CephCluster(id=name, monitors=("192.0.2.1:6789",))
        for name in ("east-1", "west-2", "north-3")  # north-3: no credentials of ours
    }
    volumes = SimpleNamespace(pools=SimpleNamespace(clusters=clusters))
    controller = RbdController(
        cast(Any, volumes), cast(Any, None), OperationLocks(), own_secret=ControllerSecret(own)
    )

    def work(cluster_id: str, secrets: dict[str, str]) -> list[str]:
        assert secrets == SECRETS
        if cluster_id == "west-2":
            raise RbdVolumeError("connect", "monitors did not answer", errno.ETIMEDOUT)
        return [f"volume of {cluster_id}"]

    assert controller._across_clusters("ListVolumes", work) == ["volume of east-1"]
    assert "Ceph cluster west-2 left out: monitors did not answer" in caplog.text
    assert "Ceph cluster north-3 left out" in caplog.text

    def fails(cluster_id: str, secrets: dict[str, str]) -> list[str]:
        raise RbdVolumeError("connect", f"{cluster_id} did not answer", errno.ETIMEDOUT)

    with pytest.raises(RbdVolumeError, match="east-1 did not answer"):
        controller._across_clusters("ListVolumes", fails)
