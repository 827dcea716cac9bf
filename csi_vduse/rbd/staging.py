"""What a node needs to serve an RBD volume: the image as a device's backing
(``RbdSource``) and the key it reads, from the clusters file and the node-stage secrets.

The secrets are ceph-csi's (``userID``, ``userKey``: ``credentials``); the key is kept in
the node's key files (``keyfiles``), which the source names, so a successor dataplane
started long after this call still reaches the cluster. Nothing here logs a key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from csi_vduse.ceph import clusters
from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.devices.rbd_source import RbdSource
from csi_vduse.rbd import credentials
from csi_vduse.rbd.ids import RbdVolumeId
from csi_vduse.rbd.keyfiles import KeyFiles


@dataclass(frozen=True, kw_only=True)
class StagedImage:
    """The image a device is to serve, and the key its source's key file must hold."""

    source: RbdSource
    key: str = field(repr=False)


log = logging.getLogger(__name__)


class RbdStaging:
    def __init__(
        self, known: Mapping[str, CephCluster], keys: KeyFiles, *,
        clusters_file: Path | None = None,
    ) -> None:  # fmt: skip
        """``known``: the clusters as read at start; ``clusters_file``, where they are read
        again at each stage (a ConfigMap an operator edits while the plugin runs)."""
        self.clusters = dict(known)
        self.keys = keys
        self.clusters_file = clusters_file

    def _current(self) -> dict[str, CephCluster]:
        if self.clusters_file is None:
            return self.clusters
        try:
            self.clusters = clusters.load(self.clusters_file)
        except clusters.ClusterConfigError as exc:
            log.warning("%s; staging with the clusters as last read", exc)
        return self.clusters

    def image(
        self, volume_id: RbdVolumeId, *, pool: str, image: str, secrets: Mapping[str, str]
    ) -> StagedImage:
        cluster = credentials.cluster(self._current(), volume_id.cluster)
        access = credentials.access(
            secrets, cluster, op_timeout=0, connect_timeout=credentials.CONNECT_TIMEOUT
        )
        source = RbdSource(
            pool=pool, image=image, namespace=cluster.rados_namespace, user=access.user,
            mon_host=cluster.mon_host, keyfile=str(self.keys.path(str(volume_id))),
            connect_timeout=access.connect_timeout, pool_id=volume_id.pool_id,
            clusters_file=str(self.clusters_file) if self.clusters_file else None,
            cluster_id=volume_id.cluster,
        )  # fmt: skip
        return StagedImage(source=source, key=access.key)
