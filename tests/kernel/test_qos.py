"""Per-volume I/O limits on the real kernel: fio against a limited volume measures the limit,
follows a live change made through ControllerModifyVolume, and keeps measuring it after the
dataplane is killed and replaced and after the driver is killed and restarted.

The limits are far below what the device does unlimited in the test VM, so what fio
measures is the token bucket, not the machine; the windows fio's per-second log is cut into
leave out the seconds around each change.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.driver import block_capability, pb
from tests.kernel.conftest import dataplane_pids
from tests.kernel.test_crash_recovery import kernel_io_errors, wait_for_new_dataplane
from tests.kernel.test_kubelet_lifecycle import Kubelet, kubelet

__all__ = ["kubelet"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.vm

MiB = 1 << 20
LIMIT = 100  # IOPS: a fraction of what the emulated device serves unlimited
TOLERANCE = 0.10  # the bar: fio measures the limit within ±10%
RAISE_AFTER = 14.0  # seconds into the first fio run when the limit is doubled, live


def start_fio(device: Path, seconds: int, log_prefix: Path) -> subprocess.Popen[str]:
    """Random 4 KiB reads at queue depth 8, logging IOPS once a second."""
    job = [
        "fio", "--name=qos", f"--filename={device}", "--ioengine=libaio", "--direct=1",
        "--rw=randread", "--bs=4k", "--iodepth=8", "--time_based", f"--runtime={seconds}",
        f"--write_iops_log={log_prefix}", "--log_avg_msec=1000", "--output-format=terse",
    ]  # fmt: skip
    return subprocess.Popen(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_fio(fio: subprocess.Popen[str], log_prefix: Path) -> list[tuple[float, int]]:
    """(second, IOPS) for every second fio logged; fio must end without an I/O error."""
    out, err = fio.communicate(timeout=300)
    assert fio.returncode == 0, f"fio failed ({fio.returncode}):\n{out}\n{err}"
    errors = int(out.strip().splitlines()[-1].split(";")[4])  # terse: total errors
    assert errors == 0, out
    samples = []
    for line in Path(f"{log_prefix}_iops.1.log").read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        samples.append((int(fields[0]) / 1000, int(fields[1])))
    return samples


def rate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Mean IOPS over the seconds logged in [start, end]."""
    window = [iops for second, iops in samples if start <= second <= end]
    assert len(window) >= 3, f"too few samples in [{start}, {end}]: {samples}"
    return statistics.fmean(window)


def assert_near(measured: float, limit: int, what: str) -> None:
    low, high = limit * (1 - TOLERANCE), limit * (1 + TOLERANCE)
    print(f"{what}: {measured:.1f} IOPS against a limit of {limit}", flush=True)
    assert low <= measured <= high, f"{what}: {measured:.1f} IOPS, not within ±10% of {limit}"


def measure(device: Path, tmp_path: Path, label: str, seconds: int = 10) -> float:
    prefix = tmp_path / f"fio-{label}"
    samples = finish_fio(start_fio(device, seconds, prefix), prefix)
    return rate(samples, 2, seconds)


def modify(kubelet: Kubelet, volume_id: str, iops: int) -> None:
    kubelet.driver.controller_stub.ControllerModifyVolume(
        pb.ControllerModifyVolumeRequest(
            volume_id=volume_id, mutable_parameters={"maxIops": str(iops)}
        )
    )


def test_an_iops_limit_holds_follows_a_live_change_and_survives_restarts(
    kubelet: Kubelet, tmp_path: Path
) -> None:
    capability = block_capability()
    pv = f"pvc-{uuid.uuid4()}"
    volume_id = kubelet.driver.controller_stub.CreateVolume(
        pb.CreateVolumeRequest(
            name=pv,
            capacity_range=pb.CapacityRange(required_bytes=64 * MiB),
            volume_capabilities=[capability],
            mutable_parameters={"maxIops": str(LIMIT), "burstSeconds": "0"},
        )
    ).volume.volume_id
    staging = kubelet.block_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    device = kubelet.block_target(pv, "pod")
    kubelet.publish(volume_id, staging, device, capability)
    errors_before = kernel_io_errors()

    # One fio run across a live change: the limit, then twice the limit.
    prefix = tmp_path / "fio-live"
    fio = start_fio(device, int(RAISE_AFTER) + 14, prefix)
    started = time.monotonic()
    time.sleep(RAISE_AFTER)
    modify(kubelet, volume_id, 2 * LIMIT)
    raised = time.monotonic() - started  # fio's clock started later: its raise is earlier
    samples = finish_fio(fio, prefix)
    assert_near(rate(samples, 2, raised - 3), LIMIT, "before the change")
    assert_near(rate(samples, raised + 2, raised + 14), 2 * LIMIT, "after the live change")

    # A successor dataplane maps the same limits.
    old = set(dataplane_pids(volume_id))
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    wait_for_new_dataplane(kubelet.driver.state_dir, volume_id, old)
    assert_near(measure(device, tmp_path, "taken-over"), 2 * LIMIT, "after a takeover")

    # A driver killed and restarted leaves the dataplane and its limits alone, and can
    # change them again.
    kubelet.driver.stop(signal.SIGKILL)
    kubelet.driver.start()
    assert_near(measure(device, tmp_path, "restarted"), 2 * LIMIT, "after a driver restart")
    modify(kubelet, volume_id, LIMIT)
    assert_near(measure(device, tmp_path, "lowered"), LIMIT, "lowered after the restart")

    assert kernel_io_errors() == errors_before
    kubelet.unpublish(volume_id, device)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
