"""Errors of the volume pool layer."""

from __future__ import annotations

from csi_vduse.errors import CsiVduseError


class PoolError(CsiVduseError):
    """A pool operation failed; ``errno`` says why (ENOENT, EEXIST, ENOSPC, EINVAL...)."""
