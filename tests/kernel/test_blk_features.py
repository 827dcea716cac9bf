"""virtio-blk features on the real kernel: multiqueue, discard, write zeroes, block sizes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from csi_vduse.dataplane import stats
from tests.kernel.conftest import Cli, dataplane_pid, sh

pytestmark = pytest.mark.vm

MiB = 1 << 20


def sysfs(dev: Path, attribute: str) -> str:
    return Path(f"/sys/block/{dev.name}/{attribute}").read_text().strip()


def test_two_queues_serve_parallel_verified_writers(cli: Cli, tmp_path: Path) -> None:
    dev = cli.create("mq0", tmp_path / "mq.img", "--size", "64M", "--num-queues", "2")
    assert sorted(os.listdir(f"/sys/block/{dev.name}/mq")) == ["0", "1"]
    # Two jobs, each pinned to one CPU, so both queues carry requests.
    for cpu in (0, 1):
        sh("fio", "--output-format=terse", "--ioengine=libaio", "--direct=1",
           f"--name=q{cpu}", f"--filename={dev}", f"--cpus_allowed={cpu}", "--rw=randwrite",
           "--bs=4k", "--iodepth=16", f"--offset={cpu * 32}M", "--size=32M",
           "--verify=crc32c", "--verify_fatal=1")  # fmt: skip
    cli.delete("mq0")


def test_discard_punches_holes_in_the_backing_file(cli: Cli, tmp_path: Path) -> None:
    backing = tmp_path / "discard.img"
    backing.write_bytes(b"\x5a" * 16 * MiB)
    dev = cli.create("dis0", backing)
    assert int(sysfs(dev, "queue/discard_max_bytes")) > 0
    blocks_before = os.stat(backing).st_blocks
    sh("blkdiscard", "--offset", str(4 * MiB), "--length", str(8 * MiB), str(dev))
    assert os.stat(backing).st_blocks <= blocks_before - 8 * MiB // 512
    cli.delete("dis0")
    data = backing.read_bytes()
    assert data[4 * MiB : 12 * MiB] == bytes(8 * MiB)
    assert data[: 4 * MiB] == data[12 * MiB :] == b"\x5a" * 4 * MiB


def test_write_zeroes_zeroes_the_range(cli: Cli, tmp_path: Path) -> None:
    backing = tmp_path / "zero.img"
    backing.write_bytes(b"\xa5" * 8 * MiB)
    dev = cli.create("wz0", backing)
    assert int(sysfs(dev, "queue/write_zeroes_max_bytes")) > 0
    sh("blkdiscard", "-z", "--offset", str(MiB), "--length", str(2 * MiB), str(dev))
    cli.delete("wz0")
    data = backing.read_bytes()
    assert data[MiB : 3 * MiB] == bytes(2 * MiB)
    assert data[:MiB] == b"\xa5" * MiB and data[3 * MiB :] == b"\xa5" * 5 * MiB


@pytest.mark.parametrize("block_size", [512, 4096])
def test_logical_block_size_reaches_the_guest(cli: Cli, tmp_path: Path, block_size: int) -> None:
    dev = cli.create(
        f"bs{block_size}", tmp_path / "bs.img", "--size", "8M", "--block-size", str(block_size)
    )
    assert int(sysfs(dev, "queue/logical_block_size")) == block_size
    assert sysfs(dev, "serial") == f"bs{block_size}"
    # Direct I/O smaller than a logical block is refused by the guest kernel itself.
    small = sh("dd", "if=/dev/zero", f"of={dev}", "bs=512", "count=1", "oflag=direct",
               check=False)  # fmt: skip
    assert (small.returncode == 0) == (block_size == 512)
    payload = os.urandom(block_size)
    with open(dev, "r+b", buffering=0) as disk:
        disk.seek(block_size)
        disk.write(payload)
        os.fsync(disk.fileno())
    cli.delete(f"bs{block_size}")
    assert (tmp_path / "bs.img").read_bytes()[block_size : 2 * block_size] == payload


def test_growing_a_running_device_shows_the_new_size_without_detach(
    cli: Cli, tmp_path: Path
) -> None:
    backing = tmp_path / "grow.img"
    dev = cli.create("grow0", backing, "--size", "8M")
    assert int(sysfs(dev, "size")) == 8 * MiB // 512
    out = cli.run("device", "resize", "grow0", "--size", "24M").stdout.split()
    assert out == [str(dev), str(24 * MiB)]
    assert int(sysfs(dev, "size")) == 24 * MiB // 512
    assert os.stat(backing).st_size == 24 * MiB
    payload = os.urandom(MiB)
    with open(dev, "r+b", buffering=0) as disk:  # the new end is usable at once
        disk.seek(23 * MiB)
        disk.write(payload)
        os.fsync(disk.fileno())
    shrink = cli.run("device", "resize", "grow0", "--size", "4M", check=False)
    assert shrink.returncode != 0 and "shrinking" in shrink.stderr
    assert int(sysfs(dev, "size")) == 24 * MiB // 512
    assert [d["size"] for d in cli.list()] == [24 * MiB]
    cli.delete("grow0")
    with open(backing, "rb") as image:
        image.seek(23 * MiB)
        assert image.read(MiB) == payload


def negotiated(dev: Path) -> str:
    """The virtio feature bits the guest driver accepted, bit 0 first."""
    return Path(f"/sys/block/{dev.name}/device/features").read_text().strip()


def test_packed_virtqueues_serve_verified_io_and_a_takeover(cli: Cli, tmp_path: Path) -> None:
    dev = cli.create("packed0", tmp_path / "packed.img", "--size", "64M", "--packed")
    assert negotiated(dev)[34] == "1"  # VIRTIO_F_RING_PACKED
    job = ["fio", "--output-format=terse", "--ioengine=libaio", "--direct=1", "--name=p",
           f"--filename={dev}", "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=32M",
           "--verify=crc32c", "--verify_fatal=1"]  # fmt: skip
    fio = subprocess.Popen(job, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills = 0
    for _ in range(3):  # the dataplane dies mid-run; a new one takes the packed rings over
        time.sleep(1.0)
        if fio.poll() is not None:
            break
        os.kill(dataplane_pid("packed0"), signal.SIGKILL)
        kills += 1
        time.sleep(0.2)
        cli.run("device", "revive", "packed0")
    out, err = fio.communicate(timeout=600)
    assert fio.returncode == 0, err + out
    assert kills >= 1, "fio finished before the first kill"
    sh("fio", *job[1:], "--verify_only=1")
    assert [d["state"] for d in cli.list()] == ["running"]
    cli.delete("packed0")


@pytest.mark.parametrize(("io_uring_disabled", "engine"), [("0", "io_uring"), ("2", "threads")])
def test_reads_and_writes_go_through_io_uring_or_else_a_thread_pool(
    cli: Cli, tmp_path: Path, io_uring_disabled: str, engine: str
) -> None:
    """io_uring where the kernel allows it; with kernel.io_uring_disabled=2 the thread pool.
    Sizes from 4k (served inline) to 1M (spread over workers), completed out of order."""
    sysctl = Path("/proc/sys/kernel/io_uring_disabled")
    before = sysctl.read_text()
    sysctl.write_text(io_uring_disabled)
    try:
        dev = cli.create("aio0", tmp_path / "aio.img", "--size", "64M", "--num-queues", "2")
        sh("fio", "--output-format=terse", "--ioengine=libaio", "--direct=1", "--name=mixed",
           f"--filename={dev}", "--rw=randwrite", "--bssplit=4k/50:64k/30:1m/20",
           "--iodepth=32", "--numjobs=2", "--size=32M", "--offset_increment=32M",
           "--verify=crc32c", "--verify_fatal=1", "--verify_backlog=64")  # fmt: skip
        served = (cli.state_dir / "devices" / "aio0.log").read_text()
        assert served.count(f"reads and writes via {engine}") == 2, served
        cli.delete("aio0")
    finally:
        sysctl.write_text(before)


def test_the_bounce_buffer_has_the_size_asked_for(cli: Cli, tmp_path: Path) -> None:
    dev = cli.create("bb0", tmp_path / "bb.img", "--size", "16M", "--bounce-size", "4M")
    assert Path("/sys/class/vduse/bb0/bounce_size").read_text().strip() == str(4 * MiB)
    # More in flight than the buffer holds: the guest waits for room, nothing fails.
    sh("fio", "--output-format=terse", "--ioengine=libaio", "--direct=1", "--name=big",
       f"--filename={dev}", "--rw=randwrite", "--bs=1m", "--iodepth=16", "--size=16M",
       "--verify=crc32c", "--verify_fatal=1")  # fmt: skip
    refused = cli.run("device", "create", "bb1", "--backing", str(tmp_path / "bb1.img"),
                      "--size", "16M", "--bounce-size", "100K", check=False)  # fmt: skip
    assert refused.returncode != 0 and "--bounce-size" in refused.stderr
    assert [d["name"] for d in cli.list()] == ["bb0"]
    cli.delete("bb0")


def test_a_block_device_backing_is_served_with_direct_io_where_aligned(
    cli: Cli, tmp_path: Path
) -> None:
    """A loop device with 4096-byte sectors under a 512-byte device: aligned transfers go
    with O_DIRECT (and through io_uring), the others through the page cache, coherently."""
    image = tmp_path / "dio.img"
    image.write_bytes(b"")
    os.truncate(image, 64 * MiB)
    sh("modprobe", "loop")
    loop = sh("losetup", "--find", "--show", "--sector-size", "4096", str(image)).stdout.strip()
    try:
        dev = cli.create("dio0", Path(loop))
        pid = dataplane_pid("dio0")
        direct = [
            fd.name for fd in Path(f"/proc/{pid}/fd").iterdir()
            if os.readlink(fd) == loop
            and int(Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().split()[3], 8) & os.O_DIRECT
        ]  # fmt: skip
        assert len(direct) == 1
        sh("fio", "--output-format=terse", "--ioengine=libaio", "--direct=1", "--name=mixed",
           f"--filename={dev}", "--rw=randwrite", "--bssplit=512/20:4k/40:64k/20:1m/20",
           "--blockalign=4k", "--iodepth=16", "--size=48M", "--verify=crc32c", "--verify_fatal=1",
           "--verify_backlog=64")  # fmt: skip
        served = (cli.state_dir / "devices" / "dio0.log").read_text()
        assert "direct I/O for transfers aligned to 4096 bytes" in served
        assert "reads and writes via io_uring\n" in served  # no size stays on the queue thread
        counters = stats.read(cli.state_dir / "devices" / "dio0.stats")
        # 80% of the requests are aligned, and fio's verify reads them back.
        assert counters.direct > sum(counters.requests.values()) // 3, counters
        cli.delete("dio0")
    finally:
        sh("losetup", "--detach", loop, check=False)
