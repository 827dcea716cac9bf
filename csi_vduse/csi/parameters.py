"""StorageClass parameters this driver understands, checked at CreateVolume.

They choose part of the device a volume is served by (``BlkProfile``); this module reads
their text, and the profile judges their values, its problems reported as
INVALID_ARGUMENT in the StorageClass's words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from csi_vduse.csi.errors import invalid
from csi_vduse.dataplane.blk.profile import BLOCK_SIZES, MAX_QUEUES, BlkProfile, ProfileError

BLOCK_SIZE = "blockSize"
NUM_QUEUES = "numQueues"
PACKED_RINGS = "packedRings"
DEVICE_KEYS = (BLOCK_SIZE, NUM_QUEUES, PACKED_RINGS)
BACKEND = "backend"  # "file" (these parameters alone) or "rbd" (rbd_parameters adds its own)
FILE, RBD = "file", "rbd"
BOOLEANS = {"true": True, "false": False}
# A profile's fields as StorageClass parameters name them.
NAMES = {"queues": NUM_QUEUES, "block_size": BLOCK_SIZE}
# A block size is written in plain decimal ("512", never "0512" or "+512").
DECIMAL = re.compile(r"[1-9][0-9]{0,8}")
# external-provisioner passes these (PV/PVC names, secrets references): not ours to check.
KUBERNETES_PREFIX = "csi.storage.k8s.io/"


@dataclass(frozen=True, kw_only=True)
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

    def profile(self, *, readonly: bool, default_queues: int) -> BlkProfile:
        """The device these parameters ask for, ``default_queues`` where they leave the
        queue count to the node."""
        return BlkProfile(
            readonly=readonly,
            queues=self.num_queues or default_queues,
            block_size=self.block_size,
            packed=self.packed_rings,
        )


def backend_of(parameters: dict[str, str]) -> str:
    """Which kind of volume the parameters ask for: FILE or RBD."""
    backend = parameters.get(BACKEND, FILE)
    if backend not in (FILE, RBD):
        raise invalid(f"{BACKEND} must be {FILE} (the default) or {RBD}, not {backend!r}")
    return backend


def parse(parameters: dict[str, str], *, others: tuple[str, ...] = ()) -> VolumeParameters:
    """The device's parameters; ``others`` are keys a caller reads itself (an RBD
    volume's), any other unknown key is refused."""
    sizes = " or ".join(map(str, BLOCK_SIZES))
    unknown = sorted(
        key
        for key in parameters
        if key not in (*DEVICE_KEYS, BACKEND, *others) and not key.startswith(KUBERNETES_PREFIX)
    )
    if unknown:
        raise invalid(
            f"unknown parameter(s) {', '.join(unknown)}; this driver takes "
            f"{BLOCK_SIZE} ({sizes}), {NUM_QUEUES} (1-{MAX_QUEUES}), "
            f"{PACKED_RINGS} (true or false), {BACKEND} ({FILE} or {RBD})"
            + (f" and {', '.join(others)}" if others else "")
        )
    block_size = parameters.get(BLOCK_SIZE, "512")
    if not DECIMAL.fullmatch(block_size):
        raise invalid(f"{BLOCK_SIZE} must be {sizes}, not {block_size!r}")
    queues_text = parameters.get(NUM_QUEUES, "0")
    try:
        queues = int(queues_text)
    except ValueError:
        raise invalid(f"{NUM_QUEUES} must be an integer from 1 to {MAX_QUEUES}") from None
    packed = parameters.get(PACKED_RINGS, "false")
    if packed not in BOOLEANS:
        raise invalid(f"{PACKED_RINGS} must be true or false, not {packed!r}")
    chosen = VolumeParameters(
        block_size=int(block_size), num_queues=queues, packed_rings=BOOLEANS[packed]
    )
    try:
        chosen.profile(readonly=False, default_queues=1)
    except ProfileError as exc:
        raise invalid(exc.describe(NAMES)) from exc
    return chosen


def own(parameters: dict[str, str]) -> dict[str, str]:
    """The parameters that shape the volume (Kubernetes' bookkeeping ones dropped)."""
    return {k: v for k, v in parameters.items() if not k.startswith(KUBERNETES_PREFIX)}
