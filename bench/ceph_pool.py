"""A one-node test Ceph (tests.ceph) with an RBD pool and a user, for the RBD benches.

``pool()`` brings it up in a scratch directory and takes it down after, whatever happens;
``image()`` makes an image every system of a bench then serves in turn, and ``source()``
says how our devices reach it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from csi_vduse.devices.rbd_source import RbdSource
from tests.ceph import CephClient, CephCluster

POOL = "bench"
USER = "bench"


@contextlib.contextmanager
def pool() -> Iterator[CephClient]:
    """A cluster up, with pool ``bench`` and ``client.bench`` allowed in it alone."""
    with tempfile.TemporaryDirectory(prefix="ceph-bench-") as tmp:
        cluster = CephCluster(Path(tmp) / "ceph")
        began = time.monotonic()
        try:
            cluster.up()
            cluster.create_pool(POOL)
            cluster.create_client(USER, POOL)
            print(f"ceph: test cluster up in {time.monotonic() - began:.1f} s", flush=True)
            yield CephClient(cluster, POOL, USER)
        finally:
            cluster.down()


def image(client: CephClient, name: str, size_mib: int, *, prefill: bool = True) -> str:
    """A new image ``name`` (its spec POOL/NAME), written once through when ``prefill``: reads
    of objects never written are answered without touching the disk, and would flatter
    every system alike."""
    spec = client.image(name)
    client.rbd("create", "--size", f"{size_mib}M", "--image-feature",
               "layering,exclusive-lock,object-map,fast-diff", spec)  # fmt: skip
    if prefill:
        client.rbd("bench", "--io-type", "write", "--io-size", "4M", "--io-threads", "4",
                   "--io-total", f"{size_mib}M", "--io-pattern", "seq", spec,
                   timeout=1800)  # fmt: skip
    return spec


def source(client: CephClient, spec: str) -> RbdSource:
    """How our devices reach image ``spec``: the cluster's config and the user's keyring."""
    return RbdSource.parse(
        spec, conf=str(client.cluster.conf_path), user=client.user, keyfile=str(client.keyring)
    )


def qsd_blockdev(source: RbdSource) -> str:
    """qemu-storage-daemon's block node ``f0`` on ``source``'s image with librbd's cache off,
    as our dataplane runs it (QEMU's rbd driver sets ``rbd_cache`` from ``cache.direct``).
    The cluster's config names the user's keyring, so librados finds the key there."""
    return (f"rbd,node-name=f0,pool={source.pool},image={source.image},conf={source.conf},"
            f"user={source.user},cache.direct=on")  # fmt: skip
