"""Confinement of the dataplane process once it holds everything it needs.

The process already runs as an unprivileged user with only its inherited descriptors
(see ``csi_vduse.devices.dataplane_process``); this adds no-new-privileges, makes it
undumpable (no ptrace or /proc/PID/mem from its peers, which share its user) and
installs the seccomp filter of ``fast/sandbox.c``. Call it last, after every import, file
operation and io_uring setup (``AioSet.prepare``): from then on the process cannot open
anything or make a new ring.

It loads libgcc_s first, for good. glibc opens that library the first time a thread ends
with pthread_exit, which Python's daemon threads do when they wake during interpreter
exit; under the filter the open fails and glibc aborts the whole process ("libgcc_s.so.1
must be installed for pthread_exit to work"), so a dataplane that stops would die of
SIGABRT instead of exiting with its status.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import threading

from csi_vduse.dataplane.fast._ring import lib

log = logging.getLogger(__name__)

SWITCH = "CSI_VDUSE_DATAPLANE_SECCOMP"  # "off" leaves the process unconfined (debugging)
# Private memory (heap, thread stacks) a dataplane may hold; the guest's memory it maps is
# shared and not counted. Measured use is 45-80 MiB with 16 queues.
DATA_LIMIT = 256 << 20
# librbd's threads (about fifteen, with glibc's 8 MiB stacks) count too: an RBD dataplane
# holds about 270 MiB of them before it serves.
RBD_DATA_LIMIT = 1 << 30
THREAD_STACK = 1 << 20  # the queue threads run C with small frames; 8 MiB is glibc's default
UNWINDER = "libgcc_s.so.1"  # what glibc's pthread_exit and pthread_cancel load on first use


def limit_memory(limit: int = DATA_LIMIT) -> None:
    """Bound what a runaway (or a guest's exploit) can make this process allocate."""
    threading.stack_size(THREAD_STACK)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def confine(*, network: bool = False) -> bool:
    """True once confined; False (and a warning) where the kernel cannot do it. ``network``
    lets librbd keep talking to Ceph (see fast/sandbox.c)."""
    if os.environ.get(SWITCH) == "off":
        log.warning("%s=off: running without the seccomp filter", SWITCH)
        return False
    load_unwinder()
    rc = lib.dp_sandbox(int(network))
    if rc:
        log.warning("running without the seccomp filter: %s", os.strerror(-rc))
        return False
    log.info(
        "confined: seccomp filter%s installed, no new privileges, not dumpable",
        " (with IPv4/IPv6 sockets for Ceph)" if network else "",
    )
    return True


def load_unwinder() -> None:
    """Load libgcc_s now, never to be unloaded, so glibc finds it loaded when a thread exits
    under the filter (its own dlopen of the name then opens no file)."""
    try:
        ctypes.CDLL(UNWINDER, mode=os.RTLD_NOW | os.RTLD_NODELETE)
    except OSError as exc:
        log.warning(
            "cannot load %s: a thread exiting under the filter would abort: %s", UNWINDER, exc
        )
