"""The two kinds of volume a node stages, told apart by their ids: files of the node's pool
(``pool.ids``) and RBD images (``rbd.ids``); and the name each one's device gets.

A device name becomes ``/dev/vduse/NAME`` and is at most 64 characters, shorter than an RBD
volume id. An RBD volume's device is ``rbd-<the image's 32 digits>-<8 more>``, the last
a digest of the whole volume id (cluster and pool too) and the node id: an operator finds
image ``csi-vol-<digits>`` from it, and two plugins sharing one kernel (two releases on a
node, or two test "nodes" in one VM) never name a device alike, as any node may stage any
RBD volume. A file volume's id is its device's name.
"""

from __future__ import annotations

from csi_vduse.pool import ids
from csi_vduse.pool.ids import digest
from csi_vduse.rbd.ids import PREFIX as RBD_PREFIX
from csi_vduse.rbd.ids import RbdVolumeId

NODE_DIGITS = 8


def is_volume_id(text: str) -> bool:
    """An id of either kind: safe to become a file name."""
    return ids.is_volume_id(text) or RbdVolumeId.parse(text) is not None


def is_rbd(volume_id: str) -> bool:
    return RbdVolumeId.parse(volume_id) is not None


def device_name(volume_id: str, *, node_id: str) -> str:
    """The name of the device that serves the volume on node ``node_id``."""
    rbd = RbdVolumeId.parse(volume_id)
    if rbd is None:
        return volume_id
    return f"{RBD_PREFIX}{rbd.digits}-{digest(f'{volume_id}/{node_id}')[:NODE_DIGITS]}"
