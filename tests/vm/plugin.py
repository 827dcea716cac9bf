"""pytest plugin: tests marked ``vm`` run against a real VDUSE kernel.

On a host that has ``/dev/vduse/control`` they simply run. Elsewhere the first
such test boots the test VM once and runs every selected ``vm`` test inside it
(its output streams into this run's log); each host-side test then reports the
outcome its guest twin had, so counts and failures read as usual. In the guest,
``--vm-report`` makes this plugin write those outcomes to the results share.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from csi_vduse.durable import write_atomic
from tests.vm import guest, initramfs
from tests.vm.machine import GUEST_PATH, TestVm

REPORT_NAME = "report.json"


def kernel_available() -> bool:
    return Path("/dev/vduse/control").exists()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vm", "real-kernel test VM")
    group.addoption("--no-vm", action="store_true", help="skip tests that need VDUSE")
    group.addoption("--vm-report", default=None, help=argparse.SUPPRESS)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--vm-report"):
        config.pluginmanager.register(_GuestReporter(Path(config.getoption("--vm-report"))))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    vm_items = [item for item in items if item.get_closest_marker("vm")]
    if not vm_items or kernel_available():
        return
    if config.getoption("--no-vm"):
        for item in vm_items:
            item.add_marker(pytest.mark.skip(reason="--no-vm: needs a VDUSE kernel"))
        return
    run = _GuestRun(config, [item.nodeid for item in vm_items])
    for item in vm_items:
        _proxy(item, run)


@pytest.fixture(autouse=True)
def _clean_guest(request: pytest.FixtureRequest) -> None:
    """Each vm test starts in a guest as fresh as the first had it (see ``tests.vm.guest``):
    what an earlier test left is repaired, or this test alone fails, saying what is wrong."""
    if request.node.get_closest_marker("vm") is None or not kernel_available():
        return
    remaining = guest.ensure_clean()
    if remaining:
        pytest.fail(
            "the guest is not clean, and could not be made so: " + "; ".join(remaining),
            pytrace=False,
        )


def _proxy(item: pytest.Item, run: _GuestRun) -> None:
    """Make ``item`` report its guest twin's outcome instead of running here."""
    nodeid = item.nodeid

    def runtest() -> None:
        run.outcome_for(nodeid)

    item.setup = lambda: None  # type: ignore[method-assign]
    item.runtest = runtest  # type: ignore[method-assign]
    item.teardown = lambda: None  # type: ignore[method-assign]


class _GuestRun:
    """One VM boot that runs all selected vm tests; started by the first of them."""

    def __init__(self, config: pytest.Config, nodeids: list[str]) -> None:
        self.config = config
        self.nodeids = nodeids
        self.reports: dict[str, dict[str, Any]] | None = None
        self.summary = ""

    def outcome_for(self, nodeid: str) -> None:
        if self.reports is None:
            self._run()
        assert self.reports is not None
        phases = self.reports.get(nodeid)
        if phases is None:
            pytest.fail(f"the VM run did not report this test: {self.summary}", pytrace=False)
        for when in ("setup", "call", "teardown"):
            phase = phases.get(when)
            if phase is None:
                continue
            if phase["outcome"] == "failed":
                pytest.fail(f"[in the VM, {when}]\n{phase['longrepr']}", pytrace=False)
            if phase["outcome"] == "skipped":
                pytest.skip(f"[in the VM] {phase['longrepr']}")

    def _run(self) -> None:
        self.reports = {}
        capture = self.config.pluginmanager.getplugin("capturemanager")
        terminal = self.config.pluginmanager.getplugin("terminalreporter")

        def echo(line: str) -> None:
            if terminal is not None:
                terminal.write_line(f"vm| {line}")

        bindir = str(Path(sys.executable).parent)
        env = {"PATH": f"{bindir}:{GUEST_PATH}"}
        for key in ("VIRTUAL_ENV", "CI", "CSI_VDUSE_VM_ACCEL"):
            if key in os.environ:
                env[key] = os.environ[key]
        report = f"{initramfs.RESULTS_MOUNT}/{REPORT_NAME}"
        argv = [sys.executable, "-m", "pytest", "-v", "--tb=short", "-p", "no:cacheprovider",
                "--durations=15", f"--vm-report={report}", *self.nodeids]  # fmt: skip
        timeout = float(os.environ.get("CSI_VDUSE_VM_TIMEOUT", "3600"))
        with capture.global_and_fixture_disabled():
            echo(f"booting the test VM for {len(self.nodeids)} test(s)")
            try:
                vm = TestVm()
                result = vm.run(argv, cwd=self.config.rootpath, env=env, timeout=timeout, echo=echo)
            except Exception as exc:
                self.summary = f"the VM could not run: {exc}"
                echo(self.summary)
                return
            echo(f"VM finished in {result.seconds:.1f}s with exit status {result.exit_status}")
        self.summary = (
            f"VM {'timed out' if result.timed_out else 'ended'} with exit status "
            f"{result.exit_status} after {result.seconds:.0f}s"
        )
        raw = result.artifact(REPORT_NAME)
        if raw:
            self.reports = json.loads(raw)
        if result.exit_status is None:
            dmesg = result.artifact("dmesg.txt")
            tail = "\n".join((dmesg or result.output).splitlines()[-40:])
            self.summary += f"; last console/dmesg lines:\n{tail}"


class _GuestReporter:
    """Guest side: write each test's phase outcomes for the host to pick up.

    The file is rewritten after every test, so a VM that times out still reports every
    test it finished and only the unfinished ones fail.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reports: dict[str, dict[str, dict[str, str]]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple):
            detail = str(report.longrepr[2])
        else:
            detail = report.longreprtext
        self.reports.setdefault(report.nodeid, {})[report.when] = {
            "outcome": report.outcome,
            "longrepr": detail,
        }
        if report.when == "teardown":
            self._write()

    def pytest_sessionfinish(self) -> None:
        self._write()

    def _write(self) -> None:
        write_atomic(self.path, json.dumps(self.reports, indent=1))
