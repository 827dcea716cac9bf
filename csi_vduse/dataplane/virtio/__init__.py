"""The virtio device layer: VDUSE control messages, and the contract with what serves queues."""
