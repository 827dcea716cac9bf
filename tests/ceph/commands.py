"""Run Ceph's command-line tools, always with a timeout.

Without a manager some status commands (``ceph pg stat``) wait forever, and any command
waits for a monitor that is gone: nothing here runs unbounded. Commands are logged, their
output never is (it can hold a key), and no key is ever put on a command line.
"""

from __future__ import annotations

import logging
import shlex
import subprocess

from tests.ceph.errors import CephError

log = logging.getLogger(__name__)

STDERR_LINES = 20


def run(
    argv: list[str], *, timeout: float, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; raise CephError if it fails (when ``check``) or outlives ``timeout``."""
    log.debug("ceph: %s", shlex.join(argv))
    try:
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CephError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise CephError(f"{argv[0]} is not installed (scripts/setup.sh installs it)") from exc
    if check and done.returncode != 0:
        raise CephError(
            f"`{shlex.join(argv)}` failed with status {done.returncode}:\n{stderr_tail(done)}"
        )
    return done


def stderr_tail(done: subprocess.CompletedProcess[str]) -> str:
    """The last lines a failed command wrote to stderr."""
    lines = done.stderr.strip().splitlines()[-STDERR_LINES:]
    return "\n".join(lines) or "(no output on stderr)"
