"""The serving driver forks a child per dataplane: gRPC must not put threads into them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SERVER_THEN_FORK = """
import os, subprocess, sys
from concurrent import futures

import csi_vduse.csi.server  # what `csi-vduse serve` imports, before grpc
import grpc

server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_insecure_port("unix://" + sys.argv[1])
server.start()
grpc.channel_ready_future(grpc.insecure_channel("unix://" + sys.argv[1])).result(timeout=30)
count = lambda: os.write(1, str(len(os.listdir("/proc/self/task"))).encode())
subprocess.run(["true"], preexec_fn=count, check=True)  # fork, as a change of user forces
server.stop(0)
"""


def test_a_child_forked_by_a_serving_driver_has_only_the_forking_thread(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run(
        [sys.executable, "-c", SERVER_THEN_FORK, str(tmp_path / "csi.sock")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1", f"threads in the child before exec: {done.stdout}\n{done.stderr}"
