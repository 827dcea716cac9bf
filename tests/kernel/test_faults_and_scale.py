"""Reliability on the real kernel: many volumes at once, a full pool, a failing disk.

Each test plays the kubelet over the CSI API (see test_kubelet_lifecycle), reads and
writes the published devices the way a pod would, and then inspects the machine itself:
mounts, VDUSE and vDPA devices, dataplane processes and the driver's records.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import re
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml

from tests.driver import block_capability, mount_capability, pb
from tests.kernel.conftest import dataplane_pids, sh
from tests.kernel.test_kubelet_lifecycle import Kubelet, mounts_under, running_kubelet

pytestmark = pytest.mark.vm

MiB = 1 << 20
BLOCK = 4096
SECTOR = 512


# -- I/O as a pod does it: O_DIRECT, so every request reaches the dataplane -------------


def write_direct(device: Path, offset: int, data: bytes) -> None:
    buffer = mmap.mmap(-1, len(data))  # page-aligned, as O_DIRECT requires
    buffer[:] = data
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        assert os.pwrite(fd, buffer, offset) == len(data)
        os.fsync(fd)  # a flush request too
    finally:
        os.close(fd)
        buffer.close()


def read_direct(device: Path, offset: int, size: int) -> bytes:
    buffer = mmap.mmap(-1, size)
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        done = os.preadv(fd, [buffer], offset)
        return bytes(buffer[:done])
    finally:
        os.close(fd)
        buffer.close()


def pattern(key: str, size: int) -> bytes:
    """Data unique to ``key``, so a block that landed in the wrong place shows."""
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def io_error_of(action: Callable[[], object]) -> int:
    """The errno ``action`` fails with (it must fail)."""
    with pytest.raises(OSError) as failed:
        action()
    return failed.value.errno or 0


# -- the node, inspected -----------------------------------------------------------------


def node_leftovers(kubelet: Kubelet, root: Path, volume_ids: list[str]) -> list[str]:
    """Everything the driver made for volumes that should all be unstaged by now."""
    pool = str(kubelet.driver.pool_dir)
    found = [f"mount {m}" for m in mounts_under(root) if m != pool]
    vduse = Path("/dev/vduse")
    found += [f"{vduse}/{n}" for n in sorted(os.listdir(vduse)) if n.startswith("vol-")]
    found += [f"vdpa device {n}" for n in sorted(os.listdir("/sys/bus/vdpa/devices"))]
    for volume_id in volume_ids:
        found += [f"dataplane pid {pid} of {volume_id}" for pid in dataplane_pids(volume_id)]
    state = kubelet.driver.state_dir
    found += [f"record {p}" for p in sorted((state / "volumes").glob("*"))]
    found += [f"record {p}" for p in sorted((state / "devices").glob("*"))]
    return found


# -- the liveness probe, as the chart's sidecar sends it ------------------------------------

CHART_VALUES = Path(__file__).resolve().parents[2] / "charts" / "csi-vduse" / "values.yaml"


def chart_probe_timeout() -> float:
    """The livenessprobe sidecar's --probe-timeout the chart ships (e.g. ``10s``)."""
    text = yaml.safe_load(CHART_VALUES.read_text())["node"]["livenessProbe"]["probeTimeout"]
    assert str(text).endswith("s"), text
    return float(str(text)[:-1])


@dataclass
class ProbeRecord:
    answered: int = 0
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)


@contextmanager
def probing(kubelet: Kubelet, timeout: float) -> Iterator[ProbeRecord]:
    """Probe the plugin back to back, as the livenessprobe sidecar does, while the body runs:
    each Probe must answer ready within the sidecar's timeout, or the kubelet would count a
    failed liveness check."""
    record = ProbeRecord()
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.monotonic()
            try:
                answer = kubelet.driver.identity.Probe(pb.ProbeRequest(), timeout=timeout)
            except grpc.RpcError as exc:
                record.failures.append(f"{exc.code().name} {exc.details()}")
                continue
            record.slowest = max(record.slowest, time.monotonic() - started)
            if answer.HasField("ready") and not answer.ready.value:
                record.failures.append("not ready")
            record.answered += 1
            done.wait(0.2)

    prober = threading.Thread(target=probe, name="prober")
    prober.start()
    try:
        yield record
    finally:
        done.set()
        prober.join()


