"""Errors of the mount layer."""

from __future__ import annotations

from csi_vduse.errors import CsiVduseError


class MountError(CsiVduseError):
    """A filesystem or mount operation failed; ``message`` carries the tool's own words."""
