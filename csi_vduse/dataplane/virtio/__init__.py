"""The virtio device layer: IOTLB mappings, split virtqueues, VDUSE control messages."""
