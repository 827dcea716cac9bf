"""The ``csi-vduse`` command line."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import socket
import sys
from pathlib import Path

from csi_vduse import logs
from csi_vduse.about import DRIVER_NAME, package_version
from csi_vduse.dataplane.blk.profile import DEFAULT_QUEUE_SIZE, BlkProfile
from csi_vduse.dataplane.qos import DEFAULT_BURST_MS, QosError, QosLimits
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.rbd_source import RbdSource
from csi_vduse.devices.spec import (
    DEFAULT_BOUNCE_SIZE,
    DEFAULT_MAX_QUEUES,
    DeviceSpec,
    as_device_error,
    default_num_queues,
    parse_size,
)
from csi_vduse.devices.state import StateStore, default_state_dir
from csi_vduse.devices.status import DeviceStatus
from csi_vduse.errors import CsiVduseError
from csi_vduse.logs import LEVELS

DEFAULT_MAX_VOLUMES = 64

log = logging.getLogger("csi_vduse")


class _VersionAction(argparse.Action):
    """``--version``, the version looked up only when asked for (see ``about``)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        parser.exit(message=f"csi-vduse {package_version()}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csi-vduse", description="virtio-blk volumes emulated in userspace through VDUSE"
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where device records live (default {default_state_dir()})",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log progress (-v) or everything (-vv) to stderr",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    device = commands.add_parser("device", help="manage VDUSE block devices")
    actions = device.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="create a device and print its /dev/vdX path")
    create.add_argument("name")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--backing", type=Path, help="raw image file or block device holding the data"
    )
    source.add_argument(
        "--rbd", metavar="POOL/IMAGE", help="a Ceph RBD image holding the data (POOL/NS/IMAGE too)"
    )
    ceph = create.add_argument_group("Ceph (with --rbd)")
    ceph.add_argument(
        "--ceph-conf", type=Path, default=None, help="ceph.conf (default /etc/ceph/ceph.conf)"
    )
    ceph.add_argument("--ceph-user", default="admin", help="cephx id, without client.")
    ceph.add_argument(
        "--ceph-keyfile",
        type=Path,
        default=None,
        help="the user's key alone, or a keyring holding it; read at each dataplane start, "
        "never recorded",
    )
    ceph.add_argument("--ceph-mon-host", default="", help="monitor addresses, overriding the conf")
    ceph.add_argument(
        "--ceph-timeout", type=int, default=30, help="seconds to reach the monitors (default 30)"
    )
    create.add_argument(
        "--size",
        type=parse_size_arg,
        default=None,
        help="size (e.g. 256M, 10G) of a backing file to create if missing",
    )
    create.add_argument("--readonly", action="store_true", help="expose the device read-only")
    create.add_argument(
        "--num-queues",
        type=int,
        default=None,
        help=f"virtqueues, each served by its own thread (default: CPUs, at most "
        f"{DEFAULT_MAX_QUEUES})",
    )
    create.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE, help="entries")
    create.add_argument(
        "--block-size", type=int, default=512, help="logical block size: 512 or 4096"
    )
    create.add_argument(
        "--packed", action="store_true", help="offer packed virtqueues (the driver may use them)"
    )
    create.add_argument(
        "--bounce-size",
        type=parse_size_arg,
        default=DEFAULT_BOUNCE_SIZE,
        help=f"the kernel's bounce buffer for the device (default {DEFAULT_BOUNCE_SIZE >> 20}M)",
    )
    _add_limits(create)

    limit = actions.add_parser(
        "limit", help="set a device's I/O limits, live (flags left out mean no limit)"
    )
    limit.add_argument("name")
    _add_limits(limit)

    resize = actions.add_parser("resize", help="grow a running device (never shrinks)")
    resize.add_argument("name")
    resize.add_argument("--size", type=parse_size_arg, required=True, help="new size, e.g. 20G")

    delete = actions.add_parser("delete", help="detach and destroy a device (idempotent)")
    delete.add_argument("name")

    revive = actions.add_parser(
        "revive",
        help="give a device whose dataplane died a new one, which takes it over "
        "(csi-vduse serve does this by itself)",
    )
    revive.add_argument("name")

    listing = actions.add_parser("list", help="the devices this tool manages")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    commands.add_parser(
        "demo",
        help="a volume's whole life through the CSI API: provision, stage, publish, write, "
        "snapshot, restore, delete (needs root and VDUSE)",
    )
    _add_serve(commands)
    return parser


