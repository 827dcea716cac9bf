"""StorageClass parameters of RBD volumes (``backend: rbd``), named as ceph-csi names them.

``clusterID`` (an entry of the clusters file) and ``pool`` are required; ``imageFeatures``
(default ``layering,exclusive-lock,object-map,fast-diff``) and ``dataPool`` are optional.
The device's own parameters (``blockSize``, ``numQueues``, ``packedRings``) apply as to
file volumes. Problems are INVALID_ARGUMENT in the StorageClass's words.

At stage time the node reads the volume context CreateVolume returned (``RbdContext``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from csi_vduse.csi import parameters
from csi_vduse.csi.errors import invalid
from csi_vduse.rbd.ids import RbdVolumeId
from csi_vduse.rbd.placement import DEFAULT_FEATURES, FEATURE_NAMES, Placement

CLUSTER_ID = "clusterID"
POOL = "pool"
IMAGE_FEATURES = "imageFeatures"
DATA_POOL = "dataPool"
KEYS = (CLUSTER_ID, POOL, IMAGE_FEATURES, DATA_POOL)
# Context the node is handed at stage time, besides the device's parameters.
CONTEXT_POOL = "pool"
CONTEXT_IMAGE = "imageName"
_NAME = re.compile(r"[^/@\s]{1,250}")


@dataclass(frozen=True, kw_only=True)
class RbdParameters:
    placement: Placement
    device: parameters.VolumeParameters

    def context(self, image: str) -> dict[str, str]:
        """The volume_context: the device's parameters, where the image is."""
        return {
            **self.device.context(),
            parameters.BACKEND: parameters.RBD,
            CLUSTER_ID: self.placement.cluster,
            CONTEXT_POOL: self.placement.pool,
            CONTEXT_IMAGE: image,
        }


def parse(given: dict[str, str]) -> RbdParameters:
    device = parameters.parse(given, others=KEYS)
    for key in (CLUSTER_ID, POOL):
        if not given.get(key):
            raise invalid(f"an RBD volume's StorageClass needs {key}")
    for key in (POOL, DATA_POOL):
        if given.get(key) and not _NAME.fullmatch(given[key]):
            raise invalid(f"{key} {given[key]!r} is not a Ceph pool name")
    features = tuple(given.get(IMAGE_FEATURES, ",".join(DEFAULT_FEATURES)).split(","))
    unknown = [name for name in features if name not in FEATURE_NAMES]
    if unknown:
        raise invalid(
            f"{IMAGE_FEATURES}: unknown feature(s) {', '.join(unknown)} "
            f"(known: {', '.join(FEATURE_NAMES)})"
        )
    if "exclusive-lock" not in features:
        raise invalid(
            f"{IMAGE_FEATURES} must include exclusive-lock: without it nothing stops a second "
            "node writing to the volume"
        )
    if "fast-diff" in features and "object-map" not in features:
        raise invalid(f"{IMAGE_FEATURES}: fast-diff needs object-map")
    placement = Placement(
        cluster=given[CLUSTER_ID], pool=given[POOL], features=features,
        data_pool=given.get(DATA_POOL, ""),
    )  # fmt: skip
    return RbdParameters(placement=placement, device=device)


@dataclass(frozen=True, kw_only=True)
class RbdContext:
    """Where a volume's image is and the device to serve it, as its context says."""

    pool: str
    image: str
    device: parameters.VolumeParameters


def from_context(volume_id: RbdVolumeId, context: dict[str, str]) -> RbdContext:
    """The context of RBD volume ``volume_id``; keys the CO adds of its own are ignored.

    The id names the cluster and the image; a context that names others is not this
    volume's.
    """
    pool = context.get(CONTEXT_POOL, "")
    if not _NAME.fullmatch(pool):
        raise invalid(f"volume {volume_id}: the volume context lacks a Ceph pool ({CONTEXT_POOL})")
    for key, wanted in ((CLUSTER_ID, volume_id.cluster), (CONTEXT_IMAGE, volume_id.image)):
        if context.get(key, wanted) != wanted:
            raise invalid(f"volume {volume_id}: the volume context's {key} is not {wanted}")
    device = parameters.parse(
        {key: context[key] for key in parameters.DEVICE_KEYS if key in context}
    )
    return RbdContext(pool=pool, image=volume_id.image, device=device)
