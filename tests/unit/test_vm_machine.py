"""The test VM itself: exit status and output come back, and QEMU never outlives a run.

These boot the real guest kernel (a few seconds each) on the host, not inside the VM.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.vm.machine import STARTED, TestVm

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64"
)


def qemu_processes_for(results: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline and str(results).encode() in cmdline:
                found.append(proc.name)
    return found


def test_exit_status_and_output_come_back_from_the_guest(tmp_path: Path) -> None:
    result = TestVm().run(
        ["sh", "-c", "echo guest kernel has $(ls /dev/vduse); exit 7"],
        timeout=120, results_dir=tmp_path / "results",
    )  # fmt: skip
    assert result.exit_status == 7
    assert "guest kernel has control" in result.output
    assert qemu_processes_for(tmp_path / "results") == []


def test_timeout_kills_the_guest_and_leaves_no_qemu(tmp_path: Path) -> None:
    result = TestVm().run(["sleep", "600"], timeout=15, results_dir=tmp_path / "results")
    assert result.timed_out
    assert result.exit_status is None
    assert result.seconds < 30
    assert qemu_processes_for(tmp_path / "results") == []


def test_a_guest_that_dies_once_its_command_started_is_not_booted_again(tmp_path: Path) -> None:
    """Only a guest that died before its command started gets another boot: a command
    must never run twice."""
    result = TestVm().run(
        ["sh", "-c", "echo crashing the guest now; echo c > /proc/sysrq-trigger"],
        timeout=120, results_dir=tmp_path / "results",
    )  # fmt: skip
    assert result.exit_status is None and not result.timed_out
    assert result.output.count("crashing the guest now") == 1
    assert (tmp_path / "results" / STARTED).exists()
    assert qemu_processes_for(tmp_path / "results") == []