def _add_limits(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("I/O limits (0: none; a request over them waits)")
    group.add_argument("--max-iops", type=int, default=0, help="requests per second")
    group.add_argument(
        "--max-read-bps", type=parse_size_arg, default=0, help="bytes read per second, e.g. 50M"
    )
    group.add_argument(
        "--max-write-bps", type=parse_size_arg, default=0, help="bytes written per second"
    )
    group.add_argument(
        "--burst-ms",
        type=int,
        default=DEFAULT_BURST_MS,
        help=f"how much of each limit an idle device may save up, in ms (default "
        f"{DEFAULT_BURST_MS})",
    )


def limits_of(args: argparse.Namespace) -> QosLimits:
    """The I/O limits the flags ask for."""
    try:
        return QosLimits(
            iops=args.max_iops, read_bps=args.max_read_bps, write_bps=args.max_write_bps,
            burst_ms=args.burst_ms,
        )  # fmt: skip
    except QosError as exc:
        raise DeviceError("validate", str(exc), errno.EINVAL) from exc


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the CSI gRPC services",
        description="Serve CSI Identity always; Node when --pool-dir is given (volumes are "
        "node-local files in that pool); Controller with --controller.",
    )
    serve.add_argument(
        "--endpoint", default="unix:///csi/csi.sock", help="unix:///path/to/csi.sock"
    )
    serve.add_argument(
        "--node-id",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="this node's id (default $NODE_NAME or the host name)",
    )
    serve.add_argument(
        "--state-dir",
        dest="serve_state_dir",
        type=Path,
        default=None,
        help="where volume and device records live (default as the global --state-dir)",
    )
    serve.add_argument(
        "--pool-dir", type=Path, default=None, help="the node-local pool of volume files"
    )
    serve.add_argument(
        "--controller", action="store_true", help="also serve the Controller service"
    )
    serve.add_argument("--driver-name", default=DRIVER_NAME, help="the CSI driver name")
    serve.add_argument(
        "--max-volumes",
        type=int,
        default=DEFAULT_MAX_VOLUMES,
        help="volumes this node may stage at once (reported in NodeGetInfo; 0: no limit)",
    )
    serve.add_argument(
        "--metrics-address", default=None, help="serve Prometheus metrics on HOST:PORT"
    )
    serve.add_argument(
        "--dataplane-cgroup",
        type=Path,
        default=None,
        help="cgroup v2 directory to move dataplanes into, outside this process's cgroup, "
        "so that they outlive its container",
    )
    serve.add_argument(
        "--ceph-clusters",
        type=Path,
        default=None,
        help="serve RBD volumes (StorageClass backend: rbd) of the Ceph clusters in this "
        "file, ceph-csi's config.json format: create them with --controller, stage them with "
        "--pool-dir",
    )
    serve.add_argument(
        "--node",
        action="store_true",
        help="serve the Node service without --pool-dir: a node plugin of RBD volumes only "
        "(with --ceph-clusters)",
    )
    serve.add_argument(
        "--rbd-chain-limit",
        type=int,
        default=None,
        help="images an RBD snapshot's, restore's or clone's image may have above it before "
        "it is flattened when made (1-16, default 4)",
    )
    serve.add_argument(
        "--ceph-controller-secret",
        type=Path,
        default=None,
        metavar="DIR",
        help="the controller's own Ceph credentials (files userID and userKey: a mounted "
        "Secret; DIR/<clusterID>/ for one cluster's) for the calls that carry none: "
        "ListVolumes, ControllerGetVolume, GetCapacity, ListSnapshots; advertised only with it",
    )
    serve.add_argument(
        "--ceph-key-dir",
        type=Path,
        default=None,
        help="where a node keeps its staged RBD volumes' Ceph keys for their dataplanes' "
        "successors; must be on tmpfs (default /run/csi-vduse/ceph-keys)",
    )
    serve.add_argument(
        "--modify-routing",
        action="store_true",
        help="route ControllerModifyVolume through PersistentVolumes (needs in-cluster "
        "config or KUBECONFIG): without --pool-dir, record the change on the volume's PV and "
        "wait for its node; with one, watch PVs and apply the changes to this pool's volumes",
    )
    serve.add_argument(
        "--modify-timeout",
        type=parse_duration_arg,
        default=None,
        metavar="DURATION",
        help="how long a routed ControllerModifyVolume waits for the node: seconds or a Go "
        "duration as the sidecars' --timeout (60s, 1m30s); default 8 s, and never past 2 s "
        "before the caller's deadline",
    )
    serve.add_argument("--log-level", choices=LEVELS, default=None, help="default info")
    serve.add_argument("--log-format", choices=("text", "json"), default="text")


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration_arg(text: str) -> float:
    """Seconds from a plain number or a Go duration (``55s``, ``1m30s``, ``500ms``), so a
    chart can pass a sidecar's --timeout as it is."""
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not text or "".join(number + unit for number, unit in parts) != text:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None
        seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    return seconds


