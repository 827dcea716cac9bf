"""Entry point of the dataplane process; see ``csi_vduse.dataplane.interface`` for the contract."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from csi_vduse import dataplane
from csi_vduse.dataplane import qos
from csi_vduse.dataplane.blk.backend import FileBackend, direct_alignment
from csi_vduse.dataplane.blk.capacity import grow
from csi_vduse.dataplane.errors import DataplaneError
from csi_vduse.dataplane.fast.engine import BlkTarget, FastEngine, QueueBackends
from csi_vduse.dataplane.inflight_log import InflightLog
from csi_vduse.dataplane.interface import DataplaneArgs, report_ready, report_waiting
from csi_vduse.dataplane.pause_channel import PauseChannel
from csi_vduse.dataplane.sandbox import DATA_LIMIT, RBD_DATA_LIMIT, confine, limit_memory
from csi_vduse.dataplane.server import Server
from csi_vduse.dataplane.stats import StatsFile
from csi_vduse.dataplane.virtio.session import ResumeError, VduseSession
from csi_vduse.errors import CsiVduseError
from csi_vduse.vduse.node import DeviceNode
from csi_vduse.virtio.blk import SECTOR_SIZE

if TYPE_CHECKING:
    from csi_vduse.ceph.image import RbdImage

log = logging.getLogger("dataplane")


def main(argv: list[str] | None = None) -> int:
    imported = time.monotonic()
    args = DataplaneArgs.parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s dataplane[{args.name}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        backend = open_backing(args)
        node = DeviceNode(args.name, nonblocking=True, fd=args.device_fd)
    except (CsiVduseError, OSError) as exc:
        log.error("cannot start: %s", exc)
        report_ready(args.ready_fd, str(exc), code=exc.errno)
        return 1
    profile = args.profile
    serial = args.serial.encode()
    writable = not profile.readonly
    stats = None
    inflight = None
    if args.inflight_fd is not None:
        try:
            inflight = InflightLog(args.inflight_fd, queues=profile.queues)
        except OSError as exc:
            log.error("cannot map the in-flight log: %s", exc)
            report_ready(args.ready_fd, f"cannot map the in-flight log: {exc.strerror}")
            return 1
    qos_page = None
    if args.qos_fd is not None:
        try:
            qos_page = qos.map_page(args.qos_fd)
        except (OSError, qos.QosError) as exc:
            # Serving without the limits the driver set would let a noisy neighbour loose.
            log.error("cannot map the QoS page: %s", exc)
            report_ready(args.ready_fd, f"cannot map the QoS page: {exc}")
            return 1
    if args.stats_fd is not None:
        try:
            stats = StatsFile(args.stats_fd, queues=profile.queues)
        except OSError as exc:
            log.warning("no I/O counters: cannot map their file: %s", exc)
    image = None if isinstance(backend, FileBackend) else backend  # an RBD image's extras
    capacity = backend.size // SECTOR_SIZE * SECTOR_SIZE
    target = BlkTarget(
        backing_fd=backend.fd if isinstance(backend, FileBackend) else -1,
        backends=None if image is None else rbd_queues(image),
        capacity=capacity, readonly=profile.readonly, serial=serial, can_flush=writable,
        can_discard=writable,
    )  # fmt: skip
    if args.direct_fd is not None:
        align = direct_alignment(args.direct_fd)
        target = replace(target, direct_fd=args.direct_fd, direct_align=align)
    engine = FastEngine(
        node, target, devfd=node.fd, stats=stats, inflight=inflight, qos_page=qos_page
    )
    if not profile.packed and target.backends is None:
        engine.aio.prepare(queues=profile.queues, depth=profile.queue_size)
    session = VduseSession(
        node, queue_count=profile.queues, offered=profile.features, required=profile.required,
        engine=engine, status_log=inflight,
    )  # fmt: skip
    pausing = None
    if args.control_fd is not None:
        try:
            pausing = PauseChannel.inherit(args.control_fd, engine)
        except OSError as exc:
            # Serving without it would leave the driver's group snapshots no way to pause us.
            log.error("cannot use the control socket: %s", exc)
            report_ready(args.ready_fd, f"cannot use the control socket: {exc}")
            return 1
    set_up = time.monotonic()
    try:
        resumed = session.resume()
    except (ResumeError, CsiVduseError) as exc:
        log.error("cannot take the device over: %s", exc)
        report_ready(args.ready_fd, f"cannot take the device over: {exc}")
        return 1
    took_over = time.monotonic()
    server = Server(node, session, control=pausing)
    server.on_hangup = lambda: grow(backend, engine, node)
    server.install_signal_handlers()
    if image is not None:
        try:  # growth by `rbd resize` from anywhere, not only by the driver's SIGHUP
            image.watch_growth()
        except CsiVduseError as exc:
            log.warning("growth of the image is noticed only when the driver says: %s", exc)
    limit_memory(DATA_LIMIT if image is None else RBD_DATA_LIMIT)
    confine(network=image is not None)
    ready = time.monotonic()
    report_ready(args.ready_fd, rbd_client="" if image is None else image.client_address())
    log_start_up(
        started=dataplane.STARTED, imported=imported, set_up=set_up, resumed=took_over,
        ready=ready,
    )  # fmt: skip
    log.info(
        "serving %s from %s (%d bytes%s%s)",
        args.name,
        args.backing,
        backend.size,
        ", read-only" if profile.readonly else "",
        ", taken over from a predecessor" if resumed else "",
    )
    try:
        server.run()
    finally:
        if pausing is not None:
            pausing.close()
        session.close()
        engine.close()
        server.close()
        node.close()
        backend.close()
        if stats is not None:
            stats.close()
        if inflight is not None:
            inflight.close()
        if qos_page is not None:
            qos_page.close()
    log.info("stopped")
    return 0


def open_backing(args: DataplaneArgs) -> FileBackend | RbdImage:
    """The file, or the RBD image (whose module, and librbd, only an RBD dataplane loads)."""
    if args.rbd_fd is None:
        return FileBackend(args.backing, args.profile.readonly, fd=args.backing_fd)
    from csi_vduse.ceph.image import RbdImage, cap_malloc_arenas  # noqa: PLC0415
    from csi_vduse.ceph.target import RbdTarget, TargetError  # noqa: PLC0415

    try:
        target = RbdTarget.read_fd(args.rbd_fd)
    except (OSError, TargetError) as exc:
        raise DataplaneError("read the RBD target", str(exc)) from None
    finally:
        os.close(args.rbd_fd)
    began = time.monotonic()
    cap_malloc_arenas()
    report_waiting(args.ready_fd, "ceph")
    image = RbdImage(target, readonly=args.profile.readonly)
    opened = time.monotonic()
    broke = False
    if not args.profile.readonly:
        try:
            broke = image.lock(target.dead_owner)
        except CsiVduseError:
            image.close()
            raise
    locked = time.monotonic()
    log.info(
        "RBD image %s: connected and opened in %.0f ms, locked in %.0f ms%s "
        "(CLOCK_MONOTONIC opened=%.6f locked=%.6f)",
        target.spec, (opened - began) * 1e3, (locked - opened) * 1e3,
        f", the lock of dead client {target.dead_owner} broken first" if broke else "",
        opened, locked,
    )  # fmt: skip
    return image


def rbd_queues(image: RbdImage) -> QueueBackends:
    """What makes the queues' librbd backends (only an RBD dataplane loads their module)."""
    from csi_vduse.dataplane.rbd.queues import RbdQueues  # noqa: PLC0415

    return RbdQueues(image)


def log_start_up(
    *, started: float, imported: float, set_up: float, resumed: float, ready: float
) -> None:
    """One line with the start-up phases: what a takeover costs before the interpreter
    (not seen here) and after it. The CLOCK_MONOTONIC stamps let a caller that noted when
    the predecessor died (bench/takeover.py) line them up with its own."""
    log.info(
        "start-up: imports %.0f ms, set-up %.0f ms, resume %.0f ms, to ready %.0f ms "
        "(CLOCK_MONOTONIC started=%.6f imported=%.6f set_up=%.6f resumed=%.6f ready=%.6f)",
        (imported - started) * 1e3, (set_up - imported) * 1e3, (resumed - set_up) * 1e3,
        (ready - resumed) * 1e3, started, imported, set_up, resumed, ready,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
