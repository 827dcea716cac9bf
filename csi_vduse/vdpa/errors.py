"""vDPA bus failures."""

from __future__ import annotations

from csi_vduse.errors import CsiVduseError


class VdpaError(CsiVduseError):
    """A vdpa netlink request or a vDPA sysfs operation failed."""
