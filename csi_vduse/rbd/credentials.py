"""The CO's secrets, as ceph-csi's StorageClasses name them, turned into access to a cluster.

A Secret holds ``userID`` (the cephx id, without ``client.``) and ``userKey``; the same
Secret a ceph-csi StorageClass points at works here. Nothing here puts a secret's value in
a message: errors name the keys that are missing or wrong, never what they hold.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.ceph.target import CephAccess, TargetError
from csi_vduse.rbd.errors import RbdVolumeError

USER_ID = "userID"
USER_KEY = "userKey"
CONNECT_TIMEOUT = 30  # seconds to reach a cluster's monitors, controller or dataplane


def cluster(clusters: Mapping[str, CephCluster], cluster_id: str) -> CephCluster:
    """The cluster ``cluster_id`` names in the clusters file."""
    found = clusters.get(cluster_id)
    if found is None:
        known = ", ".join(sorted(clusters)) or "none"
        raise RbdVolumeError(
            "find Ceph cluster",
            f"clusterID {cluster_id} is not in the clusters file (it has: {known})",
            errno.ENXIO,
        )
    return found


def access(
    secrets: Mapping[str, str], cluster: CephCluster, *, op_timeout: int, connect_timeout: int
) -> CephAccess:
    """How to reach ``cluster`` as the user the secrets name."""
    missing = [key for key in (USER_ID, USER_KEY) if not secrets.get(key)]
    if missing:
        raise RbdVolumeError(
            "read Ceph credentials",
            f"the secrets lack {' and '.join(missing)} (a Secret with {USER_ID} and "
            f"{USER_KEY}, named by the StorageClass's csi.storage.k8s.io/*-secret-name)",
            errno.EINVAL,
        )
    try:
        return CephAccess(
            user=secrets[USER_ID], key=secrets[USER_KEY], mon_host=cluster.mon_host,
            connect_timeout=connect_timeout, op_timeout=op_timeout,
        )  # fmt: skip
    except TargetError as exc:  # its messages never hold the key
        raise RbdVolumeError("read Ceph credentials", str(exc), errno.EINVAL) from None
