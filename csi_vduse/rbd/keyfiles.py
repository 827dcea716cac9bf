"""The node's copies of the Ceph keys its staged RBD volumes use, kept in memory only.

A dataplane that dies is replaced by a successor, possibly started by the driver's next
instance, long after the NodeStageVolume that carried the key; so the node keeps each
staged volume's key, as the key alone in a 0600 file, named by its volume id, in a
directory that must be on tmpfs (``/run``): a key never reaches a disk, and a reboot,
which ends every device, ends every key with them. The device record names the file
(``RbdSource.keyfile``), never the key; unstaging removes it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from csi_vduse.durable import write_atomic
from csi_vduse.mounts import mountinfo
from csi_vduse.rbd.errors import RbdVolumeError

MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


class KeyFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def check(self) -> None:
        """Make the directory (0700) and refuse one that is not in memory."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise RbdVolumeError(
                "key directory", f"cannot make {self.directory}: {exc.strerror}", exc.errno
            ) from exc
        mount = mountinfo.holding(self.directory)
        if mount is None or mount.fs_type not in MEMORY_FILESYSTEMS:
            kind = mount.fs_type if mount else "an unknown filesystem"
            raise RbdVolumeError(
                "key directory",
                f"{self.directory} is on {kind}, not tmpfs: Ceph keys must never reach a disk "
                "(use a directory under /run)",
                errno.EINVAL,
            )

    def path(self, volume_id: str) -> Path:
        """Where the key of ``volume_id`` (an id, so a safe file name) is kept."""
        return self.directory / volume_id

    def write(self, volume_id: str, *, key: str) -> Path:
        self.check()
        path = self.path(volume_id)
        try:
            write_atomic(path, key + "\n")
        except OSError as exc:
            raise RbdVolumeError(
                "key directory", f"cannot write {path}: {exc.strerror}", exc.errno
            ) from exc
        return path

    def keep(self, volume_id: str, *, key: str) -> None:
        """Write the key of ``volume_id`` unless one is kept already."""
        if not self.path(volume_id).exists():
            self.write(volume_id, key=key)

    def remove(self, volume_id: str) -> None:
        self.path(volume_id).unlink(missing_ok=True)
