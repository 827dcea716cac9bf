"""Managed devices: create, delete and list VDUSE block devices with their dataplanes."""

from csi_vduse.devices.errors import DeviceError

__all__ = ["DeviceError"]
