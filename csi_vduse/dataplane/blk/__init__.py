"""The virtio-blk device: its profile, its backing file and online growth."""
