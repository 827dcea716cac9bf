"""Our RBD volumes and snapshots, found by walking a cluster's pools: what ListVolumes and
ListSnapshots answer with, since the controller keeps no records of its own.

An image is ours where its name has our prefix and its own labels name it (``labels``):
ceph-csi's images have the same names, and an image a call left half made is not yet a
volume. Only pools for RBD are walked (``rbd pool init``), and those the user may not read
(its caps name others) are passed over. Each image costs one open (``RbdPool.describe``).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from csi_vduse.ceph.lineage import Lineage
from csi_vduse.ceph.pool import ImageFacts, RbdPool
from csi_vduse.rbd import labels
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.pools import Pools

log = logging.getLogger(__name__)

# What opening or listing a pool says where it is none of ours to list.
_PASSED_OVER = (errno.EACCES, errno.EPERM, errno.ENOENT)


@dataclass(frozen=True, kw_only=True)
class Found:
    """A finished image of ours."""

    cluster: str
    pool_id: int
    image: str
    facts: ImageFacts
    labels: labels.Labels


def images(
    pools: Pools, cluster_id: str, secrets: Mapping[str, str], *, prefix: str,
    pool: int | None = None,
) -> list[Found]:  # fmt: skip
    """The finished images of ours named ``prefix``... in pool ``pool`` (an id) of cluster
    ``cluster_id``, or in each of its pools."""
    if pool is not None:
        names: list[str | int] = [pool]
    else:
        with pools.survey(cluster_id, secrets) as survey:
            names = list(survey.rbd_pools())
    found: list[Found] = []
    for name in names:
        try:
            with pools.open(cluster_id, name, secrets) as opened:
                found += _in_pool(opened, cluster_id=cluster_id, prefix=prefix)
        except RbdVolumeError as exc:
            if exc.errno not in _PASSED_OVER:
                raise
            log.debug("not listing pool %s of cluster %s: %s", name, cluster_id, exc.message)
    return found


def find(
    pools: Pools, cluster_id: str, secrets: Mapping[str, str], *, pool: int, image: str
) -> Found | None:
    """Image ``image`` of pool ``pool`` (an id), where it is a finished one of ours."""
    try:
        with pools.open(cluster_id, pool, secrets) as opened:
            return _found(opened, image, cluster_id=cluster_id)
    except RbdVolumeError as exc:
        if exc.errno != errno.ENOENT:  # the pool is gone
            raise
        return None


def _in_pool(pool: RbdPool, *, cluster_id: str, prefix: str) -> list[Found]:
    found = (
        _found(pool, name, cluster_id=cluster_id)
        for name in pool.images()
        if name.startswith(prefix)
    )
    return [each for each in found if each is not None]


def _found(pool: RbdPool, image: str, *, cluster_id: str) -> Found | None:
    facts = pool.describe(image)
    if facts is None:  # no such image (removed since a listing)
        return None
    own = labels.of(
        image, facts.metadata, inherited=lambda: Lineage(pool).parent(image) is not None
    )
    if own.name is None:
        return None
    return Found(cluster=cluster_id, pool_id=pool.id, image=image, facts=facts, labels=own)
