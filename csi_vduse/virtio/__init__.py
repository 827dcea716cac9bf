"""Virtio facts shared by the control plane (device description) and the dataplane."""
