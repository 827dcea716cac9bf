"""Dataplane failures."""

from __future__ import annotations

from csi_vduse.errors import CsiVduseError


class DataplaneError(CsiVduseError):
    """The dataplane could not start or serve its device."""
