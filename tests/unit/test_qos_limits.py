"""A device's live I/O limits (dataplane/qos.py's page, fast/qos.c's buckets) in the C loop.

Each test maps a real QoS page and drives real C queues through the fake virtio driver.
Time is the buckets' fake clock, moved by the test, except where dp_run serves on its own
thread against the real clock: there only the outcome is checked, and a lower bound on the
time taken that the limits guarantee however slow the machine is.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from csi_vduse.dataplane import qos
from csi_vduse.dataplane.blk.backend import FileBackend
from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.fast.engine import BlkTarget, FastEngine
from csi_vduse.dataplane.qos import QosError, QosLimits
from csi_vduse.dataplane.server import Server
from csi_vduse.dataplane.virtio.session import VduseSession
from csi_vduse.vduse.messages import RequestType
from csi_vduse.virtio.blk import SECTOR_SIZE, BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from csi_vduse.virtio.spec import Status
from tests.unit import test_takeover as takeover
from tests.unit.fake_virtio import (
    Completion,
    FakeDriver,
    FakeKernel,
    PackedDriver,
    bring_up,
    session_for,
)
from tests.unit.test_dataplane import DISK

NS = 1_000_000_000
START_NS = NS  # the fake clock's first reading (0 means the real clock)


def map_page(path: Path) -> mmap.mmap:
    """The page as the dataplane maps it: shared, read-only."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)


@dataclass(kw_only=True)
class Device:
    kernel: FakeKernel
    engine: FastEngine
    session: VduseSession
    server: Server
    backend: FileBackend
    page_path: Path
    page: mmap.mmap | None

    def queue(self, index: int = 0) -> Any:
        return self.engine.queues[index].q

    def advance(self, ns: int) -> None:
        self.engine.qos.fake_now_ns += ns

    @property
    def now(self) -> int:
        return int(self.engine.qos.fake_now_ns)

    def limit(self, limits: QosLimits) -> None:
        """What DeviceManager.set_limits does: the page changes in place."""
        qos.update(self.page_path, limits)

    def serve(self) -> None:
        self.engine.serve_pending()

    def close(self) -> None:
        self.session.reset()
        self.engine.close()
        self.server.close()
        self.backend.close()
        if self.page is not None:
            self.page.close()  # BufferError if the engine still held it


