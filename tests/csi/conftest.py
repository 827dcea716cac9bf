"""csi-sanity's harness in pytest: a real ``csi-vduse serve`` per test, its paths, and Cleanup.

Mirrors kubernetes-csi/csi-test pkg/sanity: ``TestContext`` (sanity.go) becomes
:class:`SanityContext` with a staging directory and a target *parent* directory made
fresh for each test (the driver creates and removes ``<target parent>/target`` itself);
``Resources`` (resources.go) becomes :class:`Resources`, which registers every volume and
snapshot a test makes and, after the test, unpublishes, unstages and deletes them in LIFO
order, failing the test when that cleanup fails. On top of csi-sanity, every test ends by
checking that nothing is left: no pool files, no state records, and in the VM no VDUSE
device, mount or dataplane process of this driver instance.

The csi-sanity modules (``BACKENDS``) run against node-local files and against RBD volumes
of a real Ceph, as csi-sanity runs against a driver started with
``--csi.testvolumeparameters`` (an RBD StorageClass's) and ``--csi.secrets`` (its user's,
in every request that has secrets); the RBD run twice, once with
``--csi.testvolumeaccesstype=block`` (backend ``rbd-block``). The RBD driver is a node and
the central controller in one (``serve --controller --node --ceph-clusters``) with its own
credentials (``--ceph-controller-secret``), so every capability it has is advertised;
after each test, no image of ours is left in the pool that was not there before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi_vduse.csi.proto import pb, stub
from tests.ceph.client import CephClient
from tests.ceph.cluster import CephCluster
from tests.ceph.fixtures import CEPH_CLUSTER_ID, clusters_file
from tests.driver import Driver

MiB = 1 << 20

# csi-sanity's command-line knobs, as one place to change them.
TEST_VOLUME_SIZE = 64 * MiB  # --csi.testvolumesize
TEST_VOLUME_EXPAND_SIZE = 128 * MiB  # --csi.testvolumeexpandsize (default: size + 1 GiB)
TEST_VOLUME_PARAMETERS: dict[str, str] = {}  # --csi.testvolumeparameters
# --csi.testvolumemutableparameters (upstream's default is none; ours sets real limits)
TEST_VOLUME_MUTABLE_PARAMETERS = {"maxIops": "5000", "maxWriteBytesPerSecond": "104857600"}
TEST_SNAPSHOT_PARAMETERS: dict[str, str] = {}  # --csi.testsnapshotparameters
IDEMPOTENT_COUNT = 10  # --csi.idempotentcount (csi-sanity's default)
MAX_NAME_LENGTH = 128  # controller.go MaxNameLength
NODE_ID = "sanity-node"

Mode = pb.VolumeCapability.AccessMode.Mode


@dataclass
class RunFlags:
    """csi-sanity's flags that differ between the runs of one module (set by ``driver``)."""

    access_type: str = "mount"  # --csi.testvolumeaccesstype


FLAGS = RunFlags()
ControllerCap = pb.ControllerServiceCapability.RPC.Type
NodeCap = pb.NodeServiceCapability.RPC.Type
PluginService = pb.PluginCapability.Service.Type

# sanity.go: one random suffix per process, appended to every name a test picks.
_UNIQUE_SUFFIX = f"-{secrets.token_hex(4).upper()}-{secrets.token_hex(4).upper()}"


def unique_string(prefix: str) -> str:
    return prefix + _UNIQUE_SUFFIX


def unique_string_with_length(prefix: str, length: int) -> str:
    name = unique_string(prefix)[:length]
    filler = "".join(secrets.choice(string.ascii_lowercase) for _ in range(length - len(name)))
    return name + filler


# util.go DefaultIDGenerator
def unique_valid_volume_id() -> str:
    return f"fake-vol-id-{str(uuid.uuid4())[:10]}"


INVALID_VOLUME_ID = "fake-vol-id"


def unique_valid_node_id() -> str:
    return f"fake-node-id-{str(uuid.uuid4())[:10]}"


def in_vm() -> bool:
    return Path("/dev/vduse/control").exists()


# -- requests, as controller.go's Make*Req helpers build them ------------------------------


