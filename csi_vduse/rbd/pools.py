"""The pools of the clusters the driver knows, reached per call with the caller's secrets.

Each call of the RBD volume layer connects with the credentials the CO passed for it and
disconnects when done; nothing is kept between calls. What Ceph says becomes an
``RbdVolumeError`` with its errno.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.ceph.image import RbdError
from csi_vduse.ceph.pool import RbdPool
from csi_vduse.ceph.survey import Survey
from csi_vduse.ceph.target import CephAccess
from csi_vduse.rbd import credentials
from csi_vduse.rbd.errors import RbdVolumeError

OP_TIMEOUT = 60  # seconds a controller call waits on an OSD or a monitor


class Pools:
    def __init__(self, clusters: Mapping[str, CephCluster], *, op_timeout: int = OP_TIMEOUT):
        self.clusters = dict(clusters)
        self.op_timeout = op_timeout

    def survey(self, cluster_id: str, secrets: Mapping[str, str]) -> AbstractContextManager[Survey]:
        """Cluster ``cluster_id`` as a whole, connected as the user ``secrets`` name."""
        return _translated(lambda: Survey(self._access(cluster_id, secrets)))

    def _access(self, cluster_id: str, secrets: Mapping[str, str]) -> CephAccess:
        return credentials.access(
            secrets,
            credentials.cluster(self.clusters, cluster_id),
            op_timeout=self.op_timeout,
            connect_timeout=credentials.CONNECT_TIMEOUT,
        )

    def open(
        self, cluster_id: str, pool: str | int, secrets: Mapping[str, str]
    ) -> AbstractContextManager[RbdPool]:
        """Pool ``pool`` (a name, or an id) of cluster ``cluster_id``, connected as the
        user ``secrets`` name, for the ``with`` block."""
        namespace = credentials.cluster(self.clusters, cluster_id).rados_namespace
        return _translated(lambda: RbdPool(self._access(cluster_id, secrets), pool, namespace))


Opened = TypeVar("Opened", Survey, RbdPool)


@contextmanager
def _translated(open_: Callable[[], Opened]) -> Iterator[Opened]:
    """What ``open_`` opens, for the ``with`` block, its RbdErrors (opening it too) as
    RbdVolumeErrors."""
    try:
        opened = open_()
    except RbdError as exc:
        raise volume_error(exc) from exc
    with opened:
        try:
            yield opened
        except RbdError as exc:
            raise volume_error(exc) from exc


def volume_error(exc: RbdError) -> RbdVolumeError:
    return RbdVolumeError(exc.step, exc.message, exc.errno)
