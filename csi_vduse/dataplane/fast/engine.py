"""Runs the C request loop (queue.c) for each enabled queue, one thread per queue.

Python keeps the control side: it maps IOTLB regions when the C loop asks for an
IOVA it has not seen (DP_NEED_MAP), and on UPDATE_IOTLB it pauses every queue
thread, drops the stale ranges from each queue's table, unmaps them and resumes,
so the C loop never touches a mapping after the kernel invalidated it. ``hold`` pauses
every queue for the driver (a group snapshot, see ``csi_vduse.dataplane.control``) until
``release``; the engine's own pauses leave a held queue paused.

With an in-flight log, each queue records its progress there (see inflight.h), and a queue
started with ``resume`` continues from the log instead of the kernel's initial state.

With a QoS page (dataplane/qos.py), the device's queues share one set of token buckets
(qos.c) that read their limits from the page as they admit requests.

Each queue's requests are served by the file backend (file.c), or by a backend the target
brings (``BlkTarget.backends``: an RBD image's, for one). The file backend's reads and
writes on split rings go through an asynchronous engine per queue (aio.c):
io_uring where the kernel allows it, else a thread pool (``CSI_VDUSE_DATAPLANE_IO``
chooses: auto, io_uring, threads or none). The engines are made once per queue index,
before the process is confined, and outlive device resets.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import select
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

from csi_vduse.dataplane.blk.profile import MAX_ZERO_RANGES
from csi_vduse.dataplane.fast._ring import ffi, lib
from csi_vduse.dataplane.inflight_log import FLAGS_PER_QUEUE, InflightLog
from csi_vduse.dataplane.qos import PAGE_SIZE, VERSION, QosError
from csi_vduse.dataplane.stats import StatsFile
from csi_vduse.dataplane.virtio.queues import RingError
from csi_vduse.errors import CsiVduseError
from csi_vduse.vduse.node import IotlbEntry, VqInfo
from csi_vduse.virtio.blk import ID_BYTES
from csi_vduse.virtio.spec import Feature, bit

log = logging.getLogger(__name__)

IO_SETTING = "CSI_VDUSE_DATAPLANE_IO"
IO_KINDS = {"io_uring": lib.DP_AIO_URING, "threads": lib.DP_AIO_THREADS, "none": lib.DP_AIO_NONE}
IO_NAMES = {kind: name for name, kind in IO_KINDS.items()}
POOL_THREADS = 4  # per queue, when io_uring is unavailable


def io_setting() -> str:
    """The asynchronous engine asked for by the environment (default: auto)."""
    value = os.environ.get(IO_SETTING) or "auto"
    if value != "auto" and value not in IO_KINDS:
        log.warning("%s=%s is not one of auto, %s: using auto", IO_SETTING, value,
                    ", ".join(IO_KINDS))  # fmt: skip
        return "auto"
    return value


class AioSet:
    """One asynchronous I/O engine per queue index, made on first use and kept."""

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self._engines: dict[int, Any] = {}
        self._depth: dict[int, int] = {}

    def prepare(self, *, queues: int, depth: int) -> None:
        """Make the engines now, while io_uring_setup is still allowed (see sandbox.py)."""
        for index in range(queues):
            self.get(index, depth=depth)

    def get(self, index: int, *, depth: int) -> Any:
        """The engine for queue ``index`` (deep enough for ``depth``), or NULL for none."""
        engine = self._engines.get(index)
        if engine is not None and self._depth[index] >= depth:
            return engine
        if engine is not None:
            lib.dp_aio_close(engine)
            del self._engines[index]
        kinds = ["io_uring", "threads"] if self.setting == "auto" else [self.setting]
        for name in kinds:
            if name == "none":
                return ffi.NULL
            err = ffi.new("int *")
            engine = lib.dp_aio_open(IO_KINDS[name], depth, POOL_THREADS, err)
            if engine != ffi.NULL:
                self._engines[index], self._depth[index] = engine, depth
                return engine
            log.warning(
                "queue %d: no %s engine (%s)%s", index, name, os.strerror(-err[0]),
                ": falling back" if name != kinds[-1] else "",
            )  # fmt: skip
        return ffi.NULL

    def close(self) -> None:
        """Free every engine; no queue may be using one."""
        for engine in self._engines.values():
            lib.dp_aio_close(engine)
        self._engines.clear()


def _qos_limits(page: mmap.mmap | None) -> tuple[Any, Any]:
    """The device's token buckets over ``page`` (cffi struct dp_qos *), and the page as the
    C loop holds it; (None, None) without a page."""
    if page is None:
        return None, None
    held = ffi.from_buffer("uint8_t[]", page)
    limits = ffi.new("struct dp_qos *")
    if len(page) < PAGE_SIZE or lib.dp_qos_init(limits, held):
        ffi.release(held)
        raise QosError(f"not a version {VERSION} QoS page: {bytes(page[:12])!r}")
    return limits, held


class IotlbSource(Protocol):
    def iotlb_get_fd(self, iova: int, last: int | None = None) -> tuple[int, IotlbEntry]: ...


class QueueBackend(Protocol):
    """A backend (fast/backend.h) made outside this module for one queue."""

    address: int  # its struct dp_backend *, as an integer

    def describe(self) -> str: ...
    def free(self) -> None: ...


class QueueBackends(Protocol):
    """A backing that is not a file descriptor: it makes each queue's backend."""

    def queue_backend(self, depth: int) -> QueueBackend: ...


