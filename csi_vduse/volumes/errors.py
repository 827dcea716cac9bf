"""Errors of the node volume layer; ``errno`` carries the CSI meaning.

ENOENT: no such volume. EEXIST: already staged/published with other arguments.
ENXIO: not staged (where the call needs it). EBUSY: still in use. EINVAL: a request
that contradicts how the volume was staged. ENOSPC: the node's volume limit.
"""

from __future__ import annotations

from csi_vduse.errors import CsiVduseError


class VolumeError(CsiVduseError):
    pass