def volume_capability(
    mode: int = Mode.SINGLE_NODE_WRITER, access_type: str | None = None
) -> pb.VolumeCapability:
    """TestVolumeCapabilityWithAccessType: an empty mount (or block) with ``mode``; the
    run's access type unless given."""
    cap = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=mode))  # type: ignore[arg-type]
    if (access_type or FLAGS.access_type) == "block":
        cap.block.SetInParent()
    else:
        cap.mount.SetInParent()
    return cap


def make_create_volume_req(name: str, access_type: str | None = None) -> pb.CreateVolumeRequest:
    return pb.CreateVolumeRequest(
        name=name,
        volume_capabilities=[volume_capability(access_type=access_type)],
        capacity_range=pb.CapacityRange(
            required_bytes=TEST_VOLUME_SIZE, limit_bytes=TEST_VOLUME_SIZE
        ),
        parameters=TEST_VOLUME_PARAMETERS,
    )


def make_create_snapshot_req(name: str, source_volume_id: str) -> pb.CreateSnapshotRequest:
    return pb.CreateSnapshotRequest(
        name=name, source_volume_id=source_volume_id, parameters=TEST_SNAPSHOT_PARAMETERS
    )


def make_modify_volume_req(volume_id: str) -> pb.ControllerModifyVolumeRequest:
    return pb.ControllerModifyVolumeRequest(
        volume_id=volume_id, mutable_parameters=TEST_VOLUME_MUTABLE_PARAMETERS
    )


def make_expand_volume_req(volume_id: str) -> pb.ControllerExpandVolumeRequest:
    return pb.ControllerExpandVolumeRequest(
        volume_id=volume_id,
        capacity_range=pb.CapacityRange(required_bytes=TEST_VOLUME_EXPAND_SIZE),
        volume_capability=volume_capability(),
    )


# -- assertions shared by the suites --------------------------------------------------------


def expect_error_code(call: Callable[[], Any], code: grpc.StatusCode) -> None:
    """util.go ExpectErrorCode: the call fails, with exactly ``code``."""
    try:
        response = call()
    except grpc.RpcError as err:
        assert err.code() == code, f"unexpected error: {err.code()} {err.details()}"
        return
    pytest.fail(f"expected {code}, the call succeeded with {response!r}")


def verify_snapshot_info(snapshot: pb.Snapshot) -> None:
    assert snapshot.snapshot_id
    assert snapshot.source_volume_id
    assert snapshot.HasField("creation_time")
    assert snapshot.creation_time.seconds or snapshot.creation_time.nanos


def controller_supports(sc: SanityContext, cap: int) -> bool:
    """isControllerCapabilitySupported"""
    caps = sc.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    return any(c.rpc.type == cap for c in caps.capabilities)


def node_supports(sc: SanityContext, cap: int) -> bool:
    """isNodeCapabilitySupported"""
    caps = sc.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest())
    return any(c.rpc.type == cap for c in caps.capabilities)


def plugin_supports(sc: SanityContext, service: int) -> bool:
    """isPluginCapabilitySupported"""
    caps = sc.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest())
    return any(c.HasField("service") and c.service.type == service for c in caps.capabilities)


def require_controller(sc: SanityContext, cap: int, why: str) -> None:
    if not controller_supports(sc, cap):
        pytest.skip(why)


def require_node(sc: SanityContext, cap: int, why: str) -> None:
    if not node_supports(sc, cap):
        pytest.skip(why)


# -- the driver under test -----------------------------------------------------------------