@dataclass(frozen=True, kw_only=True)
class BlkTarget:
    """What the C loop serves requests against: ``backends``, or else the file backend on
    ``backing_fd``."""

    backing_fd: int
    capacity: int  # bytes, a multiple of 512
    readonly: bool
    serial: bytes
    can_flush: bool = True
    can_discard: bool = True
    # The backing opened with O_DIRECT (-1: none), and the alignment it needs of offsets,
    # lengths and buffers; transfers not aligned so go through backing_fd.
    direct_fd: int = -1
    direct_align: int = 4096
    backends: QueueBackends | None = None


@dataclass(frozen=True, kw_only=True)
class Mapping:
    start: int
    last: int
    host: Any  # cffi void *
    writable: bool


class MapPool:
    """The device's mapped IOTLB regions, shared by its queues (one mmap per region)."""

    def __init__(self, source: IotlbSource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._maps: list[Mapping] = []

    def get(self, iova: int) -> Mapping | None:
        """The region holding ``iova``, mapped on first use; None if the kernel has none."""
        with self._lock:
            for mapping in self._maps:
                if mapping.start <= iova <= mapping.last:
                    return mapping
            try:
                fd, entry = self.source.iotlb_get_fd(iova)
            except (OSError, CsiVduseError) as exc:
                log.warning("IOVA %#x is not mapped: %s", iova, exc)
                return None
            try:
                host = lib.dp_mmap(fd, entry.size, entry.offset, int(entry.writable))
            finally:
                os.close(fd)
            if host == ffi.NULL:
                log.error("cannot map IOVA %#x-%#x", entry.start, entry.last)
                return None
            mapping = Mapping(
                start=entry.start, last=entry.last, host=host, writable=entry.writable
            )
            self._maps.append(mapping)
            log.debug("mapped IOVA %#x-%#x perm %d", entry.start, entry.last, entry.perm)
            return mapping

    def invalidate(self, start: int, last: int) -> None:
        """Unmap every region overlapping [start, last]; no queue may be running."""
        with self._lock:
            keep = []
            for mapping in self._maps:
                if mapping.start <= last and mapping.last >= start:
                    lib.dp_munmap(mapping.host, mapping.last - mapping.start + 1)
                else:
                    keep.append(mapping)
            self._maps = keep


class FastQueue:
    """One virtqueue served by the C loop, optionally on its own thread."""

    def __init__(
        self, info: VqInfo, *, kickfd: int, features: int, target: BlkTarget, pool: MapPool,
        devfd: int, irqfd: int, stats: Any = None, aio: Any = None, qos: Any = None,
    ) -> None:  # fmt: skip
        self.index = info.index
        self.kickfd = kickfd
        self.pool = pool
        self.ctlfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        q = ffi.new("struct dp_queue *")
        q.index, q.num = info.index, info.num
        q.desc_iova, q.avail_iova, q.used_iova = info.desc_addr, info.driver_addr, info.device_addr
        q.kickfd, q.ctlfd, q.devfd, q.irqfd = kickfd, self.ctlfd, devfd, irqfd
        blk = q.blk
        blk.readonly, blk.can_flush = target.readonly, target.can_flush
        blk.can_discard, blk.max_discard_seg = target.can_discard, MAX_ZERO_RANGES
        blk.capacity = target.capacity
        blk.serial = target.serial[:ID_BYTES].ljust(ID_BYTES, b"\0")
        q.event_idx = bool(features & bit(Feature.EVENT_IDX))
        q.indirect = bool(features & bit(Feature.INDIRECT_DESC))
        q.packed = bool(features & bit(Feature.RING_PACKED))
        start = (info.packed_avail, info.packed_used) if q.packed else (info.avail_index,) * 2
        if not all(0 <= position <= 0xFFFF for position in start):
            os.close(self.ctlfd)
            raise RingError(f"queue {self.index}: start positions {start} are not 16-bit")
        q.last_avail, q.used_idx = start
        q.stats = ffi.NULL if stats is None else stats
        q.qos = ffi.NULL if qos is None else qos
        rc = lib.dp_queue_init(q)
        if rc:
            os.close(self.ctlfd)
            if rc == -errno.ENOMEM:
                raise MemoryError(f"queue {self.index}: no memory for its iovecs")
            raise RingError(ffi.string(q.error).decode())
        self.backend: Any = None  # the file backend; the queue points into it
        self.foreign: QueueBackend | None = None  # or the target's
        if target.backends is not None:
            try:
                self.foreign = target.backends.queue_backend(info.num)
            except BaseException:
                lib.dp_queue_free(q)
                os.close(self.ctlfd)
                raise
            pointer = ffi.cast("struct dp_backend *", self.foreign.address)
            kind = lib.DP_AIO_NONE
        else:
            self.backend = ffi.new("struct dp_file *")
            lib.dp_file_init(self.backend, target.backing_fd, target.direct_fd, target.direct_align)
            self.backend.stats = q.stats
            kind = lib.dp_file_use_aio(self.backend, ffi.NULL if aio is None else aio)
            pointer = lib.dp_file_backend(self.backend)
        queued = lib.dp_queue_attach(q, pointer)
        if queued < 0:
            lib.dp_queue_free(q)
            self._free_foreign()
            os.close(self.ctlfd)
            raise MemoryError(f"queue {self.index}: no memory for its request slots")
        self.io = IO_NAMES[kind] if queued else "none"
        self.q = q
        self.broken = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        # The thread is parked: out of the C loop, nothing in flight, waiting for pause_req
        # to clear (or for close). pause_req changes under this condition's lock.
        self._state = threading.Condition()
        self._parked = False
        self.held = False  # by FastEngine.hold: only release() resumes the queue

    def describe_io(self) -> str:
        """Where reads and writes are served, for the log."""
        if self.foreign is not None:
            return self.foreign.describe()
        if self.io == "none":
            return "reads and writes via none (on the queue's thread)"
        reads, writes = int(self.backend.async_min), int(self.backend.async_write_min)
        if reads == writes == 0:
            return f"reads and writes via {self.io}"
        inline = f"reads up to {(reads - 1) >> 10} KiB" if reads else "no reads"
        inline += ", and writes," if writes == 2**32 - 1 else ""
        return f"reads and writes via {self.io} ({inline} on the queue's thread)"

    @property
    def last_avail(self) -> int:
        return int(self.q.last_avail)

    def _map(self) -> None:
        iova = int(self.q.miss_iova)
        mapping = self.pool.get(iova)
        if mapping is None or lib.dp_map_add(
            self.q, mapping.start, mapping.last, mapping.host, int(mapping.writable)
        ):
            lib.dp_mark_bad(self.q, iova)

    def _broke(self) -> None:
        self.broken = True
        log.error("queue %d stopped: %s", self.index, ffi.string(self.q.error).decode())

    def serve_pending(self) -> None:
        """Serve what the driver posted, on the caller's thread (tests, no worker)."""
        while not self.broken:
            rc = lib.dp_serve(self.q)
            if rc == lib.DP_NEED_MAP:
                self._map()
            elif rc == lib.DP_BROKEN:
                self._broke()
            else:
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"queue-{self.index}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            # Not expected; the queue stops, the device and the other queues go on.
            log.exception("queue %d thread failed", self.index)
            self.broken = True
            with self._state:  # nobody may wait on a dead thread
                self._parked = True
                self._state.notify_all()

    def _loop(self) -> None:
        while True:
            rc = lib.DP_PAUSE if self.broken else lib.dp_run(self.q)
            if rc == lib.DP_NEED_MAP:
                self._map()
                continue
            if rc == lib.DP_BROKEN:
                self._broke()
                continue
            if self.broken and not (self._stopping or self.q.pause_req):
                select.select([self.ctlfd], [], [])
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self.ctlfd)
            if self._stopping:
                return
            with self._state:
                if self.q.pause_req and not self._stopping:
                    self._parked = True
                    self._state.notify_all()
                    while self.q.pause_req and not self._stopping:
                        self._state.wait()
                    self._parked = False

    def pause(self, timeout: float | None = None) -> bool:
        """True once the queue's thread is outside the C loop with nothing in flight, and
        waiting; False if it was not within ``timeout`` seconds (it still pauses later)."""
        self.request_pause()
        return self.wait_paused(timeout)

    def request_pause(self) -> None:
        """Ask the thread to leave the C loop once nothing is in flight."""
        if self._thread is None or not self._thread.is_alive():
            return
        with self._state:
            if self.q.pause_req:
                return  # asked already: the thread is parked or on its way
            self.q.pause_req = 1
        os.eventfd_write(self.ctlfd, 1)

    def wait_paused(self, timeout: float | None = None) -> bool:
        if self._thread is None or not self._thread.is_alive():
            return True
        with self._state:
            return self._state.wait_for(lambda: self._parked, timeout)

    def resume(self) -> None:
        """Let the thread serve again, unless the queue is held (see FastEngine.hold)."""
        if self._thread is None or self.held:
            return
        with self._state:
            self.q.pause_req = 0
            self._state.notify_all()

    def invalidate(self, start: int, last: int) -> None:
        lib.dp_map_invalidate(self.q, start, last)

    def close(self) -> None:
        """Stop the thread, then free the queue; the kick fd is closed too."""
        if self._thread is not None:
            with self._state:  # a parked thread wakes up to stop
                self._stopping = True
                self.q.pause_req = 1  # a pass in progress stops at its next request
                self._state.notify_all()
            os.eventfd_write(self.ctlfd, 1)
            self._thread.join()
            self._thread = None
        log.info(
            "queue %d: %d requests (%d with direct I/O), %d interrupts, %d failed, %d replayed, "
            "%d held back by the I/O limits",
            self.index, self.q.served, 0 if self.backend is None else self.backend.direct,
            self.q.interrupts, self.q.errors, self.q.replayed, self.q.throttled,
        )  # fmt: skip
        lib.dp_queue_free(self.q)
        self._free_foreign()
        os.close(self.ctlfd)
        os.close(self.kickfd)

    def discard(self) -> None:
        """Free a queue that never started; its kick fd stays the caller's."""
        lib.dp_queue_free(self.q)
        self._free_foreign()
        os.close(self.ctlfd)

    def _free_foreign(self) -> None:
        if self.foreign is not None:
            self.foreign.free()
            self.foreign = None


