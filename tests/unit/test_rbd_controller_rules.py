"""The central RBD instance's answers that need no cluster: what it advertises, and ids
that are none of its volumes' or snapshots' (csi-sanity's fake ids among them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.driver import Driver, mount_capability, pb

RPC = pb.ControllerServiceCapability.RPC.Type
SECRETS = {"userID": "k8s", "userKey": "AQAAAAAAAAAAABAAc2l4dGVlbiBieXRlIGtleQ=="}


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Driver]:
    clusters = tmp_path / "config.json"
    clusters.write_text('[{"clusterID": "east-1", "monitors": ["192.0.2.1:6789"]}]')
    driver = Driver(tmp_path / "driver", node=False, extra=["--ceph-clusters", str(clusters)])
    driver.start()
    yield driver
    driver.stop()


def test_it_advertises_what_it_serves_for_rbd_volumes(central: Driver) -> None:
    caps = central.controller_stub.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    assert {c.rpc.type for c in caps.capabilities} == {
        RPC.CREATE_DELETE_VOLUME, RPC.EXPAND_VOLUME, RPC.CREATE_DELETE_SNAPSHOT,
        RPC.CLONE_VOLUME,
    }  # fmt: skip


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
    for what, call in calls.items():
        with pytest.raises(grpc.RpcError) as failed:
            call()
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND, what


@pytest.mark.parametrize("limit", ["0", "17"])
def test_a_chain_limit_out_of_range_stops_the_start(tmp_path: Path, limit: str) -> None:
    clusters = tmp_path / "config.json"
    clusters.write_text('[{"clusterID": "east-1", "monitors": ["192.0.2.1:6789"]}]')
    extra = ["--ceph-clusters", str(clusters), "--rbd-chain-limit", limit]
    driver = Driver(tmp_path / "driver", node=False, extra=extra)
    with pytest.raises(AssertionError, match="exited at start"):
        driver.start()
    assert "--rbd-chain-limit" in driver.log()
