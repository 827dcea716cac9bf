"""StorageClass parameters this driver understands, checked at CreateVolume."""

from __future__ import annotations

from dataclasses import dataclass

from csi_vduse.csi.errors import invalid
from csi_vduse.dataplane.blk.profile import MAX_QUEUES

BLOCK_SIZE = "blockSize"
NUM_QUEUES = "numQueues"
PACKED_RINGS = "packedRings"
BOOLEANS = {"true": True, "false": False}
BLOCK_SIZES = ("512", "4096")
# external-provisioner passes these (PV/PVC names, secrets references): not ours to check.
KUBERNETES_PREFIX = "csi.storage.k8s.io/"


@dataclass(frozen=True)
class VolumeParameters:
    block_size: int = 512
    num_queues: int = 0  # 0: the node's default (one per CPU, capped)
    packed_rings: bool = False  # offer VIRTIO_F_RING_PACKED besides split rings

    def context(self) -> dict[str, str]:
        """The volume_context returned to the CO and handed back at stage time."""
        return {
            BLOCK_SIZE: str(self.block_size),
            NUM_QUEUES: str(self.num_queues),
            PACKED_RINGS: str(self.packed_rings).lower(),
        }


def parse(parameters: dict[str, str]) -> VolumeParameters:
    unknown = sorted(
        key
        for key in parameters
        if key not in (BLOCK_SIZE, NUM_QUEUES, PACKED_RINGS)
        and not key.startswith(KUBERNETES_PREFIX)
    )
    if unknown:
        raise invalid(
            f"unknown parameter(s) {', '.join(unknown)}; this driver takes "
            f"{BLOCK_SIZE} ({' or '.join(BLOCK_SIZES)}), {NUM_QUEUES} (1-{MAX_QUEUES}) "
            f"and {PACKED_RINGS} (true or false)"
        )
    block_size = parameters.get(BLOCK_SIZE, "512")
    if block_size not in BLOCK_SIZES:
        raise invalid(f"{BLOCK_SIZE} must be {' or '.join(BLOCK_SIZES)}, not {block_size!r}")
    queues_text = parameters.get(NUM_QUEUES, "0")
    try:
        queues = int(queues_text)
    except ValueError:
        queues = -1
    if not 0 <= queues <= MAX_QUEUES:
        raise invalid(f"{NUM_QUEUES} must be an integer from 1 to {MAX_QUEUES}")
    packed = parameters.get(PACKED_RINGS, "false")
    if packed not in BOOLEANS:
        raise invalid(f"{PACKED_RINGS} must be true or false, not {packed!r}")
    return VolumeParameters(int(block_size), queues, BOOLEANS[packed])


def own(parameters: dict[str, str]) -> dict[str, str]:
    """The parameters that shape the volume (Kubernetes' bookkeeping ones dropped)."""
    return {k: v for k, v in parameters.items() if not k.startswith(KUBERNETES_PREFIX)}
