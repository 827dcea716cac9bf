"""A virtio driver and VDUSE kernel stand-in in plain userspace, for dataplane tests.

"Guest memory" is a memfd handed out through ``iotlb_get_fd`` as two IOTLB
regions (so buffers can straddle a boundary, as they may in the kernel's bounce
buffer); kicks are eventfds; control messages are queued Requests. The driver
side builds split-ring requests exactly as Linux virtio_blk lays them out.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.inflight_log import InflightLog
from csi_vduse.dataplane.virtio.queues import QueueEngine
from csi_vduse.dataplane.virtio.session import VduseSession
from csi_vduse.vduse import VduseError
from csi_vduse.vduse.messages import Request, RequestType, Response
from csi_vduse.vduse.node import IotlbEntry, VqInfo
from csi_vduse.vduse.uapi import lib
from csi_vduse.virtio.blk import REQUEST_HEADER
from csi_vduse.virtio.spec import DescFlag, Status

MEMORY = 4 << 20
REGION_SPLIT = 2 << 20  # the two IOTLB regions meet here
RING_BASE = 3 << 20
RING_STRIDE = 0x4000  # rings of queue i start at RING_BASE + i * RING_STRIDE (size <= 256)
BUFFER_WINDOW = 0x80000  # data buffers of queue i: [0x1000 + i * BUFFER_WINDOW, ...)
QUEUE_SIZE = 16


@dataclass
class FakeKernel:
    """The device-node side the dataplane talks to."""

    memfd: int = field(default_factory=lambda: os.memfd_create("guest-memory"))
    features_acked: int = 0
    vqs: dict[int, VqInfo] = field(default_factory=dict)
    kickfds: dict[int, int] = field(default_factory=dict)
    requests: deque[Request] = field(default_factory=deque)
    responses: list[Response] = field(default_factory=list)
    interrupts: int = 0
    next_id: int = 1
    config: bytearray = field(default_factory=lambda: bytearray(60))
    config_interrupts: int = 0
    memory: int = MEMORY  # bytes of guest memory; the second IOTLB region grows with it

    def __post_init__(self) -> None:
        os.ftruncate(self.memfd, self.memory)
        self.wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.irqfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # the fast path's interrupts

    @property
    def kickfd(self) -> int | None:
        return self.kickfds.get(0)

    def fast_interrupts(self) -> int:
        """Interrupts the fast path raised since the last call."""
        try:
            return os.eventfd_read(self.irqfd)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        for fd in (self.memfd, self.wakeup, self.irqfd):
            os.close(fd)

    # -- DeviceControl / MessageChannel, as the dataplane sees them ----------------------

    def features(self) -> int:
        return self.features_acked

    def vq_info(self, index: int) -> VqInfo:
        idle = VqInfo(
            index=index, num=0, desc_addr=0, driver_addr=0, device_addr=0, avail_index=0,
            ready=False,
        )  # fmt: skip
        return self.vqs.get(index, idle)

    def vq_setup_kickfd(self, index: int, *, fd: int) -> None:
        self.kickfds[index] = fd

    def iotlb_get_fd(self, iova: int, last: int | None = None) -> tuple[int, IotlbEntry]:
        if iova >= self.memory:  # as DeviceNode reports it
            raise VduseError.from_os_error("iotlb get fd", OSError(errno.EINVAL, "no mapping"))
        start, end = (0, REGION_SPLIT) if iova < REGION_SPLIT else (REGION_SPLIT, self.memory)
        entry = IotlbEntry(offset=start, start=start, last=end - 1, perm=lib.VDUSE_ACCESS_RW)
        return os.dup(self.memfd), entry

    def fileno(self) -> int:
        return self.wakeup

    def read_request(self) -> Request | None:
        return self.requests.popleft() if self.requests else None

    def write_response(self, response: Response) -> None:
        self.responses.append(response)

    def vq_inject_irq(self, index: int) -> None:
        self.interrupts += 1

    def set_config(self, offset: int, data: bytes) -> None:
        self.config[offset : offset + len(data)] = data

    def inject_config_irq(self) -> None:
        self.config_interrupts += 1

    # -- the kernel's side of the message protocol ---------------------------------------

    def send(self, kind: RequestType, **fields: int) -> None:
        self.requests.append(Request(kind, request_id=self.next_id, **fields))
        self.next_id += 1


@dataclass(kw_only=True)
class Completion:
    head: int
    written: int
    status: int
    data: bytes


class FakeDriver:
    """Lays out one split virtqueue in guest memory and posts virtio-blk requests."""

    def __init__(self, kernel: FakeKernel, queue: int = 0, size: int = QUEUE_SIZE) -> None:
        self.kernel = kernel
        self.queue = queue
        self.size = size
        self.mem = mmap.mmap(kernel.memfd, kernel.memory)
        self.desc = RING_BASE + queue * RING_STRIDE
        self.avail = self.desc + 16 * size
        self.used = self.desc + (16 * size + 6 + 2 * size + 4095) // 4096 * 4096
        self.avail_idx = 0
        self.used_seen = 0
        self.next_desc = 0
        self.window = (0x1000 + queue * BUFFER_WINDOW, 0x1000 + (queue + 1) * BUFFER_WINDOW)
        self.next_buffer = self.window[0]
        self.inflight: dict[int, tuple[int, int, int]] = {}  # head -> (status, data, len)

    def enable_queue(self) -> None:
        info = VqInfo(
            index=self.queue, num=self.size, desc_addr=self.desc, driver_addr=self.avail,
            device_addr=self.used, avail_index=0, ready=True,
        )  # fmt: skip
        self.kernel.vqs[self.queue] = info

    def alloc(self, size: int, at: int | None = None) -> int:
        if at is not None:
            return at
        step = (size + 511) // 512 * 512
        if self.next_buffer + step > self.window[1]:
            self.next_buffer = self.window[0]
        addr = self.next_buffer
        self.next_buffer += step
        return addr

    @property
    def avail_event(self) -> int:
        """Where the device asked to be kicked next (VIRTIO_RING_F_EVENT_IDX)."""
        return int(struct.unpack_from("<H", self.mem, self.used + 4 + 8 * self.size)[0])

    def set_used_event(self, value: int) -> None:
        struct.pack_into("<H", self.mem, self.avail + 4 + 2 * self.size, value & 0xFFFF)

    def put_desc(self, index: int, *, addr: int, length: int, flags: int, nxt: int) -> None:
        struct.pack_into("<QIHH", self.mem, self.desc + 16 * index, addr, length, flags, nxt)

    def post_chain(self, segments: list[tuple[int, int, bool]]) -> int:
        """Post (addr, len, device_writable) segments as one chain; returns the head."""
        indexes = [(self.next_desc + i) % self.size for i in range(len(segments))]
        self.next_desc = (self.next_desc + len(segments)) % self.size
        for i, (addr, length, writable) in enumerate(segments):
            last = i == len(segments) - 1
            flags = (DescFlag.WRITE if writable else 0) | (0 if last else DescFlag.NEXT)
            self.put_desc(
                indexes[i], addr=addr, length=length, flags=flags, nxt=0 if last else indexes[i + 1]
            )
        self.publish(indexes[0])
        return indexes[0]

    def post_indirect(self, segments: list[tuple[int, int, bool]]) -> int:
        """Post segments as one indirect table behind a single ring descriptor."""
        table = self.alloc(16 * len(segments))
        for i, (addr, length, writable) in enumerate(segments):
            last = i == len(segments) - 1
            flags = (DescFlag.WRITE if writable else 0) | (0 if last else DescFlag.NEXT)
            struct.pack_into("<QIHH", self.mem, table + 16 * i, addr, length, flags, i + 1)
        head = self.next_desc
        self.next_desc = (self.next_desc + 1) % self.size
        self.put_desc(head, addr=table, length=16 * len(segments), flags=DescFlag.INDIRECT, nxt=0)
        self.publish(head)
        return head

    def publish(self, head: int) -> None:
        struct.pack_into("<H", self.mem, self.avail + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        struct.pack_into("<H", self.mem, self.avail + 2, self.avail_idx)

    def request(
        self, kind: int, *, sector: int = 0, out: bytes = b"", in_len: int = 0,
        data_at: int | None = None, indirect: bool = False,
    ) -> int:  # fmt: skip
        header = self.alloc(16)
        self.mem[header : header + 16] = REQUEST_HEADER.pack(kind, 0, sector)
        segments = [(header, 16, False)]
        data = 0
        if out:
            data = self.alloc(len(out), data_at)
            self.mem[data : data + len(out)] = out
            segments.append((data, len(out), False))
        if in_len:
            data = self.alloc(in_len, data_at)
            self.mem[data : data + in_len] = b"\xee" * in_len
            segments.append((data, in_len, True))
        status = self.alloc(1)
        self.mem[status] = 0xFF
        segments.append((status, 1, True))
        head = self.post_indirect(segments) if indirect else self.post_chain(segments)
        self.inflight[head] = (status, data, in_len)
        return head

    def kick(self) -> None:
        os.eventfd_write(self.kernel.kickfds[self.queue], 1)

    def completions(self) -> list[Completion]:
        (used_idx,) = struct.unpack_from("<H", self.mem, self.used + 2)
        done = []
        while self.used_seen != used_idx:
            slot = self.used + 4 + 8 * (self.used_seen % self.size)
            head, written = struct.unpack_from("<II", self.mem, slot)
            status_at, data_at, in_len = self.inflight.pop(head, (0, 0, 0))
            status = self.mem[status_at] if status_at else -1
            data = self.mem[data_at : data_at + in_len]
            done.append(Completion(head=head, written=written, status=status, data=data))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return done

    def close(self) -> None:
        self.mem.close()


def session_for(
    kernel: FakeKernel, profile: BlkProfile, engine: QueueEngine,
    status_log: InflightLog | None = None,
) -> VduseSession:  # fmt: skip
    """The dataplane's session for a device of ``profile`` served by ``engine``."""
    return VduseSession(
        kernel, queue_count=profile.queues, offered=profile.features,
        required=profile.required, engine=engine, status_log=status_log,
    )  # fmt: skip


