"""Volume, snapshot and group snapshot ids: derived from the CO's names, safe as file and
device names.

An id is a prefix and 32 hex digits of the SHA-256 of the name the CO chose, so a
repeated CreateVolume finds the same volume, and every id is a valid VDUSE device name
(at most 64 characters from a small alphabet) that can never escape the pool directory.
"""

from __future__ import annotations

import hashlib
import re

VOLUME_PREFIX = "vol-"
SNAPSHOT_PREFIX = "snap-"
GROUP_PREFIX = "group-"
_DIGEST_CHARS = 32
_VOLUME_ID = re.compile(rf"{VOLUME_PREFIX}[0-9a-f]{{{_DIGEST_CHARS}}}")
_SNAPSHOT_ID = re.compile(rf"{SNAPSHOT_PREFIX}[0-9a-f]{{{_DIGEST_CHARS}}}")
_GROUP_ID = re.compile(rf"{GROUP_PREFIX}[0-9a-f]{{{_DIGEST_CHARS}}}")


def digest(name: str) -> str:
    """The hex digits every id of ``name`` ends in (an RBD volume's too, ``csi_vduse.rbd``)."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]


def volume_id_for(name: str) -> str:
    return VOLUME_PREFIX + digest(name)


def snapshot_id_for(name: str) -> str:
    return SNAPSHOT_PREFIX + digest(name)


def group_snapshot_id_for(name: str) -> str:
    return GROUP_PREFIX + digest(name)


def member_snapshot_id(group_snapshot_id: str, *, volume_id: str) -> str:
    """The snapshot of ``volume_id`` in a group: the same on every retry of its create."""
    return snapshot_id_for(f"{group_snapshot_id}/{volume_id}")


def is_volume_id(text: str) -> bool:
    return _VOLUME_ID.fullmatch(text) is not None


def is_snapshot_id(text: str) -> bool:
    return _SNAPSHOT_ID.fullmatch(text) is not None


def is_group_snapshot_id(text: str) -> bool:
    return _GROUP_ID.fullmatch(text) is not None