def in_parallel(action: Callable[[Volume], None], volumes: list[Volume]) -> None:
    """Run ``action`` on every volume at once; report every failure, not just the first."""
    with ThreadPoolExecutor(max_workers=len(volumes)) as workers:
        futures = [workers.submit(action, v) for v in volumes]
        failures = [(v, f.exception()) for v, f in zip(volumes, futures, strict=True)]
    failed = [(v, exc) for v, exc in failures if exc is not None]
    if failed:
        lines = [f"{v.volume_id} ({v.kind}): {_describe(exc)}" for v, exc in failed]
        raise AssertionError(f"{len(failed)} of {len(volumes)} failed:\n" + "\n".join(lines))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name} {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


# -- sixteen volumes, five rounds --------------------------------------------------------

VOLUMES = 16
ROUNDS = 5
FILE_SIZE = 64 * 1024
BLOCK_BASE = 3 * MiB  # away from offset 0, where a stray filesystem probe would look
STEPS = ("stage", "publish", "use", "unpublish", "unstage")
STAGE_LOGGED = re.compile(r"NodeStageVolume vol-\w+: OK \(([\d.]+) s\)")


@dataclass(kw_only=True)
class Volume:
    kubelet: Kubelet
    pv: str
    volume_id: str
    block: bool
    target: Path | None = None

    @property
    def kind(self) -> str:
        return "block" if self.block else "ext4"

    @property
    def capability(self) -> pb.VolumeCapability:
        return block_capability() if self.block else mount_capability("ext4")

    @property
    def staging(self) -> Path:
        if self.block:
            return self.kubelet.block_staging(self.pv)
        return self.kubelet.mount_staging(self.pv)

    def stage(self) -> None:
        self.kubelet.stage(self.volume_id, self.staging, self.capability)

    def publish(self) -> None:
        pod = str(uuid.uuid4())
        if self.block:
            self.target = self.kubelet.block_target(self.pv, pod)
        else:
            self.target = self.kubelet.mount_target(self.pv, pod)
        self.kubelet.publish(self.volume_id, self.staging, self.target, self.capability)

    def use(self, round_: int) -> None:
        """Check what every earlier round left, then leave this round's mark."""
        assert self.target is not None
        if self.block:
            for earlier in range(1, round_):
                found = read_direct(self.target, BLOCK_BASE + earlier * BLOCK, BLOCK)
                assert found == self._mark(earlier, BLOCK), f"round {earlier}'s block differs"
            offset = BLOCK_BASE + round_ * BLOCK
            write_direct(self.target, offset, self._mark(round_, BLOCK))
            assert read_direct(self.target, offset, BLOCK) == self._mark(round_, BLOCK)
        else:
            marks = sorted(p.name for p in self.target.glob("round-*"))
            assert marks == [f"round-{i}" for i in range(1, round_)]
            for earlier in range(1, round_):
                found = (self.target / f"round-{earlier}").read_bytes()
                assert found == self._mark(earlier, FILE_SIZE), f"round {earlier}'s file differs"
            mark = self.target / f"round-{round_}"
            with open(mark, "wb") as out:
                out.write(self._mark(round_, FILE_SIZE))
                os.fsync(out.fileno())
            assert mark.read_bytes() == self._mark(round_, FILE_SIZE)

    def unpublish(self) -> None:
        assert self.target is not None
        self.kubelet.unpublish(self.volume_id, self.target)
        assert not self.target.exists()

    def unstage(self) -> None:
        self.kubelet.unstage(self.volume_id, self.staging)

    def _mark(self, round_: int, size: int) -> bytes:
        return pattern(f"{self.volume_id}/{round_}", size)


def test_sixteen_volumes_concurrently_five_rounds(tmp_path: Path) -> None:
    """Sixteen volumes staged, used and unstaged at once, five times over.

    Odd rounds move all volumes through each step together (sixteen NodeStageVolume calls
    in flight, then sixteen NodePublishVolume, ...), even rounds let each volume run its
    whole cycle on its own, so stages overlap with unstages. After every round nothing of
    the sixteen devices may be left on the node, and each round's data must still be on
    the volumes in the next. While the first sixteen stages run, Probe is asked back to
    back, as the chart's livenessprobe sidecar asks it: every answer must come within the
    sidecar's timeout, or a busy node would have its plugin restarted.
    """
    timings: list[str] = []
    with running_kubelet(tmp_path) as kubelet:
        names = [(f"pvc-{uuid.uuid4()}", i % 2 == 1) for i in range(VOLUMES)]

        def create(name: str, block: bool) -> Volume:
            capability = block_capability() if block else mount_capability("ext4")
            request = pb.CreateVolumeRequest(
                name=name,
                capacity_range=pb.CapacityRange(required_bytes=(16 if block else 32) * MiB),
                volume_capabilities=[capability],
            )
            volume_id = kubelet.driver.controller_stub.CreateVolume(request).volume.volume_id
            return Volume(kubelet=kubelet, pv=name, volume_id=volume_id, block=block)

        with ThreadPoolExecutor(max_workers=VOLUMES) as workers:
            volumes: list[Volume] = list(workers.map(lambda n: create(*n), names))
        ids = [v.volume_id for v in volumes]
        assert len(set(ids)) == VOLUMES

        def timed(label: str, action: Callable[[Volume], None]) -> None:
            started = time.monotonic()
            try:
                in_parallel(action, volumes)
            finally:
                timings.append(f"{label} {time.monotonic() - started:.1f}s")
                print(timings[-1], flush=True)

        for round_ in range(1, ROUNDS + 1):

            def use(volume: Volume, r: int = round_) -> None:
                volume.use(r)

            def cycle(volume: Volume, r: int = round_) -> None:
                volume.stage()
                volume.publish()
                volume.use(r)
                volume.unpublish()
                volume.unstage()

            if round_ == 1:
                # Sixteen stages at once (mkfs, devices, dataplanes) must not starve Probe.
                with probing(kubelet, chart_probe_timeout()) as probes:
                    timed("r1 stage", Volume.stage)
                print(f"Probe under 16 stages: {probes.answered} answered, "
                      f"slowest {probes.slowest:.2f}s")  # fmt: skip
                assert probes.failures == []
                assert probes.answered >= 2, "the prober made no progress during the stages"
            if round_ % 2:
                steps: list[Callable[[Volume], None]] = [
                    Volume.stage, Volume.publish, use, Volume.unpublish, Volume.unstage
                ]  # fmt: skip
                for label, step in zip(STEPS, steps, strict=True):
                    if round_ == 1 and step is Volume.stage:
                        continue  # done above, under the prober
                    timed(f"r{round_} {label}", step)
            else:
                timed(f"r{round_} cycles", cycle)
            left = node_leftovers(kubelet, tmp_path, ids)
            assert left == [], f"after round {round_}: {left}"

        in_parallel(lambda v: v.kubelet.delete(v.volume_id), volumes)
        assert kubelet.driver.controller_stub.ListVolumes(pb.ListVolumesRequest()).entries == []
        assert node_leftovers(kubelet, tmp_path, ids) == []
        stages = [float(s) for s in STAGE_LOGGED.findall(kubelet.driver.log())]
    print("timings:", ", ".join(timings))
    print(f"NodeStageVolume: {len(stages)} calls, slowest {max(stages, default=0):.1f}s")


# -- a full pool ---------------------------------------------------------------------------


@contextmanager
def mounted(path: Path, *source: str) -> Iterator[Path]:
    """``mount SOURCE... path`` made for the block; unmounted (lazily if busy) after."""
    path.mkdir(parents=True)
    sh("mount", *source, str(path))
    try:
        yield path
    finally:
        if sh("umount", str(path), check=False).returncode:
            sh("umount", "-l", str(path), check=False)


def tmpfs(path: Path, size: int) -> AbstractContextManager[Path]:
    return mounted(path, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs")


def fill(path: Path) -> None:
    """Grow ``path`` until its filesystem is full."""
    chunk = b"\xa5" * MiB
    with open(path, "ab", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return


def capacity(kubelet: Kubelet) -> pb.GetCapacityResponse:
    request = pb.GetCapacityRequest(volume_capabilities=[block_capability()])
    response: pb.GetCapacityResponse = kubelet.driver.controller_stub.GetCapacity(request)
    return response


def pool_files(kubelet: Kubelet) -> list[str]:
    return sorted(p.name for p in (kubelet.driver.pool_dir / "volumes").iterdir())


def create_or_refuse(kubelet: Kubelet, size: int) -> None:
    """CreateVolume that may not fit: a thin pool may accept it, else the spec's refusal.

    The spec leaves a thin pool free to provision more than is free; a refusal must be
    OUT_OF_RANGE (capacity not allowed) or RESOURCE_EXHAUSTED and leave nothing behind.
    """
    before = pool_files(kubelet)
    try:
        volume_id = kubelet.create(block_capability(), size)[1]
    except grpc.RpcError as refused:
        code = refused.code()
        assert code in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED), (
            f"{code.name} {refused.details()}"
        )
        assert pool_files(kubelet) == before
        return
    backing = kubelet.driver.pool_dir / "volumes" / f"{volume_id}.img"
    assert backing.stat().st_blocks * 512 < MiB  # thin: a new volume takes no pool space
    kubelet.delete(volume_id)
    assert pool_files(kubelet) == before


def test_pool_out_of_space_fails_only_affected_writes_and_recovers(tmp_path: Path) -> None:
    """A full pool fails the writes that need new space and nothing else.

    The pool is a 48 MiB tmpfs, the volume 40 MiB and thin. Once a filler takes every
    free page, writes to never-written blocks get EIO in the pod (the dataplane answers
    VIRTIO_BLK_S_IOERR), while reads, overwrites of written blocks and flushes go on; the
    device stays up, and when space comes back the same writes succeed.
    """
    pool_size = 48 * MiB
    with tmpfs(tmp_path / "pool", pool_size) as pool, running_kubelet(tmp_path, pool) as kubelet:
        empty = capacity(kubelet)
        assert empty.maximum_volume_size.value == pool_size
        assert pool_size - MiB < empty.available_capacity <= pool_size

        filler = pool / "filler"
        filler.write_bytes(bytes(16 * MiB))
        assert capacity(kubelet).available_capacity <= 32 * MiB
        # More than is free, within maximum_volume_size: the spec says it may be used.
        pv, volume_id = kubelet.create(block_capability(), 40 * MiB)
        staging = kubelet.block_staging(pv)
        kubelet.stage(volume_id, staging, block_capability())
        target = kubelet.block_target(pv, str(uuid.uuid4()))
        kubelet.publish(volume_id, staging, target, block_capability())
        written = pattern("written", 2 * MiB)
        write_direct(target, 0, written)
        dataplanes = dataplane_pids(volume_id)
        assert len(dataplanes) == 1

        fill(filler)
        assert capacity(kubelet).available_capacity < MiB

        # Blocks that need new pool space fail; only those.
        assert io_error_of(lambda: write_direct(target, 20 * MiB, pattern("new", MiB))) == (
            errno.EIO
        )
        assert io_error_of(lambda: write_direct(target, 30 * MiB, pattern("4k", BLOCK))) == (
            errno.EIO
        )
        assert read_direct(target, 0, 2 * MiB) == written
        assert read_direct(target, 20 * MiB, MiB) == bytes(MiB)  # still a hole
        overwrite = pattern("overwrite", MiB)
        write_direct(target, 0, overwrite)  # written blocks have their pages already
        assert read_direct(target, 0, 2 * MiB) == overwrite + written[MiB:]

        # The device keeps serving: same dataplane, the node sees it healthy.
        assert dataplane_pids(volume_id) == dataplanes
        stats = kubelet.stats(volume_id, target)
        assert [u.total for u in stats.usage] == [40 * MiB]
        assert not stats.volume_condition.abnormal, stats.volume_condition.message

        # A create while the pool is full: accepted thin, or refused cleanly.
        create_or_refuse(kubelet, 8 * MiB)
        create_or_refuse(kubelet, 2 * pool_size)

        filler.unlink()
        fresh = pattern("new", MiB)
        write_direct(target, 20 * MiB, fresh)
        write_direct(target, 30 * MiB, pattern("4k", BLOCK))
        assert read_direct(target, 20 * MiB, MiB) == fresh
        assert read_direct(target, 30 * MiB, BLOCK) == pattern("4k", BLOCK)
        assert read_direct(target, 0, 2 * MiB) == overwrite + written[MiB:]
        assert dataplane_pids(volume_id) == dataplanes

        kubelet.unpublish(volume_id, target)
        kubelet.unstage(volume_id, staging)
        # What the device wrote is in the pool: stage again and read it back.
        kubelet.stage(volume_id, staging, block_capability())
        kubelet.publish(volume_id, staging, target, block_capability())
        assert read_direct(target, 20 * MiB, MiB) == fresh
        kubelet.unpublish(volume_id, target)
        kubelet.unstage(volume_id, staging)
        kubelet.delete(volume_id)


# -- a failing disk under the pool -----------------------------------------------------------

FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap), <linux/fs.h>
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_HEADER = struct.Struct("=QQIIII")  # struct fiemap, <linux/fiemap.h>
FIEMAP_EXTENT = struct.Struct("=QQQ16xI12x")  # struct fiemap_extent
FIEMAP_EXTENT_NOT_DATA = 0x2 | 0x4 | 0x800  # UNKNOWN, DELALLOC, UNWRITTEN


def physical_ranges(path: Path, start: int, length: int) -> list[tuple[int, int]]:
    """Where bytes [start, start + length) of ``path`` lie on its filesystem's device."""
    slots = 32
    request = bytearray(FIEMAP_HEADER.pack(start, length, FIEMAP_FLAG_SYNC, 0, slots, 0))
    request += bytes(FIEMAP_EXTENT.size * slots)
    with open(path, "rb") as file:
        fcntl.ioctl(file.fileno(), FS_IOC_FIEMAP, request)
    mapped = FIEMAP_HEADER.unpack_from(request)[3]
    assert mapped < slots, "too fragmented to map"
    found = []
    for i in range(mapped):
        at = FIEMAP_HEADER.size + i * FIEMAP_EXTENT.size
        logical, physical, size, flags = FIEMAP_EXTENT.unpack_from(request, at)
        low, high = max(logical, start), min(logical + size, start + length)
        if low < high:
            assert not flags & FIEMAP_EXTENT_NOT_DATA, f"extent flags {flags:#x}"
            found.append((physical + low - logical, high - low))
    assert sum(size for _, size in found) == length, f"[{start}, +{length}) is not all written"
    return found


@dataclass(kw_only=True)
class MappedDisk:
    """A device-mapper device over a loop device, whose table a test can rewrite."""

    name: str
    loop: str
    sectors: int

    @property
    def device(self) -> Path:
        # No udev in the VM: the kernel's own node, not /dev/mapper/<name>.
        info = dmsetup("info", "--columns", "--noheadings", "-o", "blkdevname", self.name)
        return Path("/dev") / info.strip()

    def load(self, bad: list[tuple[int, int]]) -> None:
        """Switch to a table that fails every I/O to the ``bad`` byte ranges."""
        lines, at = [], 0
        for start, size in sorted((s // SECTOR, n // SECTOR) for s, n in bad):
            if start > at:
                lines.append(f"{at} {start - at} linear {self.loop} {at}")
            lines.append(f"{start} {size} error")
            at = start + size
        if at < self.sectors:
            lines.append(f"{at} {self.sectors - at} linear {self.loop} {at}")
        dmsetup("reload", self.name, table="\n".join(lines) + "\n")
        dmsetup("resume", self.name)  # suspends (flushing the filesystem) and swaps


def dmsetup(*args: str, table: str | None = None) -> str:
    argv = ["dmsetup", *args, "--noudevsync"]
    done = subprocess.run(
        argv, check=False, input=table, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


@contextmanager
def mapped_disk(image: Path, size: int) -> Iterator[MappedDisk]:
    sh("modprobe", "-a", "loop", "dm-mod")
    with open(image, "wb") as file:
        file.truncate(size)
    loop = sh("losetup", "--find", "--show", str(image)).stdout.strip()
    disk = MappedDisk(
        name=f"csi-vduse-test-{uuid.uuid4().hex[:8]}", loop=loop, sectors=size // SECTOR
    )
    try:
        dmsetup("create", disk.name, table=f"0 {disk.sectors} linear {loop} 0\n")
        yield disk
    finally:
        sh("dmsetup", "remove", "--noudevsync", disk.name, check=False)
        sh("losetup", "--detach", loop, check=False)
        image.unlink()


def drop_cached(path: Path) -> None:
    """Make the next reads of ``path`` go to the disk, past the page cache."""
    os.sync()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_injected_eio_fails_only_affected_requests(tmp_path: Path) -> None:
    """Sectors of the pool's disk that fail fail only the requests that touch them.

    The pool is ext4 on a device-mapper disk. With an ``error`` segment swapped in under
    one MiB of the volume's backing file, the pod's reads of that MiB get EIO while reads
    and writes elsewhere succeed; with the linear table back, the same MiB reads as it
    was written, from the same device and dataplane.
    """
    with mapped_disk(tmp_path / "disk.img", 128 * MiB) as disk:
        sh("mkfs.ext4", "-q", "-b", str(BLOCK), str(disk.device))
        with (
            mounted(tmp_path / "pool", str(disk.device)) as pool,
            running_kubelet(tmp_path, pool) as kubelet,
        ):
            pv, volume_id = kubelet.create(block_capability(), 16 * MiB)
            staging = kubelet.block_staging(pv)
            kubelet.stage(volume_id, staging, block_capability())
            target = kubelet.block_target(pv, str(uuid.uuid4()))
            kubelet.publish(volume_id, staging, target, block_capability())
            regions = {offset: pattern(f"region {offset}", MiB) for offset in (4, 8, 12)}
            for offset, data in regions.items():
                write_direct(target, offset * MiB, data)
            dataplanes = dataplane_pids(volume_id)
            backing = pool / "volumes" / f"{volume_id}.img"

            disk.load(physical_ranges(backing, 8 * MiB, MiB))
            drop_cached(backing)
            assert io_error_of(lambda: read_direct(target, 8 * MiB, MiB)) == errno.EIO
            assert io_error_of(lambda: read_direct(target, 8 * MiB + 150 * BLOCK, BLOCK)) == (
                errno.EIO
            )
            assert read_direct(target, 4 * MiB, MiB) == regions[4]
            assert read_direct(target, 12 * MiB, MiB) == regions[12]
            later = pattern("written while failing", MiB)
            write_direct(target, 14 * MiB, later)
            assert read_direct(target, 14 * MiB, MiB) == later
            stats = kubelet.stats(volume_id, target)
            assert not stats.volume_condition.abnormal, stats.volume_condition.message
            assert dataplane_pids(volume_id) == dataplanes

            disk.load([])
            drop_cached(backing)
            for offset, data in regions.items():
                assert read_direct(target, offset * MiB, MiB) == data
            assert read_direct(target, 14 * MiB, MiB) == later
            assert dataplane_pids(volume_id) == dataplanes

            kubelet.unpublish(volume_id, target)
            kubelet.unstage(volume_id, staging)
            kubelet.delete(volume_id)
