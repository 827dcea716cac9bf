"""Writes the fuzz_ring corpus from readable descriptions of what each input does.

    PYTHONPATH=. python3 csi_vduse/dataplane/fast/fuzz/make_seeds.py

rewrites corpus/seeds and corpus/defects.

Each input is fuzz_ring.c's 80-byte header (the queue's setup), with the RBD backend the
fake librbd's script (fake_librbd.h), then operations; fuzz_ring.c's header comment is the
format. The drivers here lay rings out as tests/unit/fake_virtio.py does: split chains and
indirect tables, packed chains with the first descriptor made available last.
``corpus/seeds`` reach the loop's features and replay clean; ``corpus/defects`` hold one
input per known defect and crash or hang until it is fixed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from csi_vduse.virtio.blk import REQUEST_HEADER, RequestType
from csi_vduse.virtio.spec import DescFlag

HERE = Path(__file__).resolve().parent
REGION = 128 << 10  # fuzz_ring.c REGION: region A is IOVA [0, REGION), B follows it
HIGH_B = 2**64 - REGION  # region B's IOVA with the "B at the top" layout bit
HEADER = struct.Struct("<BBBBHHQQQHHHHHIBB32s")
DESC = struct.Struct("<QIHH")  # split: addr, len, flags, next
PACKED_DESC = struct.Struct("<QIHH")  # packed: addr, len, id, flags
ZERO_RANGE = struct.Struct("<QII")  # sector, sectors, flags
PACKED_AVAIL = 1 << 7  # VRING_PACKED_DESC_F_AVAIL
PACKED_USED = 1 << 15  # VRING_PACKED_DESC_F_USED
UNSUPPORTED = 2  # VIRTIO_BLK_T_SCSI_CMD: a type the device does not serve

WRITE, SERVE, STEP, INVALIDATE, CAPACITY, FILL, DISK, CLOCK, LIMITS = range(9)
ENGINES = {"none": 0, "threads": 1, "io_uring": 2, "queue-all": 3}
DEPTHS = {"queue": 0, "shallow": 1, "double": 2, "one": 3}  # the RBD backend's, in the engine bits
SCRIPT = 64  # fake_librbd.h FAKE_RBD_SCRIPT
CALLS = {"ok": 0, "inline": 4, "create-enomem": 5, "enomem": 6, "einval": 7}
RESULTS = {"ok": 0, "eio": 1, "enospc": 2, "short": 3}  # short: a read moves half, else -EROFS
IMAGE = 1 << 20  # fuzz_ring.c BACKING: the fake image's size
THRESHOLDS = {"default": 0, "all": 1, "reads": 2, "writes": 3}
BAD_SIZES = [2048, 32768, 3, 1000, 1025]
MAX_OPS = 64  # fuzz_ring.c reads no more operations than this
MAX = 2**64 - 1  # a limit beyond qos.MAX_RATE or MAX_BURST_MS
RATES = [0, 1, 1000, MAX]  # what fuzz_ring.c's QoS limits code chooses from
BURSTS = [0, 1000, 3_600_000, MAX]
Segment = tuple[int, int, bool]  # IOVA, length, device-writable


def rbd_op(*, fire: int = 0, stop: bool = False, call: str = "ok", result: str = "ok") -> int:
    """The fake librbd's script byte for one operation (fake_librbd.h): `fire` completions
    land before it, its callback `stop`s after publishing, the `call` fails before queueing,
    or the operation completes with `result`."""
    assert 0 <= fire <= 3
    return fire | stop << 2 | CALLS[call] << 3 | RESULTS[result] << 6


def limits_code(*, iops: int = 0, read_bps: int = 0, write_bps: int = 0, burst_ms: int = 0) -> int:
    """The byte fuzz_ring.c reads a QoS page's limits from (header byte 47, LIMITS)."""
    return (RATES.index(iops) | RATES.index(read_bps) << 2 | RATES.index(write_bps) << 4
            | BURSTS.index(burst_ms) << 6)  # fmt: skip


