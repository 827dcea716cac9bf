"""Devices on Ceph RBD images, on the real kernel against the test cluster (tests.ceph).

fio verifies every block it writes through one queue, and through two while an OSD stops
for ten seconds (requests wait, none fails); discard and write zeroes
reach the image (it holds less); the image grown by ``rbd resize`` grows the device
online; bad credentials, monitors and images get clear errors and leave nothing behind (a
second writer, refused, is test_rbd_node's). The crash storm's helpers are here; the storm
itself runs on a volume staged through CSI (test_rbd_node); rbd-nbd killed once, for
comparison, is ``bench/run.sh takeover --backing rbd``'s (it can leave the guest's nbd
driver hung).
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ceph import CephClient
from tests.kernel.conftest import Cli, leftovers, sh
from tests.kernel.test_crash_recovery import kernel_io_errors

pytestmark = pytest.mark.vm

MiB = 1 << 20
STORM_SECONDS = 60
KILL_GAPS = (1.5, 2.5)  # seconds between dataplane kills
MIN_KILLS = 15


@dataclass
class RbdCli:
    """``csi-vduse device create --rbd`` as the test cluster's user."""

    cli: Cli
    ceph: CephClient
    images: list[str] = field(default_factory=list)

    def image(self, name: str, size: str = "256M") -> str:
        spec = self.ceph.image(f"{name}-{random.randrange(1 << 30):x}")
        self.ceph.rbd("create", "--size", size, spec)
        self.images.append(spec)
        return spec

    def create(
        self, name: str, spec: str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.cli.run(
            "device", "create", name, "--rbd", spec, *self.ceph_flags(), *extra, check=check
        )

    def ceph_flags(self, keyfile: Path | None = None) -> list[str]:
        return [
            "--ceph-conf", str(self.ceph.cluster.conf_path), "--ceph-user", self.ceph.user,
            "--ceph-keyfile", str(keyfile or self.ceph.keyring),
        ]  # fmt: skip

    def used_bytes(self, spec: str) -> int:
        done = self.ceph.rbd("du", "--format", "json", spec)
        [image] = json.loads(done.stdout)["images"]
        return int(image["used_size"])


@pytest.fixture
def rbd(cli: Cli, ceph_client: CephClient) -> Iterator[RbdCli]:
    tool = RbdCli(cli, ceph_client)
    yield tool
    for device in cli.list():  # images are removed only once no device holds them
        cli.run("device", "delete", device["name"], check=False)
    for spec in tool.images:
        ceph_client.rbd("rm", "--no-progress", spec, check=False)


def fio_verify(device: Path, *extra: str, runtime: int | None = None) -> subprocess.Popen[str]:
    """Mixed sizes, written then read back and checked (crc32c)."""
    timed = ["--time_based", f"--runtime={runtime}"] if runtime else []
    return subprocess.Popen(
        [
            "fio", "--name=rbd", f"--filename={device}", "--size=96M", "--rw=randwrite",
            "--bssplit=4k/50:64k/30:1M/20", "--ioengine=libaio", "--direct=1",
            "--iodepth=16", "--verify=crc32c", "--verify_fatal=1", "--output-format=json",
            *timed, *extra,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finished(fio: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    out, err = fio.communicate(timeout=timeout)
    assert fio.returncode == 0, f"fio failed ({fio.returncode}): {err}\n{out[-2000:]}"
    [job] = json.loads(out[out.index("{") :])["jobs"]
    assert job["error"] == 0
    return dict(job)


def test_every_block_written_through_an_rbd_device_verifies_with_one_queue(rbd: RbdCli) -> None:
    """Two queues' (the default in the VM) verified fio is the OSD outage test's."""
    spec = rbd.image("verify")
    device = Path(rbd.create("rbd0", spec, "--num-queues", "1").stdout.strip())
    errors = kernel_io_errors()
    job = finished(fio_verify(device, "--verify_backlog=256"), timeout=600)
    assert job["write"]["io_bytes"] >= 96 * MiB  # type: ignore[index]
    assert kernel_io_errors() == errors
    log = (rbd.cli.state_dir / "devices" / "rbd0.log").read_text()
    assert "reads and writes via librbd" in log
    assert "with IPv4/IPv6 sockets for Ceph" in log  # confined, with exactly that widening


def test_discard_and_write_zeroes_reach_the_image(rbd: RbdCli) -> None:
    spec = rbd.image("trim", size="64M")
    device = rbd.create("rbd0", spec).stdout.strip()
    sh("dd", "if=/dev/urandom", f"of={device}", "bs=1M", "count=48", "oflag=direct")
    full = rbd.used_bytes(spec)
    assert full >= 40 * MiB
    sh("blkdiscard", "--offset", "0", "--length", str(32 * MiB), device)
    sh("blkdiscard", "--zeroout", "--offset", str(32 * MiB), "--length", str(16 * MiB), device)
    assert rbd.used_bytes(spec) < full - 24 * MiB  # whole objects (4 MiB) are freed
    with open(device, "rb", buffering=0) as disk:
        disk.seek(32 * MiB)
        assert disk.read(16 * MiB) == bytes(16 * MiB)


def test_an_image_grown_anywhere_grows_the_device_online(rbd: RbdCli) -> None:
    spec = rbd.image("grow", size="64M")
    device = Path(rbd.create("rbd0", spec).stdout.strip())
    sectors = Path(f"/sys/block/{device.name}/size")
    rbd.ceph.rbd("resize", "--no-progress", "--size", "96M", spec)  # by someone else
    deadline = time.monotonic() + 60
    while int(sectors.read_text()) != 96 * MiB // 512:
        assert time.monotonic() < deadline, f"still {sectors.read_text().strip()} sectors"
        time.sleep(0.2)
    rbd.cli.run("device", "resize", "rbd0", "--size", "128M")  # by the driver
    assert int(sectors.read_text()) == 128 * MiB // 512
    info = json.loads(rbd.ceph.rbd("info", "--format", "json", spec).stdout)
    assert info["size"] == 128 * MiB


def test_bad_credentials_monitors_or_images_get_clear_errors_and_leave_nothing(
    rbd: RbdCli, tmp_path: Path
) -> None:
    spec = rbd.image("refused")
    wrong = tmp_path / "wrong.keyring"
    sh(
        "ceph-authtool",
        "--create-keyring",
        str(wrong),
        "--gen-key",
        "-n",
        f"client.{rbd.ceph.user}",
    )
    wrong_key = wrong.read_text().split("key = ")[1].split()[0]
    cases = {
        "permission denied": [*rbd.ceph_flags(keyfile=wrong)],
        "no Ceph monitor answered within 5 s (mon_host 127.0.0.1:1)": [
            *rbd.ceph_flags(),
            "--ceph-mon-host",
            "127.0.0.1:1",
            "--ceph-timeout",
            "5",
        ],
    }
    for message, flags in cases.items():
        done = rbd.cli.run("device", "create", "rbd0", "--rbd", spec, *flags, check=False)
        assert done.returncode != 0 and message in done.stderr, done.stderr
        assert wrong_key not in done.stderr  # never quoted
    done = rbd.create("rbd0", rbd.ceph.image("no-such-image"), check=False)
    assert "does not exist" in done.stderr, done.stderr
    assert leftovers("rbd0") == [] and rbd.cli.list() == []


def ext4_errors() -> int:
    """Errors ext4 logged (it remounts read-only after one)."""
    return sh("dmesg", check=False).stdout.count("EXT4-fs error")


def io_completed(device: Path) -> int:
    """Reads plus writes the guest saw complete on ``device`` (/sys/block/X/stat)."""
    fields = Path(f"/sys/block/{device.name}/stat").read_text().split()
    return int(fields[0]) + int(fields[4])


def wait_for_progress(device: Path, timeout: float = 120.0) -> None:
    """Until completions on ``device`` go on (fio takes seconds to start in the TCG VM)."""
    before = io_completed(device)
    deadline = time.monotonic() + timeout
    while io_completed(device) < before + 64:
        assert time.monotonic() < deadline, f"no I/O completed on {device} in {timeout:.0f} s"
        time.sleep(0.2)


OSD_OUTAGE = 10.0  # seconds


def test_an_osd_down_for_ten_seconds_stalls_io_and_fails_none(rbd: RbdCli) -> None:
    """Requests wait for the OSD (librados resends them once it is back); the guest sees
    them late, never failed."""
    spec = rbd.image("outage")
    device = Path(rbd.create("rbd0", spec).stdout.strip())
    errors = kernel_io_errors()
    fio = fio_verify(device, "--verify_backlog=256", runtime=45)
    cluster = rbd.ceph.cluster
    try:
        wait_for_progress(device)
        cluster.stop_osd()
        time.sleep(1.0)  # what was on its way completes or waits
        stalled_at = io_completed(device)
        time.sleep(OSD_OUTAGE - 1.0)
        assert io_completed(device) == stalled_at  # nothing is served without the OSD
    finally:
        cluster.start_osd()
    job = finished(fio, timeout=600)
    longest = max(job[side]["clat_ns"]["max"] for side in ("read", "write"))  # type: ignore[index]
    assert longest >= (OSD_OUTAGE - 1.0) * 1e9  # some requests waited out the outage
    assert kernel_io_errors() == errors
