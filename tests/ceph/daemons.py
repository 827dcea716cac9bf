"""Start and stop the cluster's daemons, by pid files of our own.

Daemons run in the foreground (``-f``) as children in their own session, so their pid is
known the moment they start, before any log exists, and their early complaints land in
``<name>.out``. A pid is only ever signalled while it is this cluster's: a child this
process started and has not reaped, or a process whose command line names the cluster's
config. A pid file that outlived its daemon never kills a stranger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.ceph.layout import Layout

log = logging.getLogger(__name__)

STOP_SECONDS = 30.0  # for a clean shutdown before SIGKILL
TAIL_LINES = 25

_children: dict[int, subprocess.Popen[bytes]] = {}  # reaped when they exit, never zombies


def start(layout: Layout, name: str, argv: list[str]) -> int:
    """Start daemon ``name`` (``mon.a``, ``osd.0``) running ``argv``; its pid."""
    with open(layout.output_file(name), "ab") as output:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    _children[proc.pid] = proc
    layout.pid_file(name).write_text(f"{proc.pid}\n")
    log.info("ceph: started %s (pid %d)", name, proc.pid)
    return proc.pid


def pid(layout: Layout, name: str) -> int | None:
    """The pid of daemon ``name`` if it runs (and is this cluster's), else None."""
    try:
        recorded = int(layout.pid_file(name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if recorded in _children:
        # Started by this process: ours for sure. Its command line can read empty for a
        # moment after Popen returns (the kernel closes the exec pipe before it sets up
        # the new arguments), so it is not asked.
        return recorded if _alive(recorded) else None
    return recorded if _names_config(recorded, layout) and _alive(recorded) else None


def members(layout: Layout) -> list[int]:
    """Live processes whose command line names this cluster's config: its daemons, and any
    client a test started with ``-c`` (an ``rbd-nbd`` serving a mapping, say)."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if _names_config(pid, layout) and _alive(pid)]


def stop(layout: Layout, name: str, *, kill: bool = False) -> None:
    """Stop daemon ``name``: SIGTERM (SIGKILL after a grace period), or SIGKILL at once."""
    running = pid(layout, name)
    if running is not None:
        terminate(running, signal.SIGKILL if kill else signal.SIGTERM)
        log.info("ceph: stopped %s (pid %d)", name, running)
    layout.pid_file(name).unlink(missing_ok=True)


def terminate(target: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal ``target`` and wait until it is gone, escalating to SIGKILL after a grace period."""
    _signal(target, sig)
    deadline = time.monotonic() + STOP_SECONDS
    while _alive(target):
        if time.monotonic() > deadline:
            _signal(target, signal.SIGKILL)
            deadline = time.monotonic() + STOP_SECONDS
        time.sleep(0.05)


def exited(layout: Layout, name: str) -> bool:
    """Whether daemon ``name`` was started and is no longer running."""
    return layout.pid_file(name).exists() and pid(layout, name) is None


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` of a log, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path.name}: no such file)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path.name} is empty)"


def _signal(target: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(target, sig)


def _names_config(target: int, layout: Layout) -> bool:
    try:
        argv = Path(f"/proc/{target}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(layout.conf) in argv


def _alive(target: int) -> bool:
    """Running, not a zombie; reaps a child of ours that has exited."""
    child = _children.get(target)
    if child is not None and child.poll() is not None:
        del _children[target]
        return False
    try:
        stat = Path(f"/proc/{target}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
