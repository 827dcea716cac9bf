"""The RBD volume layer's errors: one class, an errno saying which kind (mapped to gRPC
codes once, at the service edge)."""

from __future__ import annotations

from csi_vduse.errors import CsiVduseError


class RbdVolumeError(CsiVduseError):
    """An RBD volume could not be made, found, grown or removed; ``errno`` says why:
    EINVAL bad input, ENXIO a cluster not in the clusters file, EEXIST a name taken with
    other properties, EBUSY in use, ENOTEMPTY has snapshots not made through CSI, EXDEV a
    source in another pool, ETIMEDOUT and EACCES the cluster's answer (or none)."""
