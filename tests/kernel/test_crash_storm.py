"""A storm of kills at random moments: the block volume stalls, it never fails.

fio writes with crc32c verification straight to a published block volume for 60 s while
the test SIGKILLs its dataplane at random intervals of 0.3-2.5 s, without waiting for
the replacement to be ready (so kills also land while a successor starts up or takes the
device over), and twice SIGKILLs the driver too, killing the dataplane while nobody
supervises it and bringing the driver back a moment later. The bar: zero fio errors,
zero kernel I/O errors, every block fio wrote verifies, and at least 15 kills landed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.driver import block_capability
from tests.kernel.conftest import dataplane_pids
from tests.kernel.test_crash_recovery import kernel_io_errors, wait_for_new_dataplane
from tests.kernel.test_kubelet_lifecycle import Kubelet, kubelet

__all__ = ["kubelet"]  # the fixture, re-exported for pytest

pytestmark = pytest.mark.vm

MiB = 1 << 20
RUNTIME = 60
GAPS = (0.3, 2.5)  # seconds between kills, uniformly drawn
DRIVER_KILLS_AT = (0.3, 0.65)  # fractions of the run at which the driver dies too
MIN_KILLS = 15


@dataclass
class Storm:
    """Kills the volume's dataplane (and now and then the driver) until told to stop."""

    kubelet: Kubelet
    name: str
    seed: int
    kills: int = 0
    driver_kills: int = 0
    log: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def kill_dataplanes(self) -> set[int]:
        pids = set(dataplane_pids(self.name))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        if pids:
            self.kills += 1
        return pids

    def run(self) -> None:
        rng = random.Random(self.seed)
        start = time.monotonic()
        due = list(DRIVER_KILLS_AT)
        while not self.stop.wait(rng.uniform(*GAPS)):
            elapsed = (time.monotonic() - start) / RUNTIME
            if due and elapsed >= due[0]:
                due.pop(0)
                # The driver dies with its dataplane; nobody replaces it until it is back.
                self.kubelet.driver.stop(signal.SIGKILL)
                self.driver_kills += 1
                self.kill_dataplanes()
                time.sleep(rng.uniform(*GAPS))
                self.kubelet.driver.start()
                self.log.append(f"{time.monotonic() - start:.1f}s driver restarted")
                continue
            pids = self.kill_dataplanes()
            self.log.append(f"{time.monotonic() - start:.1f}s killed {sorted(pids)}")


def diagnosis(storm: Storm) -> str:
    """What the storm did, and the last words of the driver, dataplanes and launcher."""
    driver = storm.kubelet.driver
    logs = {
        "driver": driver.log_path,
        "dataplane": driver.state_dir / "devices" / f"{storm.name}.log",
        "launcher": driver.state_dir / "launcher.log",
    }
    parts = [f"storm (seed {storm.seed}):", *storm.log[-40:]]
    for what, path in logs.items():
        text = path.read_text(errors="replace") if path.exists() else "(none)"
        parts += [f"--- {what} log, last lines:", *text.splitlines()[-40:]]
    return "\n".join(parts)


def fio_verified_block_writes(device: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "fio", "--name=storm", f"--filename={device}", "--size=96M",
            "--rw=randwrite", "--bssplit=4k/60:64k/25:256k/15", "--ioengine=libaio",
            "--direct=1", "--iodepth=16",
            "--verify=crc32c", "--verify_backlog=256", "--verify_fatal=1",
            "--time_based", f"--runtime={RUNTIME}", "--output-format=json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_kills_at_random_moments_including_start_up_lose_nothing(kubelet: Kubelet) -> None:
    capability = block_capability()
    pv, volume_id = kubelet.create(capability, size=128 * MiB)
    staging = kubelet.block_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    target = kubelet.block_target(pv, str(uuid.uuid4()))
    kubelet.publish(volume_id, staging, target, capability)
    errors_before = kernel_io_errors()

    storm = Storm(kubelet, volume_id, seed=random.randrange(1 << 32))
    print(f"storm seed {storm.seed}")
    fio = fio_verified_block_writes(target)
    chaos = threading.Thread(target=storm.run)
    chaos.start()
    try:
        out, err = fio.communicate(timeout=RUNTIME + 300)
    except subprocess.TimeoutExpired:
        fio.kill()
        fio.communicate()
        raise AssertionError(f"I/O stalled for good after the storm\n{diagnosis(storm)}") from None
    finally:
        storm.stop.set()
        chaos.join()
    print("\n".join(storm.log))

    assert fio.returncode == 0, (
        f"fio failed ({fio.returncode}): {err}\n{out[-2000:]}\n{diagnosis(storm)}"
    )
    [job] = json.loads(out[out.index("{") :])["jobs"]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] > 0
    assert storm.driver_kills == len(DRIVER_KILLS_AT)
    assert storm.kills >= MIN_KILLS, f"only {storm.kills} kills landed: {storm.log}"
    assert kernel_io_errors() == errors_before
    # The storm is over: a replacement takes the device over and the volume is whole.
    wait_for_new_dataplane(kubelet.driver.state_dir, volume_id, set(), timeout=120)
    with open(target, "rb", buffering=0) as disk:
        assert len(disk.read(MiB)) == MiB
    print(
        f"{storm.kills} dataplane kills ({storm.driver_kills} with the driver), "
        f"{job['write']['io_bytes'] // MiB} MiB written and verified"
    )
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
