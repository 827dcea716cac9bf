"""The control plane <-> dataplane process contract, versioned.

The control plane starts ``python -m csi_vduse.dataplane`` with the arguments below and an
inherited pipe (``--ready-fd``). The dataplane writes exactly one JSON line to it
and closes it: ``{"protocol": 1, "ready": true, "pid": N}`` once it holds the
device node and answers messages, or ``{"protocol": 1, "ready": false, "error":
"..."}`` when it cannot start. SIGTERM stops it; its exit closes the device node.

Protocol 2 adds ``--engine`` and SIGHUP: "the backing may have grown". The
dataplane re-reads the backing's size and, if it grew, publishes the new capacity
in the config space and raises the config interrupt, so the guest sees the new
size without a detach. It never shrinks a device.

Protocol 3 adds ``--stats PATH``: the dataplane keeps its per-queue I/O counters in
that file (layout in ``csi_vduse.dataplane.stats``), which the driver's metrics endpoint reads.

Protocol 4 adds ``--inflight-log PATH`` (``csi_vduse.dataplane.inflight_log``): the
dataplane records its progress there, and one started on a device whose log shows a driver
at work takes the device over (reconnect) instead of waiting for the driver to start it.

Protocol 5 passes every file as an open descriptor (``--device-fd``, ``--backing-fd``,
``--stats-fd``, ``--inflight-fd``): the dataplane runs as an unprivileged user that could
not open them itself, and opens nothing.

Protocol 6 adds ``--direct-fd``: the backing opened again with O_DIRECT, for the dataplane
to use where that helps (see ``csi_vduse.dataplane.fast.engine``).

Protocol 7 adds the launcher (``csi_vduse.dataplane.launcher``), a pre-started process that forks
dataplanes with their imports done: ``python -m csi_vduse.dataplane.launcher --protocol 7
--control-fd N``, N a SOCK_SEQPACKET socket, one JSON message per packet:

- launcher -> driver, once its imports are done: ``{"protocol": 7, "ready": true, "pid": P}``
- driver -> launcher: ``{"launch": ID, "argv": [the dataplane's arguments], "fds": [N...]}``
  with SCM_RIGHTS descriptors: first the log (the child's stdout and stderr), then one per
  number in ``fds``, which the child holds at exactly that number, as its argv names it.
- launcher -> driver: ``{"launched": ID, "pid": P}`` or ``{"launched": ID, "error": "..."}``;
  the child then reports readiness on its ready fd as a started dataplane does.
- launcher -> driver: ``{"exited": P, "status": S}`` when a child ends (S as Popen reports
  it: negative for a signal), since only its parent can learn that.

Protocol 8 passes the device's logical block size (``--block-size``), so the dataplane's
``BlkProfile`` is the one the driver created the device with.

The launcher exits when the driver closes the socket; its children run on. They are named
``CHILD_COMM`` in ``/proc/PID/comm`` (their command line is the launcher's).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csi_vduse.dataplane.blk.profile import DEFAULT_QUEUE_SIZE, BlkProfile, ProfileError
from csi_vduse.virtio.blk import SECTOR_SIZE

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 8
MAX_LAUNCH_FDS = 8  # the log and DataplaneArgs.fds(), with room to spare
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
    engine: str = "fast"  # "python": the reference ring, for debugging and comparison
    stats: Path | None = None  # the shared counters file; None keeps no counters
    inflight_log: Path | None = None  # None: a dataplane that dies cannot be replaced
    device_fd: int = -1  # /dev/vduse/NAME, O_RDWR | O_NONBLOCK
    backing_fd: int = -1
    stats_fd: int | None = None
    inflight_fd: int | None = None
    direct_fd: int | None = None  # the backing with O_DIRECT, where the kernel allows it

    def fds(self) -> tuple[int, ...]:
        """Every descriptor the process must inherit."""
        fds = (
            self.device_fd, self.backing_fd, self.stats_fd, self.inflight_fd, self.ready_fd,
            self.direct_fd,
        )  # fmt: skip
        return tuple(fd for fd in fds if fd is not None and fd >= 0)

    def argv(self) -> list[str]:
        """The command line that ``parse`` reads back into these arguments (less the paths
        of the stats and in-flight files, which the dataplane gets as fds only)."""
        if self.device_fd < 0 or self.backing_fd < 0:
            raise ValueError("the device and backing fds are not open")
        profile = self.profile
        argv = [
            "--protocol", str(PROTOCOL_VERSION),
            "--name", self.name,
            "--backing", str(self.backing),
            "--device-fd", str(self.device_fd),
            "--backing-fd", str(self.backing_fd),
            "--queues", str(profile.queues),
            "--queue-size", str(profile.queue_size),
            "--block-size", str(profile.block_size),
            "--serial", self.serial,
            "--engine", self.engine,
        ]  # fmt: skip
        if self.stats_fd is not None:
            argv += ["--stats-fd", str(self.stats_fd)]
        if self.inflight_fd is not None:
            argv += ["--inflight-fd", str(self.inflight_fd)]
        if self.direct_fd is not None:
            argv += ["--direct-fd", str(self.direct_fd)]
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
        parser.add_argument("--backing-fd", type=int, required=True, help="the backing, open")
        parser.add_argument("--readonly", action="store_true")
        parser.add_argument("--packed", action="store_true", help="offer packed virtqueues")
        parser.add_argument("--queues", type=int, default=1)
        parser.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE)
        parser.add_argument("--block-size", type=int, default=SECTOR_SIZE, help="logical block")
        parser.add_argument("--serial", default="", help="GET_ID answer (20 bytes at most)")
        parser.add_argument("--ready-fd", type=int, default=None)
        parser.add_argument("--engine", choices=["fast", "python"], default="fast")
        parser.add_argument("--stats-fd", type=int, default=None, help="I/O counters file")
        parser.add_argument(
            "--inflight-fd", type=int, default=None, help="progress log, for taking over"
        )
        parser.add_argument("--direct-fd", type=int, default=None, help="the backing, O_DIRECT")
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
            ready_fd=ns.ready_fd, engine=ns.engine, device_fd=ns.device_fd,
            backing_fd=ns.backing_fd, stats_fd=ns.stats_fd, inflight_fd=ns.inflight_fd,
            direct_fd=ns.direct_fd,
        )  # fmt: skip


def open_flags(readonly: bool) -> int:
    """How the starter opens the backing it passes (``--backing-fd``)."""
    return (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC


def report_ready(fd: int | None, error: str | None = None) -> None:
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
    else:
        message["error"] = error
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
    except BrokenPipeError:
        log.warning("the process that started this dataplane is gone; serving on")
    finally:
        os.close(fd)


def parse_ready(line: bytes) -> dict[str, Any]:
    """Decode the readiness line; a malformed one counts as an error report."""
    try:
        message = json.loads(line)
    except ValueError:
        return {"ready": False, "error": f"unreadable readiness report {line[:200]!r}"}
    if not isinstance(message, dict) or message.get("protocol") != PROTOCOL_VERSION:
        return {"ready": False, "error": f"unexpected readiness report {message!r}"}
    return message
