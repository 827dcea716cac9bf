"""The contract between the driver and a dataplane process: what one passes, what the
other reports. Both sides import this module, so they cannot disagree on its spelling; the
version number catches a driver and a dataplane from different releases.

**Start.** The driver runs ``python -m csi_vduse.dataplane`` with ``DataplaneArgs.argv()``:
``--protocol``, the device's ``--name`` (a VDUSE device it has created and set up), the
``--backing``'s name (for its messages only), the device it serves (``BlkProfile``: ``--queues``,
``--queue-size``, ``--block-size``, ``--readonly``, ``--packed``) and the ``--serial`` that
GET_ID answers. The dataplane runs unprivileged and opens nothing:
every file is an inherited descriptor whose number its argv names: ``--device-fd``
(``/dev/vduse/NAME``), the backing (``--backing-fd``, opened as ``open_flags`` says; or
``--rbd-fd``, a memfd holding the RBD image to serve and how to reach its cluster, key
included: ``csi_vduse.ceph.target``), and optionally
``--direct-fd`` (the backing again, with O_DIRECT), ``--stats-fd``, ``--inflight-fd``,
``--qos-fd`` (the device's I/O limits, ``csi_vduse.dataplane.qos``), ``--control-fd`` (a
listening socket, ``csi_vduse.dataplane.control``) and ``--ready-fd``.

**Readiness.** The dataplane writes one JSON line to the ready fd and closes it:
``{"protocol": N, "ready": true, "pid": P}`` once it holds the device and answers its
messages (serving an RBD image, with ``"rbd_client"``: the address of its RADOS client,
which holds the image's exclusive lock), or
``{"protocol": N, "ready": false, "error": "...", "errno": E}`` when it cannot start (E,
when not 0, the errno saying why: EBUSY, say, for an RBD image another client holds).
Before it waits on something outside the node (an RBD dataplane connecting to Ceph and
taking the image's lock, which may take as long as a dead holder's watch lasts), it may
write ``{"protocol": N, "waiting": "ceph"}`` first, leaving the fd open: the driver then
stops counting it among the starts that share the node's CPUs.

**While it runs.** It keeps its per-queue I/O counters in the stats file
(``csi_vduse.dataplane.stats``) and its progress in the in-flight log
(``csi_vduse.dataplane.inflight_log``), and it admits requests within the limits the driver
writes, live, in the QoS page (``csi_vduse.dataplane.qos``). On the control socket it pauses
and resumes every queue when the driver asks, within a deadline the driver sets
(``csi_vduse.dataplane.control``). A dataplane started on a device whose log shows a driver
at work takes the device over from there instead of waiting to be started. SIGHUP means
"the backing may have grown": it re-reads the size and, if larger, publishes the new
capacity in the config space and raises the config interrupt (it never shrinks a device).
SIGTERM stops it; its exit closes the device node.

**The launcher** (``csi_vduse.dataplane.launcher``) forks dataplanes with their imports done:
``python -m csi_vduse.dataplane.launcher --protocol N --control-fd C``, C a SOCK_SEQPACKET
socket carrying one JSON message per packet:

- launcher -> driver, once its imports are done: ``{"protocol": N, "ready": true, "pid": P}``
- driver -> launcher: ``{"launch": ID, "argv": [the dataplane's arguments], "fds": [N...]}``
  with SCM_RIGHTS descriptors: first the log (the child's stdout and stderr), then one per
  number in ``fds``, which the child holds at exactly that number, as its argv names it.
- launcher -> driver: ``{"launched": ID, "pid": P}`` or ``{"launched": ID, "error": "..."}``;
  the child then reports readiness on its ready fd as a started dataplane does.
- launcher -> driver: ``{"exited": P, "status": S}`` when a child ends (S as Popen reports
  it: negative for a signal), since only its parent can learn that.

The launcher exits when the driver closes the socket; its children run on. They are named
``CHILD_COMM`` in ``/proc/PID/comm`` (their command line is the launcher's).

**Version.** ``PROTOCOL_VERSION`` is N above. The dataplane and the launcher refuse another
``--protocol``, and the driver takes a readiness report of another one for a failure. Bump
it with any change to the arguments, the messages or the signals that an older or newer
peer would misread or refuse; the stats file and the in-flight log carry their own layout
versions. (History: 1 readiness, 2 SIGHUP growth, 3 stats, 4 in-flight log, 5 descriptors
only, 6 O_DIRECT, 7 the launcher, 8 the block size, and no ``--engine``, 9 the QoS page and
the control socket, 10 RBD images, 11 the waiting line.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csi_vduse.ceph.target import RbdTarget
from csi_vduse.dataplane.blk.profile import DEFAULT_QUEUE_SIZE, BlkProfile, ProfileError
from csi_vduse.virtio.blk import SECTOR_SIZE

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 11
MAX_LAUNCH_FDS = 12  # the log and DataplaneArgs.fds(), with room to spare
CHILD_COMM = "dataplane"


@dataclass(frozen=True, kw_only=True)
class DataplaneArgs:
    """What the dataplane is started with. The paths say where its files are; the
    process that starts it opens them and passes the fds, which is all it gets."""

    name: str
    backing: Path
    profile: BlkProfile = field(default_factory=BlkProfile)  # the device it serves
    serial: str = ""
    ready_fd: int | None = None
    stats: Path | None = None  # the shared counters file; None keeps no counters
    inflight_log: Path | None = None  # None: a dataplane that dies cannot be replaced
    qos: Path | None = None  # the I/O limits page; None: no limits
    control: Path | None = None  # where the control socket listens; None: no pausing
    rbd: RbdTarget | None = None  # the RBD image served instead of a file (passed as rbd_fd)
    device_fd: int = -1  # /dev/vduse/NAME, O_RDWR | O_NONBLOCK
    backing_fd: int = -1
    stats_fd: int | None = None
    inflight_fd: int | None = None
    direct_fd: int | None = None  # the backing with O_DIRECT, where the kernel allows it
    qos_fd: int | None = None
    control_fd: int | None = None  # listening, AF_UNIX SOCK_SEQPACKET
    rbd_fd: int | None = None  # instead of backing_fd: the RBD target (a memfd)

    def fds(self) -> tuple[int, ...]:
        """Every descriptor the process must inherit."""
        fds = (
            self.device_fd, self.backing_fd, self.stats_fd, self.inflight_fd, self.ready_fd,
            self.direct_fd, self.qos_fd, self.control_fd, self.rbd_fd,
        )  # fmt: skip
        return tuple(fd for fd in fds if fd is not None and fd >= 0)

    def argv(self) -> list[str]:
        """The command line that ``parse`` reads back into these arguments (less the paths
        of the stats, in-flight, QoS and control files, which the dataplane gets as fds
        only)."""
        if self.device_fd < 0 or (self.backing_fd < 0) == (self.rbd_fd is None):
            raise ValueError("the device fd and one backing fd (file or RBD) must be open")
        profile = self.profile
        backing = ["--rbd-fd", str(self.rbd_fd)] if self.rbd_fd is not None else []
        argv = [
            "--protocol", str(PROTOCOL_VERSION),
            "--name", self.name,
            "--backing", str(self.backing),
            "--device-fd", str(self.device_fd),
            *(backing or ["--backing-fd", str(self.backing_fd)]),
            "--queues", str(profile.queues),
            "--queue-size", str(profile.queue_size),
            "--block-size", str(profile.block_size),
            "--serial", self.serial,
        ]  # fmt: skip
        if self.stats_fd is not None:
            argv += ["--stats-fd", str(self.stats_fd)]
        if self.inflight_fd is not None:
            argv += ["--inflight-fd", str(self.inflight_fd)]
        if self.direct_fd is not None:
            argv += ["--direct-fd", str(self.direct_fd)]
        if self.qos_fd is not None:
            argv += ["--qos-fd", str(self.qos_fd)]
        if self.control_fd is not None:
            argv += ["--control-fd", str(self.control_fd)]
        if profile.readonly:
            argv.append("--readonly")
        if profile.packed:
            argv.append("--packed")
        if self.ready_fd is not None:
            argv += ["--ready-fd", str(self.ready_fd)]
        return argv

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> DataplaneArgs:
        parser = argparse.ArgumentParser(prog="python -m csi_vduse.dataplane", description=__doc__)
        parser.add_argument("--protocol", type=int, default=PROTOCOL_VERSION)
        parser.add_argument("--name", required=True, help="VDUSE device name")
        parser.add_argument("--backing", type=Path, required=True, help="the backing's name")
        parser.add_argument("--device-fd", type=int, required=True, help="the device node")
        backing = parser.add_mutually_exclusive_group(required=True)
        backing.add_argument("--backing-fd", type=int, help="the backing file, open")
        backing.add_argument("--rbd-fd", type=int, help="the RBD image to serve (a memfd)")
        parser.add_argument("--readonly", action="store_true")
        parser.add_argument("--packed", action="store_true", help="offer packed virtqueues")
        parser.add_argument("--queues", type=int, default=1)
        parser.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE)
        parser.add_argument("--block-size", type=int, default=SECTOR_SIZE, help="logical block")
        parser.add_argument("--serial", default="", help="GET_ID answer (20 bytes at most)")
        parser.add_argument("--ready-fd", type=int, default=None)
        parser.add_argument("--stats-fd", type=int, default=None, help="I/O counters file")
        parser.add_argument(
            "--inflight-fd", type=int, default=None, help="progress log, for taking over"
        )
        parser.add_argument("--direct-fd", type=int, default=None, help="the backing, O_DIRECT")
        parser.add_argument("--qos-fd", type=int, default=None, help="the I/O limits page")
        parser.add_argument(
            "--control-fd", type=int, default=None, help="the control socket, listening"
        )
        ns = parser.parse_args(argv)
        if ns.protocol != PROTOCOL_VERSION:
            parser.error(f"protocol {ns.protocol} is not {PROTOCOL_VERSION}")
        try:
            profile = BlkProfile(
                readonly=ns.readonly, queues=ns.queues, queue_size=ns.queue_size,
                block_size=ns.block_size, packed=ns.packed,
            )  # fmt: skip
        except ProfileError as exc:
            parser.error(str(exc))
        return cls(
            name=ns.name, backing=ns.backing, profile=profile, serial=ns.serial,
            ready_fd=ns.ready_fd, device_fd=ns.device_fd,
            backing_fd=-1 if ns.backing_fd is None else ns.backing_fd, rbd_fd=ns.rbd_fd,
            stats_fd=ns.stats_fd, inflight_fd=ns.inflight_fd,
            direct_fd=ns.direct_fd, qos_fd=ns.qos_fd, control_fd=ns.control_fd,
        )  # fmt: skip


def open_flags(readonly: bool) -> int:
    """How the starter opens the backing it passes (``--backing-fd``)."""
    return (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC


def report_ready(
    fd: int | None, error: str | None = None, *, code: int | None = None, rbd_client: str = ""
) -> None:
    """Send the one readiness line and close the pipe.

    A closed pipe means the process that started us died before it read the line. That is
    no reason to stop: a ready dataplane holds the device and serves it, and the driver's
    next instance adopts it; so it is logged, not raised.
    """
    if fd is None:
        return
    message: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "ready": error is None}
    if error is None:
        message["pid"] = os.getpid()
        if rbd_client:
            message["rbd_client"] = rbd_client
    else:
        message["error"] = error
        message["errno"] = code or 0
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
    except BrokenPipeError:
        log.warning("the process that started this dataplane is gone; serving on")
    finally:
        os.close(fd)


def report_waiting(fd: int | None, on: str) -> None:
    """Tell the starter this dataplane now waits on ``on`` (``ceph``), not on the CPU."""
    if fd is None:
        return
    message = {"protocol": PROTOCOL_VERSION, "waiting": on}
    with contextlib.suppress(BrokenPipeError):  # the starter is gone; report_ready says so
        os.write(fd, (json.dumps(message) + "\n").encode())


def parse_ready(line: bytes) -> dict[str, Any]:
    """Decode the readiness line; a malformed one counts as an error report."""
    try:
        message = json.loads(line)
    except ValueError:
        return {"ready": False, "error": f"unreadable readiness report {line[:200]!r}"}
    if not isinstance(message, dict) or message.get("protocol") != PROTOCOL_VERSION:
        return {"ready": False, "error": f"unexpected readiness report {message!r}"}
    return message
