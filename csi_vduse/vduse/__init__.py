"""The Linux VDUSE uAPI: the control node, per-device nodes and their control messages."""

from csi_vduse.vduse.errors import VduseError

__all__ = ["VduseError"]
