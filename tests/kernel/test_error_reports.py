"""Failures name the step and the cause, and leave nothing behind."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.kernel.conftest import CLI, Cli, leftovers, sh

pytestmark = pytest.mark.vm


@contextmanager
def unloaded(module: str) -> Iterator[None]:
    sh("rmmod", module)
    try:
        yield
    finally:
        sh("modprobe", module)


def create_fails(cli: Cli, name: str, backing: Path, **env: str) -> str:
    done = cli.run("device", "create", name, "--backing", str(backing), "--size", "8M",
                   check=False, **env)  # fmt: skip
    assert done.returncode == 1
    assert not backing.exists(), "a backing file made by a failed create must be removed"
    assert leftovers(name) == []
    assert cli.list() == []
    return done.stderr


def test_missing_vduse_module_is_named(cli: Cli, tmp_path: Path) -> None:
    with unloaded("vduse"):
        stderr = create_fails(cli, "nomod0", tmp_path / "a.img")
    assert "open /dev/vduse/control" in stderr
    assert "vduse kernel module is not loaded" in stderr


def test_missing_virtio_vdpa_module_is_named(cli: Cli, tmp_path: Path) -> None:
    with unloaded("virtio_vdpa"):
        stderr = create_fails(cli, "nomod1", tmp_path / "b.img")
    assert "check kernel" in stderr
    assert "virtio_vdpa module is not loaded" in stderr


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="csi-vduse-shared-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def test_unprivileged_user_gets_permission_denied(shared_dir: Path) -> None:
    backing = shared_dir / "c.img"
    done = sh(*NOBODY, f"CSI_VDUSE_STATE_DIR={shared_dir / 'state'}", *CLI, "device", "create",
              "noperm0", "--backing", str(backing), "--size", "8M", check=False)  # fmt: skip
    assert done.returncode == 1
    assert "open /dev/vduse/control" in done.stderr
    assert "permission denied" in done.stderr
    assert "Traceback" not in done.stderr
    assert not backing.exists()
    assert leftovers("noperm0") == []


def test_unusable_state_directory_is_reported_not_a_traceback(shared_dir: Path) -> None:
    state = shared_dir / "root-only"
    state.mkdir(mode=0o700)
    done = sh(*NOBODY, f"CSI_VDUSE_STATE_DIR={state}", *CLI, "device", "create", "nostate0",
              "--backing", str(shared_dir / "d.img"), "--size", "8M", check=False)  # fmt: skip
    assert done.returncode == 1
    assert "state directory: cannot lock the device" in done.stderr
    assert "Traceback" not in done.stderr
    assert leftovers("nostate0") == []


def test_invalid_name_is_refused_before_anything_is_made(cli: Cli, tmp_path: Path) -> None:
    done = cli.run("device", "create", "bad/name", "--backing", str(tmp_path / "d.img"),
                   "--size", "8M", check=False)  # fmt: skip
    assert done.returncode == 1
    assert "validate: invalid device name" in done.stderr
    assert not (tmp_path / "d.img").exists()


def test_existing_backing_file_of_another_size_is_not_resized(cli: Cli, tmp_path: Path) -> None:
    backing = tmp_path / "e.img"
    backing.write_bytes(b"\x5a" * (4 << 20))
    done = cli.run("device", "create", "resize0", "--backing", str(backing), "--size", "8M",
                   check=False)  # fmt: skip
    assert done.returncode == 1
    assert "refusing to resize" in done.stderr
    assert backing.read_bytes() == b"\x5a" * (4 << 20)
    assert leftovers("resize0") == []