class SanityDriver(Driver):
    """The driver under test (Identity, Controller, Node), and what it may leave behind."""

    rbd: RbdSetting | None = None  # serving RBD volumes

    # What a test may leave behind, most telling first.

    def mounts(self) -> list[str]:
        found = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(self.root) or point.startswith(f"{self.root}/"):
                found.append(point)
        return found

    def processes(self) -> list[str]:
        """Processes other than the server whose command line names this driver's files."""
        found = []
        marker = str(self.root).encode()
        server = self.process.pid if self.process else -1
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) in (server, os.getpid()):
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes()
                if marker in argv:
                    words = argv.replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"pid {proc.name}: {words}")
        return found

    def leftovers(self) -> list[str]:
        found = [f"mount {point}" for point in self.mounts()]
        found += [f"process {p}" for p in self.processes()]
        if in_vm():
            found += [
                f"VDUSE device /dev/vduse/{entry.name}"
                for entry in Path("/dev/vduse").iterdir()
                if entry.name != "control"
            ]
        for directory, pattern in (
            (self.pool_dir / "volumes", "*"),
            (self.pool_dir / "snapshots", "*"),
            (self.state_dir / "volumes", "*"),
            (self.state_dir / "devices", "*"),
        ):
            if directory.is_dir():
                found += [f"file {path}" for path in sorted(directory.glob(pattern))]
        return found

    def rescue(self) -> None:
        """Tear down by force what the driver failed to, so later tests start clean."""
        for point in sorted(self.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        devices = self.state_dir / "devices"
        if in_vm() and devices.is_dir():
            env = {**os.environ, "CSI_VDUSE_STATE_DIR": str(self.state_dir)}
            for record in devices.glob("*.json"):
                subprocess.run(
                    [sys.executable, "-m", "csi_vduse", "--state-dir", str(self.state_dir),
                     "device", "delete", record.stem],
                    check=False, capture_output=True, env=env, timeout=120,
                )  # fmt: skip


@dataclass(kw_only=True)
class SanityContext:
    """TestContext: the connections and the per-test staging and target parent paths."""

    driver: SanityDriver
    channel: grpc.Channel
    staging_path: Path
    target_path: Path  # the parent: NodePublishVolume targets are target_path / "target"
    identity: Any = field(init=False)
    controller: Any = field(init=False)
    node: Any = field(init=False)
    group_controller: Any = field(init=False)

    def __post_init__(self) -> None:
        self.identity = stub(self.channel, "Identity")
        self.controller = stub(self.channel, "Controller")
        self.node = stub(self.channel, "Node")
        self.group_controller = stub(self.channel, "GroupController")

    @property
    def target(self) -> str:
        return str(self.target_path / "target")


class Resources:
    """resources.go: proxies the calls that make things and cleans them up afterwards."""

    def __init__(self, sc: SanityContext) -> None:
        self.sc = sc
        self.managed: list[tuple[str, str]] = []  # ("volume" | "snapshot" | "group", id)

    def _register(self, kind: str, ident: str) -> None:
        self.managed.append((kind, ident))

    def _unregister(self, ident: str) -> None:
        for i, (_, known) in enumerate(self.managed):
            if known == ident:
                del self.managed[i]
                return

    def create_volume(self, req: pb.CreateVolumeRequest) -> pb.CreateVolumeResponse:
        vol: pb.CreateVolumeResponse = self.sc.controller.CreateVolume(req)
        if vol.volume.volume_id:
            self._register("volume", vol.volume.volume_id)
        return vol

    def must_create_volume(self, req: pb.CreateVolumeRequest) -> pb.CreateVolumeResponse:
        vol = self.create_volume(req)
        assert vol.HasField("volume"), "volume in response is nil"
        assert vol.volume.volume_id, "volume ID in response is missing"
        return vol

    def delete_volume(self, req: pb.DeleteVolumeRequest) -> pb.DeleteVolumeResponse:
        done: pb.DeleteVolumeResponse = self.sc.controller.DeleteVolume(req)
        self._unregister(req.volume_id)
        return done

    def create_group_snapshot(
        self, req: pb.CreateVolumeGroupSnapshotRequest
    ) -> pb.CreateVolumeGroupSnapshotResponse:
        made: pb.CreateVolumeGroupSnapshotResponse = (
            self.sc.group_controller.CreateVolumeGroupSnapshot(req)
        )
        if made.group_snapshot.group_snapshot_id:
            self._register("group", made.group_snapshot.group_snapshot_id)
        return made

    def create_snapshot(self, req: pb.CreateSnapshotRequest) -> pb.CreateSnapshotResponse:
        snap: pb.CreateSnapshotResponse = self.sc.controller.CreateSnapshot(req)
        if snap.snapshot.snapshot_id:
            self._register("snapshot", snap.snapshot.snapshot_id)
        return snap

    def must_create_snapshot(self, req: pb.CreateSnapshotRequest) -> pb.CreateSnapshotResponse:
        snap = self.create_snapshot(req)
        verify_snapshot_info(snap.snapshot)
        return snap

    def delete_snapshot(self, req: pb.DeleteSnapshotRequest) -> pb.DeleteSnapshotResponse:
        done: pb.DeleteSnapshotResponse = self.sc.controller.DeleteSnapshot(req)
        if req.snapshot_id:
            self._unregister(req.snapshot_id)
        return done

    def must_create_snapshot_from_volume_request(
        self, req: pb.CreateVolumeRequest, snapshot_name: str
    ) -> tuple[pb.CreateSnapshotResponse, pb.CreateVolumeResponse]:
        vol = self.must_create_volume(req)
        snap = self.must_create_snapshot(
            make_create_snapshot_req(snapshot_name, vol.volume.volume_id)
        )
        return snap, vol

    def cleanup(self) -> list[str]:
        """Cleanup(): LIFO; NOT_FOUND from the node calls is fine, anything else an error."""
        errors: list[str] = []
        stage = node_supports(self.sc, NodeCap.STAGE_UNSTAGE_VOLUME)
        for kind, ident in reversed(self.managed):
            if kind == "group":
                errors += self._attempt(
                    f"DeleteVolumeGroupSnapshot {ident}",
                    self.sc.group_controller.DeleteVolumeGroupSnapshot,
                    pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=ident),
                )
                continue
            if kind == "snapshot":
                errors += self._attempt(
                    f"DeleteSnapshot {ident}",
                    self.sc.controller.DeleteSnapshot,
                    pb.DeleteSnapshotRequest(snapshot_id=ident),
                )
                continue
            errors += self._attempt(
                f"NodeUnpublishVolume {ident}",
                self.sc.node.NodeUnpublishVolume,
                pb.NodeUnpublishVolumeRequest(volume_id=ident, target_path=self.sc.target),
                tolerate_not_found=True,
            )
            if stage:
                errors += self._attempt(
                    f"NodeUnstageVolume {ident}",
                    self.sc.node.NodeUnstageVolume,
                    pb.NodeUnstageVolumeRequest(
                        volume_id=ident, staging_target_path=str(self.sc.staging_path)
                    ),
                    tolerate_not_found=True,
                )
            errors += self._attempt(
                f"DeleteVolume {ident}",
                self.sc.controller.DeleteVolume,
                pb.DeleteVolumeRequest(volume_id=ident),
            )
        self.managed.clear()
        return errors

    @staticmethod
    def _attempt(
        what: str, call: Callable[[Any], Any], request: Any, tolerate_not_found: bool = False
    ) -> list[str]:
        try:
            call(request)
        except grpc.RpcError as err:
            if tolerate_not_found and err.code() == grpc.StatusCode.NOT_FOUND:
                return []
            return [f"{what} failed: {err.code()} {err.details()}"]
        return []


