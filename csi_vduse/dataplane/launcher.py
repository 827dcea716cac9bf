"""A pre-started launcher that forks dataplanes with nothing left to import.

A dataplane killed under load leaves its guest waiting until a successor takes the device
over, and most of a cold start is the interpreter and its imports (seconds in the test VM,
where every file comes over 9p). The serving driver therefore keeps one launcher running
(``csi_vduse.devices.launcher``): started like a dataplane (unprivileged, its own session,
the dataplanes' cgroup) and with every dataplane module imported, it forks a dataplane per
request, which then only sets up and takes over. See ``csi_vduse.dataplane.interface`` for the
messages on its control socket.

The launcher is single-threaded, so forking is safe; it reaps its children and reports how
each one ended, which only a parent can learn. When the driver goes (the control socket
reads end of file), the launcher goes too; the dataplanes it forked run on in their own
sessions, as cold-started ones do.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from csi_vduse import dataplane
from csi_vduse.dataplane import interface
from csi_vduse.dataplane.__main__ import main as dataplane_main

log = logging.getLogger("dataplane.launcher")

Entry = Callable[[list[str]], int]
MAX_MESSAGE = 1 << 16
COMM = "dp-launcher"  # /proc/PID/comm of the launcher; its children take interface.CHILD_COMM


def preload_rbd() -> None:
    """Import what an RBD dataplane needs too (librbd with it), so its takeover does not
    wait for them; a node without librbd serves files all the same."""
    try:
        import csi_vduse.dataplane.rbd.queues  # noqa: F401, PLC0415
    except ImportError as exc:
        log.info("RBD dataplanes will load librbd themselves: %s", exc)


def serve(control: socket.socket, entry: Entry = dataplane_main) -> int:
    """Answer launch requests on ``control`` until it closes; the exit status."""
    _name_process(COMM)
    preload_rbd()
    children: dict[int, int] = {}  # pidfd -> pid
    _send(control, {"protocol": interface.PROTOCOL_VERSION, "ready": True, "pid": os.getpid()})
    while True:
        readable, _, _ = select.select([control.fileno(), *children], [], [])
        for fd in readable:
            if fd in children:
                _reap(control, children, fd)
                continue
            try:
                data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, interface.MAX_LAUNCH_FDS)
            except OSError as exc:
                log.info("control socket: %s: stopping", exc)
                return 0
            if not data:
                return 0  # the driver went; what was launched runs on
            _launch(control, children, data=data, fds=fds, entry=entry)


def _launch(
    control: socket.socket, children: dict[int, int], *, data: bytes, fds: list[int], entry: Entry
) -> None:
    try:
        request = json.loads(data)
        ident, argv, targets = request["launch"], request["argv"], request["fds"]
        if len(fds) != len(targets) + 1:
            raise ValueError(f"{len(fds)} descriptors for {len(targets)} targets and a log")
    except (ValueError, KeyError, TypeError) as exc:
        for fd in fds:
            os.close(fd)
        _send(control, {"launched": None, "error": f"bad launch request: {exc}"})
        return
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _become_dataplane(argv, entry, fds=fds, targets=targets, leave=[control, *children])
    for fd in fds:
        os.close(fd)  # the device node above all: only one process may hold it
    children[os.pidfd_open(pid)] = pid
    _send(control, {"launched": ident, "pid": pid})


def _become_dataplane(
    argv: list[str], entry: Entry, *, fds: list[int], targets: list[int],
    leave: list[socket.socket | int],
) -> None:  # fmt: skip
    """The forked child: the launcher's descriptors (``leave``) go, the request's take the
    numbers its argv names, and the dataplane runs. Never returns into the launcher's loop."""
    code = 1
    try:
        os.setsid()
        for held in leave:
            if isinstance(held, int):
                os.close(held)
            else:
                held.close()
        _name_process(interface.CHILD_COMM)
        _place(fds, targets)
        for handler in logging.root.handlers[:]:  # the dataplane sets up its own
            logging.root.removeHandler(handler)
        dataplane.STARTED = time.monotonic()  # its start-up phases begin at the fork
        code = entry(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # no interpreter teardown: that is the launcher's, not ours


def _place(fds: list[int], targets: list[int]) -> None:
    """The log on stdout and stderr, every other descriptor at its target number."""
    log_fd, rest = fds[0], fds[1:]
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    # Out of the way first, so no dup2 below closes a descriptor still to be placed.
    floor = max([*targets, *rest, 2]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in rest]
    for fd in rest:
        os.close(fd)
    for fd, target in zip(moved, targets, strict=True):
        os.dup2(fd, target, inheritable=False)
        os.close(fd)


def _reap(control: socket.socket, children: dict[int, int], pidfd: int) -> None:
    pid = children.pop(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    _send(control, {"exited": pid, "status": os.waitstatus_to_exitcode(status)})


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the driver is gone: nobody to tell
        control.send(json.dumps(message).encode())


def _name_process(name: str) -> None:
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name)


def main(argv: list[str] | None = None, entry: Entry = dataplane_main) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m csi_vduse.dataplane.launcher", description=__doc__
    )
    parser.add_argument("--protocol", type=int, default=interface.PROTOCOL_VERSION)
    parser.add_argument("--control-fd", type=int, required=True, help="SOCK_SEQPACKET socket")
    ns = parser.parse_args(argv)
    if ns.protocol != interface.PROTOCOL_VERSION:
        parser.error(f"protocol {ns.protocol} is not {interface.PROTOCOL_VERSION}")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s dataplane-launcher %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    control = socket.socket(fileno=ns.control_fd)
    try:
        return serve(control, entry)
    finally:
        control.close()


if __name__ == "__main__":
    sys.exit(main())
