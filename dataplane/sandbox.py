"""Confinement of the dataplane process once it holds everything it needs.

The process already runs as an unprivileged user with only its inherited descriptors
(see ``csi_vduse.devices.dataplane_process``); this adds no-new-privileges, makes it
undumpable (no ptrace or /proc/PID/mem from its peers, which share its user) and
installs the seccomp filter of ``fast/sandbox.c``. Call it last, after every import and
file operation: from then on the process cannot open anything.
"""

from __future__ import annotations

import logging
import os

from dataplane.fast._ring import lib

log = logging.getLogger(__name__)

SWITCH = "CSI_VDUSE_DATAPLANE_SECCOMP"  # "off" leaves the process unconfined (debugging)


def confine() -> bool:
    """True once confined; False (and a warning) where the kernel cannot do it."""
    if os.environ.get(SWITCH) == "off":
        log.warning("%s=off: running without the seccomp filter", SWITCH)
        return False
    rc = lib.dp_sandbox()
    if rc:
        log.warning("running without the seccomp filter: %s", os.strerror(-rc))
        return False
    log.info("confined: seccomp filter installed, no new privileges, not dumpable")
    return True
