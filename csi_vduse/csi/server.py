"""``csi-vduse serve``: the gRPC server on a unix socket, stopped gracefully by SIGTERM.

``build`` only assembles the services over one pool, one device manager and one volume
store per state directory; ``serve`` then recovers what a previous run left unfinished,
starts the supervisor on the same device manager, and serves. With ``--modify-routing``
a ControllerModifyVolume reaches the node that holds the volume through its
PersistentVolume: the central instance routes it (``modify_routing``), a node plugin
watches for it (``modify_watcher``).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc

from csi_vduse import metrics
from csi_vduse.ceph import clusters
from csi_vduse.ceph.clusters import CephCluster
from csi_vduse.csi.capabilities import TOPOLOGY_KEY
from csi_vduse.csi.controller import ControllerService
from csi_vduse.csi.group_controller import GroupControllerService
from csi_vduse.csi.identity import IdentityService
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.modify import VolumeModifier
from csi_vduse.csi.modify_routing import DEFAULT_TIMEOUT, ModifyRouter
from csi_vduse.csi.modify_watcher import ModifyWatcher
from csi_vduse.csi.node import NodeService
from csi_vduse.csi.proto import register
from csi_vduse.csi.rbd_controller import RbdController
from csi_vduse.devices import dataplane_process, launcher
from csi_vduse.devices.launcher import Launcher
from csi_vduse.devices.manager import DeviceManager, vdpa_problem
from csi_vduse.devices.state import StateStore
from csi_vduse.devices.supervisor import Supervisor
from csi_vduse.errors import CsiVduseError
from csi_vduse.kube.volumes import PersistentVolumes
from csi_vduse.pool.groups import GroupSnapshots
from csi_vduse.pool.store import Pool
from csi_vduse.rbd.chains import CHAIN_LIMIT, MAX_CHAIN_LIMIT
from csi_vduse.rbd.controller_secret import ControllerSecret
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.rbd.keyfiles import KeyFiles
from csi_vduse.rbd.staging import RbdStaging
from csi_vduse.volumes.lifecycle import NodeVolumes
from csi_vduse.volumes.records import NodeVolumeStore

log = logging.getLogger(__name__)

GRACE_SECONDS = 30.0  # in-flight calls (a mkfs, say) get this long to finish on SIGTERM
WORKERS = 32
VDUSE_CONTROL = Path("/dev/vduse/control")
DEFAULT_KEY_DIR = Path("/run/csi-vduse/ceph-keys")


class ServeError(CsiVduseError):
    pass


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    endpoint: str
    node_id: str
    state_dir: Path
    pool_dir: Path | None
    controller: bool
    node: bool = False  # serve Node without a pool: RBD volumes only
    driver_name: str
    max_volumes: int = 0
    metrics_address: str | None = None
    dataplane_cgroup: Path | None = None
    modify_routing: bool = False
    modify_timeout: float = DEFAULT_TIMEOUT
    ceph_clusters: Path | None = None  # ceph-csi's config.json: serve RBD volumes
    ceph_key_dir: Path = DEFAULT_KEY_DIR  # a node's staged RBD volumes' keys (tmpfs)
    chain_limit: int = CHAIN_LIMIT  # ancestors a new RBD image may have unflattened
    ceph_controller_secret: Path | None = None  # the controller's own Ceph credentials


def socket_path(endpoint: str) -> Path:
    """The path in ``unix:///path/csi.sock`` (``unix:/path`` and a bare path also work)."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:") :]
    elif "://" in endpoint:
        raise ServeError("endpoint", f"{endpoint}: only unix:// endpoints are served")
    else:
        path = endpoint
    if not path.startswith("/"):
        raise ServeError("endpoint", f"{endpoint}: the socket path must be absolute")
    return Path(path)


def node_readiness() -> str | None:
    if not VDUSE_CONTROL.exists():
        return f"{VDUSE_CONTROL} is missing: load the vduse module"
    return vdpa_problem()


