"""pytest plugin: tests marked ``vm`` run against a real VDUSE kernel.

On a host that has ``/dev/vduse/control`` they simply run. Elsewhere, once collected,
they go last, and the test VM boots at once, in the background, to run every one of them
while the host's own tests run here. The first ``vm`` test to run waits for the VM (its
output, streamed into this run's log from then on) and each then reports the outcome its
guest twin had, so counts and failures read as usual. In the guest (``tests.vm.rounds``),
``--vm-report`` makes this plugin write those outcomes to the results share, and
``--vm-test-limit`` ends a round whose test hangs.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csi_vduse.durable import write_atomic
from tests.vm import guest, initramfs
from tests.vm.machine import GUEST_PATH, TestVm

REPORT_NAME = "report.json"
TEST_LIMIT = 600.0  # seconds a vm test may take in the guest, setup to teardown


def kernel_available() -> bool:
    return Path("/dev/vduse/control").exists()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vm", "real-kernel test VM")
    group.addoption("--no-vm", action="store_true", help="skip tests that need VDUSE")
    group.addoption("--vm-report", default=None, help=argparse.SUPPRESS)
    group.addoption("--vm-test-limit", type=float, default=None, help=argparse.SUPPRESS)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--vm-report"):
        reporter = _GuestReporter(
            Path(config.getoption("--vm-report")), config.getoption("--vm-test-limit")
        )
        config.pluginmanager.register(reporter)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    vm_items = [item for item in items if item.get_closest_marker("vm")]
    if not vm_items or kernel_available():
        return
    if config.getoption("--no-vm"):
        for item in vm_items:
            item.add_marker(pytest.mark.skip(reason="--no-vm: needs a VDUSE kernel"))
        return
    host_items = [item for item in items if not item.get_closest_marker("vm")]
    items[:] = host_items + vm_items  # the VM runs while the host's tests do
    run = _GuestRun(config, [item.nodeid for item in vm_items])
    for item in vm_items:
        _proxy(item, run)
    run.start()


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
    """One VM boot that runs all selected vm tests, in a thread started at collection."""

    def __init__(self, config: pytest.Config, nodeids: list[str]) -> None:
        self.config = config
        self.nodeids = nodeids
        self.reports: dict[str, dict[str, Any]] = {}
        self.summary = ""
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="test-vm", daemon=True)
        self._waited = False

    def start(self) -> None:
        if not self.config.option.collectonly:
            self._thread.start()

    def outcome_for(self, nodeid: str) -> None:
        if not self._waited:
            self._wait()
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
        if "teardown" not in phases:
            pytest.fail(f"the test did not finish in the VM: {self.summary}", pytrace=False)

    def _wait(self) -> None:
        """Until the VM is done, its output (what came so far, then live) into the log."""
        self._waited = True
        capture = self.config.pluginmanager.getplugin("capturemanager")
        terminal = self.config.pluginmanager.getplugin("terminalreporter")
        with capture.global_and_fixture_disabled():
            for line in self._output():
                if terminal is not None:
                    terminal.write_line(f"vm| {line}")
        self._thread.join()

    def _output(self) -> Iterator[str]:
        while (line := self._lines.get()) is not None:
            yield line

    def _run(self) -> None:
        try:
            self._boot()
        finally:
            self._lines.put(None)

    def _boot(self) -> None:
        echo = self._lines.put
        bindir = str(Path(sys.executable).parent)
        env = {"PATH": f"{bindir}:{GUEST_PATH}"}
        for key in ("VIRTUAL_ENV", "CI", "CSI_VDUSE_VM_ACCEL"):
            if key in os.environ:
                env[key] = os.environ[key]
        report = f"{initramfs.RESULTS_MOUNT}/{REPORT_NAME}"
        limit = float(os.environ.get("CSI_VDUSE_VM_TEST_LIMIT", TEST_LIMIT))
        argv = [sys.executable, "-m", "tests.vm.rounds", f"--report={report}",
                f"--limit={limit:g}", *self.nodeids]  # fmt: skip
        timeout = float(os.environ.get("CSI_VDUSE_VM_TIMEOUT", "3600"))
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


def stacks_file(report: Path) -> Path:
    """Where a guest pytest ended by ``--vm-test-limit`` leaves its threads' stacks."""
    return report.with_suffix(".stacks")


class _GuestReporter:
    """Guest side: write each test's phase outcomes for the host to pick up.

    The file is rewritten as each test starts and after it ends, so a VM that times out
    still reports every test it finished, and the one it was running shows no teardown.
    A later round (``tests.vm.rounds``) adds to what the file holds. With a ``limit``,
    a test still running after that many seconds ends this pytest: faulthandler dumps
    every thread's stack into ``stacks_file(path)`` and exits.
    """

    def __init__(self, path: Path, limit: float | None) -> None:
        self.path = path
        self.limit = limit
        self.reports: dict[str, dict[str, dict[str, str]]] = {}
        if path.exists():
            self.reports = json.loads(path.read_text())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        if not self.limit:
            yield
            return
        with stacks_file(self.path).open("w") as stacks:  # fd 2 is pytest's capture's
            faulthandler.dump_traceback_later(self.limit, exit=True, file=stacks)
            try:
                yield
            finally:
                faulthandler.cancel_dump_traceback_later()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.reports[nodeid] = {}
        self._write()

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