class FastEngine:
    """The queues of one device; ``threaded=False`` leaves serving to ``serve_pending``.

    ``qos_page`` is the device's QoS page mapped read-only (at least ``qos.PAGE_SIZE``
    bytes), whose limits the queues obey live, or None for none; it stays exported to the C
    loop, so it cannot be closed, until ``close``. A page of another layout is refused
    (QosError)."""

    held = False  # see hold()

    def __init__(
        self, source: IotlbSource, target: BlkTarget, *, devfd: int, irqfd: int = -1,
        threaded: bool = True, stats: StatsFile | None = None,
        inflight: InflightLog | None = None, io: str | None = None,
        async_min: int | None = None, qos_page: mmap.mmap | None = None,
    ) -> None:  # fmt: skip
        self.qos, self._qos_page = _qos_limits(qos_page)
        self.pool = MapPool(source)
        self.async_min = async_min  # None: file.c's choice per backing; tests send all (0)
        self.aio = AioSet(io_setting() if io is None else io)
        if target.direct_fd >= 0 and not lib.dp_aio_nowait(target.direct_fd):
            # O_DIRECT helps where the kernel serves it asynchronously (block devices, disk
            # filesystems); on tmpfs and the like the page cache is the storage itself.
            log.info("direct I/O not used: the backing cannot be read asynchronously")
            target = replace(target, direct_fd=-1)
        elif target.direct_fd >= 0:
            log.info("direct I/O for transfers aligned to %d bytes", target.direct_align)
        self.stats = stats
        self.inflight = inflight
        # One pointer into the shared mapping, kept alive as long as the engine.
        self._stats_base = None if stats is None else ffi.from_buffer("uint64_t[]", stats.map)
        self.target = target
        self.devfd = devfd
        self.irqfd = irqfd
        self.threaded = threaded
        self.queues: dict[int, FastQueue] = {}

    def start_queue(
        self, info: VqInfo, *, kickfd: int, features: int, resume: bool = False
    ) -> None:
        """Serve queue ``info.index``; the engine owns ``kickfd`` from now on."""
        block = None
        if self._stats_base is not None and self.stats and info.index < self.stats.queues:
            block = self._stats_base + StatsFile.block_offset(info.index) // 8
        file_aio = self.target.backends is None and not features & bit(Feature.RING_PACKED)
        aio = self.aio.get(info.index, depth=info.num) if file_aio else None
        queue = FastQueue(
            info, kickfd=kickfd, features=features, target=self.target, pool=self.pool,
            devfd=self.devfd, irqfd=self.irqfd, stats=block, aio=aio, qos=self.qos,
        )  # fmt: skip
        if self.async_min is not None and queue.backend is not None and queue.io != "none":
            queue.backend.async_min = queue.backend.async_write_min = self.async_min
        log.info("queue %d: %d entries, %s", info.index, info.num, queue.describe_io())
        if self.inflight is not None:
            block = self.inflight.block(info.index)
            if lib.dp_log_attach(queue.q, block, FLAGS_PER_QUEUE, int(resume)):
                error = ffi.string(queue.q.error).decode()
                queue.discard()
                raise RingError(error)
            if resume:
                log.info(
                    "queue %d resumes at avail %d, used %d",
                    info.index, queue.q.last_avail, queue.q.used_idx,
                )  # fmt: skip
        elif resume:
            queue.discard()
            raise RingError(f"queue {info.index}: nothing to resume from without a log")
        self.queues[info.index] = queue
        if self.held:  # starts paused, until release()
            queue.held = True
            queue.q.pause_req = 1
        if self.threaded:
            queue.start()

    def last_avail(self, index: int) -> int | None:
        queue = self.queues.get(index)
        return queue.last_avail if queue else None

    def packed_state(self, index: int) -> tuple[int, int] | None:
        """A packed queue's avail and used positions (position | wrap << 15), else None."""
        queue = self.queues.get(index)
        if queue is None or not queue.q.packed:
            return None
        return int(queue.q.last_avail), int(queue.q.used_idx)

    def serve_pending(self) -> None:
        for queue in self.queues.values():
            queue.serve_pending()

    def invalidate(self, start: int, last: int) -> None:
        for queue in self.queues.values():
            queue.pause()
        try:
            for queue in self.queues.values():
                queue.invalidate(start, last)
            self.pool.invalidate(start, last)
        finally:
            for queue in self.queues.values():
                queue.resume()

    @property
    def capacity(self) -> int:
        """The bytes served: the target's, which ``set_capacity`` changes."""
        return self.target.capacity

    def set_capacity(self, capacity: int) -> None:
        """Serve ``capacity`` bytes from now on; the queues are paused while it changes."""
        for queue in self.queues.values():
            queue.pause()
        for queue in self.queues.values():
            queue.q.blk.capacity = capacity
            queue.resume()
        self.target = replace(self.target, capacity=capacity)

    def hold(self, timeout: float | None = None) -> bool:
        """Pause every queue until ``release``: True once each one's thread has completed
        what it had in flight and waits; new requests wait in the ring. False if they did
        not within ``timeout`` seconds, and then nothing stays held.

        The pauses the engine makes itself (``invalidate``, ``set_capacity``) leave a held
        queue paused, a queue started while held starts paused, and a reset (``stop``)
        keeps the engine held for the queues the driver enables next."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.held = True
        for queue in self.queues.values():
            queue.held = True
            queue.request_pause()  # all drain at once
        for queue in self.queues.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not queue.wait_paused(left):
                self.release()
                return False
        return True

    def release(self) -> None:
        """End ``hold``: the queues running now serve again (the stopped ones are gone)."""
        self.held = False
        for queue in self.queues.values():
            queue.held = False
            queue.resume()

    def stop(self) -> None:
        for queue in self.queues.values():
            queue.close()
        self.queues.clear()
        self.pool.invalidate(0, 2**64 - 1)

    def close(self) -> None:
        """Stop, and free the asynchronous engines and the limits too (the end of the
        process); the QoS page may be closed then."""
        self.stop()
        self.aio.close()
        if self.qos is not None:
            lib.dp_qos_free(self.qos)
            ffi.release(self._qos_page)
            self.qos = self._qos_page = None
