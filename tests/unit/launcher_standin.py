"""``python -m dataplane.launcher`` with a stand-in dataplane, for tests/unit/test_launcher.py.

The stand-in parses what a dataplane would (``--name``, ``--ready-fd``) and behaves as the
name says: ``ready-then-sleep``, ``exit-3`` (before readiness), ``killed`` (SIGKILLs itself
before readiness), or ``show-fds`` (reports, as its readiness error, which of the numbers
its argv names it holds, and what its stdout is).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from csi_vduse.dataplane import launcher
from csi_vduse.dataplane.interface import PROTOCOL_VERSION


def stand_in(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name")
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--hold", type=int, action="append", default=[])
    ns, _ = parser.parse_known_args(argv)
    logging.basicConfig(format="stand-in[%(name)s] %(message)s", stream=sys.stderr)
    logging.getLogger("dataplane").warning("%s running", ns.name)
    if ns.name == "exit-3":
        return 3
    if ns.name == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    message: dict[str, object] = {"protocol": PROTOCOL_VERSION, "ready": True, "pid": os.getpid()}
    if ns.name == "show-fds":
        held = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in ns.hold}
        message = {"protocol": PROTOCOL_VERSION, "ready": False, "error": json.dumps(held)}
    os.write(ns.ready_fd, (json.dumps(message) + "\n").encode())
    os.close(ns.ready_fd)
    if ns.name == "ready-then-sleep":
        time.sleep(60)
    return 0


if __name__ == "__main__":
    sys.exit(launcher.main(sys.argv[1:], stand_in))