# -- fixtures -------------------------------------------------------------------------------


# A csi-sanity module runs against each (BACKENDS = ALL_BACKENDS); rbd-block is RBD with
# --csi.testvolumeaccesstype=block.
ALL_BACKENDS = ("file", "rbd", "rbd-block")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "BACKENDS", ("file",))
        metafunc.parametrize("backend", backends, indirect=True)


def mount_runs_only(backend: str) -> None:
    """Ours, or with its own access types: the same in a block run as in the mount run."""
    if backend.endswith("-block"):
        pytest.skip("the mount run of this backend has it")


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``file``, or ``rbd`` or ``rbd-block`` in the modules whose ``BACKENDS`` name them."""
    return str(request.param)


@pytest.fixture
def ceph(backend: str, request: pytest.FixtureRequest) -> Iterator[RbdSetting | None]:
    """For RBD: the test cluster and what the driver is started with. Space figures come
    from a manager, started for the host's tests (GetCapacity); the VM's need none."""
    if not backend.startswith("rbd"):
        yield None
        return
    client: CephClient = request.getfixturevalue("ceph_client")
    if not in_vm():
        client.cluster.start_mgr(pools=(client.pool,))
    keys = Path(tempfile.mkdtemp(prefix="csi-sanity-keys-", dir="/dev/shm"))  # tmpfs
    try:
        yield RbdSetting(client=client, keys=keys, secrets=request.getfixturevalue("secrets"))
    finally:
        shutil.rmtree(keys, ignore_errors=True)


@dataclass(kw_only=True)
class RbdSetting:
    client: CephClient
    keys: Path  # tmpfs, for the node's staged volumes' keys and the controller's secret
    secrets: dict[str, str]

    @property
    def cluster(self) -> CephCluster:
        return self.client.cluster

    def parameters(self) -> dict[str, str]:
        """--csi.testvolumeparameters: an RBD StorageClass's."""
        return {"backend": "rbd", "clusterID": CEPH_CLUSTER_ID, "pool": self.client.pool}

    def arguments(self, root: Path) -> list[str]:
        own = self.keys / "controller"
        own.mkdir(exist_ok=True)
        for key, value in self.secrets.items():
            (own / key).write_text(value)
        return [
            "--node", "--ceph-clusters", str(clusters_file(root, self.client)),
            "--ceph-controller-secret", str(own), "--ceph-key-dir", str(self.keys / "node"),
        ]  # fmt: skip

    def images(self) -> set[str]:
        """Our images in the pool, and in its trash."""
        listed = self.cluster.rbd("ls", self.client.pool).stdout.split()
        trash = self.cluster.rbd("trash", "ls", "--all", self.client.pool).stdout.splitlines()
        names = listed + [line.split()[-1] for line in trash if line.strip()]
        return {name for name in names if name.startswith("csi-")}


