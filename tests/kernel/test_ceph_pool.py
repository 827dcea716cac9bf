"""The controller's view of an RBD pool (``csi_vduse.ceph.pool``), against the test
cluster: images made with the features asked for, labelled, listed, grown, and removed only
once no client uses them; bad access refused with errors that say why."""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from csi_vduse.ceph.image import RbdError
from csi_vduse.ceph.pool import FEATURES, RbdPool
from csi_vduse.ceph.target import CephAccess
from tests.ceph import CephClient
from tests.ceph.bootstrap import read_key
from tests.kernel.conftest import Cli

pytestmark = pytest.mark.vm

MiB = 1 << 20
DEFAULT_FEATURES = ("layering", "exclusive-lock", "object-map", "fast-diff")


def access(client: CephClient, **changes: object) -> CephAccess:
    fields: dict[str, object] = {
        "user": client.user, "key": read_key(client.keyring),
        "conf": client.cluster.conf_path.read_text(), "connect_timeout": 20, "op_timeout": 20,
    }  # fmt: skip
    fields.update(changes)
    return CephAccess(**fields)  # type: ignore[arg-type]


@pytest.fixture
def pool(ceph_client: CephClient) -> Iterator[RbdPool]:
    with RbdPool(access(ceph_client), ceph_client.pool) as opened:
        yield opened


def features(*names: str) -> int:
    bits = 0
    for name in names:
        bits |= FEATURES[name]
    return bits


def fresh(name: str) -> str:
    return f"{name}-{random.randrange(1 << 30):x}"


def test_an_image_is_made_as_asked_and_listed_once(pool: RbdPool) -> None:
    name = fresh("made")
    pool.create(name, size=64 * MiB, features=features(*DEFAULT_FEATURES))
    try:
        info = pool.stat(name)
        assert info is not None
        assert info.size == 64 * MiB
        assert info.features == features(*DEFAULT_FEATURES)
        with pytest.raises(RbdError) as taken:
            pool.create(name, size=32 * MiB, features=features("layering"))
        assert taken.value.errno == errno.EEXIST
        assert pool.images().count(name) == 1
        assert pool.stat(name) == info  # the refused create changed nothing
    finally:
        pool.remove(name)
    assert name not in pool.images()
    assert pool.stat(name) is None


def test_metadata_labels_an_image(pool: RbdPool) -> None:
    name = fresh("labelled")
    pool.create(name, size=16 * MiB, features=features("layering"))
    try:
        assert pool.metadata(name, key="csi.volname") is None
        pool.set_metadata(name, key="csi.volname", value="pvc-0f3a")
        assert pool.metadata(name, key="csi.volname") == "pvc-0f3a"
    finally:
        pool.remove(name)
    with pytest.raises(RbdError) as gone:
        pool.metadata(name, key="csi.volname")
    assert gone.value.errno == errno.ENOENT


def test_an_image_in_use_is_grown_through_its_user_and_not_removed(
    pool: RbdPool, ceph_client: CephClient, cli: Cli
) -> None:
    """A dataplane holds the image's exclusive lock: our resize is forwarded to it, and the
    device grows; removal is refused while it has the image open, and works after."""
    name = fresh("in-use")
    pool.create(name, size=64 * MiB, features=features(*DEFAULT_FEATURES))
    try:
        device = Path(cli.run(
            "device", "create", "pool0", "--rbd", ceph_client.image(name),
            "--ceph-conf", str(ceph_client.cluster.conf_path),
            "--ceph-user", ceph_client.user, "--ceph-keyfile", str(ceph_client.keyring),
        ).stdout.strip())  # fmt: skip
        [watcher] = pool.watchers(name)
        assert watcher.count(":") >= 1  # an address, ip:port/nonce
        pool.resize(name, 96 * MiB)
        sectors = Path(f"/sys/block/{device.name}/size")
        deadline = time.monotonic() + 60
        while int(sectors.read_text()) != 96 * MiB // 512:
            assert time.monotonic() < deadline, f"still {sectors.read_text().strip()} sectors"
            time.sleep(0.2)
        with pytest.raises(RbdError) as busy:
            pool.remove(name)
        assert busy.value.errno == errno.EBUSY
        cli.run("device", "delete", "pool0")
        assert pool.watchers(name) == []
    finally:
        cli.run("device", "delete", "pool0", check=False)
        pool.remove(name)
    with pytest.raises(RbdError) as gone:
        pool.remove(name)
    assert gone.value.errno == errno.ENOENT


def test_bad_access_is_refused_with_the_reason(ceph_client: CephClient) -> None:
    with pytest.raises(RbdError) as no_pool:
        RbdPool(access(ceph_client), "no-such-pool")
    assert no_pool.value.errno == errno.ENOENT
    assert "no-such-pool does not exist" in no_pool.value.message
    other = "AQBVzqNmAAAAABAAnwRRz3Nq5TpJCB7PUNO2lw=="  # well-formed, not the user's
    with pytest.raises(RbdError) as refused:
        RbdPool(access(ceph_client, key=other), ceph_client.pool)
    assert refused.value.errno in (errno.EACCES, errno.EPERM)
    assert "permission denied" in refused.value.message
    assert other not in str(refused.value)
    began = time.monotonic()
    with pytest.raises(RbdError) as unreachable:
        RbdPool(access(ceph_client, conf="", mon_host="127.0.0.1:1", connect_timeout=3),
                ceph_client.pool)  # fmt: skip
    assert unreachable.value.errno == errno.ETIMEDOUT
    assert "127.0.0.1:1" in unreachable.value.message
    assert time.monotonic() - began < 60
