"""Guest side: run the vm tests in pytest rounds, so a hung test fails alone.

``python -m tests.vm.rounds --report FILE --limit SECONDS NODEID...`` runs pytest on the
tests. Each test has ``--limit`` seconds, setup and teardown included. If one takes longer,
it is stuck. A common cause is a wait on a process in uninterruptible sleep, such as one
serving an nbd device the kernel gave up on. No exception can end such a wait.

So the round's pytest dies: faulthandler writes every thread's stack and exits. The test
is reported failed with those stacks, and the guest is cleaned: every process the round
left is killed, its mounts and devices removed. A new round then runs the tests not yet
reported. A process that cannot be killed stays behind, and only tests that need what it
holds suffer.

The report file (``plugin._GuestReporter``) holds each test's phases. A test that started
but has no teardown phase did not finish.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csi_vduse.durable import write_atomic
from tests.vm import guest, plugin

PYTEST_OPTIONS = ("-v", "--tb=short", "-p", "no:cacheprovider", "--durations=30")
KILL_WAIT = 10.0  # seconds for killed processes to go


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.rounds", description=__doc__)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--limit", type=float, required=True, help="seconds per test")
    parser.add_argument("nodeids", nargs="+")
    args = parser.parse_args(argv)
    if os.environ.get("CSI_VDUSE_IN_VM") != "1":
        parser.error("runs in the test VM only: it kills every process a hung round left")
    guest.ensure_clean()  # notes the guest's own mounts, before any test makes one

    def run_round(pending: list[str]) -> int:
        argv = [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, f"--vm-report={args.report}",
                f"--vm-test-limit={args.limit:g}", *pending]  # fmt: skip
        return subprocess.run(argv, check=False).returncode

    return run_rounds(args.nodeids, args.report, args.limit, run_round, clean=_clean)


def run_rounds(
    nodeids: list[str],
    report: Path,
    limit: float,
    run_round: Callable[[list[str]], int],
    *,
    clean: Callable[[], None],
) -> int:
    """Rounds until every test in ``nodeids`` is reported; pytest's exit status, or 1 if
    a test hung (it is reported failed, and ``clean`` runs before the next round)."""
    pending = list(nodeids)
    status = 0
    any_hung = False
    while pending:
        status = run_round(pending)
        reports = _load(report)
        hung = [nodeid for nodeid in pending if _unfinished(reports.get(nodeid))]
        pending = [nodeid for nodeid in pending if nodeid not in reports]
        if not hung:
            break  # the round ended of itself: every test ran, or pytest stopped early
        stacks = _read(plugin.stacks_file(report))
        for nodeid in hung:
            reports[nodeid]["call"] = {
                "outcome": "failed",
                "longrepr": (
                    f"did not finish within {limit:g} s, so its round was ended; the tests "
                    f"after it ran in a new one. Its pytest's threads then:\n{stacks}"
                ),
            }
            reports[nodeid]["teardown"] = {"outcome": "passed", "longrepr": ""}
        write_atomic(report, json.dumps(reports, indent=1))
        print(f"rounds: {', '.join(hung)} hung; {len(pending)} test(s) left", flush=True)
        clean()
        any_hung = True
    return 1 if any_hung else status


def _clean() -> None:
    _kill_leftovers()
    remaining = guest.ensure_clean()
    if remaining:
        print(f"rounds: the guest is not clean: {'; '.join(remaining)}", flush=True)


def _load(path: Path) -> dict[str, dict[str, Any]]:
    try:
        reports: dict[str, dict[str, Any]] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return reports


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return "(no stacks were written)"


def _unfinished(phases: dict[str, Any] | None) -> bool:
    return phases is not None and "teardown" not in phases


def _kill_leftovers() -> None:
    """SIGKILL every user process but this one and its ancestors (the guest's init)."""
    spared = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        spared.add(pid)
    victims = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        with contextlib.suppress(OSError):
            if (entry / "cmdline").read_bytes():  # kernel threads have none
                os.kill(int(entry.name), signal.SIGKILL)
                victims.append(int(entry.name))
    deadline = time.monotonic() + KILL_WAIT
    while time.monotonic() < deadline and any(map(_alive, victims)):
        time.sleep(0.1)
    stuck = [pid for pid in victims if _alive(pid)]
    if stuck:
        print(f"rounds: processes that would not die: {stuck}", flush=True)


def _alive(pid: int) -> bool:
    """Not gone, nor a zombie (orphans are the guest's init's to reap)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 1
    return int(stat.rsplit(")", 1)[1].split()[1])


if __name__ == "__main__":
    sys.exit(main())