def bring_up(
    driver: FakeDriver, features: int, handle: Callable[[], None],
    others: tuple[FakeDriver, ...] = (),
) -> list[Response]:  # fmt: skip
    """ACKNOWLEDGE -> DRIVER -> FEATURES_OK -> DRIVER_OK, as the virtio core does it.

    ``handle`` lets the dataplane process what was queued; stops at the first refusal.
    ``others`` are the drivers of further queues of the same device.
    """
    driver.kernel.features_acked = features
    for each in (driver, *others):
        each.enable_queue()
    answers = []
    status = Status(0)
    for bit in (Status.ACKNOWLEDGE, Status.DRIVER, Status.FEATURES_OK, Status.DRIVER_OK):
        status |= bit
        driver.kernel.send(RequestType.SET_STATUS, status=int(status))
        handle()
        answers.append(driver.kernel.responses[-1])
        if not answers[-1].ok:
            break
    return answers


class PackedDriver:
    """Lays out one packed virtqueue in guest memory and posts virtio-blk requests.

    Requests go out in ring order with buffer ids from a free list, the first descriptor
    of each chain made available last, as Linux's virtio_ring does.
    """

    AVAIL = 1 << 7
    USED = 1 << 15

    def __init__(self, kernel: FakeKernel, queue: int = 0, size: int = QUEUE_SIZE) -> None:
        self.kernel = kernel
        self.queue = queue
        self.size = size
        self.mem = mmap.mmap(kernel.memfd, kernel.memory)
        self.desc = RING_BASE + queue * RING_STRIDE
        self.driver_event = self.desc + 16 * size
        self.device_event = self.driver_event + 4
        self.next_avail, self.avail_wrap = 0, 1
        self.next_used, self.used_wrap = 0, 1
        self.free_ids = list(range(size))
        self.chains: dict[int, int] = {}  # id -> descriptors in the ring
        self.inflight: dict[int, tuple[int, int, int]] = {}  # id -> (status, data, len)
        self.buffers = FakeDriver(kernel, queue, size)  # only for its buffer allocator

    def enable_queue(self) -> None:
        info = VqInfo(
            index=self.queue, num=self.size, desc_addr=self.desc, driver_addr=self.driver_event,
            device_addr=self.device_event, avail_index=0, ready=True,
        )  # fmt: skip
        self.kernel.vqs[self.queue] = info

    def set_event(self, flags: int, *, off_wrap: int = 0) -> None:
        struct.pack_into("<HH", self.mem, self.driver_event, off_wrap, flags)

    def post(self, segments: list[tuple[int, int, bool]], *, indirect: bool = False) -> int:
        buffer_id = self.free_ids.pop(0)
        if indirect:
            table = self.buffers.alloc(16 * len(segments))
            for i, (addr, length, writable) in enumerate(segments):
                flags = DescFlag.WRITE if writable else 0
                struct.pack_into("<QIHH", self.mem, table + 16 * i, addr, length, 0, flags)
            ring: list[tuple[int, int, int]] = [(table, 16 * len(segments), DescFlag.INDIRECT)]
        else:
            ring = [
                (addr, length, (DescFlag.WRITE if writable else 0)
                 | (DescFlag.NEXT if i < len(segments) - 1 else 0))
                for i, (addr, length, writable) in enumerate(segments)
            ]  # fmt: skip
        wrap_bits = self.AVAIL if self.avail_wrap else self.USED
        slots = []
        for addr, length, flags in ring:
            slots.append((self.next_avail, addr, length, flags | wrap_bits))
            self.next_avail += 1
            if self.next_avail == self.size:
                self.next_avail, self.avail_wrap = 0, self.avail_wrap ^ 1
                wrap_bits = self.AVAIL if self.avail_wrap else self.USED
        for pos, addr, length, flags in reversed(slots):  # the first one last
            struct.pack_into("<QIH", self.mem, self.desc + 16 * pos, addr, length, buffer_id)
            struct.pack_into("<H", self.mem, self.desc + 16 * pos + 14, flags)
        self.chains[buffer_id] = len(ring)
        return buffer_id

    def request(self, kind: int, *, sector: int = 0, out: bytes = b"", in_len: int = 0,
                indirect: bool = False) -> int:  # fmt: skip
        header = self.buffers.alloc(16)
        self.mem[header : header + 16] = REQUEST_HEADER.pack(kind, 0, sector)
        segments = [(header, 16, False)]
        data = 0
        if out:
            data = self.buffers.alloc(len(out))
            self.mem[data : data + len(out)] = out
            segments.append((data, len(out), False))
        if in_len:
            data = self.buffers.alloc(in_len)
            self.mem[data : data + in_len] = b"\xee" * in_len
            segments.append((data, in_len, True))
        status = self.buffers.alloc(1)
        self.mem[status] = 0xFF
        segments.append((status, 1, True))
        buffer_id = self.post(segments, indirect=indirect)
        self.inflight[buffer_id] = (status, data, in_len)
        return buffer_id

    def completions(self) -> list[Completion]:
        done: list[Completion] = []
        while True:
            slot = self.desc + 16 * self.next_used
            length, buffer_id, flags = struct.unpack_from("<IHH", self.mem, slot + 8)
            used = bool(flags & self.USED) == bool(self.used_wrap)
            if not used or bool(flags & self.AVAIL) != bool(self.used_wrap):
                return done
            status_at, data_at, in_len = self.inflight.pop(buffer_id)
            done.append(Completion(head=buffer_id, written=length, status=self.mem[status_at],
                                   data=self.mem[data_at : data_at + in_len]))  # fmt: skip
            self.next_used += self.chains.pop(buffer_id)
            if self.next_used >= self.size:
                self.next_used -= self.size
                self.used_wrap ^= 1
            self.free_ids.append(buffer_id)

    def close(self) -> None:
        self.buffers.close()
        self.mem.close()
