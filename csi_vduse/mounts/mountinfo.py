"""What is mounted where, read from /proc/self/mountinfo."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, kw_only=True)
class Mount:
    mount_point: str
    root: str  # the path inside the source filesystem (bind mounts show theirs)
    fs_type: str
    source: str
    options: frozenset[str]


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def mounts() -> list[Mount]:
    found = []
    for line in MOUNTINFO.read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        tail = after.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        found.append(
            Mount(
                mount_point=_unescape(fields[4]),
                root=_unescape(fields[3]),
                fs_type=tail[0],
                source=_unescape(tail[1]),
                options=frozenset(fields[5].split(",")),
            )
        )
    return found


def mount_at(path: Path | str) -> Mount | None:
    """The topmost mount whose mount point is exactly ``path``, if any."""
    target = os.path.realpath(path)
    found = None
    for mount in mounts():
        if mount.mount_point == target:
            found = mount
    return found


def is_mount_point(path: Path | str) -> bool:
    return mount_at(path) is not None


def holding(path: Path | str) -> Mount | None:
    """The mount whose filesystem ``path`` lies on: the topmost at the deepest mount point
    above it."""
    target = os.path.realpath(path)
    found = None
    for mount in mounts():
        point = mount.mount_point
        under = target == point or target.startswith(point.rstrip("/") + "/")
        if under and (found is None or len(point) >= len(found.mount_point)):
            found = mount
    return found
