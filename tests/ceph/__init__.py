"""A real one-node Ceph (one monitor, one BlueStore OSD) for tests, all under one directory.

``CephCluster`` brings it up and down; ``python -m tests.ceph up|down|env DIR`` does the
same by hand on a development host.
"""

from tests.ceph.client import CephClient
from tests.ceph.cluster import CephCluster
from tests.ceph.errors import CephError

__all__ = ["CephClient", "CephCluster", "CephError"]
