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
from dataplane.__main__ import log_start_up
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


def test_the_dataplane_logs_its_start_up_phases_on_the_monotonic_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """bench/takeover.py lines these stamps up with the kill that made the takeover."""
    caplog.set_level("INFO", logger="dataplane")
    log_start_up(10.0, 10.25, 10.5, 10.625, 11.0)
    [line] = [r.getMessage() for r in caplog.records if "start-up" in r.getMessage()]
    assert "imports 250 ms, set-up 250 ms, resume 125 ms, to ready 375 ms" in line
    assert (
        "CLOCK_MONOTONIC started=10.000000 imported=10.250000 set_up=10.500000 "
        "resumed=10.625000 ready=11.000000" in line
    )
