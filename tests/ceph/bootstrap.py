"""Make a new cluster's keys, monitor store and OSD, as ``ceph-volume`` and cephadm would.

Keys are made by ``ceph-authtool`` into files or read from its stdout, and reach other
tools through files or stdin: never on a command line, where ``ps`` would show them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.ceph import commands, loopdev
from tests.ceph.errors import CephError
from tests.ceph.layout import MON_ID, Layout, State

log = logging.getLogger(__name__)

TOOL_SECONDS = 120.0
ADMIN_CAPS = ["--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"]

Ceph = Callable[..., subprocess.CompletedProcess[str]]  # CephCluster.ceph


def make_monitor(layout: Layout, state: State) -> None:
    """The monitor's and client.admin's keys, a monmap with both addresses, the mon store."""
    mon_keyring, admin_keyring = str(layout.mon_keyring), str(layout.keyring("admin"))
    create = ["ceph-authtool", "--create-keyring"]
    _tool([*create, mon_keyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"])
    _tool([*create, admin_keyring, "--gen-key", "-n", "client.admin", *ADMIN_CAPS])
    _tool(["ceph-authtool", mon_keyring, "--import-keyring", admin_keyring])
    monmap = str(layout.monmap)
    _tool(
        ["monmaptool", "--create", "--addv", MON_ID, state.mon_host, "--fsid", state.fsid, monmap]
    )
    conf = str(layout.conf)
    _tool(
        [
            "ceph-mon",
            "-c",
            conf,
            "--mkfs",
            "-i",
            MON_ID,
            "--monmap",
            monmap,
            "--keyring",
            mon_keyring,
        ]
    )


def make_osd(layout: Layout, ceph: Ceph, osd_size: int, deadline: float) -> int:
    """Register an OSD with the running monitor and make its BlueStore; its id.

    Its block is a loop device over a sparse file where one can be had, else a file
    BlueStore creates in the OSD's directory (which must take O_DIRECT).
    """
    osd_uuid = str(uuid.uuid4())
    secret = _tool(["ceph-authtool", "--gen-print-key"]).stdout.strip()
    registered = ceph("osd", "new", osd_uuid, "-i", "-", input=json.dumps({"cephx_secret": secret}))
    osd_id = int(registered.stdout.strip())
    data = layout.osd_data(osd_id)
    data.mkdir(parents=True)
    write_keyring(data / "keyring", f"osd.{osd_id}", secret)
    device = loopdev.attach(layout.osd_image, osd_size)
    if device is not None:
        (data / "block").symlink_to(device)
        log.info("ceph: osd.%d on %s over a sparse %s", osd_id, device, layout.osd_image)
    elif loopdev.supports_direct_io(data):
        log.info("ceph: osd.%d on a sparse file in %s", osd_id, data)
    else:
        raise CephError(
            f"no loop device, and {data} cannot be opened with O_DIRECT (tmpfs?): "
            "BlueStore needs one or the other"
        )
    mkfs = ["ceph-osd", "-c", str(layout.conf), "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid]
    commands.run(mkfs, timeout=max(1.0, deadline - time.monotonic()))
    return osd_id


def write_keyring(path: Path, entity: str, key: str) -> None:
    """A keyring file of one entity, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"[{entity}]\n\tkey = {key}\n")


def read_key(keyring: Path) -> str:
    """The key in a keyring file of one entity."""
    for line in keyring.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "key":
            return value.strip()
    raise CephError(f"no key in {keyring}")


def _tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return commands.run(argv, timeout=TOOL_SECONDS)
