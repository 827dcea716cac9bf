"""The virtio-blk layer: turns descriptor chains into storage operations."""
