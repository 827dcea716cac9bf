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

from csi_vduse.vduse.messages import Request, RequestType, Response
from csi_vduse.vduse.node import IotlbEntry, VqInfo
from csi_vduse.vduse.uapi import lib
from csi_vduse.virtio.blk import REQUEST_HEADER
from csi_vduse.virtio.spec import DescFlag, Status

MEMORY = 4 << 20
REGION_SPLIT = 2 << 20  # the two IOTLB regions meet here
RING_BASE = 3 << 20
QUEUE_SIZE = 16


@dataclass
class FakeKernel:
    """The device-node side the dataplane talks to."""

    memfd: int = field(default_factory=lambda: os.memfd_create("guest-memory"))
    features_acked: int = 0
    vq: VqInfo | None = None
    kickfd: int | None = None
    requests: deque[Request] = field(default_factory=deque)
    responses: list[Response] = field(default_factory=list)
    interrupts: int = 0
    next_id: int = 1

    def __post_init__(self) -> None:
        os.ftruncate(self.memfd, MEMORY)
        self.wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    # -- DeviceControl / MessageChannel, as the dataplane sees them ----------------------

    def features(self) -> int:
        return self.features_acked

    def vq_info(self, index: int) -> VqInfo:
        assert index == 0 and self.vq is not None
        return self.vq

    def vq_setup_kickfd(self, index: int, fd: int) -> None:
        self.kickfd = fd

    def iotlb_get_fd(self, iova: int, last: int | None = None) -> tuple[int, IotlbEntry]:
        if iova >= MEMORY:
            raise OSError(errno.EINVAL, "no mapping")
        start, end = (0, REGION_SPLIT) if iova < REGION_SPLIT else (REGION_SPLIT, MEMORY)
        return os.dup(self.memfd), IotlbEntry(start, start, end - 1, lib.VDUSE_ACCESS_RW)

    def fileno(self) -> int:
        return self.wakeup

    def read_request(self) -> Request | None:
        return self.requests.popleft() if self.requests else None

    def write_response(self, response: Response) -> None:
        self.responses.append(response)

    def vq_inject_irq(self, index: int) -> None:
        self.interrupts += 1

    # -- the kernel's side of the message protocol ---------------------------------------

    def send(self, kind: RequestType, **fields: int) -> None:
        self.requests.append(Request(kind, self.next_id, **fields))
        self.next_id += 1


@dataclass
class Completion:
    head: int
    written: int
    status: int
    data: bytes


class FakeDriver:
    """Lays out one split virtqueue in guest memory and posts virtio-blk requests."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.mem = mmap.mmap(kernel.memfd, MEMORY)
        self.desc = RING_BASE
        self.avail = RING_BASE + 16 * QUEUE_SIZE
        self.used = RING_BASE + 0x1000
        self.avail_idx = 0
        self.used_seen = 0
        self.next_desc = 0
        self.next_buffer = 0x1000
        self.inflight: dict[int, tuple[int, int, int]] = {}  # head -> (status, data, len)

    def enable_queue(self) -> None:
        self.kernel.vq = VqInfo(0, QUEUE_SIZE, self.desc, self.avail, self.used, 0, True)

    def alloc(self, size: int, at: int | None = None) -> int:
        if at is not None:
            return at
        addr = self.next_buffer
        self.next_buffer += (size + 511) // 512 * 512
        if self.next_buffer >= RING_BASE:
            self.next_buffer = 0x1000
            addr = self.next_buffer
            self.next_buffer += (size + 511) // 512 * 512
        return addr

    def put_desc(self, index: int, addr: int, length: int, flags: int, nxt: int) -> None:
        struct.pack_into("<QIHH", self.mem, self.desc + 16 * index, addr, length, flags, nxt)

    def post_chain(self, segments: list[tuple[int, int, bool]]) -> int:
        """Post (addr, len, device_writable) segments as one chain; returns the head."""
        indexes = [(self.next_desc + i) % QUEUE_SIZE for i in range(len(segments))]
        self.next_desc = (self.next_desc + len(segments)) % QUEUE_SIZE
        for i, (addr, length, writable) in enumerate(segments):
            last = i == len(segments) - 1
            flags = (DescFlag.WRITE if writable else 0) | (0 if last else DescFlag.NEXT)
            self.put_desc(indexes[i], addr, length, flags, 0 if last else indexes[i + 1])
        self.publish(indexes[0])
        return indexes[0]

    def publish(self, head: int) -> None:
        struct.pack_into("<H", self.mem, self.avail + 4 + 2 * (self.avail_idx % QUEUE_SIZE), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        struct.pack_into("<H", self.mem, self.avail + 2, self.avail_idx)

    def request(
        self, kind: int, sector: int = 0, out: bytes = b"", in_len: int = 0,
        data_at: int | None = None,
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
        head = self.post_chain(segments)
        self.inflight[head] = (status, data, in_len)
        return head

    def kick(self) -> None:
        assert self.kernel.kickfd is not None
        os.eventfd_write(self.kernel.kickfd, 1)

    def completions(self) -> list[Completion]:
        (used_idx,) = struct.unpack_from("<H", self.mem, self.used + 2)
        done = []
        while self.used_seen != used_idx:
            slot = self.used + 4 + 8 * (self.used_seen % QUEUE_SIZE)
            head, written = struct.unpack_from("<II", self.mem, slot)
            status_at, data_at, in_len = self.inflight.pop(head, (0, 0, 0))
            status = self.mem[status_at] if status_at else -1
            done.append(Completion(head, written, status, self.mem[data_at : data_at + in_len]))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return done

    def close(self) -> None:
        self.mem.close()


def bring_up(driver: FakeDriver, features: int, handle: Callable[[], None]) -> list[Response]:
    """ACKNOWLEDGE -> DRIVER -> FEATURES_OK -> DRIVER_OK, as the virtio core does it.

    ``handle`` lets the dataplane process what was queued; stops at the first refusal.
    """
    driver.kernel.features_acked = features
    driver.enable_queue()
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
