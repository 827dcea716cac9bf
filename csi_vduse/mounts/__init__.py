"""Filesystems and mounts on the node: probe, format, check, mount, bind, grow."""
