"""The Ceph clusters a driver may serve volumes from, read from ceph-csi's config file.

ceph-csi's ConfigMap ``ceph-csi-config`` holds ``config.json``: a list of clusters, each a
``clusterID`` that StorageClasses name, its ``monitors``, and per-kind settings (we read
``rbd.radosNamespace``). The same file works here unchanged, so a cluster moving over from
ceph-csi keeps its ConfigMap; keys we do not use (``cephFS``, ``readAffinity``...) are
ignored. A clusterID becomes part of every volume id, so it is limited to what an id can
carry: letters, digits, ``.``, ``_`` and ``-``, at most ``MAX_ID`` characters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csi_vduse.errors import CsiVduseError

MAX_ID = 64
MAX_BYTES = 1 << 20
_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_ID}}}")
_MONITOR = re.compile(r"[\[\]A-Za-z0-9.:,/_-]+")


class ClusterConfigError(CsiVduseError):
    """The clusters file is unreadable or says something we cannot use."""


@dataclass(frozen=True, kw_only=True)
class CephCluster:
    id: str
    monitors: tuple[str, ...]
    rados_namespace: str = ""

    @property
    def mon_host(self) -> str:
        """The monitors as librados's ``mon_host`` takes them."""
        return ",".join(self.monitors)


def parse(text: str, *, origin: str = "the clusters file") -> dict[str, CephCluster]:
    """The clusters in ceph-csi's ``config.json`` format, by clusterID."""
    try:
        entries: Any = json.loads(text)
    except ValueError as exc:
        raise ClusterConfigError("read Ceph clusters", f"{origin} is not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ClusterConfigError("read Ceph clusters", f"{origin} is not a JSON list of clusters")
    clusters: dict[str, CephCluster] = {}
    for index, entry in enumerate(entries):
        cluster = _cluster(entry, f"{origin}, entry {index}")
        if cluster.id in clusters:
            raise ClusterConfigError(
                "read Ceph clusters", f"{origin} names clusterID {cluster.id} twice"
            )
        clusters[cluster.id] = cluster
    return clusters


def load(path: Path) -> dict[str, CephCluster]:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        why = f"{path}: {exc.strerror}"
        raise ClusterConfigError("read Ceph clusters", why, exc.errno) from exc
    if len(data) > MAX_BYTES:
        raise ClusterConfigError("read Ceph clusters", f"{path} is over {MAX_BYTES} bytes")
    return parse(data.decode(errors="replace"), origin=str(path))


def _cluster(entry: Any, where: str) -> CephCluster:
    def bad(why: str) -> ClusterConfigError:
        return ClusterConfigError("read Ceph clusters", f"{where}: {why}")

    if not isinstance(entry, dict):
        raise bad("not a JSON object")
    cluster_id = entry.get("clusterID")
    if not isinstance(cluster_id, str) or not _ID.fullmatch(cluster_id):
        raise bad(f"clusterID {cluster_id!r} must be 1-{MAX_ID} letters, digits, '.', '_' or '-'")
    monitors = entry.get("monitors")
    if (
        not isinstance(monitors, list)
        or not monitors
        or not all(isinstance(m, str) and _MONITOR.fullmatch(m) for m in monitors)
    ):
        raise bad(f"cluster {cluster_id}: monitors must be a list of addresses (host:port)")
    rbd = entry.get("rbd") or {}
    namespace = rbd.get("radosNamespace", "") if isinstance(rbd, dict) else None
    if not isinstance(namespace, str) or "/" in namespace or "@" in namespace:
        raise bad(f"cluster {cluster_id}: rbd.radosNamespace must be a plain name")
    return CephCluster(id=cluster_id, monitors=tuple(monitors), rados_namespace=namespace)