def parse_size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except CsiVduseError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


def _format_table(statuses: list[DeviceStatus]) -> str:
    rows = [("NAME", "STATE", "SIZE", "MODE", "BLOCK DEVICE", "BACKING")]
    for status in statuses:
        record = status.record
        rows.append(
            (
                record.name,
                status.state,
                str(record.size),
                "ro" if record.profile.readonly else "rw",
                status.block_device or "-",
                record.backing,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )


def device_spec(args: argparse.Namespace) -> DeviceSpec:
    """The device ``device create``'s flags ask for."""
    queues = default_num_queues() if args.num_queues is None else args.num_queues
    with as_device_error():
        profile = BlkProfile(
            readonly=args.readonly, queues=queues, queue_size=args.queue_size,
            block_size=args.block_size, packed=args.packed,
        )  # fmt: skip
    rbd = None
    if args.rbd is not None:
        rbd = RbdSource.parse(
            args.rbd, user=args.ceph_user, mon_host=args.ceph_mon_host,
            connect_timeout=args.ceph_timeout,
            conf=str(args.ceph_conf.absolute()) if args.ceph_conf else None,
            keyfile=str(args.ceph_keyfile.absolute()) if args.ceph_keyfile else None,
        )  # fmt: skip
    return DeviceSpec(
        name=args.name, backing=args.backing, rbd=rbd, profile=profile, size=args.size,
        bounce_size=args.bounce_size, limits=limits_of(args),
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    # The gRPC stack is imported only by the commands that use it: it is most of a second
    # of start-up on a node (several seconds under emulation), which `device` commands
    # should not pay.
    if args.command == "serve":
        from csi_vduse.csi.server import ServeOptions, serve  # noqa: PLC0415

        return serve(
            ServeOptions(
                endpoint=args.endpoint,
                node_id=args.node_id,
                state_dir=args.serve_state_dir or args.state_dir or default_state_dir(),
                pool_dir=args.pool_dir,
                controller=args.controller,
                node=args.node,
                driver_name=args.driver_name,
                max_volumes=args.max_volumes,
                metrics_address=args.metrics_address,
                dataplane_cgroup=args.dataplane_cgroup,
                modify_routing=args.modify_routing,
                ceph_clusters=args.ceph_clusters,
                ceph_controller_secret=args.ceph_controller_secret,
                **({} if args.ceph_key_dir is None else {"ceph_key_dir": args.ceph_key_dir}),
                **({} if args.rbd_chain_limit is None else {"chain_limit": args.rbd_chain_limit}),
                **({} if args.modify_timeout is None else {"modify_timeout": args.modify_timeout}),
            )
        )
    if args.command == "demo":
        from csi_vduse.demo import run_demo  # noqa: PLC0415

        run_demo(lambda line: print(line, flush=True))
        return 0
    manager = DeviceManager(StateStore(args.state_dir))
    if args.action == "create":
        record = manager.create(device_spec(args))
        print(record.block_device)
    elif args.action == "limit":
        if not manager.set_limits(args.name, limits_of(args)):
            raise DeviceError("set I/O limits", f"no device {args.name}", errno.ENOENT)
    elif args.action == "resize":
        record = manager.resize(args.name, args.size)
        print(f"{record.block_device} {record.size}")
    elif args.action == "revive":
        process = manager.revive(args.name)
        print(process.pid if process else "running")
    elif args.action == "delete":
        if not manager.delete(args.name):
            log.info("device %s did not exist", args.name)
    elif args.action == "list":
        statuses = manager.list()
        if args.json:
            print(
                json.dumps(
                    [
                        {**s.record.to_json(), "state": s.state, "block_device": s.block_device}
                        for s in statuses
                    ],
                    indent=2,
                )
            )
        else:
            print(_format_table(statuses))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        verbose = ["info", "info", "debug"][min(args.verbose, 2)]
        logs.configure(args.log_level or verbose, fmt=args.log_format)
    else:
        level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except CsiVduseError as exc:
        print(f"csi-vduse: error: {exc.step}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
