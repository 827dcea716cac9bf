"""Fixtures for tests against the real VDUSE kernel (run in the test VM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from csi_vduse.devices import dataplane_process
from tests.ceph import CephClient
from tests.ceph.fixtures import clusters_file
from tests.driver import Driver

CLI = [sys.executable, "-m", "csi_vduse"]


@dataclass
class Cli:
    """Runs the real ``csi-vduse`` command with a private state directory."""

    state_dir: Path

    def run(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {**os.environ, "CSI_VDUSE_STATE_DIR": str(self.state_dir), **env}
        done = subprocess.run(
            [*CLI, "-v", *args],
            check=False,
            capture_output=True,
            text=True,
            env=environ,
            timeout=300,
        )
        sys.stderr.write(done.stderr)
        if check and done.returncode != 0:
            raise AssertionError(f"csi-vduse {' '.join(args)} failed:\n{done.stderr}")
        return done

    def create(self, name: str, backing: Path, *extra: str) -> Path:
        out = self.run("device", "create", name, "--backing", str(backing), *extra).stdout
        return Path(out.strip())

    def delete(self, name: str) -> None:
        self.run("device", "delete", name)

    def list(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = json.loads(self.run("device", "list", "--json").stdout)
        return devices


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    tool = Cli(tmp_path / "state")
    yield tool
    # Whatever a test left, tear it down so later tests start clean.
    for device in tool.list():
        tool.run("device", "delete", device["name"], check=False)


@pytest.fixture
def central(tmp_path: Path, ceph_client: CephClient) -> Iterator[Driver]:
    """``serve --controller --ceph-clusters FILE``: the central instance, no pool."""
    clusters = clusters_file(tmp_path, ceph_client)
    driver = Driver(tmp_path / "driver", node=False, extra=["--ceph-clusters", str(clusters)])
    driver.start()
    yield driver
    driver.stop()


def dataplane_pids(name: str) -> list[int]:
    """Processes running a dataplane for device ``name``."""
    return dataplane_process.pids_of(name)


def dataplane_pid(name: str) -> int:
    pids = dataplane_pids(name)
    if not pids:
        raise AssertionError(f"no dataplane process for {name}")
    return pids[0]


def leftovers(name: str) -> list[str]:
    """Everything of device ``name`` still present on the machine."""
    found = [
        path for path in (f"/dev/vduse/{name}", f"/sys/class/vduse/{name}") if Path(path).exists()
    ]
    if Path(f"/sys/bus/vdpa/devices/{name}").exists():
        found.append(f"vdpa device {name}")
    found += [f"dataplane pid {pid}" for pid in dataplane_pids(name)]
    return found


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done