def start(
    tmp_path: Path, drivers: Sequence[FakeDriver | PackedDriver], limits: QosLimits | None, *,
    profile: BlkProfile | None = None, io: str = "none", threaded: bool = False,
) -> Device:  # fmt: skip
    """A device of ``profile`` under ``limits`` (None: without a page), brought up with
    ``drivers`` (one per queue); served by ``serve`` on the fake clock, or with
    ``threaded`` by dp_run on the real one."""
    profile = profile or BlkProfile(queues=len(drivers))
    kernel = drivers[0].kernel
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(range(256)) * (DISK // 256))
    backend = FileBackend(backing, readonly=False)
    page_path = tmp_path / "vol.qos"
    page = None
    if limits is not None:
        qos.create(page_path, limits)
        page = map_page(page_path)
    target = BlkTarget(backing_fd=backend.fd, capacity=DISK, readonly=False, serial=b"serial-0")
    engine = FastEngine(
        kernel, target, devfd=-1, irqfd=kernel.irqfd, threaded=threaded, io=io,
        async_min=None if io == "none" else 0, qos_page=page,
    )  # fmt: skip
    if page is not None and not threaded:
        engine.qos.fake_now_ns = START_NS
    session = session_for(kernel, profile, engine)
    server = Server(kernel, session)
    kernel.features_acked = profile.features
    for driver in drivers:
        driver.enable_queue()
    status = Status(0)
    for bit in (Status.ACKNOWLEDGE, Status.DRIVER, Status.FEATURES_OK, Status.DRIVER_OK):
        status |= bit
        kernel.send(RequestType.SET_STATUS, status=int(status))
        server.drain_messages()
        assert kernel.responses[-1].ok
    return Device(
        kernel=kernel, engine=engine, session=session, server=server, backend=backend,
        page_path=page_path, page=page,
    )  # fmt: skip


@pytest.fixture
def kernel() -> Iterator[FakeKernel]:
    made = FakeKernel()
    yield made
    made.close()


@pytest.fixture
def driver(kernel: FakeKernel) -> Iterator[FakeDriver]:
    made = FakeDriver(kernel)
    yield made
    made.close()


def serve_until(device: Device, driver: FakeDriver, count: int) -> list[Completion]:
    """Serve, letting as much fake time pass as the limits ask each time, until ``count``
    requests completed. Every pass that completes some raises an interrupt."""
    done: list[Completion] = []
    for _ in range(10_000):
        driver.set_used_event(driver.used_seen)  # interrupt me at the next completion
        device.kernel.fast_interrupts()
        device.serve()
        new = driver.completions()
        assert device.kernel.fast_interrupts() == (1 if new else 0)
        done += new
        if len(done) >= count:
            return done
        assert device.queue().throttle_ns > 0, "idle with requests left in the ring"
        device.advance(int(device.queue().throttle_ns))
    raise AssertionError(f"{len(done)} of {count} requests completed")


def post_reads(driver: FakeDriver, count: int) -> None:
    for i in range(count):
        driver.request(Blk.IN, sector=i, in_len=SECTOR_SIZE, indirect=True)
    driver.kick()


def sectors(device: Device, count: int) -> list[bytes]:
    data = device.backend.path.read_bytes()
    return [data[i * SECTOR_SIZE : (i + 1) * SECTOR_SIZE] for i in range(count)]


@pytest.mark.parametrize("io", ["none", "threads"])
def test_an_iops_limit_holds_requests_in_the_ring_and_they_complete_as_it_refills(
    tmp_path: Path, driver: FakeDriver, io: str
) -> None:
    device = start(tmp_path, [driver], QosLimits(iops=10, burst_ms=0), io=io)  # a bucket of 1
    try:
        post_reads(driver, 4)
        driver.set_used_event(0)
        device.kernel.fast_interrupts()
        device.serve()
        [first] = driver.completions()
        assert first.status == BlkStatus.OK
        assert device.kernel.fast_interrupts() == 1  # for what the held-back pass completed
        q = device.queue()
        assert (q.last_avail, q.served, q.throttled) == (1, 1, 1)  # the rest never taken
        assert 0 < q.throttle_ns <= 0.1 * NS
        started = device.now
        done = serve_until(device, driver, 3)
        assert [c.status for c in done] == [BlkStatus.OK] * 3
        assert [c.data for c in [first, *done]] == sectors(device, 4)
        # Ten a second after a burst of one (the bucket may dip below empty by a request).
        assert 0.19 * NS <= device.now - started <= 0.25 * NS
        assert (q.served, q.errors) == (4, 0)
    finally:
        device.close()


@pytest.mark.parametrize("limited", ["read", "write"])
def test_reads_and_writes_draw_on_their_own_byte_buckets(
    tmp_path: Path, driver: FakeDriver, limited: str
) -> None:
    rates = {"read_bps": 4096} if limited == "read" else {"write_bps": 4096}
    device = start(tmp_path, [driver], QosLimits(**rates, burst_ms=0))  # buckets of 409 bytes

    def post(kind: str, count: int) -> None:
        for i in range(count):
            if kind == "read":
                driver.request(Blk.IN, sector=8 * i, in_len=4096, indirect=True)
            else:
                driver.request(Blk.OUT, sector=8 * i, out=b"w" * 4096, indirect=True)
        driver.kick()

    other = "write" if limited == "read" else "read"
    try:
        post(limited, 1)  # more than the bucket holds: it passes, into debt
        device.serve()
        assert len(driver.completions()) == 1
        post(other, 8)
        device.serve()
        assert [c.status for c in driver.completions()] == [BlkStatus.OK] * 8
        assert (device.queue().throttled, device.queue().throttle_ns) == (0, 0)
        post(limited, 1)
        device.serve()
        assert driver.completions() == []
        assert device.queue().throttled == 1
        [done] = serve_until(device, driver, 1)
        assert done.status == BlkStatus.OK
    finally:
        device.close()


def test_a_request_larger_than_the_burst_passes_and_the_next_pays_its_debt(
    tmp_path: Path, driver: FakeDriver
) -> None:
    device = start(tmp_path, [driver], QosLimits(write_bps=512, burst_ms=0))  # 51 bytes
    try:
        driver.request(Blk.OUT, sector=0, out=b"big!" * 16_128, indirect=True)  # 63 KiB
        driver.request(Blk.OUT, sector=200, out=b"x" * SECTOR_SIZE, indirect=True)
        driver.kick()
        device.serve()
        [big] = driver.completions()
        assert big.status == BlkStatus.OK
        started = device.now
        [small] = serve_until(device, driver, 1)
        assert small.status == BlkStatus.OK
        assert (64_512 - 52) / 512 * NS <= device.now - started <= (64_512 / 512 + 1) * NS
    finally:
        device.close()


def test_a_raised_limit_applies_from_the_next_pass(tmp_path: Path, driver: FakeDriver) -> None:
    device = start(tmp_path, [driver], QosLimits(iops=1, burst_ms=0))
    try:
        post_reads(driver, 6)
        device.serve()
        assert len(driver.completions()) == 1
        q = device.queue()
        device.advance(q.throttle_ns // 2)
        device.serve()
        assert driver.completions() == []
        assert q.throttle_ns >= 0.04 * NS  # the rest of a second's debt, looked at again
        device.limit(QosLimits(iops=1_000_000, burst_ms=0))
        device.serve()
        assert driver.completions() == []
        assert 0 < q.throttle_ns < 0.001 * NS  # the same debt, at a million a second
        device.advance(NS // 1000)
        device.serve()
        assert [c.status for c in driver.completions()] == [BlkStatus.OK] * 5
        device.limit(qos.UNLIMITED)
        post_reads(driver, 6)
        device.serve()
        assert len(driver.completions()) == 6
    finally:
        device.close()


def test_a_lowered_limit_cuts_the_saved_burst_to_its_new_size(
    tmp_path: Path, driver: FakeDriver
) -> None:
    device = start(tmp_path, [driver], QosLimits(iops=1000, burst_ms=1000))
    try:
        post_reads(driver, 1)
        device.serve()  # the page is read: a full bucket of a thousand requests
        assert len(driver.completions()) == 1
        device.limit(QosLimits(iops=10, burst_ms=0))  # a bucket of one
        post_reads(driver, 5)
        device.serve()
        assert len(driver.completions()) == 1
        assert device.queue().throttled == 1
    finally:
        device.close()


@pytest.mark.parametrize("limits", [qos.UNLIMITED, None], ids=["unlimited-page", "no-page"])
def test_a_page_without_limits_serves_as_no_page_does(
    tmp_path: Path, driver: FakeDriver, limits: QosLimits | None
) -> None:
    device = start(tmp_path, [driver], limits)
    try:
        for i in range(4):
            driver.request(Blk.OUT, sector=8 * i, out=bytes([i + 1]) * 4096, indirect=True)
            driver.request(Blk.IN, sector=8 * i, in_len=4096, indirect=True)
        driver.request(Blk.FLUSH, indirect=True)
        driver.kick()
        device.serve()
        done = driver.completions()
        assert [(c.status, c.data) for c in done] == [
            (BlkStatus.OK, data) for i in range(4) for data in (b"", bytes([i + 1]) * 4096)
        ] + [(BlkStatus.OK, b"")]
        q = device.queue()
        assert (q.served, q.throttled, q.throttle_ns) == (9, 0, 0)
    finally:
        device.close()


def test_a_limit_set_on_a_page_that_had_none_holds_from_the_next_pass(
    tmp_path: Path, driver: FakeDriver
) -> None:
    """Requests pass an unlimited page without counting; a limit written later is seen."""
    device = start(tmp_path, [driver], qos.UNLIMITED)
    try:
        post_reads(driver, 4)
        device.serve()
        assert len(driver.completions()) == 4
        device.limit(QosLimits(iops=1, burst_ms=0))  # a bucket of one request
        post_reads(driver, 3)
        device.serve()
        assert len(driver.completions()) == 1
        assert device.queue().throttled == 1
        device.limit(qos.UNLIMITED)
        device.serve()
        assert len(driver.completions()) == 2
    finally:
        device.close()


@pytest.mark.parametrize(
    "page",
    [
        struct.pack("<8sII", b"CSIVDST\0", 1, 0).ljust(qos.PAGE_SIZE, b"\0"),  # a stats file
        struct.pack("<8sII", qos.MAGIC, 2, 0).ljust(qos.PAGE_SIZE, b"\0"),
        struct.pack("<8sII", qos.MAGIC, 1, 0).ljust(32, b"\0"),
    ],
    ids=["other-magic", "other-version", "short"],
)
def test_a_page_of_another_layout_is_refused(
    tmp_path: Path, kernel: FakeKernel, page: bytes
) -> None:
    path = tmp_path / "vol.qos"
    path.write_bytes(page)
    mapped = map_page(path)
    target = BlkTarget(backing_fd=-1, capacity=0, readonly=True, serial=b"x")
    with pytest.raises(QosError, match="not a version 1 QoS page"):
        FastEngine(kernel, target, devfd=-1, qos_page=mapped)
    mapped.close()  # the refused engine let go of it


def test_the_queues_of_a_device_share_its_buckets(tmp_path: Path, kernel: FakeKernel) -> None:
    drivers = [FakeDriver(kernel, queue=i) for i in range(2)]
    device = start(tmp_path, drivers, QosLimits(iops=10, burst_ms=0))  # a bucket of one
    try:
        post_reads(drivers[0], 1)
        device.serve()
        assert len(drivers[0].completions()) == 1
        post_reads(drivers[1], 1)
        device.serve()
        assert drivers[1].completions() == []  # queue 0 had the device's one request
        q = device.queue(1)
        assert q.throttled == 1
        device.advance(q.throttle_ns)
        device.serve()
        assert [c.status for c in drivers[1].completions()] == [BlkStatus.OK]
    finally:
        device.close()
        for each in drivers:
            each.close()


def test_a_packed_ring_holds_back_in_order_too(tmp_path: Path, kernel: FakeKernel) -> None:
    driver = PackedDriver(kernel)
    profile = BlkProfile(packed=True)
    device = start(tmp_path, [driver], QosLimits(iops=10, burst_ms=0), profile=profile)
    try:
        ids = [driver.request(Blk.IN, sector=i, in_len=SECTOR_SIZE) for i in range(3)]
        device.serve()
        done = driver.completions()
        assert [c.head for c in done] == ids[:1]
        q = device.queue()
        assert q.throttled == 1 and q.throttle_ns > 0
        for _ in range(100):
            if len(done) == 3:
                break
            device.advance(q.throttle_ns)
            device.serve()
            done += driver.completions()
        assert [(c.head, c.status) for c in done] == [(i, BlkStatus.OK) for i in ids]
        assert [c.data for c in done] == sectors(device, 3)
    finally:
        device.close()
        driver.close()


def test_requests_replayed_on_takeover_are_neither_held_back_nor_charged(
    tmp_path: Path, kernel: FakeKernel, driver: FakeDriver
) -> None:
    backing, log_path, page_path = tmp_path / "disk.img", tmp_path / "log", tmp_path / "vol.qos"
    backing.write_bytes(bytes(DISK))
    first = takeover.start(kernel, backing=backing, log_path=log_path)
    assert all(a.ok for a in bring_up(driver, BlkProfile().features, first.server.drain_messages))
    heads = [driver.request(Blk.OUT, sector=i, out=bytes([i + 1]) * SECTOR_SIZE) for i in range(3)]
    # The predecessor took all three and died serving them.
    takeover.poke_log(log_path, last_avail=3, used_idx=0, inflight=dict.fromkeys(heads, 1))
    first.crash()
    qos.create(page_path, QosLimits(iops=1, burst_ms=0))  # a tenth of a request
    page = map_page(page_path)
    second = takeover.start(kernel, backing=backing, log_path=log_path, qos_page=page)
    try:
        assert second.session.resume()
        second.engine.qos.fake_now_ns = START_NS
        flushes = [driver.request(Blk.FLUSH) for _ in range(2)]
        second.engine.serve_pending()
        done = driver.completions()
        # The three replayed, then the first new one on the full bucket; the second waits.
        assert sorted(c.head for c in done) == sorted([*heads, flushes[0]])
        assert all(c.status == BlkStatus.OK for c in done)
        q = second.engine.queues[0].q
        assert (q.replayed, q.throttled) == (3, 1)
        assert backing.read_bytes()[: 3 * SECTOR_SIZE : SECTOR_SIZE] == bytes([1, 2, 3])
    finally:
        second.crash()
        page.close()


def test_dp_run_sleeps_until_the_buckets_refill_and_serves_everything(
    tmp_path: Path, driver: FakeDriver
) -> None:
    """Real time: the outcome, and the least time the limits allow, however slow the host."""
    device = start(tmp_path, [driver], QosLimits(iops=200, burst_ms=0), threaded=True)
    try:
        done: list[Completion] = []
        posted = 0
        started = time.monotonic()
        while len(done) < 60 and time.monotonic() < started + 60:
            while posted < 60 and posted - len(done) < 12:
                driver.request(Blk.IN, sector=posted, in_len=SECTOR_SIZE, indirect=True)
                posted += 1
            driver.kick()
            time.sleep(0.002)
            done += driver.completions()
        elapsed = time.monotonic() - started
        assert [c.status for c in done] == [BlkStatus.OK] * 60
        assert elapsed >= (60 - 21) / 200  # a bucket of 20, one more into debt, then 200/s
        assert device.engine.queues[0].q.errors == 0
    finally:
        device.close()