@dataclass(kw_only=True)
class Guest:
    """One input: the queue's setup, then what the guest and the engine do, in order."""

    size: int = 16
    packed: bool = False
    event_idx: bool = False
    indirect: bool = False
    readonly: bool = False
    can_flush: bool = True
    can_discard: bool = True
    stats: bool = False
    b_readonly: bool = False
    b_high: bool = False
    engine: str = "none"
    rbd: bool = False  # the RBD backend on the fake librbd; `engine` is then unused
    depth: str = "queue"  # the RBD backend's depth (DEPTHS)
    script: bytes = b""  # the fake librbd's, zero-padded to SCRIPT bytes
    thresholds: str = "default"
    avail: int = 0  # split: last_avail = used_idx; packed: last_avail (pos | wrap << 15)
    used: int = 0  # packed: used_idx
    rings: tuple[int, int, int] = (0x0, 0x4000, 0x5000)  # desc, driver, device area IOVAs
    log: bool = False
    resume: bool = False
    log_avail: int = 0
    log_used: int = 0
    log_num: int | None = None  # None: the queue's size
    log_valid: int | None = None  # None: 1
    inflight: tuple[int, ...] = ()  # heads flagged in flight in a resumed log
    sectors: int = 2048
    submit_faults: int = 0  # bit i: the i-th io_uring submission fails with EAGAIN
    limits: int | None = None  # a QoS page with these limits (limits_code), on a fake clock
    qos_bad_magic: bool = False
    ops: bytearray = field(default_factory=bytearray)
    nops: int = 0
    # While the last operation is a WRITE: where it starts in ops, where it ends in memory.
    last_write: tuple[int, int] | None = None

    def op(self, raw: bytes) -> None:
        self.ops += raw
        self.nops += 1
        self.last_write = None

    def header(self) -> bytes:
        bad = self.size in BAD_SIZES
        code = BAD_SIZES.index(self.size) + 11 if bad else self.size.bit_length() - 1
        assert self.size in BAD_SIZES or self.size == 1 << code
        features = (self.packed | self.event_idx << 1 | self.indirect << 2 | self.readonly << 3
                    | self.can_flush << 4 | self.can_discard << 5 | self.stats << 6
                    | self.b_readonly << 7)  # fmt: skip
        engine = DEPTHS[self.depth] if self.rbd else ENGINES[self.engine]
        shape = code | engine << 4 | THRESHOLDS[self.thresholds] << 6
        logbits = (self.log | self.resume << 1 | (self.log_num is not None) << 2
                   | (self.log_valid is not None) << 3)  # fmt: skip
        flags = bytearray(32)
        for head in self.inflight:
            flags[head // 8] |= 1 << head % 8
        qos = (self.limits is not None) | self.qos_bad_magic << 1
        layout = self.b_high | self.rbd << 1
        return HEADER.pack(
            features, shape, logbits, layout, self.avail, self.used, *self.rings,
            self.log_avail, self.log_used, self.log_num or 0, self.log_valid or 0,
            self.sectors, self.submit_faults, qos, self.limits or 0, bytes(flags),
        )  # fmt: skip

    def offset(self, iova: int) -> int:
        """Where an IOVA's byte is in the guest memory WRITE addresses."""
        if self.b_high and iova >= HIGH_B:
            return REGION + iova - HIGH_B
        return iova

    def write(self, iova: int, data: bytes) -> None:
        if len(data) > 16 and data == data[:1] * len(data):  # keeps seeds small
            self.fill(iova, len(data), byte=data[0])
            return
        for at in range(0, len(data), 0xFFFF):
            chunk = data[at : at + 0xFFFF]
            offset = self.offset(iova + at)
            if self.last_write and self.last_write[1] == offset:
                # Right after the last WRITE: one operation for both, as MAX_OPS counts them.
                start = self.last_write[0]
                (size,) = struct.unpack_from("<H", self.ops, start + 5)
                if size + len(chunk) <= 0xFFFF:
                    struct.pack_into("<H", self.ops, start + 5, size + len(chunk))
                    self.ops += chunk
                    self.last_write = (start, offset + len(chunk))
                    continue
            start = len(self.ops)
            self.op(struct.pack("<BIH", WRITE, offset, len(chunk)) + chunk)
            self.last_write = (start, offset + len(chunk))

    def fill(self, iova: int, length: int, *, byte: int) -> None:
        self.op(struct.pack("<BIHB", FILL, self.offset(iova), length, byte))

    def disk(self, offset: int, data: bytes) -> None:
        self.op(struct.pack("<BIH", DISK, offset, len(data)) + data)

    def serve(self) -> None:
        self.op(bytes([SERVE]))

    def step(self) -> None:
        self.op(bytes([STEP]))

    def invalidate(self, iova: int, length: int) -> None:
        self.op(struct.pack("<BII", INVALIDATE, iova, length))

    def capacity(self, sectors: int) -> None:
        self.op(struct.pack("<BH", CAPACITY, sectors))

    def clock(self, us: int) -> None:
        self.op(struct.pack("<BI", CLOCK, us))

    def set_limits(self, code: int, *, torn: bool = False) -> None:
        self.op(struct.pack("<BBB", LIMITS, code, torn))

    def memory(self, length: int) -> bytes:
        """The first `length` bytes of guest memory after this input's WRITE and FILL ops."""
        mem, ops, at = bytearray(length), bytes(self.ops), 0
        while at < len(ops):
            kind, offset, size = struct.unpack_from("<BIH", ops, at)
            assert kind in {WRITE, FILL}
            data = ops[at + 7 : at + 7 + size] if kind == WRITE else ops[at + 7 : at + 8] * size
            at += 7 + (size if kind == WRITE else 1)
            end = min(offset + size, length)
            if offset < length:
                mem[offset:end] = data[: end - offset]
        return bytes(mem)

    def input(self) -> bytes:
        assert len(self.script) <= SCRIPT
        script = self.script.ljust(SCRIPT, b"\0") if self.rbd else b""
        return self.header() + script + bytes(self.ops)


class Buffers:
    """A bump allocator for request buffers, in 512-byte steps as fake_virtio allocates."""

    def __init__(self, start: int = 0x8000) -> None:
        self.next = start

    def alloc(self, size: int) -> int:
        addr = self.next
        self.next += (size + 511) // 512 * 512
        return addr


def segments_for(
    guest: Guest, buffers: Buffers, kind: int, *, sector: int = 0, out: bytes = b"",
    in_len: int = 0, status: bool = True,
) -> list[Segment]:  # fmt: skip
    """A virtio-blk request as Linux lays it out: header, data, status byte."""
    header = buffers.alloc(16)
    guest.write(header, REQUEST_HEADER.pack(kind, 0, sector))
    segments = [(header, 16, False)]
    if out:
        data = buffers.alloc(len(out))
        guest.write(data, out)
        segments.append((data, len(out), False))
    if in_len:
        segments.append((buffers.alloc(in_len), in_len, True))
    if status:
        segments.append((buffers.alloc(1), 1, True))
    return segments


class Split:
    """A split virtqueue's driver side (fake_virtio.FakeDriver)."""

    def __init__(self, guest: Guest, buffers: Buffers | None = None) -> None:
        self.guest = guest
        self.desc, self.avail, self.used = guest.rings
        self.buffers = buffers or Buffers()
        self.avail_idx = guest.avail
        self.next_desc = 0

    def put_desc(self, index: int, *, addr: int, length: int, flags: int, nxt: int) -> None:
        self.guest.write(self.desc + 16 * index, DESC.pack(addr, length, flags, nxt))

    def chain(self, segments: list[Segment], at: int | None = None) -> int:
        """Write segments as one chain of ring descriptors; returns its head."""
        first = self.next_desc if at is None else at
        indexes = [(first + i) % self.guest.size for i in range(len(segments))]
        self.next_desc = (first + len(segments)) % self.guest.size
        for i, (addr, length, writable) in enumerate(segments):
            last = i == len(segments) - 1
            flags = (DescFlag.WRITE if writable else 0) | (0 if last else DescFlag.NEXT)
            self.put_desc(
                indexes[i], addr=addr, length=length, flags=flags, nxt=0 if last else indexes[i + 1]
            )
        return indexes[0]

    def indirect_chain(self, segments: list[Segment]) -> int:
        """Write segments as an indirect table behind one ring descriptor; returns it."""
        table = self.buffers.alloc(16 * len(segments))
        for i, (addr, length, writable) in enumerate(segments):
            last = i == len(segments) - 1
            flags = (DescFlag.WRITE if writable else 0) | (0 if last else DescFlag.NEXT)
            self.guest.write(table + 16 * i, DESC.pack(addr, length, flags, i + 1))
        head = self.next_desc
        self.next_desc = (head + 1) % self.guest.size
        self.put_desc(head, addr=table, length=16 * len(segments), flags=DescFlag.INDIRECT, nxt=0)
        return head

    def publish(self, *heads: int) -> None:
        for head in heads:
            slot = self.avail + 4 + 2 * (self.avail_idx % self.guest.size)
            self.guest.write(slot, struct.pack("<H", head))
            self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.guest.write(self.avail + 2, struct.pack("<H", self.avail_idx))

    def prepare(self, kind: int, *, indirect: bool = False, **kw: int | bytes) -> int:
        """Write a request's chain without making it available; returns its head."""
        segments = segments_for(self.guest, self.buffers, kind, **kw)  # type: ignore[arg-type]
        return self.indirect_chain(segments) if indirect else self.chain(segments)

    def request(self, kind: int, *, indirect: bool = False, **kw: int | bytes) -> int:
        head = self.prepare(kind, indirect=indirect, **kw)
        self.publish(head)
        return head


class Packed:
    """A packed virtqueue's driver side (fake_virtio.PackedDriver), from avail position."""

    def __init__(self, guest: Guest, buffers: Buffers | None = None) -> None:
        self.guest = guest
        self.desc, self.driver_event, self.device_event = guest.rings
        self.buffers = buffers or Buffers()
        self.next_avail, self.wrap = guest.avail & 0x7FFF, guest.avail >> 15
        self.next_id = 0

    def set_event(self, flags: int, *, off_wrap: int = 0) -> None:
        self.guest.write(self.driver_event, struct.pack("<HH", off_wrap, flags))

    def post(self, segments: list[Segment], *, indirect: bool = False) -> int:
        if indirect:
            table = self.buffers.alloc(16 * len(segments))
            for i, (addr, length, writable) in enumerate(segments):
                flags = DescFlag.WRITE if writable else 0
                self.guest.write(table + 16 * i, PACKED_DESC.pack(addr, length, 0, flags))
            ring = [(table, 16 * len(segments), int(DescFlag.INDIRECT))]
        else:
            ring = [
                (addr, length, (DescFlag.WRITE if writable else 0)
                 | (DescFlag.NEXT if i < len(segments) - 1 else 0))
                for i, (addr, length, writable) in enumerate(segments)
            ]  # fmt: skip
        return self.post_ring(ring)

    def post_ring(self, ring: list[tuple[int, int, int]]) -> int:
        """Make ring descriptors (addr, len, flags) available as one chain; its buffer id."""
        buffer_id = self.next_id
        self.next_id = (self.next_id + 1) % self.guest.size
        slots = []
        for addr, length, flags in ring:
            bits = PACKED_AVAIL if self.wrap else PACKED_USED
            slots.append((self.next_avail, addr, length, flags | bits))
            self.next_avail += 1
            if self.next_avail == self.guest.size:
                self.next_avail, self.wrap = 0, self.wrap ^ 1
        for pos, addr, length, flags in reversed(slots):  # the first one last
            raw = PACKED_DESC.pack(addr, length, buffer_id, flags)
            self.guest.write(self.desc + 16 * pos, raw)
        return buffer_id

    def request(self, kind: int, *, indirect: bool = False, **kw: int | bytes) -> int:
        segments = segments_for(self.guest, self.buffers, kind, **kw)  # type: ignore[arg-type]
        return self.post(segments, indirect=indirect)


# ---- seeds: each reaches a feature and replays clean -------------------------------------


def every_type(q: Split | Packed, *, indirect: bool = False, serve_each: bool = False) -> None:
    """One request of each type the device knows, and one it does not; with `serve_each`
    a pass after each, for rings too small to hold them all."""
    ranges = ZERO_RANGE.pack(16, 8, 0) + ZERO_RANGE.pack(40, 2, 0)
    requests: list[tuple[int, dict[str, int | bytes]]] = [
        (RequestType.OUT, {"sector": 8, "out": bytes(range(256)) * 4}),
        (RequestType.IN, {"sector": 8, "in_len": 1536}),
        (RequestType.FLUSH, {}),
        (RequestType.GET_ID, {"in_len": 20}),
        (RequestType.DISCARD, {"out": ranges}),
        (RequestType.WRITE_ZEROES, {"out": ZERO_RANGE.pack(64, 4, 1)}),  # unmap
        (RequestType.WRITE_ZEROES, {"out": ZERO_RANGE.pack(72, 4, 0)}),
        (UNSUPPORTED, {}),
    ]
    for kind, kw in requests:
        q.request(kind, indirect=indirect, **kw)
        if serve_each:
            q.guest.serve()


def seed_split_direct() -> Guest:
    """Split ring, direct chains: every request type, served on the queue's thread."""
    g = Guest(size=32)
    every_type(Split(g))
    g.serve()
    return g


def seed_split_indirect() -> Guest:
    """Split ring, every request type behind an indirect table."""
    g = Guest(indirect=True)
    every_type(Split(g), indirect=True)
    g.serve()
    return g


def seed_split_event_idx_stats() -> Guest:
    """EVENT_IDX with used_event set, and the stats block: interrupts suppressed, counted."""
    g = Guest(event_idx=True, stats=True)
    q = Split(g)
    g.write(q.avail + 4 + 2 * g.size, struct.pack("<H", 1))  # used_event: after the 2nd
    for sector in range(3):
        q.request(RequestType.IN, sector=sector, in_len=512)
    g.serve()
    q.request(RequestType.OUT, sector=3, out=b"\1" * 512)
    g.serve()
    return g


def seed_split_errors() -> Guest:
    """Requests that must fail cleanly: out of range, unaligned, read-only, bad buffers."""
    g = Guest(size=32, readonly=True, can_flush=False, can_discard=False, sectors=16)
    q = Split(g)
    q.request(RequestType.IN, sector=16, in_len=512)  # past the end
    q.request(RequestType.IN, sector=0, in_len=100)  # not whole sectors
    q.request(RequestType.OUT, sector=0, out=b"x" * 512)  # read-only
    q.request(RequestType.FLUSH)  # cannot flush: UNSUPP
    q.request(RequestType.DISCARD, out=ZERO_RANGE.pack(0, 1, 0))  # cannot discard
    header = q.buffers.alloc(16)
    g.write(header, REQUEST_HEADER.pack(RequestType.IN, 0, 0))
    status = q.buffers.alloc(1)
    # A readable buffer after a writable one, an IOVA no region holds, a short header.
    q.publish(q.chain([(header, 16, False), (status, 1, True), (header, 16, False),
                       (status, 1, True)]))  # fmt: skip
    q.publish(q.chain([(header, 16, False), (1 << 40, 512, True), (status, 1, True)]))
    q.publish(q.chain([(header, 8, False), (status, 1, True)]))
    q.publish(q.chain([(header, 16, False), (status, 0, True)]))  # no status byte
    g.serve()
    return g


def seed_split_straddle() -> Guest:
    """Buffers crossing from region A into B, which is mapped on the first NEED_MAP."""
    g = Guest(size=8)
    q = Split(g, Buffers(REGION - 0x400))
    q.request(RequestType.OUT, sector=1, out=bytes(range(256)) * 8)
    q.request(RequestType.IN, sector=1, in_len=2048)
    g.serve()
    return g


def seed_split_region_b() -> Guest:
    """Region B read-only at the top of the IOVA space: device writes into it must fail,
    and a buffer running past 2**64 - 1 must not wrap."""
    g = Guest(b_readonly=True, b_high=True)
    q = Split(g, Buffers(HIGH_B + 0x1000))
    q.request(RequestType.IN, in_len=512)  # writable data in a read-only region
    q.request(RequestType.OUT, out=b"y" * 512)  # status byte too
    header = q.buffers.alloc(16)
    g.write(header, REQUEST_HEADER.pack(RequestType.IN, 0, 0))
    # Readable, so only the wrap past 2**64 - 1 is wrong with it.
    q.publish(q.chain([(header, 16, False), (2**64 - 256, 512, False), (0x9000, 1, True)]))
    g.serve()
    return g


def seed_split_engine(engine: str, thresholds: str) -> Callable[[], Guest]:
    def make() -> Guest:
        g = Guest(size=64, engine=engine, thresholds=thresholds, stats=True)
        q = Split(g)
        # Made available together, in one write of the avail ring (MAX_OPS).
        heads = [q.prepare(RequestType.OUT, sector=8 * i, out=bytes([i]) * 4096) for i in range(6)]
        # Six buffers in one request: more than a slot's four small iovecs.
        header = q.buffers.alloc(16)
        g.write(header, REQUEST_HEADER.pack(RequestType.IN, 0, 0))
        data = [(q.buffers.alloc(512), 512, True) for _ in range(6)]
        heads.append(q.chain([(header, 16, False), *data, (q.buffers.alloc(1), 1, True)]))
        for i in range(6):
            heads.append(q.prepare(RequestType.IN, sector=8 * i, in_len=4096))
        heads.append(q.prepare(RequestType.FLUSH))
        q.publish(*heads)
        g.serve()
        # A read larger than INLINE_MAX (64 KiB) and SPREAD_MIN (128 KiB) straddling B.
        big = Split(g, Buffers(0x1000))
        big.avail_idx, big.next_desc = q.avail_idx, q.next_desc
        big.request(RequestType.IN, sector=0, in_len=160 << 10)
        g.serve()
        return g

    make.__doc__ = f"Split ring on the {engine} engine, thresholds {thresholds}: reads and " \
        "writes in flight, completed out of order."  # fmt: skip
    return make


def seed_split_queue_all() -> Guest:
    """A backend that queues every operation it is offered (as librbd's asynchronous API
    would): flushes, single-range discards and write zeroes stay in flight with the reads
    and writes and complete out of order; a multi-range discard is done range by range."""
    g = Guest(size=32, engine="queue-all", stats=True)
    q = Split(g)
    every_type(q)
    q.request(RequestType.DISCARD, out=ZERO_RANGE.pack(80, 8, 0))
    q.request(RequestType.WRITE_ZEROES, out=ZERO_RANGE.pack(4096, 8, 0))  # out of range
    g.serve()
    return g


def seed_split_step() -> Guest:
    """Single dp_serve calls: requests stay in flight across a NEED_MAP round trip while the
    guest posts more, and an invalidation pauses the queue to finish them."""
    return in_flight_across_need_map(Guest(size=16, engine="threads", thresholds="all"))


def in_flight_across_need_map(g: Guest) -> Guest:
    """Two writes in flight while a read waits for region B to be mapped, one more read
    posted meanwhile, then an invalidation of region B."""
    q = Split(g)
    q.request(RequestType.OUT, sector=0, out=b"a" * 4096)
    q.request(RequestType.OUT, sector=8, out=b"b" * 4096)
    b = Split(g, Buffers(REGION + 0x1000))
    b.avail_idx, b.next_desc = q.avail_idx, q.next_desc
    b.request(RequestType.IN, sector=0, in_len=4096)  # region B: NEED_MAP
    g.step()  # maps region A (the rings)
    g.step()  # both writes in flight, then NEED_MAP for region B, which is mapped
    q.avail_idx, q.next_desc = b.avail_idx, b.next_desc
    q.request(RequestType.IN, sector=8, in_len=4096)
    g.step()
    g.invalidate(REGION, REGION)
    g.serve()
    return g


def seed_split_invalidate() -> Guest:
    """Invalidate between passes: the ring and buffer regions are mapped again afterwards."""
    g = Guest(size=16)
    q = Split(g)
    q.request(RequestType.OUT, sector=2, out=b"c" * 512)
    g.serve()
    g.invalidate(0, 0)  # everything
    q.request(RequestType.IN, sector=2, in_len=512)
    g.serve()
    g.invalidate(0x4000, 1)  # the avail ring's region only
    q.request(RequestType.GET_ID, in_len=20)
    g.serve()
    return g


def seed_split_capacity() -> Guest:
    """The capacity shrinks between passes: what was in range no longer is."""
    g = Guest(size=8)
    q = Split(g)
    q.request(RequestType.IN, sector=100, in_len=512)
    g.serve()
    g.capacity(50)
    q.request(RequestType.IN, sector=100, in_len=512)
    q.request(RequestType.WRITE_ZEROES, out=ZERO_RANGE.pack(40, 20, 0))
    g.serve()
    return g


def seed_split_resume() -> Guest:
    """Takeover of a split queue from its in-flight log: one used element published but not
    logged, one head taken but last_avail not moved, and heads still in flight replayed
    (with the stats block: replays mark the queue waiting, and are not counted again)."""
    g = Guest(size=16, log=True, resume=True, log_avail=1, log_used=0, stats=True)
    q = Split(g)
    heads = [q.request(RequestType.OUT, sector=s, out=bytes([s + 1]) * 512) for s in range(4)]
    # Taken: heads 0 and 1 (last_avail 1: head 1 was flagged before last_avail moved), and
    # head 0's used element was published, then the predecessor died before logging it.
    g.inflight = (heads[0], heads[1])
    g.write(q.used, struct.pack("<HHII", 0, 1, heads[0], 1))
    g.serve()
    return g


def seed_split_log_fresh() -> Guest:
    """A fresh in-flight log on the threads engine: flags set and cleared per request."""
    g = Guest(size=64, log=True, engine="threads", thresholds="all", avail=0xFFFE)
    q = Split(g)
    for sector in range(4):
        q.request(RequestType.IN, sector=sector, in_len=512)
    g.serve()
    return g


def seed_packed_direct() -> Guest:
    """Packed ring, direct chains: every request type, wrapping around a ring of 8."""
    g = Guest(size=8, packed=True, avail=1 << 15, used=1 << 15)
    every_type(Packed(g), serve_each=True)
    return g


def seed_packed_indirect() -> Guest:
    """Packed ring, every request type behind an indirect table."""
    g = Guest(size=16, packed=True, indirect=True, avail=1 << 15, used=1 << 15)
    every_type(Packed(g), indirect=True)
    g.serve()
    return g


def seed_packed_events() -> Guest:
    """Packed ring with EVENT_IDX: descriptor-based event suppression, then disabled."""
    g = Guest(size=8, packed=True, event_idx=True, stats=True, avail=6 | 1 << 15,
              used=6 | 1 << 15)  # fmt: skip
    q = Packed(g)
    q.set_event(2, off_wrap=1)  # EVENT_DESC at position 1, wrap 0
    for sector in range(3):
        q.request(RequestType.IN, sector=sector, in_len=512)
        g.serve()
    q.set_event(1)  # EVENT_DISABLE
    q.request(RequestType.FLUSH)
    g.serve()
    return g


def seed_packed_resume() -> Guest:
    """Takeover of a packed queue: the chain taken but never completed is served again."""
    g = Guest(size=8, packed=True, log=True, resume=True, avail=1 << 15,
              log_avail=3 | 1 << 15, log_used=0 | 1 << 15, inflight=(0,), stats=True)  # fmt: skip
    q = Packed(g)
    q.request(RequestType.OUT, sector=1, out=b"p" * 512)
    q.request(RequestType.IN, sector=1, in_len=512)
    g.serve()
    return g


def seed_packed_engine() -> Guest:
    """Packed ring with an engine asked for: served in order on the queue's thread."""
    g = Guest(size=16, packed=True, engine="io_uring", thresholds="all", avail=1 << 15,
              used=1 << 15)  # fmt: skip
    q = Packed(g)
    q.request(RequestType.OUT, sector=4, out=b"q" * 2048)
    q.request(RequestType.IN, sector=4, in_len=2048)
    g.serve()
    return g


def seed_split_qos_throttled() -> Guest:
    """One request a second on the threads engine: the first is taken, the rest wait in the
    ring while it is in flight; a second lets one more through, a page torn half-way
    changes nothing, the finished write lifts the limit and the rest are served."""
    g = Guest(size=16, engine="threads", thresholds="all", limits=limits_code(iops=1))
    q = Split(g)
    for sector in range(4):
        q.request(RequestType.IN, sector=sector, in_len=4096)
    q.request(RequestType.OUT, sector=8, out=b"t" * 4096)
    q.request(RequestType.FLUSH)
    g.serve()
    g.clock(1_000_000)
    g.serve()
    g.set_limits(limits_code(), torn=True)
    g.serve()
    g.set_limits(limits_code())
    g.serve()
    return g


def seed_packed_qos_bytes() -> Guest:
    """Packed ring, reads and writes limited to 1000 bytes a second: a write larger than the
    bucket passes into debt, the read behind it draws on its own bucket, the next write waits
    for the clock; then limits beyond the contract's range."""
    g = Guest(size=16, packed=True, avail=1 << 15, used=1 << 15,
              limits=limits_code(read_bps=1000, write_bps=1000))  # fmt: skip
    q = Packed(g)
    q.request(RequestType.OUT, sector=0, out=b"p" * 4096)
    q.request(RequestType.IN, sector=0, in_len=4096)
    q.request(RequestType.OUT, sector=8, out=b"q" * 4096)
    g.serve()
    g.clock(5_000_000)
    g.serve()
    q.request(RequestType.IN, sector=8, in_len=4096)
    q.request(RequestType.OUT, sector=16, out=b"r" * 4096)
    g.set_limits(limits_code(iops=MAX, read_bps=MAX, write_bps=MAX, burst_ms=MAX))
    g.serve()
    return g


def seed_split_qos_resume() -> Guest:
    """Takeover under one request a second: the requests the log holds in flight are replayed
    whatever the limits, the new ones behind them wait their turn."""
    g = Guest(size=16, log=True, resume=True, log_avail=2, log_used=0,
              limits=limits_code(iops=1))  # fmt: skip
    q = Split(g)
    heads = [q.request(RequestType.OUT, sector=s, out=bytes([s + 1]) * 512) for s in range(4)]
    g.inflight = (heads[0], heads[1])
    g.serve()
    g.clock(10_000_000)
    g.serve()
    return g


# ---- seeds for the RBD backend (rbd.c on the fake librbd) ---------------------------------

# Every byte below 40 lets an operation go ahead and succeed (fake_librbd.h), whichever of
# the script's readers takes it: as an operation's byte it fires 0-3 completions first and
# may stop its callback after publishing; as a pick it chooses among the pending ones.
SHUFFLE = bytes((7 * i + 3) % 40 for i in range(SCRIPT))


def seed_rbd_split_every_type() -> Guest:
    """The RBD backend on a split ring: every request type queued on librbd (flush, discard
    and write zeroes too) and completed oldest first as the pass drains; a discard of two
    ranges waits for each on the queue's thread while the rest stay in flight."""
    g = Guest(size=32, rbd=True, stats=True)
    q = Split(g)
    every_type(q)
    g.serve()
    q.request(RequestType.IN, sector=8, in_len=1024)
    q.request(RequestType.IN, sector=64, in_len=2048)  # zeroed with unmap
    g.serve()
    return g


def seed_rbd_split_out_of_order() -> Guest:
    """Completions land while the pass is still taking requests (when the next operation is
    made, or reap takes its list), in the order the script picks, and some callbacks stop
    right after publishing until librbd is next entered: writes and reads of the same
    sectors in flight together, over several passes."""
    g = Guest(size=64, rbd=True, script=SHUFFLE)
    q = Split(g)
    q.publish(
        *[q.prepare(RequestType.OUT, sector=8 * i, out=bytes([i + 1]) * 4096) for i in range(6)]
    )
    g.serve()
    heads = [q.prepare(RequestType.IN, sector=8 * i, in_len=4096) for i in range(6)]
    for i in range(4):
        heads.append(q.prepare(RequestType.OUT, sector=8 * i + 4, out=bytes([i + 0x40]) * 512))
    heads.append(q.prepare(RequestType.FLUSH))
    q.publish(*heads)
    g.serve()
    q.publish(*[q.prepare(RequestType.IN, sector=8 * i, in_len=4096) for i in range(3)])
    g.serve()
    return g


def seed_rbd_split_inline() -> Guest:
    """Operations completing inline, their callbacks run on the queue's thread before the
    aio call returns, between ones queued and landing later, some failing: reads and writes
    of the same sectors, a flush and a write zeroes among them."""
    ops = [
        rbd_op(call="inline"),
        rbd_op(),
        rbd_op(call="inline", fire=1),
        rbd_op(call="inline", result="eio"),
        rbd_op(stop=True),
        rbd_op(call="inline", result="short"),
    ]
    g = Guest(size=32, rbd=True, stats=True, script=bytes(ops) * 8)
    q = Split(g)
    heads = [q.prepare(RequestType.OUT, sector=8 * i, out=bytes([i + 1]) * 4096) for i in range(4)]
    heads.append(q.prepare(RequestType.FLUSH))
    heads += [q.prepare(RequestType.IN, sector=8 * i, in_len=4096) for i in range(4)]
    heads.append(q.prepare(RequestType.WRITE_ZEROES, out=ZERO_RANGE.pack(64, 8, 0)))
    q.publish(*heads)
    g.serve()
    q.publish(*[q.prepare(RequestType.IN, sector=8 * i, in_len=4096) for i in range(4)])
    g.serve()
    return g


def seed_rbd_split_failures() -> Guest:
    """librbd failing: completions with -EIO, -ENOSPC and -EROFS, reads cut short,
    rbd_aio_create_completion and the aio calls failing before queueing (-ENOMEM, -EINVAL);
    ranges that start past the 1 MiB image (capacity 2 MiB) fail with -EINVAL, a discard
    there is settled as a hint, a read across the end fails, and a write across it is
    clipped by librbd and still reports success."""
    failures = [
        rbd_op(result="eio"),
        rbd_op(call="enomem"),
        rbd_op(result="enospc", fire=1),
        rbd_op(call="einval"),
        rbd_op(call="create-enomem"),
        rbd_op(stop=True, fire=2),
        rbd_op(result="short"),
    ]
    script = bytes(b for failure in failures for b in (failure, 0)) * 4
    g = Guest(size=32, rbd=True, stats=True, sectors=4096, script=script)
    q = Split(g)
    heads = []
    for sector in range(4):
        heads.append(q.prepare(RequestType.OUT, sector=sector, out=bytes([sector]) * 512))
        heads.append(q.prepare(RequestType.FLUSH))
    heads.append(q.prepare(RequestType.IN, sector=0, in_len=2048))
    q.publish(*heads)
    g.serve()
    end = IMAGE // 512
    requests: list[tuple[int, dict[str, int | bytes]]] = [
        (RequestType.IN, {"sector": end + 8, "in_len": 512}),  # past the image
        (RequestType.OUT, {"sector": end + 8, "out": b"e" * 512}),
        (RequestType.OUT, {"sector": end - 1, "out": b"f" * 1024}),  # clipped
        (RequestType.IN, {"sector": end - 1, "in_len": 1024}),  # short
        (RequestType.DISCARD, {"out": ZERO_RANGE.pack(end + 16, 8, 0)}),
        (RequestType.WRITE_ZEROES, {"out": ZERO_RANGE.pack(end + 16, 8, 0)}),
        (RequestType.DISCARD, {"out": ZERO_RANGE.pack(0, 2, 0) + ZERO_RANGE.pack(end, 2, 0)}),
    ]
    q.publish(*[q.prepare(kind, indirect=False, **kw) for kind, kw in requests])
    g.serve()
    return g


def seed_rbd_packed() -> Guest:
    """A packed ring on the RBD backend: every request waits for librbd on the queue's
    thread, in order; completions fail, an aio call and rbd_aio_create_completion too."""
    # Each request takes two bytes: its operation's, and the pick when it is waited for.
    script = bytes([0, 0, rbd_op(result="eio"), 0, 0, 0, rbd_op(result="enospc"), 0,
                    rbd_op(call="einval"), rbd_op(call="create-enomem"), 0, 0])  # fmt: skip
    g = Guest(size=16, packed=True, indirect=True, rbd=True, avail=1 << 15, used=1 << 15,
              script=script)  # fmt: skip
    every_type(Packed(g), indirect=True)
    g.serve()
    return g


def seed_rbd_short_reads() -> Guest:
    """Reads librbd completes short fail (IOERR) on a packed ring, where each is waited for:
    one the script cuts to half, one across the image's end, one past it (-EINVAL); a write
    across the end is clipped and succeeds; a whole read succeeds."""
    # Two bytes a request: its operation's, and the pick when it is waited for.
    script = bytes([rbd_op(result="short"), 0, 0, 0, 0, 0, 0, 0, 0, 0])
    g = Guest(size=16, packed=True, rbd=True, sectors=4096, avail=1 << 15, used=1 << 15,
              script=script)  # fmt: skip
    q = Packed(g)
    end = IMAGE // 512
    q.request(RequestType.IN, sector=0, in_len=4096)  # cut to half
    q.request(RequestType.IN, sector=end - 4, in_len=4096)  # across the end
    q.request(RequestType.IN, sector=end + 4, in_len=512)  # past it
    q.request(RequestType.OUT, sector=end - 1, out=b"w" * 1024)  # clipped, reported whole
    q.request(RequestType.IN, sector=end - 1, in_len=512)
    g.serve()
    return g


def seed_rbd_zero_length() -> Guest:
    """A read and a write of no data (a header and a status byte): librbd refuses an empty
    iovec array, so the backend does them at once; they succeed as on a file."""
    g = Guest(size=8, rbd=True)
    q = Split(g)
    q.publish(q.prepare(RequestType.IN, sector=8), q.prepare(RequestType.OUT, sector=8))
    g.serve()
    return g


def seed_rbd_many_buffers() -> Guest:
    """A read into 1100 buffers, more than librbd takes in one call (IOV_MAX, 1024), on a
    packed ring of 2048 behind one indirect table: done in two slices. The table's 1100 like
    entries are made without 17 KiB of input: 32 of them in one 512-byte buffer, written to
    the image 35 times by one request, then read back over the table by another."""
    g = Guest(size=2048, packed=True, indirect=True, rbd=True, avail=1 << 15, used=1 << 15,
              rings=(0x0, 0x8000, 0x8010))  # fmt: skip
    q = Packed(g, Buffers(0x9000))
    entries, sector = 1100, 1536
    data = q.buffers.alloc(512)
    pattern = q.buffers.alloc(512)
    g.write(pattern, PACKED_DESC.pack(data, 512, 0, DescFlag.WRITE) * 32)
    header = q.buffers.alloc(16)
    g.write(header, REQUEST_HEADER.pack(RequestType.OUT, 0, sector))
    status = q.buffers.alloc(1)
    copies = [(pattern, 512, False)] * 35
    q.post([(header, 16, False), *copies, (status, 1, True)], indirect=True)
    g.serve()
    table = q.buffers.alloc(35 * 512)
    read = segments_for(g, q.buffers, RequestType.IN, sector=sector, status=False)
    q.post([*read, (table, 35 * 512, True), (status, 1, True)], indirect=True)
    g.serve()
    g.write(header, REQUEST_HEADER.pack(RequestType.IN, 0, 0))
    g.write(table, PACKED_DESC.pack(header, 16, 0, 0))
    g.write(table + 16 * (entries + 1), PACKED_DESC.pack(status, 1, 0, DescFlag.WRITE))
    q.post_ring([(table, 16 * (entries + 2), DescFlag.INDIRECT)])
    g.serve()
    return g


def seed_rbd_depth(depth: str) -> Callable[[], Guest]:
    def make() -> Guest:
        g = Guest(size=32, rbd=True, depth=depth, script=SHUFFLE)
        q = Split(g)
        for sector in range(4):
            q.request(RequestType.OUT, sector=8 * sector, out=bytes([sector + 1]) * 4096)
            q.request(RequestType.IN, sector=8 * sector, in_len=4096)
        q.request(RequestType.DISCARD, out=ZERO_RANGE.pack(0, 8, 0) + ZERO_RANGE.pack(16, 8, 0))
        g.serve()
        return g

    make.__doc__ = f"A split ring on an RBD backend of depth {depth} (fuzz_ring.c)."
    return make


def seed_rbd_step() -> Guest:
    """Single dp_serve calls on the RBD backend: requests stay in librbd across a NEED_MAP
    round trip, and an invalidation pauses the queue (dp_run) to finish them; completions
    land out of order, callbacks stop after publishing."""
    return in_flight_across_need_map(Guest(size=16, rbd=True, script=SHUFFLE))


# ---- defects: each crashes or hangs at 51811a9 -------------------------------------------


def defect1_head_reposted_in_flight() -> Guest:
    """D1. io_uring engine, reads over 64 KiB deferred (the thresholds dp_file_use_aio picks for
    a backing without RWF_NOWAIT). One pass over the avail ring:
    - head 0: a 130 KiB read in five buffers, ending past the 1 MiB backing (capacity is
      2 MiB): deferred with q->slots[0].big holding its iovecs, submitted to io-wq;
    - head 40: a 2 KiB read served on the spot from sector 0, whose buffer is the descriptor
      table and the avail ring: head 0 becomes a chain of nine buffers, and the avail ring
      offers head 0 again (idx 3);
    - head 0 again, while its first read is in flight: defer() reallocs slots[0].big, freeing
      the iovecs the first read still points to. That read comes back short (end of file),
      and uring_reap continues it with dp_iov_skip on the freed array."""
    g = Guest(size=64, engine="io_uring", thresholds="default", sectors=4096,
              rings=(0x0, 0x400, 0x800))  # fmt: skip
    q = Split(g, Buffers(0x1000))
    near_end = ((1 << 20) - (32 << 10)) // 512
    first_header = segments_for(g, q.buffers, RequestType.IN, sector=near_end, status=False)
    first = [(0x2000 + i * 26624, 26624, True) for i in range(5)]  # into region B
    q.chain([*first_header, *first, (0x1F000, 1, True)], at=0)
    rewrite = segments_for(g, q.buffers, RequestType.IN, sector=0, status=False)
    q.chain([*rewrite, (q.desc, 0x800, True), (0x1F100, 1, True)], at=40)
    q.publish(0, 40)
    # What head 40 reads over the descriptor table and the avail ring.
    again = Guest(size=64, rings=g.rings)
    again_q = Split(again)
    second_header = segments_for(again, Buffers(0x1200), RequestType.IN, sector=0, status=False)
    second = [(0x2000 + i * 8192, 8192, True) for i in range(9)]
    again_q.chain([*second_header, *second, (0x1F000, 1, True)], at=0)
    again_q.chain([*rewrite, (q.desc, 0x800, True), (0x1F100, 1, True)], at=40)
    again_q.publish(0, 40, 0)
    g.disk(0, again.memory(0x800))
    g.serve()
    return g


def defect2_takeover_avail_used_overlap() -> Guest:
    """D2. Takeover of a split queue of 1 whose avail and used rings are at the same IOVA,
    with the log's used_idx one ahead of last_avail: each used element published moves the
    avail index on by one, so dp_serve never runs out of requests (a livelock)."""
    g = Guest(size=1, log=True, resume=True, log_avail=0, log_used=1,
              rings=(0x0, 0x400, 0x400))  # fmt: skip
    g.write(0x400, struct.pack("<HHH", 0, 1, 0))  # flags, idx 1, ring[0] = head 0
    g.serve()
    return g


def defect3_packed_position_past_ring() -> Guest:
    """D3. Packed ring of 16 started at avail and used position 0x7fff (wrap 0), as a VMM may
    set them: the descriptor at position 0x7fff is read 512 KiB past the ring."""
    g = Guest(size=16, packed=True, avail=0x7FFF, used=0x7FFF)
    g.serve()
    return g


def defect4_queue_size_over_log_block() -> Guest:
    """D4. A queue of 2048 with an in-flight log, whose block has flags for 1024 heads:
    dp_log_attach clears 2048 flags, past the block."""
    return Guest(size=2048, log=True)


def defect5_io_uring_continuation_not_submitted() -> Guest:
    """D5. io_uring engine, every read deferred. A read of 8 KiB at the end of the 1 MiB
    backing comes back short (4 KiB), so uring_reap prepares its continuation; the second
    submission (that continuation's) fails with EAGAIN. At 51811a9 the request was then
    reported done with IOERR while its SQE stayed queued, so the next read's submission
    also submitted the stale one: two completions for one request, the in-flight counts
    wrap, and the drain waits forever."""
    g = Guest(size=16, engine="io_uring", thresholds="all", sectors=4096, submit_faults=0b10)
    q = Split(g)
    q.request(RequestType.IN, sector=(1 << 20) // 512 - 8, in_len=8192)
    g.serve()
    q.request(RequestType.IN, sector=0, in_len=4096)
    q.request(RequestType.IN, sector=8, in_len=4096)
    g.serve()
    return g


# ---- defects of rbd.c: each crashes at 1f8fd9a ------------------------------------------


def defect6_rbd_callback_after_publish() -> Guest:
    """D6. The completion callback bumped the eventfd after it had published the operation
    and released the lock: the queue's thread could reap it, finish the pass, and free the
    backend (closing the eventfd) before the callback's write read b->efd, a use-after-free
    (and a write to whatever the descriptor number had become). One write; its callback
    stops right after its unlock (script: its operation's byte), reap fires it when it takes
    its list (1) picking it (0), the queue finishes and frees the backend, and the fake lets
    the callback go on when the image closes."""
    g = Guest(size=8, rbd=True, script=bytes([rbd_op(stop=True), 1, 0]))
    Split(g).request(RequestType.OUT, sector=0, out=b"u" * 512)
    g.serve()
    return g


def defect7_rbd_short_read_reported_whole() -> Guest:
    """D7. A read librbd completes short was reported whole: librbd clips a read at the
    image's end (and reports the bytes it read), as when the image shrank under the device,
    and rbd.c answered every read that did not fail with its full length, so the guest got
    OK and its buffer's old bytes as data. A read of 8 KiB across the end of the 1 MiB
    image (capacity 2 MiB)."""
    g = Guest(size=8, rbd=True, sectors=4096)
    Split(g).request(RequestType.IN, sector=IMAGE // 512 - 8, in_len=8192)
    g.serve()
    return g


SEEDS: dict[str, Callable[[], Guest]] = {
    "seed-split-direct-every-type": seed_split_direct,
    "seed-split-indirect-every-type": seed_split_indirect,
    "seed-split-event-idx-stats": seed_split_event_idx_stats,
    "seed-split-errors": seed_split_errors,
    "seed-split-straddle-regions": seed_split_straddle,
    "seed-split-region-b-high-readonly": seed_split_region_b,
    "seed-split-threads": seed_split_engine("threads", "all"),
    "seed-split-threads-default-thresholds": seed_split_engine("threads", "default"),
    "seed-split-io-uring": seed_split_engine("io_uring", "all"),
    "seed-split-io-uring-reads-only": seed_split_engine("io_uring", "reads"),
    "seed-split-queue-all-every-type": seed_split_queue_all,
    "seed-split-step-in-flight-need-map": seed_split_step,
    "seed-split-invalidate-between-passes": seed_split_invalidate,
    "seed-split-capacity-change": seed_split_capacity,
    "seed-split-resume-log": seed_split_resume,
    "seed-split-log-threads": seed_split_log_fresh,
    "seed-packed-direct-every-type": seed_packed_direct,
    "seed-packed-indirect-every-type": seed_packed_indirect,
    "seed-packed-event-suppression": seed_packed_events,
    "seed-packed-resume-log": seed_packed_resume,
    "seed-packed-engine-in-order": seed_packed_engine,
    "seed-split-qos-throttled": seed_split_qos_throttled,
    "seed-packed-qos-bytes": seed_packed_qos_bytes,
    "seed-split-qos-resume": seed_split_qos_resume,
    "seed-rbd-split-every-type": seed_rbd_split_every_type,
    "seed-rbd-split-out-of-order": seed_rbd_split_out_of_order,
    "seed-rbd-split-failures": seed_rbd_split_failures,
    "seed-rbd-packed": seed_rbd_packed,
    "seed-rbd-short-reads": seed_rbd_short_reads,
    "seed-rbd-inline-completions": seed_rbd_split_inline,
    "seed-rbd-zero-length": seed_rbd_zero_length,
    "seed-rbd-many-buffers": seed_rbd_many_buffers,
    "seed-rbd-shallow": seed_rbd_depth("shallow"),
    "seed-rbd-double": seed_rbd_depth("double"),
    "seed-rbd-step-in-flight-need-map": seed_rbd_step,
}

DEFECTS: dict[str, Callable[[], Guest]] = {
    "defect1-head-reposted-in-flight": defect1_head_reposted_in_flight,
    "defect2-takeover-avail-used-overlap": defect2_takeover_avail_used_overlap,
    "defect3-packed-position-past-ring": defect3_packed_position_past_ring,
    "defect4-queue-size-over-log-block": defect4_queue_size_over_log_block,
    "defect5-io-uring-continuation-not-submitted": defect5_io_uring_continuation_not_submitted,
    "defect6-rbd-callback-after-publish": defect6_rbd_callback_after_publish,
    "defect7-rbd-short-read-reported-whole": defect7_rbd_short_read_reported_whole,
}


def main() -> None:
    for sub, makers in (("seeds", SEEDS), ("defects", DEFECTS)):
        out = HERE / "corpus" / sub
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.iterdir():
            stale.unlink()
        for name, make in makers.items():
            guest = make()
            data = guest.input()
            assert len(data) <= 4096, f"{name}: {len(data)} bytes"
            assert guest.nops <= MAX_OPS, f"{name}: {guest.nops} operations, the rest unread"
            (out / name).write_bytes(data)
            print(f"{sub}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
