"""Before each vm test: the guest is as a test expects it, or only that test fails.

One test that dies half-way (a module it unloaded, a device, dataplane, driver or mount
it left) must not fail every test after it. So each vm test starts by checking the
guest: the modules loaded, and nothing left from an earlier test. What can be repaired
is (modprobe; leftover drivers and dataplanes killed; devices deleted through the CLI;
krbd and nbd mappings removed; mounts made since the first test unmounted); what cannot
fails this test alone, saying what is wrong.

Session fixtures outlive tests by design: the test Ceph cluster's daemons run from the
first test that asks for it to the end of the session. They make no mounts, their loop
device is none of the above, and the processes they name through ``keep`` are never
killed here, whatever the matchers below come to match.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from csi_vduse.devices import dataplane_process
from tests.ceph import kernel_clients

MODULES = ("vdpa", "vduse", "virtio_vdpa", "virtio_blk")
VDUSE_DIR = Path("/dev/vduse")
VDPA_DIR = Path("/sys/bus/vdpa/devices")

_baseline_mounts: list[set[str]] = []  # the guest's own mounts, seen before the first test
_kept: list[Callable[[], Iterable[int]]] = []  # the processes of session fixtures


def keep(pids: Callable[[], Iterable[int]]) -> None:
    """Never count or kill the processes ``pids()`` names (asked afresh at each check, as a
    fixture's daemons may be restarted): a session fixture's, not a test's leftovers."""
    _kept.append(pids)


def release(pids: Callable[[], Iterable[int]]) -> None:
    """Undo ``keep(pids)``, once the fixture has stopped its processes."""
    _kept.remove(pids)


def mounts() -> list[str]:
    """Mount points, in mount order."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines]


def problems() -> list[str]:
    """What is not as a fresh guest has it."""
    found = [f"module {name} is not loaded" for name in MODULES if not _loaded(name)]
    found += [f"VDUSE device {name} is left" for name in _vduse_devices()]
    found += [f"vDPA device {name} is left" for name in _vdpa_devices()]
    found += [f"driver pid {pid} is left" for pid in _drivers()]
    found += [f"dataplane pid {pid} is left" for pid in _dataplanes()]
    found += [f"krbd device rbd{device} is left" for device in kernel_clients.krbd_devices()]
    found += [f"nbd device {name} is left" for name in _nbd_servers()]
    found += [f"mount {point} is left" for point in _extra_mounts()]
    return found


def ensure_clean() -> list[str]:
    """Repair what an earlier test left; the problems that remain (empty when clean)."""
    if not _baseline_mounts:
        _baseline_mounts.append(set(mounts()))
    if not problems():
        return []
    for name in MODULES:
        if not _loaded(name):
            subprocess.run(["modprobe", name], capture_output=True, timeout=120, check=False)
    # Drivers first, or their supervisors would replace the dataplanes killed next.
    _kill(_drivers())
    _kill(_dataplanes())
    for point in reversed(_extra_mounts()):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=60, check=False)
    for device in kernel_clients.krbd_devices():
        kernel_clients.remove_krbd(device)
    _kill(sorted(set(_nbd_servers().values())))  # an rbd-nbd: its device goes with it
    names = sorted(set(_vduse_devices()) | set(_vdpa_devices()))
    if names:
        with tempfile.TemporaryDirectory(prefix="guest-cleanup-") as state:
            env = {**os.environ, "CSI_VDUSE_STATE_DIR": state}
            for name in names:
                subprocess.run(
                    [sys.executable, "-m", "csi_vduse", "device", "delete", name],
                    capture_output=True, timeout=120, check=False, env=env,
                )  # fmt: skip
    return problems()


def _loaded(module: str) -> bool:
    return Path(f"/sys/module/{module}").is_dir()


def _vduse_devices() -> list[str]:
    if not VDUSE_DIR.is_dir():
        return []
    return sorted(entry.name for entry in VDUSE_DIR.iterdir() if entry.name != "control")


def _vdpa_devices() -> list[str]:
    return sorted(entry.name for entry in VDPA_DIR.iterdir()) if VDPA_DIR.is_dir() else []


def _drivers() -> list[int]:
    return _processes(lambda argv: b"csi_vduse" in argv and b"serve" in argv)


def _dataplanes() -> list[int]:
    """Dataplanes started cold, launchers and what they forked (as dataplane_process.pids_of)."""
    markers = (*dataplane_process.COLD, dataplane_process.LAUNCHED)
    return _processes(
        lambda argv: any(
            argv[i : i + len(marker)] == marker for marker in markers for i in range(len(argv))
        )
    )


def _nbd_servers() -> dict[str, int]:
    """Connected nbd devices and their serving processes, those of session fixtures aside."""
    kept = _kept_pids()
    return {name: pid for name, pid in kernel_clients.nbd_servers().items() if pid not in kept}


def _kept_pids() -> set[int]:
    return {pid for pids in _kept for pid in pids()}


def _processes(match: Callable[[list[bytes]], bool]) -> list[int]:
    """Other live processes whose command line ``match``es, those of session fixtures aside."""
    found = []
    kept = _kept_pids()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), *kept):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(argv) and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:  # ours, if a fixture of this process started it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _extra_mounts() -> list[str]:
    if not _baseline_mounts:
        return []
    return [point for point in mounts() if point not in _baseline_mounts[0]]
