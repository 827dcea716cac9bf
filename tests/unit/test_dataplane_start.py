"""Dataplane starts are CPU-bound: a burst of them must not all share the CPUs at once."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from csi_vduse.devices import dataplane_process
from csi_vduse.devices.dataplane_process import ProcessId
from dataplane.interface import DataplaneArgs


def test_no_more_dataplanes_start_at_once_than_there_are_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = peak = 0
    lock = threading.Lock()

    def one_start(args: DataplaneArgs, log_file: Path, cgroup: Path | None) -> ProcessId:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return ProcessId(1, 1)

    monkeypatch.setattr(dataplane_process, "_start", one_start)
    cpus = len(os.sched_getaffinity(0))
    burst = 4 * cpus + 4
    with ThreadPoolExecutor(max_workers=burst) as workers:
        started = [
            workers.submit(dataplane_process.start, None, Path("log"))  # type: ignore[arg-type]
            for _ in range(burst)
        ]
    assert [f.result() for f in started] == [ProcessId(1, 1)] * burst
    assert peak == cpus