@dataclass(frozen=True, kw_only=True)
class Plugin:
    """The gRPC server with the services it serves, not started yet."""

    server: grpc.Server
    devices: DeviceManager  # the one for the state directory
    volumes: NodeVolumes | None  # None: no pool, so no Node service
    watcher: ModifyWatcher | None = None  # a node plugin with --modify-routing

    def recover(self) -> None:
        """Finish or undo what a driver that died mid-call left, before serving again."""
        if self.volumes is not None:
            self.volumes.recover()


def kubernetes_volumes() -> PersistentVolumes:
    """The cluster's PersistentVolumes (in-cluster config, else KUBECONFIG), or ServeError."""
    from csi_vduse.kube import client  # noqa: PLC0415  (the kubernetes package is slow to load)

    try:
        return client.connect(topology_key=TOPOLOGY_KEY)
    except CsiVduseError as exc:
        raise ServeError("--modify-routing", f"{exc.step}: {exc.message}") from exc


def ceph_clusters(clusters_file: Path) -> dict[str, CephCluster]:
    try:
        known = clusters.load(clusters_file)
    except clusters.ClusterConfigError as exc:
        raise ServeError("--ceph-clusters", exc.message) from exc
    log.info("serving RBD volumes of Ceph cluster(s) %s", ", ".join(sorted(known)) or "(none)")
    return known


def rbd_controller(
    known: dict[str, CephCluster], locks: OperationLocks, *, chain_limit: int,
    own_secret: Path | None = None,
) -> RbdController:  # fmt: skip
    """The Controller's RBD half on the clusters ``known``; librbd loads here."""
    if not 1 <= chain_limit <= MAX_CHAIN_LIMIT:
        raise ServeError("--rbd-chain-limit", f"{chain_limit}: give 1 to {MAX_CHAIN_LIMIT}")
    secret = None
    if own_secret is not None:
        secret = ControllerSecret(own_secret)
        try:
            secret.check()
        except RbdVolumeError as exc:
            raise ServeError("--ceph-controller-secret", exc.message) from exc
    from csi_vduse.rbd.snapshots import RbdSnapshots  # noqa: PLC0415
    from csi_vduse.rbd.volumes import RbdVolumes  # noqa: PLC0415

    volumes = RbdVolumes(known, chain_limit=chain_limit)
    snapshots = RbdSnapshots(volumes.pools, chain_limit=chain_limit)
    return RbdController(volumes, snapshots, locks, own_secret=secret)


def rbd_staging(
    known: dict[str, CephCluster], key_dir: Path, *, clusters_file: Path | None = None
) -> RbdStaging:
    """The Node's way to RBD images; its key directory must be on tmpfs. ``clusters_file``
    is read again at each stage and each dataplane start, so moved monitors are found."""
    keys = KeyFiles(key_dir)
    try:
        keys.check()
    except RbdVolumeError as exc:
        raise ServeError("--ceph-key-dir", exc.message) from exc
    return RbdStaging(known, keys, clusters_file=clusters_file)