@pytest.fixture
def driver(backend: str, ceph: RbdSetting | None) -> Iterator[SanityDriver]:
    # A short root: unix socket paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="csi-sanity-"))
    if ceph is None:
        server = SanityDriver(root, node_id=NODE_ID)
        before: set[str] = set()
    else:
        server = SanityDriver(root, node_id=NODE_ID, node=False, extra=ceph.arguments(root))
        server.rbd = ceph
        before = ceph.images()
        TEST_VOLUME_PARAMETERS.update(ceph.parameters())
    FLAGS.access_type = "block" if backend.endswith("-block") else "mount"
    try:
        yield server
    finally:
        FLAGS.access_type = RunFlags.access_type
        TEST_VOLUME_PARAMETERS.clear()
        left = server.leftovers()
        if ceph is not None:
            left += [f"RBD image {name}" for name in sorted(ceph.images() - before)]
        if left:
            server.rescue()
        try:
            server.stop()
        finally:
            sys.stderr.write(f"--- csi-vduse serve log ---\n{server.log()}")
            if not server.mounts():
                shutil.rmtree(root, ignore_errors=True)
        assert not left, "left over after the test:\n" + "\n".join(left)


class _WithSecrets(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """csi-sanity's --csi.secrets: the secrets in every request that has a field for them."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if "secrets" in request.DESCRIPTOR.fields_by_name and not request.secrets:
            with_secrets = type(request)()
            with_secrets.CopyFrom(request)
            with_secrets.secrets.update(self.secrets)
            request = with_secrets
        return continuation(details, request)


@pytest.fixture
def sc(driver: SanityDriver) -> Iterator[SanityContext]:
    """Setup()/Teardown(): os.Mkdir of both paths before the test, os.Remove after."""
    started = driver.start().channel
    assert started is not None
    channel = started
    if driver.rbd is not None:
        channel = grpc.intercept_channel(started, _WithSecrets(driver.rbd.secrets))
    staging = driver.root / "csi-staging"
    target = driver.root / "csi-mount"
    staging.mkdir()
    target.mkdir()
    context = SanityContext(
        driver=driver, channel=channel, staging_path=staging, target_path=target
    )
    try:
        yield context
    finally:
        started.close()
        problems = []
        for path in (target, staging):
            if path.is_dir() and not driver.mounts():
                inside = sorted(p.name for p in path.iterdir())
                if inside:
                    problems.append(f"{path} still holds {inside}")
        assert not problems, "; ".join(problems)


@pytest.fixture
def r(sc: SanityContext) -> Iterator[Resources]:
    resources = Resources(sc)
    yield resources
    errors = resources.cleanup()
    assert not errors, "resource cleanup failed:\n" + "\n".join(errors)
