"""Kernel block devices mapped from a cluster: krbd (``/dev/rbdN``) and rbd-nbd (``/dev/nbdN``).

A mapping outliving its cluster hangs every I/O to it, so taking a cluster down first
removes the ones that are its: krbd devices by the cluster's fsid, nbd devices by the
``rbd-nbd`` process that serves them.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

RBD_BUS = Path("/sys/bus/rbd")
BLOCK = Path("/sys/block")


def krbd_devices(fsid: str | None = None) -> list[str]:
    """Ids of mapped krbd devices (of the cluster ``fsid``, or all)."""
    devices = RBD_BUS / "devices"
    if not devices.is_dir():
        return []
    return sorted(
        entry.name
        for entry in devices.iterdir()
        if fsid is None or _read(entry / "cluster_fsid") == fsid
    )


def remove_krbd(device_id: str) -> None:
    """Unmap krbd device ``device_id`` even if it is open or its cluster is gone."""
    # With one major for all devices (the default) the kernel refuses the plain "remove".
    single = RBD_BUS / "remove_single_major"
    try:
        (single if single.exists() else RBD_BUS / "remove").write_text(f"{device_id} force")
    except OSError as exc:
        log.warning("ceph: could not remove krbd device rbd%s: %s", device_id, exc)
    else:
        log.info("ceph: removed krbd device rbd%s", device_id)


def nbd_servers() -> dict[str, int]:
    """Connected nbd devices and the pid of the process serving each."""
    found = {}
    for pid_file in BLOCK.glob("nbd*/pid"):
        with contextlib.suppress(ValueError):
            found[pid_file.parent.name] = int(_read(pid_file))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
