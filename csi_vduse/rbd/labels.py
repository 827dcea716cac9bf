"""What an image of ours says about itself, in its metadata: the CO's name for it, the
parameters it was made with, the snapshot or volume it was made from, and (a snapshot's)
when it was taken.

librbd copies an image's metadata into its clones, so a restored volume, a volume's clone
and a snapshot's image start with their parent's labels. Each image therefore also names
itself (``OWNER_KEY``), and labels under another image's name are not its own: they read as
none. An image is ``claim``ed, its source and time written, as soon as it is made, and
``finish``ed, its name written last, once complete: a call that dies half-way leaves an
image without a name, which the next call finishes, and whose source it can check.

Images made before ``OWNER_KEY`` existed carry their labels without it; they are no clones,
and their labels are read as their own.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from csi_vduse.ceph.image import RbdError
from csi_vduse.ceph.lineage import Lineage
from csi_vduse.ceph.pool import RbdPool

NAME_KEY = "csi.vduse.name"  # the CO's name for the volume or snapshot
PARAMETERS_KEY = "csi.vduse.parameters"  # a volume's StorageClass parameters
SOURCE_KEY = "csi.vduse.source"  # the snapshot or volume it was made from ("" for none)
CREATED_KEY = "csi.vduse.created"  # a snapshot's time, in nanoseconds since the epoch
OWNER_KEY = "csi.vduse.image"  # the image these labels belong to


@dataclass(frozen=True, kw_only=True)
class Labels:
    claimed: bool = False  # ours: made by a call of ours, finished or not
    name: str | None = None  # None: not finished
    parameters: str | None = None
    source: str | None = None
    created_ns: int | None = None


def read(pool: RbdPool, image: str) -> Labels:
    """``image``'s own labels (read in one open); none where it has only those it inherited,
    or none at all. RbdError ENOENT where there is no such image."""
    facts = pool.describe(image)
    if facts is None:
        raise RbdError("read labels of RBD image", f"{pool.name}/{image} does not exist",
                       errno.ENOENT)  # fmt: skip
    return of(image, facts.metadata, inherited=lambda: Lineage(pool).parent(image) is not None)


def of(image: str, metadata: Mapping[str, str], *, inherited: Callable[[], bool]) -> Labels:
    """The labels ``metadata`` (all of ``image``'s) hold of ``image`` itself. ``inherited``
    says whether the image is a clone, asked only of images labelled before ``OWNER_KEY``."""
    owner = metadata.get(OWNER_KEY)
    if owner is None:
        if NAME_KEY not in metadata or inherited():
            return Labels()  # none, or its parent's
    elif owner != image:
        return Labels()
    created = metadata.get(CREATED_KEY)
    return Labels(
        claimed=True,
        name=metadata.get(NAME_KEY) or None,  # "": claimed, not finished
        parameters=metadata.get(PARAMETERS_KEY) or None,
        source=metadata.get(SOURCE_KEY),
        created_ns=int(created) if created and created.isdigit() else None,
    )


def claim(pool: RbdPool, image: str, *, source: str, created_ns: int | None = None) -> None:
    """Mark a new ``image`` ours, made from ``source`` (at ``created_ns``, a snapshot); what
    it inherited of its parent's labels is overwritten first."""
    pool.set_metadata(image, key=NAME_KEY, value="")
    pool.set_metadata(image, key=PARAMETERS_KEY, value="")
    pool.set_metadata(image, key=SOURCE_KEY, value=source)
    pool.set_metadata(image, key=CREATED_KEY, value=str(created_ns or ""))
    pool.set_metadata(image, key=OWNER_KEY, value=image)


def finish(pool: RbdPool, image: str, *, name: str, parameters: str = "") -> None:
    """Name a claimed ``image``: it is complete."""
    pool.set_metadata(image, key=PARAMETERS_KEY, value=parameters)
    pool.set_metadata(image, key=NAME_KEY, value=name)  # last: the image is complete
