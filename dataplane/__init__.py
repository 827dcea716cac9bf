"""The per-device dataplane process: serves one VDUSE virtio-blk device from its virtqueues."""

from dataplane.errors import DataplaneError

__all__ = ["DataplaneError"]