def build(
    options: ServeOptions,
    launcher: Launcher | None = None,
    *,
    kube: PersistentVolumes | None = None,
) -> Plugin:
    """Assemble the services; nothing on the node is touched. ``kube`` is the API that
    ``--modify-routing`` uses (by default the cluster's, see ``kubernetes_volumes``)."""
    known = ceph_clusters(options.ceph_clusters) if options.ceph_clusters else None
    if options.node and known is None:
        raise ServeError("--node", "a node without --pool-dir serves RBD volumes only: add "
                         "--ceph-clusters")  # fmt: skip
    if options.ceph_controller_secret is not None and (known is None or not options.controller):
        raise ServeError("--ceph-controller-secret", "the controller's own Ceph credentials "
                         "serve --controller --ceph-clusters only")  # fmt: skip
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS))
    pool = Pool(options.pool_dir) if options.pool_dir is not None else None
    serves_node = pool is not None or options.node
    devices = DeviceManager(
        StateStore(options.state_dir), dataplane_cgroup=options.dataplane_cgroup,
        launcher=launcher,
    )  # fmt: skip
    routed = (kube or kubernetes_volumes()) if options.modify_routing else None
    locks = OperationLocks()  # one per volume, whichever way a call arrives
    identity = IdentityService(
        options.driver_name,
        controller=options.controller,
        readiness=node_readiness if serves_node else (lambda: None),
        group_controller=options.controller and pool is not None,
        topology=pool is not None,
    )
    register(server, "Identity", identity)
    if options.controller:
        router = None
        if routed is not None and pool is None:
            router = ModifyRouter(routed, options.driver_name, timeout=options.modify_timeout)
        rbd = (
            rbd_controller(
                known,
                locks,
                chain_limit=options.chain_limit,
                own_secret=options.ceph_controller_secret,
            )
            if known is not None
            else None
        )
        controller = ControllerService(
            pool, devices, options.node_id, locks=locks, router=router, rbd=rbd
        )
        register(server, "Controller", controller)
        if pool is not None:
            groups = GroupControllerService(GroupSnapshots(pool), devices, locks=locks)
            register(server, "GroupController", groups)
    volumes = None
    watcher = None
    if serves_node:
        staging = (
            rbd_staging(known, options.ceph_key_dir, clusters_file=options.ceph_clusters)
            if known is not None
            else None
        )
        volumes = NodeVolumes(
            pool, devices, NodeVolumeStore(options.state_dir), max_volumes=options.max_volumes,
            node_id=options.node_id, keys=staging.keys if staging else None,
        )  # fmt: skip
        node = NodeService(volumes, options.node_id, options.max_volumes, rbd=staging)
        register(server, "Node", node)
        if routed is not None and pool is not None:
            watcher = ModifyWatcher(
                routed, VolumeModifier(pool, devices, locks),
                driver_name=options.driver_name, node_id=options.node_id,
            )  # fmt: skip
    return Plugin(server=server, devices=devices, volumes=volumes, watcher=watcher)


def _bind(server: grpc.Server, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()  # left by a previous run
        else:
            raise ServeError("endpoint", f"{path} exists and is not a socket")
    except FileNotFoundError:
        pass
    # Only root (the kubelet, the sidecars) may talk to the driver.
    previous = os.umask(0o077)
    try:
        server.add_insecure_port(f"unix://{path}")
        server.start()
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)


def start_launcher(options: ServeOptions) -> Launcher | None:
    """The dataplane launcher for a node plugin (see ``csi_vduse.devices.launcher``)."""
    if (options.pool_dir is None and not options.node) or not launcher.wanted():
        return None
    log_file = options.state_dir / "launcher.log"
    try:
        return dataplane_process.start_launcher(log_file, options.dataplane_cgroup)
    except CsiVduseError as exc:
        log.warning("no dataplane launcher, dataplanes start cold: %s", exc)
        return None


def serve(options: ServeOptions) -> int:
    path = socket_path(options.endpoint)
    dataplane_launcher = start_launcher(options)
    plugin = build(options, dataplane_launcher)
    plugin.recover()
    server = plugin.server
    if options.metrics_address:
        metrics.watch_volumes(options.state_dir)
        metrics.serve(options.metrics_address)
        log.info("metrics on http://%s/metrics", options.metrics_address)
    # Dataplanes outlive this process; whoever serves the node keeps them running.
    supervisor = Supervisor(plugin.devices).start() if plugin.volumes is not None else None
    watcher = plugin.watcher.start() if plugin.watcher is not None else None
    _bind(server, path)
    log.info(
        "serving %s on %s (node %s; identity%s%s%s)",
        options.driver_name,
        path,
        options.node_id,
        ", controller" if options.controller else "",
        ", node" if plugin.volumes is not None else "",
        "; modify requests routed through PersistentVolumes" if options.modify_routing else "",
    )
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info(
            "%s: stopping (in-flight calls get %.0f s)", signal.Signals(signum).name, GRACE_SECONDS
        )
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopping.wait()
    if watcher is not None:
        watcher.stop()
    server.stop(GRACE_SECONDS).wait()
    if supervisor is not None:
        supervisor.stop()
    if dataplane_launcher is not None:
        dataplane_launcher.close()
    path.unlink(missing_ok=True)
    log.info("stopped")
    return 0
