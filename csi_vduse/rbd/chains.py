"""How long clone chains get: the flatten policy.

Restoring a snapshot and cloning a volume make format-2 clones (``ceph.lineage``), which
read what they have not written from their parent, and it from its own. Each CSI snapshot is
itself a clone of its volume (``rbd.snapshots``), so a volume restored from a snapshot of a
restored volume is four images down, and so on. A new image with more than
``limit`` images above it (``serve --rbd-chain-limit``, default ``CHAIN_LIMIT``) is
flattened before the call that makes it returns: its data is copied in and its links cut.
So no image has more than ``limit`` ancestors,
a read never walks further, and removing any image stays possible (it then leaves a parent
nothing needs, which ``rbd.removal`` reaps).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the server reads the limits without loading librbd
    from csi_vduse.ceph.lineage import Lineage

log = logging.getLogger(__name__)

CHAIN_LIMIT = 4  # ancestors an image may have (ceph-csi's soft limit is also 4)
MAX_CHAIN_LIMIT = 16  # as far up as lineage.c looks (CV_MAX_ANCESTORS)


def bound(lineage: Lineage, image: str, *, limit: int) -> bool:
    """Flatten ``image`` if its chain is longer than ``limit``; whether it was."""
    ancestors = lineage.ancestors(image)
    if ancestors <= limit:
        return False
    log.info(
        "flattening RBD image %s/%s: %d images above it, more than %d",
        lineage.pool.name, image, ancestors, limit,
    )  # fmt: skip
    lineage.flatten(image)
    return True
