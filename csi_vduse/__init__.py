"""csi-vduse: Kubernetes volumes as virtio-blk devices emulated in userspace through VDUSE."""

__version__ = "0.1.0"
