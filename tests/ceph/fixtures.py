"""pytest fixtures for a real Ceph (a plugin the root conftest loads): the session's test
cluster, an RBD pool with a user allowed in it alone (and, for tests that ask, in a data
pool), that user's CSI secrets, and the clusters file a driver is started with.

Only tests that ask for them start the cluster, on the host (seconds) or in the test VM
(most of a minute); if it cannot come up, those tests fail with the reason and no others
are touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ceph.bootstrap import read_key
from tests.ceph.client import CephClient
from tests.ceph.cluster import CephCluster
from tests.ceph.errors import CephError
from tests.vm import guest

CEPH_POOL = "csi-vduse"
CEPH_USER = "csi-vduse"
CEPH_DATA_POOL = "csi-vduse-data"  # a StorageClass's dataPool, where images keep their data
CEPH_CLUSTER_ID = "test-cluster"  # the test cluster's clusterID in clusters files


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    """A real one-node Ceph, up from the first test that asks for it to the session's end.
    The guest's between-test cleanup leaves its daemons alone."""
    cluster = CephCluster(tmp_path_factory.mktemp("ceph"))
    failure = _failure(cluster.up)
    if failure:
        pytest.fail(failure, pytrace=False)
    guest.keep(cluster.daemon_pids)
    try:
        yield cluster
    finally:
        cluster.down()
        guest.release(cluster.daemon_pids)


@pytest.fixture(scope="session")
def ceph_client(ceph_cluster: CephCluster) -> CephClient:
    """An RBD pool on the test cluster and a cephx user allowed in it alone."""

    def create() -> None:
        ceph_cluster.create_pool(CEPH_POOL)
        ceph_cluster.create_client(CEPH_USER, CEPH_POOL)

    failure = _failure(create)
    if failure:
        pytest.fail(failure, pytrace=False)
    return CephClient(ceph_cluster, CEPH_POOL, CEPH_USER)


@pytest.fixture(scope="session")
def ceph_data_pool(ceph_client: CephClient) -> str:
    """A second pool, which the test user may also keep image data in (``dataPool``)."""

    def create() -> None:
        cluster = ceph_client.cluster
        cluster.create_pool(CEPH_DATA_POOL)
        pools = f"profile rbd pool={CEPH_POOL}, profile rbd pool={CEPH_DATA_POOL}"
        cluster.ceph("auth", "caps", f"client.{CEPH_USER}", "mon", "profile rbd", "osd", pools)

    failure = _failure(create)
    if failure:
        pytest.fail(failure, pytrace=False)
    return CEPH_DATA_POOL


@pytest.fixture
def secrets(ceph_client: CephClient) -> dict[str, str]:
    """The CSI secrets of the test cluster's user, as ceph-csi names them."""
    return {"userID": ceph_client.user, "userKey": read_key(ceph_client.keyring)}


def clusters_file(directory: Path, client: CephClient) -> Path:
    """A clusters file (ceph-csi's config.json) naming the test cluster, in ``directory``."""
    monitors = "[" + ",".join(client.cluster.mon_addresses) + "]"
    path = directory / "config.json"
    path.write_text(json.dumps([{"clusterID": CEPH_CLUSTER_ID, "monitors": [monitors]}]))
    return path


def _failure(step: Callable[[], object]) -> str:
    """What went wrong in ``step`` (empty if nothing), to fail with outside the handler."""
    try:
        step()
    except CephError as exc:
        return str(exc)
    return ""
