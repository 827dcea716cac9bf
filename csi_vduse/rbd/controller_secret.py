"""The controller's own Ceph credentials, for the calls the CO sends without secrets:
ListVolumes, ControllerGetVolume, GetCapacity, and ListSnapshots without a list secret.

They are a directory holding ``userID`` and ``userKey`` files: a Kubernetes Secret mounted
as a volume, the same kind of Secret a StorageClass names. A subdirectory named for a
clusterID holds that cluster's, where it differs. The files are read at each call, so a
rotated Secret takes effect without a restart; their values reach no log or message.
"""

from __future__ import annotations

import errno
from pathlib import Path

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.rbd.credentials import USER_ID, USER_KEY
from csi_vduse.rbd.errors import RbdVolumeError

MAX_BYTES = 4096  # a cephx id or key is far shorter


class ControllerSecret:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def check(self) -> None:
        """RbdVolumeError (ENOENT) where the directory is not there: a mistake to report at
        start, not at the first call."""
        if not self.directory.is_dir():
            raise RbdVolumeError(
                "read the controller's Ceph credentials",
                f"{self.directory} is no directory (mount a Secret with {USER_ID} and "
                f"{USER_KEY} there)",
                errno.ENOENT,
            )

    def secrets(self, cluster: CephCluster) -> dict[str, str]:
        """The credentials for ``cluster``: its own subdirectory's, else the directory's.
        RbdVolumeError ENOKEY where neither has both files."""
        for place in (self.directory / cluster.id, self.directory):
            found = {key: _read(place / key) for key in (USER_ID, USER_KEY)}
            if all(found.values()):
                return {key: value for key, value in found.items() if value}
        raise RbdVolumeError(
            "read the controller's Ceph credentials",
            f"neither {self.directory / cluster.id} nor {self.directory} holds {USER_ID} and "
            f"{USER_KEY} for Ceph cluster {cluster.id}",
            errno.ENOKEY,
        )


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise RbdVolumeError(
            "read the controller's Ceph credentials", f"{path}: {exc.strerror}", exc.errno
        ) from None
    return data.decode(errors="replace").strip() or None
