"""RBD volumes as the controller makes them (``csi_vduse.rbd.volumes``), against the test
cluster, reached only through the clusters file's monitors and the CO's secrets: made once
per name whatever the retries, refused where the name is taken with other features,
grown, not removed while a node serves one, removed once and then gone for good."""

from __future__ import annotations

import errno
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.ceph.pool import FEATURES, feature_bits
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.ids import RbdVolumeId
from csi_vduse.rbd.labels import NAME_KEY
from csi_vduse.rbd.placement import DEFAULT_FEATURES, Placement
from csi_vduse.rbd.volumes import RbdVolumes
from tests.ceph import CephClient
from tests.kernel.conftest import Cli

pytestmark = pytest.mark.vm

MiB = 1 << 20
CLUSTER = "test-cluster"


@pytest.fixture
def volumes(ceph_client: CephClient) -> RbdVolumes:
    monitors = "[" + ",".join(ceph_client.cluster.mon_addresses) + "]"
    return RbdVolumes({CLUSTER: CephCluster(id=CLUSTER, monitors=(monitors,))}, op_timeout=30)


@pytest.fixture
def placement(ceph_client: CephClient) -> Placement:
    return Placement(cluster=CLUSTER, pool=ceph_client.pool)


@pytest.fixture
def made(volumes: RbdVolumes, secrets: dict[str, str]) -> Iterator[list[RbdVolumeId]]:
    ids: list[RbdVolumeId] = []
    yield ids
    for volume_id in ids:
        volumes.delete(volume_id, secrets)


def fresh(name: str) -> str:
    return f"{name}-{random.randrange(1 << 30):x}"


def test_a_volume_is_made_once_whatever_the_retries(
    volumes: RbdVolumes, placement: Placement, secrets: dict[str, str],
    made: list[RbdVolumeId], ceph_client: CephClient,
) -> None:  # fmt: skip
    name = fresh("pvc")
    first = volumes.create(name, size=64 * MiB, placement=placement, secrets=secrets)
    made.append(first.volume_id)
    assert first.size == 64 * MiB
    assert first.features == feature_bits(placement.features)
    again = volumes.create(name, size=64 * MiB, placement=placement, secrets=secrets)
    assert again == first
    assert volumes.get(first.volume_id, secrets) == first
    image = ceph_client.image(first.volume_id.image)
    labels = ceph_client.rbd("image-meta", "get", image, NAME_KEY).stdout.strip()
    assert labels == name
    other = volumes.create(fresh("pvc"), size=32 * MiB, placement=placement, secrets=secrets)
    made.append(other.volume_id)
    assert other.volume_id != first.volume_id


def test_a_retry_finishes_what_a_crash_left_and_other_features_are_refused(
    volumes: RbdVolumes, placement: Placement, secrets: dict[str, str],
    made: list[RbdVolumeId], ceph_client: CephClient,
) -> None:  # fmt: skip
    name = fresh("pvc")
    half = RbdVolumeId.for_name(
        cluster=CLUSTER, pool_id=first_pool_id(volumes, placement, secrets), name=name
    )
    ceph_client.rbd("create", "--size", "16M", "--image-feature", ",".join(DEFAULT_FEATURES),
                    ceph_client.image(half.image))  # fmt: skip
    made.append(half)  # as if a CreateVolume died before labelling its image
    volume = volumes.create(name, size=16 * MiB, placement=placement, secrets=secrets)
    assert volume.volume_id == half
    assert ceph_client.rbd("image-meta", "get", ceph_client.image(half.image),
                           NAME_KEY).stdout.strip() == name  # fmt: skip
    layering_only = Placement(cluster=CLUSTER, pool=placement.pool, features=("layering",))
    with pytest.raises(RbdVolumeError) as taken:
        volumes.create(name, size=16 * MiB, placement=layering_only, secrets=secrets)
    assert taken.value.errno == errno.EEXIST
    assert "features layering,exclusive-lock,object-map,fast-diff, not layering" in str(taken.value)
    assert volume.features & FEATURES["fast-diff"]


def first_pool_id(volumes: RbdVolumes, placement: Placement, secrets: dict[str, str]) -> int:
    probe = volumes.create(fresh("probe"), size=MiB, placement=placement, secrets=secrets)
    volumes.delete(probe.volume_id, secrets)
    return probe.volume_id.pool_id


def test_a_volume_grows_and_is_removed_once_no_node_serves_it(
    volumes: RbdVolumes, placement: Placement, secrets: dict[str, str], cli: Cli,
    ceph_client: CephClient,
) -> None:  # fmt: skip
    volume = volumes.create(fresh("pvc"), size=32 * MiB, placement=placement, secrets=secrets)
    try:
        assert volumes.expand(volume.volume_id, 48 * MiB, secrets) == 48 * MiB
        assert volumes.expand(volume.volume_id, 40 * MiB, secrets) == 48 * MiB  # no shrink
        cli.run(
            "device", "create", "vol0", "--rbd", ceph_client.image(volume.volume_id.image),
            "--ceph-conf", str(ceph_client.cluster.conf_path), "--ceph-user", ceph_client.user,
            "--ceph-keyfile", str(ceph_client.keyring),
        )  # fmt: skip
        with pytest.raises(RbdVolumeError) as busy:
            volumes.delete(volume.volume_id, secrets)
        assert busy.value.errno == errno.EBUSY
        assert "in use by" in busy.value.message and "unstage it first" in busy.value.message
        assert volumes.get(volume.volume_id, secrets) is not None
    finally:
        cli.run("device", "delete", "vol0", check=False)
    volumes.delete(volume.volume_id, secrets)
    assert volumes.get(volume.volume_id, secrets) is None
    volumes.delete(volume.volume_id, secrets)  # idempotent
    with pytest.raises(RbdVolumeError) as gone:
        volumes.expand(volume.volume_id, 64 * MiB, secrets)
    assert gone.value.errno == errno.ENOENT


def test_unknown_clusters_pools_and_wrong_keys_get_clear_errors(
    volumes: RbdVolumes, placement: Placement, secrets: dict[str, str], tmp_path: Path
) -> None:
    nowhere = Placement(cluster="elsewhere", pool=placement.pool)
    with pytest.raises(RbdVolumeError) as unknown:
        volumes.create(fresh("pvc"), size=MiB, placement=nowhere, secrets=secrets)
    assert unknown.value.errno == errno.ENXIO
    assert "clusterID elsewhere is not in the clusters file (it has: test-cluster)" in str(
        unknown.value
    )
    no_pool = Placement(cluster=CLUSTER, pool="no-such-pool")
    with pytest.raises(RbdVolumeError) as missing:
        volumes.create(fresh("pvc"), size=MiB, placement=no_pool, secrets=secrets)
    assert missing.value.errno == errno.ENOENT
    assert "no-such-pool does not exist" in str(missing.value)
    other_key = "AQAAAAAAAAAAABAAmibQn9YVzYG5kYWZG/JNWA=="
    wrong = {**secrets, "userKey": other_key}
    with pytest.raises(RbdVolumeError) as refused:
        volumes.create(fresh("pvc"), size=MiB, placement=placement, secrets=wrong)
    assert refused.value.errno in (errno.EACCES, errno.EPERM)
    assert other_key not in str(refused.value) and secrets["userKey"] not in str(refused.value)
    gone_pool = RbdVolumeId(cluster=CLUSTER, pool_id=4000, digits="0" * 32)  # a pool id nobody has
    assert volumes.get(gone_pool, secrets) is None
    volumes.delete(gone_pool, secrets)  # nothing there: done
