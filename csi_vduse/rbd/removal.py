"""Removing the images of volumes and snapshots, whatever clones still read from them.

A volume's image may carry snapshots that clones need: those its CSI snapshots were cloned
from and those volume clones were made from (``rbd.snapshots``, ``rbd.volumes``). Once
removed, such a snapshot waits in the image's trash namespace for its last clone, and the
image itself, which cannot go before it, is moved to the pool's trash. ``reap`` then removes
it, at the end of every removal, once nothing needs it any more; it removes nothing it
cannot tell is ours by its labels (``labels.OWNER_KEY``), whatever its name. The CO sees
the volume or snapshot gone at once, as Kubernetes expects; Ceph frees its space when the
last user goes.

A snapshot someone else made (``rbd snap create``) is not ours to remove: the image is
refused, ENOTEMPTY, naming it.
"""

from __future__ import annotations

import errno
import logging

from csi_vduse.ceph.image import RbdError
from csi_vduse.ceph.lineage import Lineage
from csi_vduse.rbd import labels
from csi_vduse.rbd.errors import RbdVolumeError

log = logging.getLogger(__name__)

OURS = ("csi-vol-", "csi-snap-")  # the images we make, and reap from the trash
TEMPORARY = ("csi-snap-", "csi-clone-")  # the snapshots we make on a volume's image


def remove(lineage: Lineage, image: str, *, what: str) -> None:
    """Remove ``image`` (``what`` it is, for messages), or move it to the trash while clones
    of its snapshots live; nothing to do where it is gone."""
    try:
        lineage.pool.remove(image)
    except RbdError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
            raise
        if exc.errno != errno.ENOENT:  # gone: perhaps to the trash, by a call before us
            _refuse_if_in_use(lineage, image, what=what)
            _retire(lineage, image, what=what)
    reap(lineage)


def _refuse_if_in_use(lineage: Lineage, image: str, *, what: str) -> None:
    """EBUSY, naming them, while clients have ``image`` open: a node still serves it."""
    if users := lineage.pool.watchers(image):
        raise RbdVolumeError(
            f"delete {what}",
            f"image {lineage.pool.name}/{image} is in use by {', '.join(users)}: unstage it first",
            errno.EBUSY,
        )


def _retire(lineage: Lineage, image: str, *, what: str) -> None:
    """Remove our snapshots of ``image``; then remove it, or trash it where clones still
    need some of them."""
    snapshots = lineage.snapshots(image)
    foreign = [name for name in snapshots.names if not name.startswith(TEMPORARY)]
    if foreign:
        raise RbdVolumeError(
            f"delete {what}",
            f"image {lineage.pool.name}/{image} has snapshots not made through CSI: "
            f"{', '.join(foreign)}; remove them first",
            errno.ENOTEMPTY,
        )
    for name in snapshots.names:
        lineage.remove_snapshot(image, name=name)  # kept in the trash namespace for its clones
    try:
        lineage.pool.remove(image)
    except RbdError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY):
            raise
        lineage.trash(image)
        log.info(
            "moved RBD image %s/%s to the trash: clones still read from it",
            lineage.pool.name, image,
        )  # fmt: skip


def reap(lineage: Lineage) -> None:
    """Remove the images of ours in the pool's trash that nothing needs any more: again
    while that frees more (a parent goes once its last trashed child has)."""
    removed = 0
    while reaped := sum(lineage.reap(prefix, owner_key=labels.OWNER_KEY) for prefix in OURS):
        removed += reaped
    if removed:
        log.info("removed %d RBD image(s) from the trash of pool %s", removed, lineage.pool.name)
