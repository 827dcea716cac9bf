"""Device lifecycle failures; ``step`` names the lifecycle step that failed."""

from __future__ import annotations

from csi_vduse.errors import CsiVduseError


class DeviceError(CsiVduseError):
    """A device could not be created, deleted or inspected."""


class DataplaneKilledError(DeviceError):
    """A dataplane was killed from outside (not by its own fault) before it was ready."""


class RbdImageError(DeviceError):
    """What Ceph said about a device's RBD image (its ``errno``): it does not exist
    (ENOENT), another client holds it (EBUSY), the key was refused (EACCES, EPERM), no
    monitor answered (ETIMEDOUT), or its name is not one (EINVAL)."""
