"""Running the system's filesystem tools, with their own words kept for error messages."""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
from collections.abc import Sequence

from csi_vduse.mounts.errors import MountError

log = logging.getLogger(__name__)

TIMEOUT = 300.0  # mkfs of a large volume on slow storage can take minutes


def run(step: str, argv: Sequence[str], ok_codes: Sequence[int] = (0,)) -> tuple[int, str]:
    """Run ``argv``; returns (exit code, output) or raises MountError naming ``step``."""
    if shutil.which(argv[0]) is None:
        raise MountError(step, f"{argv[0]} is not installed on this node", errno.ENOENT)
    log.debug("running %s", " ".join(argv))
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MountError(step, f"{argv[0]} did not finish in {TIMEOUT:.0f} s", errno.ETIME) from exc
    output = (done.stdout + done.stderr).strip()
    if done.returncode not in ok_codes:
        raise MountError(
            step, f"{' '.join(argv)} failed (exit {done.returncode}): {output}", errno.EIO
        )
    return done.returncode, output
