"""Where a StorageClass has its RBD volumes made, and with which image features."""

from __future__ import annotations

from dataclasses import dataclass

# What rbd --image-feature and ceph-csi's imageFeatures name (ceph.pool.FEATURES has their
# bits, from librbd's header).
FEATURE_NAMES = ("layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten",
                 "journaling")  # fmt: skip
DEFAULT_FEATURES = ("layering", "exclusive-lock", "object-map", "fast-diff")


@dataclass(frozen=True, kw_only=True)
class Placement:
    cluster: str  # a clusterID of the clusters file
    pool: str
    features: tuple[str, ...] = DEFAULT_FEATURES  # of FEATURE_NAMES
    data_pool: str = ""  # where the data goes, if not in pool (an erasure-coded pool)
