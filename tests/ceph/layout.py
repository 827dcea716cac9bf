"""Where everything of one test cluster lives, and what it records about itself.

Every path is under one directory, so taking the cluster down is removing that directory
once its daemons are stopped. ``cluster.json`` marks the directory as a cluster's: nothing
without it is ever removed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

MON_ID = "a"
MGR_ID = "x"


@dataclass(frozen=True)
class Layout:
    """The paths of the cluster rooted at ``root``."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    @property
    def state(self) -> Path:
        return self.root / "cluster.json"

    @property
    def mon_keyring(self) -> Path:
        return self.root / "mon.keyring"

    @property
    def monmap(self) -> Path:
        return self.root / "monmap"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def mon_data(self) -> Path:
        return self.root / "mon" / f"ceph-{MON_ID}"

    @property
    def mgr_data(self) -> Path:
        return self.root / "mgr" / f"ceph-{MGR_ID}"

    def osd_data(self, osd_id: int) -> Path:
        return self.root / "osd" / f"ceph-{osd_id}"

    @property
    def osd_image(self) -> Path:
        """The sparse file under the OSD's loop device."""
        return self.root / "osd.img"

    def keyring(self, user: str) -> Path:
        """The keyring of ``client.<user>`` (the config points clients here)."""
        return self.root / f"client.{user}.keyring"

    def pid_file(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.log_dir / f"{daemon}.log"

    def output_file(self, daemon: str) -> Path:
        """The daemon's stdout and stderr: what it says before its log is open."""
        return self.log_dir / f"{daemon}.out"


@dataclass
class State:
    """What ``up`` decided, kept in ``cluster.json`` for ``down`` and for other processes."""

    fsid: str
    host: str
    v2_port: int
    v1_port: int
    osd_id: int | None = None

    @property
    def mon_host(self) -> str:
        """Both monitor addresses: v2 for librados, v1 for the kernel client (krbd)."""
        return f"[v2:{self.host}:{self.v2_port},v1:{self.host}:{self.v1_port}]"

    def save(self, layout: Layout) -> None:
        tmp = layout.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        tmp.replace(layout.state)

    @classmethod
    def load(cls, layout: Layout) -> State | None:
        """The recorded state, or None where no cluster was ever started."""
        try:
            return cls(**json.loads(layout.state.read_text()))
        except FileNotFoundError:
            return None
