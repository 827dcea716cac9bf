"""How to reach a Ceph cluster (``target.CephAccess``), handed over to ``cluster.c``.

librados reads no file but the configuration the access carries, which it reads from a
memfd here; it never sees a path of ours, and the key never reaches a log or a message.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from csi_vduse.ceph._librbd import ffi
from csi_vduse.ceph.target import CephAccess


@contextlib.contextmanager
def c_target(access: CephAccess) -> Iterator[Any]:
    """A ``struct cv_cluster_target *`` for ``access``, valid inside the block."""
    conf_fd = os.memfd_create("ceph.conf", os.MFD_CLOEXEC) if access.conf else -1
    try:
        if conf_fd >= 0:
            os.write(conf_fd, access.conf.encode())
        conf = f"/proc/self/fd/{conf_fd}" if conf_fd >= 0 else ""
        strings = [conf, access.mon_host, access.user, access.key]
        keep = [ffi.new("char[]", value.encode()) for value in strings]
        target = ffi.new("struct cv_cluster_target *")
        target.conf_path, target.mon_host, target.user, target.key = keep
        target.connect_timeout = access.connect_timeout
        target.op_timeout = access.op_timeout
        yield target
    finally:
        if conf_fd >= 0:
            os.close(conf_fd)
