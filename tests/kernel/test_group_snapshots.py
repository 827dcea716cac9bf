"""Group snapshots on the real kernel: crash-consistent across volumes, under load.

One writer stamps a sequence number into two block volumes in a fixed order: record n goes
to A, and once the device completed it, to B; then n + 1 to A. Any instant of the pair
therefore shows A at n or n + 1 when B shows n. A group snapshot taken while the writer runs
is restored into two new volumes, and their newest records must be such a pair: anything
else (B ahead of A, or A two records ahead) is an order that never happened, which is what
snapshotting the volumes one after the other produces under this load.

The pool is XFS on a loop device, so the copies inside the pause are reflinks, as a pool
for group snapshots should be.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from csi_vduse.csi.proto import stub
from tests.driver import block_capability, pb
from tests.kernel.conftest import sh
from tests.kernel.test_crash_recovery import kernel_io_errors
from tests.kernel.test_kubelet_lifecycle import Kubelet, running_kubelet

pytestmark = pytest.mark.vm

MiB = 1 << 20
BLOCK = 4096
SLOTS = 1024  # the records cycle through the first 4 MiB of each volume
RECORD = struct.Struct("<8sQI")  # magic, sequence number, crc32 of the two
MAGIC = b"GROUPSEQ"
ROUNDS = 3
PAUSE_LOGGED = re.compile(r"group snapshot paused \d+ volume\(s\) for ([0-9.]+) ms")


def record(sequence: int) -> bytes:
    head = MAGIC + struct.pack("<Q", sequence)
    return RECORD.pack(MAGIC, sequence, zlib.crc32(head)).ljust(BLOCK, b"\0")


def newest(data: bytes) -> int:
    """The highest sequence number among the valid records of a volume's data (0: none)."""
    best = 0
    for slot in range(SLOTS):
        magic, sequence, crc = RECORD.unpack_from(data, slot * BLOCK)
        if magic == MAGIC and crc == zlib.crc32(magic + struct.pack("<Q", sequence)):
            best = max(best, sequence)
    return best


@dataclass
class Writer:
    """Stamps records into A then B, each write completed (O_DIRECT) before the next."""

    a: Path
    b: Path
    written: int = 0
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        buffer = mmap.mmap(-1, BLOCK)
        fds = [os.open(p, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC) for p in (self.a, self.b)]
        try:
            sequence = 0
            while not self.stop.is_set():
                sequence += 1
                buffer[:] = record(sequence)
                offset = (sequence % SLOTS) * BLOCK
                for fd in fds:
                    assert os.pwritev(fd, [buffer], offset) == BLOCK
                self.written = sequence
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            for fd in fds:
                os.close(fd)
            buffer.close()


@contextmanager
def writing(a: Path, b: Path) -> Iterator[Writer]:
    writer = Writer(a, b)
    thread = threading.Thread(target=writer.run, name="writer")
    thread.start()
    try:
        yield writer
    finally:
        writer.stop.set()
        thread.join(timeout=120)
    assert writer.error is None, f"the writer failed: {writer.error!r}"


@contextmanager
def xfs_pool(root: Path, size: int) -> Iterator[Path]:
    sh("modprobe", "loop")
    image = root / "pool.img"
    with open(image, "wb") as out:
        out.truncate(size)
    loop = sh("losetup", "--find", "--show", str(image)).stdout.strip()
    pool = root / "pool"
    pool.mkdir()
    try:
        sh("mkfs.xfs", "-q", "-m", "reflink=1", loop)
        sh("mount", loop, str(pool))
        try:
            yield pool
        finally:
            if sh("umount", str(pool), check=False).returncode:
                sh("umount", "-l", str(pool), check=False)
    finally:
        sh("losetup", "--detach", loop, check=False)
        image.unlink()


def wait_for(writer: Writer, beyond: int, timeout: float = 300.0) -> None:
    """Until the writer got past record ``beyond``: it must keep making progress."""
    deadline = time.monotonic() + timeout
    while writer.written <= beyond and writer.error is None:
        assert time.monotonic() < deadline, f"the writer stalled at {writer.written}"
        time.sleep(0.05)
    assert writer.error is None, f"the writer failed: {writer.error!r}"


def restore(kubelet: Kubelet, snapshot_id: str) -> str:
    request = pb.CreateVolumeRequest(
        name=f"pvc-{uuid.uuid4()}",
        capacity_range=pb.CapacityRange(required_bytes=16 * MiB),
        volume_capabilities=[block_capability()],
    )
    request.volume_content_source.snapshot.snapshot_id = snapshot_id
    volume_id: str = kubelet.driver.controller_stub.CreateVolume(request).volume.volume_id
    return volume_id


def test_group_snapshots_under_load_restore_only_orders_that_happened(tmp_path: Path) -> None:
    with xfs_pool(tmp_path, 512 * MiB) as pool, running_kubelet(tmp_path, pool) as kubelet:
        capability = block_capability()
        volumes = []
        for _ in range(2):
            pv, volume_id = kubelet.create(capability, 16 * MiB)
            staging = kubelet.block_staging(pv)
            kubelet.stage(volume_id, staging, capability)
            target = kubelet.block_target(pv, "pod")
            kubelet.publish(volume_id, staging, target, capability)
            volumes.append((volume_id, staging, target))
        (a_id, _, a), (b_id, _, b) = volumes
        errors_before = kernel_io_errors()
        group = stub(kubelet.driver.channel, "GroupController")
        pairs = []
        with writing(a, b) as writer:
            for round_ in range(ROUNDS):
                wait_for(writer, writer.written + 50)  # under load, and moving
                taken = group.CreateVolumeGroupSnapshot(
                    pb.CreateVolumeGroupSnapshotRequest(
                        name=f"group-{round_}-{uuid.uuid4()}", source_volume_ids=[a_id, b_id]
                    )
                ).group_snapshot
                members = {s.source_volume_id: s.snapshot_id for s in taken.snapshots}
                before = writer.written
                wait_for(writer, before + 20)  # the writer goes on after the pause
                restored = [restore(kubelet, members[v]) for v in (a_id, b_id)]
                data = [
                    (pool / "volumes" / f"{v}.img").read_bytes()[: SLOTS * BLOCK] for v in restored
                ]
                pairs.append((newest(data[0]), newest(data[1])))
                for volume_id in restored:
                    kubelet.delete(volume_id)
                group.DeleteVolumeGroupSnapshot(
                    pb.DeleteVolumeGroupSnapshotRequest(
                        group_snapshot_id=taken.group_snapshot_id,
                        snapshot_ids=list(members.values()),
                    )
                )
        pauses = [float(ms) for ms in PAUSE_LOGGED.findall(kubelet.driver.log())]
        print(f"newest records (A, B) per group: {pairs}; pauses {pauses} ms", flush=True)
        for newest_a, newest_b in pairs:
            assert newest_b > 0, "the snapshot holds none of the writer's records"
            assert newest_a - newest_b in (0, 1), (
                f"A at {newest_a} and B at {newest_b}: an order that never happened"
            )
        assert len(pauses) == ROUNDS
        assert kernel_io_errors() == errors_before
        for volume_id, staging, target in volumes:
            kubelet.unpublish(volume_id, target)
            kubelet.unstage(volume_id, staging)
            kubelet.delete(volume_id)
