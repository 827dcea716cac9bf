"""What a node makes of an RBD volume's context and node-stage secrets, and where it keeps
the key (no Ceph needed: nothing here reaches a cluster)."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.csi import rbd_parameters
from csi_vduse.csi.errors import RpcError
from csi_vduse.csi.proto import pb
from csi_vduse.devices.rbd_source import RbdSource
from csi_vduse.mounts import mountinfo
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import RbdVolumeId
from csi_vduse.rbd.keyfiles import MEMORY_FILESYSTEMS, KeyFiles
from csi_vduse.rbd.staging import RbdStaging
from csi_vduse.volumes import kinds
from tests.driver import Driver, mount_capability

KEY = "AQAAAAAAAAAAABAAc2l4dGVlbiBieXRlIGtleQ=="  # a well-formed cephx secret
VOLUME = RbdVolumeId.for_name(cluster="east-1", pool_id=3, name="pvc-1")
CLUSTERS = {
    "east-1": CephCluster(id="east-1", monitors=("10.0.0.1:6789", "10.0.0.2:6789"),
                          rados_namespace="tenant-a"),
}  # fmt: skip
CONTEXT = {
    "backend": "rbd", "clusterID": "east-1", "pool": "volumes", "imageName": VOLUME.image,
    "blockSize": "4096", "numQueues": "2", "packedRings": "true",
    "storage.kubernetes.io/csiProvisionerIdentity": "1700000000000-1234-vduse.csi",
}  # fmt: skip


@pytest.fixture
def keys() -> Iterator[KeyFiles]:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as memory:  # tmpfs
        yield KeyFiles(Path(memory) / "keys")


def test_a_key_is_kept_alone_in_a_private_file_in_memory_and_removed(keys: KeyFiles) -> None:
    path = keys.write(str(VOLUME), key=KEY)
    assert path == keys.path(str(VOLUME)) and path.read_text() == KEY + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.directory.stat().st_mode) == 0o700
    assert os.listdir(keys.directory) == [str(VOLUME)]  # no temporary file left
    keys.remove(str(VOLUME))
    keys.remove(str(VOLUME))  # idempotent
    assert os.listdir(keys.directory) == []


def test_a_kept_key_is_left_as_it_is_and_a_lost_one_written_again(keys: KeyFiles) -> None:
    keys.write(str(VOLUME), key=KEY)
    keys.keep(str(VOLUME), key="AQAAAAAAAAAAABAAYW5vdGhlciBrZXkgaGVyZQ==")
    assert keys.path(str(VOLUME)).read_text() == KEY + "\n"
    keys.remove(str(VOLUME))
    keys.keep(str(VOLUME), key=KEY)
    assert keys.path(str(VOLUME)).read_text() == KEY + "\n"


def test_a_key_directory_on_a_disk_is_refused(
    keys: KeyFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = mountinfo.Mount(
        mount_point="/", root="/", fs_type="ext4", source="/dev/sda1", options=frozenset()
    )
    monkeypatch.setattr(mountinfo, "holding", lambda path: disk)
    with pytest.raises(RbdVolumeError, match="is on ext4, not tmpfs") as raised:
        keys.write(str(VOLUME), key=KEY)
    assert raised.value.errno == errno.EINVAL
    assert not keys.path(str(VOLUME)).exists()


def test_the_mount_holding_a_path_is_the_deepest_one_above_it() -> None:
    assert mountinfo.holding("/dev/shm/anything/below") == mountinfo.mount_at("/dev/shm")
    held = mountinfo.holding("/")
    assert held is not None and held.mount_point == "/"


def test_a_staged_image_is_reached_as_the_secrets_user_through_the_clusters_file(
    keys: KeyFiles,
) -> None:
    staged = RbdStaging(CLUSTERS, keys).image(
        VOLUME, pool="volumes", image=VOLUME.image, secrets={"userID": "csi", "userKey": KEY}
    )
    source = staged.source
    assert (source.pool, source.namespace, source.image) == ("volumes", "tenant-a", VOLUME.image)
    assert source.user == "csi" and source.mon_host == "10.0.0.1:6789,10.0.0.2:6789"
    assert source.keyfile == str(keys.path(str(VOLUME))) and staged.key == KEY
    assert source.pool_id == VOLUME.pool_id  # the pool the image must be found in
    assert KEY not in repr(staged) and KEY not in str(source.to_json())


@pytest.mark.parametrize(
    ("secrets", "cluster", "code", "words"),
    [
        ({"userID": "csi"}, "east-1", errno.EINVAL, "lack userKey"),
        ({"userKey": KEY}, "east-1", errno.EINVAL, "lack userID"),
        ({"userID": "csi", "userKey": "not-a-key"}, "east-1", errno.EINVAL, "malformed"),
        ({"userID": "csi", "userKey": KEY}, "west-2", errno.ENXIO, "not in the clusters file"),
    ],
)
def test_missing_or_malformed_secrets_and_unknown_clusters_are_refused_without_the_key(
    keys: KeyFiles, secrets: dict[str, str], cluster: str, code: int, words: str
) -> None:
    volume = RbdVolumeId(cluster=cluster, pool_id=VOLUME.pool_id, digits=VOLUME.digits)
    with pytest.raises(RbdVolumeError, match=words) as raised:
        RbdStaging(CLUSTERS, keys).image(
            volume, pool="volumes", image=volume.image, secrets=secrets
        )
    assert raised.value.errno == code
    assert KEY not in str(raised.value) and "not-a-key" not in str(raised.value)


def test_the_volume_context_gives_the_pool_and_the_device_and_ignores_the_cos_keys() -> None:
    context = rbd_parameters.from_context(VOLUME, CONTEXT)
    assert (context.pool, context.image) == ("volumes", VOLUME.image)
    device = context.device
    assert (device.block_size, device.num_queues, device.packed_rings) == (4096, 2, True)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"pool": ""}, "lacks a Ceph pool"),
        ({"imageName": "csi-vol-other"}, "imageName is not"),
        ({"clusterID": "west-2"}, "clusterID is not"),
        ({"numQueues": "99"}, "numQueues"),
    ],
)
def test_a_context_that_is_not_the_volumes_is_invalid(change: dict[str, str], words: str) -> None:
    with pytest.raises(RpcError, match=words) as raised:
        rbd_parameters.from_context(VOLUME, {**CONTEXT, **change})
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_rbd_volumes_device_is_named_by_its_images_digits_and_its_node() -> None:
    on_a = kinds.device_name(str(VOLUME), node_id="node-a")
    assert on_a.startswith(f"rbd-{VOLUME.digits}-") and len(on_a) <= 64
    assert on_a == kinds.device_name(str(VOLUME), node_id="node-a")
    assert on_a != kinds.device_name(str(VOLUME), node_id="node-b")
    assert kinds.is_volume_id(str(VOLUME)) and kinds.is_rbd(str(VOLUME))
    assert kinds.device_name("vol-" + "0" * 32, node_id="node-a") == "vol-" + "0" * 32
    assert not kinds.is_volume_id("rbd-../../etc") and not kinds.is_volume_id("../x")


def test_a_node_without_the_clusters_file_refuses_rbd_volumes(tmp_path: Path) -> None:
    driver = Driver(tmp_path).start()
    try:
        with pytest.raises(grpc.RpcError) as raised:
            driver.node_stub.NodeStageVolume(
                pb.NodeStageVolumeRequest(
                    volume_id=str(VOLUME),
                    staging_target_path=str(tmp_path / "staging"),
                    volume_capability=mount_capability(),
                    volume_context=CONTEXT,
                    secrets={"userID": "csi", "userKey": KEY},
                )
            )
    finally:
        driver.stop()
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--ceph-clusters" in str(raised.value.details())


def test_a_node_refuses_to_start_with_its_key_directory_on_a_disk(tmp_path: Path) -> None:
    held = mountinfo.holding(tmp_path)
    if held is not None and held.fs_type in MEMORY_FILESYSTEMS:
        pytest.skip(f"{tmp_path} is on {held.fs_type} here")
    clusters = tmp_path / "config.json"
    clusters.write_text('[{"clusterID": "east-1", "monitors": ["10.0.0.1:6789"]}]')
    extra = ["--ceph-clusters", str(clusters), "--ceph-key-dir", str(tmp_path / "keys")]
    driver = Driver(tmp_path, controller=False, extra=extra)
    with pytest.raises(AssertionError, match="exited at start"):
        driver.start()
    assert "not tmpfs: Ceph keys must never reach a disk" in driver.log()


def test_a_node_of_rbd_volumes_only_serves_node_without_a_pool(tmp_path: Path) -> None:
    clusters = tmp_path / "config.json"
    clusters.write_text('[{"clusterID": "east-1", "monitors": ["10.0.0.1:6789"]}]')
    with tempfile.TemporaryDirectory(dir="/dev/shm") as memory:
        extra = ["--node", "--ceph-clusters", str(clusters), "--ceph-key-dir", memory]
        driver = Driver(tmp_path, node=False, controller=False, extra=extra).start()
        try:
            info = driver.node_stub.NodeGetInfo(pb.NodeGetInfoRequest())
            plugin = driver.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
            with pytest.raises(grpc.RpcError) as raised:  # a file volume: no pool here
                driver.node_stub.NodeStageVolume(
                    pb.NodeStageVolumeRequest(
                        volume_id="vol-" + "0" * 32,
                        staging_target_path=str(tmp_path / "staging"),
                        volume_capability=mount_capability(),
                    )
                )
        finally:
            driver.stop()
    assert info.node_id == "test-node"
    # An RBD volume is reachable from every node: no topology to advertise or report, so
    # external-provisioner needs no view of the nodes.
    assert not info.HasField("accessible_topology")
    advertised = {c.service.type for c in plugin.capabilities if c.HasField("service")}
    assert pb.PluginCapability.Service.Type.VOLUME_ACCESSIBILITY_CONSTRAINTS not in advertised
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (tmp_path / "pool").exists()


def test_a_node_of_rbd_volumes_needs_the_clusters_file(tmp_path: Path) -> None:
    driver = Driver(tmp_path, node=False, controller=False, extra=["--node"])
    with pytest.raises(AssertionError, match="exited at start"):
        driver.start()
    assert "add --ceph-clusters" in driver.log()


def test_moved_monitors_are_found_by_the_next_stage_and_the_next_dataplane_start(
    keys: KeyFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The clusters file (a ConfigMap, updated in place) is read again at each stage and
    each dataplane start; where it cannot be read, what was read before serves on."""
    clusters_file = tmp_path / "config.json"

    def monitors(*addresses: str) -> None:
        entry = {
            "clusterID": "east-1", "monitors": list(addresses),
            "rbd": {"radosNamespace": "tenant-a"},
        }  # fmt: skip
        clusters_file.write_text(json.dumps([entry]))

    monitors("10.0.0.1:6789")
    staging = RbdStaging(CLUSTERS, keys, clusters_file=clusters_file)
    secrets = {"userID": "csi", "userKey": KEY}
    staged = staging.image(VOLUME, pool="volumes", image=VOLUME.image, secrets=secrets)
    keys.keep(str(VOLUME), key=staged.key)
    source = RbdSource.from_json(staged.source.to_json())  # as the device record keeps it
    assert source.mon_host == "10.0.0.1:6789"
    monitors("10.0.0.7:6789", "10.0.0.8:6789")  # the operator moved them
    assert source.target().mon_host == "10.0.0.7:6789,10.0.0.8:6789"
    again = staging.image(VOLUME, pool="volumes", image=VOLUME.image, secrets=secrets)
    assert again.source.mon_host == "10.0.0.7:6789,10.0.0.8:6789"
    assert again.source.namespace == "tenant-a"
    clusters_file.write_text("not json")
    assert source.target().mon_host == "10.0.0.1:6789"  # as staged
    assert "using the monitors it was staged with" in caplog.text
    last = staging.image(VOLUME, pool="volumes", image=VOLUME.image, secrets=secrets)
    assert last.source.mon_host == "10.0.0.7:6789,10.0.0.8:6789"  # as last read
