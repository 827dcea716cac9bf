"""RBD volumes without a cluster: an id says where its image is and parses back whatever
dashes its clusterID has; secrets become access, and no message ever holds a key; a
StorageClass's parameters are checked before anything is made."""

from __future__ import annotations

import base64
import errno

import grpc
import pytest

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.ceph.pool import FEATURES
from csi_vduse.csi import rbd_parameters
from csi_vduse.csi.errors import RpcError
from csi_vduse.pool.ids import volume_id_for
from csi_vduse.rbd import credentials
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import RbdSnapshotId, RbdVolumeId
from csi_vduse.rbd.placement import FEATURE_NAMES, Placement

KEY = base64.b64encode(b"\x01\x00" + b"\x11" * 8 + (16).to_bytes(2, "little") + b"k" * 16).decode()
CLUSTER = CephCluster(
    id="b9127830-b0cc-4e34-aa47-9d1a2e9949a8", monitors=("10.0.0.1:6789", "10.0.0.2:6789")
)


def test_an_id_names_cluster_pool_and_image_and_parses_back() -> None:
    made = RbdVolumeId.for_name(cluster=CLUSTER.id, pool_id=3, name="pvc-1")
    text = str(made)
    assert text == f"rbd-{CLUSTER.id}-0000000000000003-{made.digits}"
    assert RbdVolumeId.parse(text) == made
    assert made.image == "csi-vol-" + made.digits
    assert (
        RbdVolumeId.for_name(cluster=CLUSTER.id, pool_id=3, name="pvc-1") == made
    )  # a retry finds it
    assert RbdVolumeId.for_name(cluster=CLUSTER.id, pool_id=3, name="pvc-2") != made
    longest = RbdVolumeId.for_name(cluster="c" * 64, pool_id=(1 << 63) - 1, name="x")
    assert len(str(longest).encode()) <= 128
    assert RbdVolumeId.parse(str(longest)) == longest


def test_a_snapshot_id_names_its_own_image_and_is_never_a_volume_id() -> None:
    made = RbdSnapshotId.for_name(cluster=CLUSTER.id, pool_id=3, name="snapshot-1")
    text = str(made)
    assert text == f"rbdsnap-{CLUSTER.id}-0000000000000003-{made.digits}"
    assert made.image == "csi-snap-" + made.digits
    assert RbdSnapshotId.parse(text) == made
    assert RbdVolumeId.parse(text) is None
    volume = RbdVolumeId.for_name(cluster=CLUSTER.id, pool_id=3, name="snapshot-1")
    assert RbdSnapshotId.parse(str(volume)) is None
    assert volume.digits == made.digits and volume.image != made.image  # one name, two kinds
    longest = RbdSnapshotId.for_name(cluster="c" * 64, pool_id=(1 << 63) - 1, name="x")
    assert len(str(longest).encode()) <= 128
    assert RbdSnapshotId.parse(str(longest)) == longest


@pytest.mark.parametrize(
    "text",
    [volume_id_for("pvc-1"), "rbd--0000000000000003-" + "0" * 32, "rbd-c-3-" + "0" * 32,
     "rbd-c-0000000000000003-" + "0" * 31, "rbd-c/d-0000000000000003-" + "0" * 32, ""],
)  # fmt: skip
def test_what_is_not_an_rbd_volume_id_parses_to_none(text: str) -> None:
    assert RbdVolumeId.parse(text) is None


def test_secrets_become_access_to_the_cluster() -> None:
    got = credentials.access(
        {"userID": "k8s", "userKey": KEY}, CLUSTER, op_timeout=60, connect_timeout=30
    )
    assert (got.user, got.key, got.mon_host) == ("k8s", KEY, "10.0.0.1:6789,10.0.0.2:6789")
    assert got.op_timeout == 60


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({}, "lack userID and userKey"),
        ({"userID": "k8s"}, "lack userKey"),
        ({"userID": "k8s", "userKey": KEY[:-4] + "AAA="}, "key is malformed"),
        ({"userID": "client.k8s", "userKey": KEY}, "must be an id without client"),
    ],
)
def test_bad_secrets_are_refused_without_their_values(
    secrets: dict[str, str], message: str
) -> None:
    with pytest.raises(RbdVolumeError) as caught:
        credentials.access(secrets, CLUSTER, op_timeout=60, connect_timeout=30)
    assert message in caught.value.message
    assert caught.value.errno == errno.EINVAL
    if "userKey" in secrets:
        assert secrets["userKey"] not in str(caught.value)


def test_the_feature_names_are_librbds() -> None:
    assert set(FEATURE_NAMES) == set(FEATURES)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"pool": "rbd"}, "needs clusterID"),
        ({"clusterID": "c"}, "needs pool"),
        ({"clusterID": "c", "pool": "a/b"}, "'a/b' is not a Ceph pool name"),
        ({"clusterID": "c", "pool": "rbd", "imageFeatures": "layering"}, "must include exclusive"),
        ({"clusterID": "c", "pool": "rbd", "imageFeatures": "exclusive-lock,fast-diff"},
         "fast-diff needs object-map"),
        ({"clusterID": "c", "pool": "rbd", "monitors": "m:1"}, "unknown parameter(s) monitors"),
        ({"clusterID": "c", "pool": "rbd", "blockSize": "3"}, "blockSize 3: use 512 or 4096"),
    ],
)  # fmt: skip
def test_an_rbd_storage_class_is_refused_with_the_reason(
    given: dict[str, str], message: str
) -> None:
    with pytest.raises(RpcError) as caught:
        rbd_parameters.parse({"backend": "rbd", **given})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.message


def test_an_rbd_storage_class_places_its_volumes() -> None:
    chosen = rbd_parameters.parse(
        {
            "backend": "rbd",
            "clusterID": "c",
            "pool": "rbd",
            "dataPool": "ec",
            "numQueues": "2",
            "csi.storage.k8s.io/provisioner-secret-name": "s",
        }
    )
    assert chosen.placement == Placement(cluster="c", pool="rbd", data_pool="ec")
    assert chosen.context("csi-vol-1")["imageName"] == "csi-vol-1"
    assert chosen.context("csi-vol-1")["numQueues"] == "2"
