"""The vDPA bus: netlink device management and the sysfs view of bound devices."""

from csi_vduse.vdpa.errors import VdpaError

__all__ = ["VdpaError"]
