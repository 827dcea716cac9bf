"""The test Ceph cluster's pieces that need no daemon: its config, records, keys, guards."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ceph import CephCluster, CephError, bootstrap, commands, conf, daemons, node
from tests.ceph.layout import Layout, State
from tests.vm import guest


def _state() -> State:
    return State(fsid="f5c0ffee-0000-4000-8000-000000000000", host="127.0.0.1",
                 v2_port=3300, v1_port=6789)  # fmt: skip


def _sections(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def test_config_gives_the_monitor_a_v2_and_a_v1_address_for_the_kernel_client(
    tmp_path: Path,
) -> None:
    text = conf.render(Layout(tmp_path), _state(), osd_size=1 << 30)
    assert _sections(text)["global"]["mon_host"] == "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]"


def test_config_requires_cephx_everywhere(tmp_path: Path) -> None:
    options = _sections(conf.render(Layout(tmp_path), _state(), osd_size=1 << 30))["global"]
    for kind in ("cluster", "service", "client"):
        assert options[f"auth_{kind}_required"] == "cephx"


def test_config_keeps_sockets_and_logs_to_the_daemons(tmp_path: Path) -> None:
    """Set globally, every rbd command would claim the daemons' socket and log."""
    sections = _sections(conf.render(Layout(tmp_path), _state(), osd_size=1 << 30))
    for name in ("global", "client"):
        assert "admin_socket" not in sections[name]
        assert "log_file" not in sections[name]
    for name in ("mon", "osd"):
        assert sections[name]["admin_socket"].startswith(str(tmp_path))


def test_config_lowers_the_osd_memory_target_to_bluestores_floor(tmp_path: Path) -> None:
    osd = _sections(conf.render(Layout(tmp_path), _state(), osd_size=1 << 30))["osd"]
    assert int(osd["osd_memory_target"]) == 896 << 20


def test_config_has_the_osd_give_freed_space_back_to_its_sparse_file(tmp_path: Path) -> None:
    """Overwrites go to new space: without discards the file (tmpfs, in the VM) only grows."""
    osd = _sections(conf.render(Layout(tmp_path), _state(), osd_size=1 << 30))["osd"]
    assert osd["bdev_enable_discard"] == "true"


def test_state_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    layout, state = Layout(tmp_path), _state()
    state.osd_id = 0
    state.save(layout)
    assert State.load(layout) == state


def test_no_state_file_means_no_cluster(tmp_path: Path) -> None:
    assert State.load(Layout(tmp_path)) is None


def test_a_written_keyring_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    bootstrap.write_keyring(path, "osd.0", "QUJDRA==")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bootstrap.read_key(path) == "QUJDRA=="


def test_down_leaves_a_directory_that_holds_no_cluster_alone(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("mine")
    CephCluster(tmp_path).down()
    assert (tmp_path / "precious").read_text() == "mine"


def test_up_refuses_a_directory_that_holds_something_else(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("mine")
    with pytest.raises(CephError, match="holds no test cluster"):
        CephCluster(tmp_path).up()
    assert [entry.name for entry in tmp_path.iterdir()] == ["precious"]


def test_a_pid_file_naming_another_process_is_ignored(tmp_path: Path) -> None:
    """A pid file that outlived its daemon never has a stranger signalled."""
    layout = Layout(tmp_path)
    layout.run_dir.mkdir()
    layout.pid_file("osd.0").write_text(f"{os.getpid()}\n")
    assert daemons.pid(layout, "osd.0") is None
    daemons.stop(layout, "osd.0")  # must not signal this process
    assert not layout.pid_file("osd.0").exists()


def test_monitor_ports_move_aside_when_the_usual_ones_are_taken() -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", node.DEFAULT_PORTS[0]))
            holder.listen()
        except OSError:
            pass  # taken already, by another cluster on this machine
        ports = node.monitor_ports("127.0.0.1")
    assert node.DEFAULT_PORTS[0] not in ports
    assert len(set(ports)) == 2


def test_a_command_past_its_timeout_is_an_error_naming_it() -> None:
    with pytest.raises(CephError, match="did not finish within"):
        commands.run(["sleep", "5"], timeout=0.2)


def test_a_failed_command_reports_its_stderr() -> None:
    with pytest.raises(CephError, match="status 3:\nno such pool"):
        commands.run(["sh", "-c", "echo 'no such pool' >&2; exit 3"], timeout=10)


@pytest.fixture
def lookalike_driver() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line the guest cleanup takes for a leftover driver."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "csi_vduse", "serve"]
    proc = subprocess.Popen(argv)
    # Its command line reads empty for a moment after Popen returns, while it execs.
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"serve" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def test_guest_cleanup_spares_processes_a_session_fixture_keeps(
    lookalike_driver: subprocess.Popen[bytes],
) -> None:
    def kept() -> list[int]:
        return [lookalike_driver.pid]

    assert lookalike_driver.pid in guest._drivers()
    guest.keep(kept)
    try:
        assert lookalike_driver.pid not in guest._drivers()
    finally:
        guest.release(kept)
    assert lookalike_driver.pid in guest._drivers()
