"""RBD volumes on nodes, as a kubelet drives them, against the test cluster.

A central controller (``serve --controller --ceph-clusters``) makes the volumes; two node
plugins, each with its own state directory, node id and key directory, stand for two
nodes. A volume is staged, written, grown online and moved between them; a node's stage
while the other holds the image is refused, naming the holder; a node whose driver and
dataplane die is replaced by the other within a bounded time; a driver restarted while its
dataplane is down serves on from the key it kept; a volume in use is snapshotted and
cloned, and its copies staged elsewhere hold the data of their moment; bad secrets and
missing images get the spec's codes and leave nothing behind. The headline crash storm
runs on a volume staged this way.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from csi_vduse.volumes import kinds
from csi_vduse.volumes.lifecycle import STALL_ABNORMAL_S
from tests.ceph import CephClient
from tests.ceph.fixtures import CEPH_CLUSTER_ID, clusters_file
from tests.driver import Driver, block_capability, mount_capability, pb
from tests.kernel.conftest import Cli, dataplane_pid, dataplane_pids, leftovers, sh
from tests.kernel.test_crash_recovery import kernel_io_errors, wait_for_new_dataplane
from tests.kernel.test_rbd_device import (
    KILL_GAPS,
    MIN_KILLS,
    STORM_SECONDS,
    ext4_errors,
    finished,
    fio_verify,
)

pytestmark = pytest.mark.vm

MiB = 1 << 20
CLUSTER = CEPH_CLUSTER_ID
TAKEOVER_BOUND = 90.0  # s: a lost holder's watch lapses in 30 s; the stage's deadline is 75 s
STALL_BOUND = STALL_ABNORMAL_S + 90.0  # s: the threshold, and the OSD's stop and writes
OTHER_KEY = "AQAAAAAAAAAAABAAmibQn9YVzYG5kYWZG/JNWA=="  # well-formed, nobody's


@dataclass
class Node:
    """One node plugin and the kubelet paths it is called with."""

    driver: Driver
    keys: Path

    @property
    def kubelet(self) -> Path:
        return self.driver.root / "kubelet"

    def staging(self, volume_id: str) -> Path:
        path = self.kubelet / "plugins" / volume_id[-12:] / "globalmount"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def target(self, volume_id: str, *, block: bool = False) -> Path:
        parent = self.kubelet / "pods" / "pod-1" / volume_id[-12:]
        parent.mkdir(parents=True, exist_ok=True)
        return parent / ("dev" if block else "mount")

    def stage(self, volume: Any, secrets: dict[str, str], capability: pb.VolumeCapability) -> Path:
        staging = self.staging(volume.volume_id)
        self.driver.node_stub.NodeStageVolume(
            pb.NodeStageVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=str(staging),
                volume_capability=capability,
                volume_context=volume.volume_context,
                secrets=secrets,
            )
        )
        return staging

    def publish(self, volume: Any, capability: pb.VolumeCapability, *, block: bool) -> Path:
        target = self.target(volume.volume_id, block=block)
        self.driver.node_stub.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=volume.volume_id,
                staging_target_path=str(self.staging(volume.volume_id)),
                target_path=str(target),
                volume_capability=capability,
            )
        )
        return target

    def unstage(self, volume: Any, *, block: bool = False) -> None:
        target = self.target(volume.volume_id, block=block)
        self.driver.node_stub.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target))
        )
        self.driver.node_stub.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(
                volume_id=volume.volume_id, staging_target_path=str(self.staging(volume.volume_id))
            )
        )

    def records(self) -> list[dict[str, Any]]:
        directory = self.driver.state_dir / "volumes"
        return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]

    def clean_up(self) -> None:
        """Unpublish and unstage what a test left, and stop; on a node it left dead, tear
        the devices down and unmount what they served."""
        if self.driver.process is not None:
            for record in self.records():
                for target in record["publications"]:
                    self.driver.node_stub.NodeUnpublishVolume(
                        pb.NodeUnpublishVolumeRequest(
                            volume_id=record["volume_id"], target_path=target
                        )
                    )
                self.driver.node_stub.NodeUnstageVolume(
                    pb.NodeUnstageVolumeRequest(
                        volume_id=record["volume_id"], staging_target_path=record["staging_path"]
                    )
                )
            self.driver.stop()
            return
        for record in self.records():
            for target in [*record["publications"], record["staging_path"]]:
                sh("umount", target, check=False)
        cli = Cli(self.driver.state_dir)
        for device in cli.list():
            cli.run("device", "delete", device["name"], check=False)


@dataclass
class Central:
    """The central controller, the clusters file it and the nodes read, what it made."""

    driver: Driver
    clusters: Path
    pool: str
    made: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)

    def create(
        self, secrets: dict[str, str], *, size: int = 64 * MiB,
        source: pb.VolumeContentSource | None = None,
    ) -> Any:  # fmt: skip
        volume = self.driver.controller_stub.CreateVolume(
            pb.CreateVolumeRequest(
                name=f"pvc-{random.randrange(1 << 30):x}",
                capacity_range=pb.CapacityRange(required_bytes=size),
                volume_capabilities=[mount_capability()],
                parameters={"backend": "rbd", "clusterID": CLUSTER, "pool": self.pool},
                secrets=secrets,
                volume_content_source=source,
            )
        ).volume
        self.made.append(volume.volume_id)
        return volume

    def snapshot(self, volume: Any, secrets: dict[str, str]) -> Any:
        taken = self.driver.controller_stub.CreateSnapshot(
            pb.CreateSnapshotRequest(
                name=f"snapshot-{random.randrange(1 << 30):x}",
                source_volume_id=volume.volume_id,
                secrets=secrets,
            )
        ).snapshot
        self.snapshots.append(taken.snapshot_id)
        return taken


@pytest.fixture
def cluster(tmp_path: Path, ceph_client: CephClient, secrets: dict[str, str]) -> Iterator[Central]:
    clusters = clusters_file(tmp_path, ceph_client)
    driver = Driver(tmp_path / "central", node=False, extra=["--ceph-clusters", str(clusters)])
    central = Central(driver.start(), clusters, ceph_client.pool)
    yield central
    for snapshot_id in central.snapshots:
        driver.controller_stub.DeleteSnapshot(
            pb.DeleteSnapshotRequest(snapshot_id=snapshot_id, secrets=secrets)
        )
    for volume_id in central.made:
        delete_when_unwatched(driver, volume_id, secrets)
    driver.stop()


def delete_when_unwatched(driver: Driver, volume_id: str, secrets: dict[str, str]) -> None:
    """DeleteVolume, retried as a CO retries it while the watch of a SIGKILLed dataplane
    lingers on the image (refused until the OSDs drop it, osd_client_watch_timeout 30 s)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            driver.controller_stub.DeleteVolume(
                pb.DeleteVolumeRequest(volume_id=volume_id, secrets=secrets)
            )
            return
        except grpc.RpcError as exc:
            busy = exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(2)


@pytest.fixture
def nodes(cluster: Central) -> Iterator[tuple[Node, Node]]:
    """Node plugins A and B; what a test left on them is unstaged (or torn down, on a node
    it left dead) before its volumes are deleted."""
    keys = Path(f"/dev/shm/csi-vduse-test-{random.randrange(1 << 30):x}")  # tmpfs
    made = [
        Node(
            Driver(
                cluster.clusters.parent / name, node_id=f"node-{name}", controller=False,
                extra=["--ceph-clusters", str(cluster.clusters),
                       "--ceph-key-dir", str(keys / name)],
            ),
            keys / name,
        )
        for name in ("a", "b")
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as starting:  # each start is slow under TCG
        list(starting.map(lambda node: node.driver.start(), made))
    yield made[0], made[1]
    for node in made:
        node.clean_up()
    shutil.rmtree(keys, ignore_errors=True)


def device_name(volume: Any, node: Node) -> str:
    return kinds.device_name(volume.volume_id, node_id=node.driver.node_id)


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value


def nothing_left_of(node: Node, volume: Any) -> None:
    assert node.records() == []
    assert not (node.keys / volume.volume_id).exists()
    assert leftovers(device_name(volume, node)) == []


def refuses_bad_secrets_and_missing_images(
    node: Node, volume: Any, secrets: dict[str, str]
) -> None:
    """Bad secrets and a missing image get the spec's codes, and leave nothing behind."""
    cases = {
        grpc.StatusCode.INVALID_ARGUMENT: {"userID": secrets["userID"]},
        grpc.StatusCode.PERMISSION_DENIED: {**secrets, "userKey": OTHER_KEY},
    }
    for code, given in cases.items():
        failure = refused(lambda given=given: node.stage(volume, given, mount_capability()))
        assert failure.code() == code, failure.details()
        nothing_left_of(node, volume)
    missing = pb.Volume(
        volume_id=volume.volume_id[:-32] + "0" * 32,
        volume_context={**volume.volume_context, "imageName": "csi-vol-" + "0" * 32},
    )
    failure = refused(lambda: node.stage(missing, secrets, mount_capability()))
    assert failure.code() == grpc.StatusCode.NOT_FOUND, failure.details()
    nothing_left_of(node, missing)
    assert secrets["userKey"] not in node.driver.log() and OTHER_KEY not in node.driver.log()


def test_a_volume_is_staged_grown_kept_across_a_driver_restart_and_moved(
    cluster: Central, nodes: tuple[Node, Node], secrets: dict[str, str]
) -> None:
    a, b = nodes
    volume = cluster.create(secrets)
    refuses_bad_secrets_and_missing_images(b, volume, secrets)
    capability = mount_capability()
    a.stage(volume, secrets, capability)
    a.stage(volume, secrets, capability)  # again: the same answer
    target = a.publish(volume, capability, block=False)
    data = os.urandom(3 * MiB)
    (target / "data").write_bytes(data)
    sh("sync", "-f", str(target / "data"))

    # The key is kept in memory for successors, alone and private; never in a record.
    key_file = a.keys / volume.volume_id
    assert key_file.read_text().strip() == secrets["userKey"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for path in a.driver.state_dir.rglob("*"):
        if path.is_file():
            assert secrets["userKey"] not in path.read_text(errors="replace"), path
    assert secrets["userKey"] not in a.driver.log()

    # Grown by the controller, then on the node: device and filesystem, online.
    cluster.driver.controller_stub.ControllerExpandVolume(
        pb.ControllerExpandVolumeRequest(
            volume_id=volume.volume_id,
            capacity_range=pb.CapacityRange(required_bytes=128 * MiB),
            secrets=secrets,
        )
    )
    grown = a.driver.node_stub.NodeExpandVolume(
        pb.NodeExpandVolumeRequest(
            volume_id=volume.volume_id,
            volume_path=str(target),
            capacity_range=pb.CapacityRange(required_bytes=128 * MiB),
        )
    )
    assert grown.capacity_bytes == 128 * MiB
    assert os.statvfs(target).f_blocks * os.statvfs(target).f_frsize > 100 * MiB

    # The driver and the dataplane die; the restarted driver's successor reads the kept key.
    name = device_name(volume, a)
    old = dataplane_pid(name)
    a.driver.stop(signal.SIGKILL)
    os.kill(old, signal.SIGKILL)
    a.driver.start()
    wait_for_new_dataplane(a.driver.state_dir, name, {old})
    more = os.urandom(MiB)
    (target / "more").write_bytes(more)
    sh("sync", "-f", str(target / "more"))
    stats = a.driver.node_stub.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=volume.volume_id, volume_path=str(target))
    )
    assert not stats.volume_condition.abnormal, stats.volume_condition.message

    # Node B may not stage it while A holds it: refused, naming the holder; nothing left.
    began = time.monotonic()
    failure = refused(lambda: b.stage(volume, secrets, capability))
    print(f"node B's stage was refused in {time.monotonic() - began:.1f} s")
    assert failure.code() == grpc.StatusCode.FAILED_PRECONDITION, failure.details()
    assert "in use: client" in failure.details(), failure.details()
    assert b.records() == [] and not (b.keys / volume.volume_id).exists()
    assert dataplane_pids(device_name(volume, b)) == []

    # A lets go; B stages it and finds the data.
    a.unstage(volume)
    nothing_left_of(a, volume)
    staged = b.stage(volume, secrets, capability)
    assert (staged / "data").read_bytes() == data and (staged / "more").read_bytes() == more
    b.unstage(volume)
    nothing_left_of(b, volume)


def test_a_volume_in_use_is_snapshotted_restored_and_cloned_with_its_data(
    cluster: Central, nodes: tuple[Node, Node], secrets: dict[str, str]
) -> None:
    """As a pod's volume is snapshotted and cloned: the controller's calls reach the image
    through the dataplane holding its lock, and each copy has the data of its moment."""
    a, b = nodes
    capability = mount_capability()
    volume = cluster.create(secrets)
    a.stage(volume, secrets, capability)
    target = a.publish(volume, capability, block=False)
    before = os.urandom(2 * MiB)
    (target / "data").write_bytes(before)
    sh("sync", "-f", str(target / "data"))
    taken = cluster.snapshot(volume, secrets)
    assert taken.ready_to_use
    after = os.urandom(2 * MiB)
    (target / "data").write_bytes(after)
    sh("sync", "-f", str(target / "data"))
    clone = cluster.create(secrets, source=pb.VolumeContentSource(
        volume=pb.VolumeContentSource.VolumeSource(volume_id=volume.volume_id)))  # fmt: skip
    restored = cluster.create(secrets, size=96 * MiB, source=pb.VolumeContentSource(
        snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=taken.snapshot_id)))  # fmt: skip
    assert restored.capacity_bytes == 96 * MiB
    (target / "later").write_bytes(b"the volume goes on")  # still served, still writable
    sh("sync", "-f", str(target / "later"))
    for copy, data in ((restored, before), (clone, after)):
        staged = b.stage(copy, secrets, capability)
        assert (staged / "data").read_bytes() == data
        assert not (staged / "later").exists()
        b.unstage(copy)
    staged = b.stage(restored, secrets, capability)  # the grown restore: its filesystem too
    grown = b.driver.node_stub.NodeExpandVolume(
        pb.NodeExpandVolumeRequest(
            volume_id=restored.volume_id,
            volume_path=str(staged),
            capacity_range=pb.CapacityRange(required_bytes=96 * MiB),
        )
    )
    assert grown.capacity_bytes == 96 * MiB
    assert os.statvfs(staged).f_blocks * os.statvfs(staged).f_frsize > 80 * MiB
    b.unstage(restored)
    a.unstage(volume)


def test_a_node_lost_with_the_image_locked_is_taken_over_within_a_bound(
    cluster: Central, nodes: tuple[Node, Node], secrets: dict[str, str]
) -> None:
    a, b = nodes
    volume = cluster.create(secrets)
    capability = block_capability()
    a.stage(volume, secrets, capability)
    device = a.publish(volume, capability, block=True)
    data = os.urandom(4 * MiB)
    with open(device, "r+b") as write:
        write.write(data)
        write.flush()
        os.fsync(write.fileno())
    # Node A is lost: its driver and its dataplane die, and nothing of it comes back.
    pid = dataplane_pid(device_name(volume, a))
    a.driver.stop(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    b.stage(volume, secrets, capability)
    took = time.monotonic() - began
    assert took < TAKEOVER_BOUND
    published = b.publish(volume, capability, block=True)
    with open(published, "rb") as read:
        assert read.read(len(data)) == data
    print(f"node B took the image over {took:.1f} s after node A was lost")
    b.unstage(volume, block=True)
    nothing_left_of(b, volume)


def test_a_context_naming_another_pool_is_not_this_volume(
    cluster: Central,
    nodes: tuple[Node, Node],
    secrets: dict[str, str],
    ceph_client: CephClient,
    ceph_data_pool: str,
) -> None:
    """A volume context whose pool is not the one in the volume id (a PV edited by hand, or
    a pool renamed and its name reused) is refused at stage, even where that pool holds an
    image of the same name: a node never serves another pool's image as this volume."""
    a, _ = nodes
    volume = cluster.create(secrets)
    decoy = f"{ceph_data_pool}/{volume.volume_context['imageName']}"
    ceph_client.cluster.rbd("create", "--size", "64M", decoy)
    try:
        elsewhere = pb.Volume(
            volume_id=volume.volume_id,
            volume_context={**volume.volume_context, "pool": ceph_data_pool},
        )
        failure = refused(lambda: a.stage(elsewhere, secrets, mount_capability()))
        assert failure.code() == grpc.StatusCode.NOT_FOUND, failure.details()
        assert "is not the one asked for" in (failure.details() or "")
        nothing_left_of(a, volume)
    finally:
        ceph_client.cluster.rbd("rm", decoy)


def condition(node: Node, volume: Any, path: Path) -> pb.VolumeCondition:
    answer: pb.NodeGetVolumeStatsResponse = node.driver.node_stub.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=volume.volume_id, volume_path=str(path))
    )
    return answer.volume_condition


def wait_for_condition(
    node: Node, volume: Any, path: Path, *, abnormal: bool, bound: float
) -> pb.VolumeCondition:
    deadline = time.monotonic() + bound
    while (seen := condition(node, volume, path)).abnormal != abnormal:
        assert time.monotonic() < deadline, f"still {seen.message!r} after {bound:.0f} s"
        time.sleep(2)
    return seen


def test_a_cluster_that_stops_answering_makes_the_volume_abnormal_until_it_is_back(
    cluster: Central, nodes: tuple[Node, Node], secrets: dict[str, str], ceph_client: CephClient
) -> None:
    """NodeGetVolumeStats while the cluster cannot serve the image: with the OSD down, a
    write waits (a stall, not an error), and once it has waited the threshold the volume
    is abnormal, saying why and where; with the OSD back, the write lands and the volume
    is normal again."""
    a, _ = nodes
    volume = cluster.create(secrets)
    capability = mount_capability()
    a.stage(volume, secrets, capability)
    target = a.publish(volume, capability, block=False)
    assert not condition(a, volume, target).abnormal
    data = os.urandom(2 * MiB)
    source = a.driver.root / "written"
    source.write_bytes(data)
    ceph_client.cluster.stop_osd()
    try:
        writer = subprocess.Popen(
            ["dd", f"if={source}", f"of={target / 'stalled'}", "bs=1M", "oflag=direct",
             "conv=fsync"],
            stderr=subprocess.PIPE,
        )  # fmt: skip
        began = time.monotonic()
        seen = wait_for_condition(a, volume, target, abnormal=True, bound=STALL_BOUND)
        print(f"abnormal {time.monotonic() - began:.1f} s after the write began: {seen.message}")
        assert "RBD image" in seen.message and "unreachable" in seen.message, seen.message
        assert writer.poll() is None, "the write ended while the OSD was down"
    finally:
        ceph_client.cluster.start_osd()
    _, err = writer.communicate(timeout=180)
    assert writer.returncode == 0, err
    wait_for_condition(a, volume, target, abnormal=False, bound=60)
    assert (target / "stalled").read_bytes() == data
    a.unstage(volume)
    nothing_left_of(a, volume)


def test_kills_every_two_seconds_and_a_node_plugin_restart_lose_nothing(
    cluster: Central, nodes: tuple[Node, Node], secrets: dict[str, str]
) -> None:
    """The crash storm on a volume staged through CSI: its dataplane SIGKILLed every ~2 s
    for a minute under verified fio on ext4, and halfway the node plugin killed with it, so
    the successor that the restarted plugin starts reaches the cluster with the key the
    node kept. The guest sees stalls, never an error, and the filesystem checks clean."""
    a, _ = nodes
    volume = cluster.create(secrets, size=160 * MiB)
    capability = mount_capability()
    staging = a.stage(volume, secrets, capability)
    target = a.publish(volume, capability, block=False)
    name = device_name(volume, a)
    errors, fs_errors = kernel_io_errors(), ext4_errors()
    fio = fio_verify(target / "verify.dat", "--verify_backlog=256", runtime=STORM_SECONDS)
    kills, log = 0, []
    start = time.monotonic()
    plugin_killed = False
    while fio.poll() is None and time.monotonic() - start < STORM_SECONDS:
        time.sleep(random.uniform(*KILL_GAPS))
        pids = set(dataplane_pids(name))
        if not plugin_killed and time.monotonic() - start > STORM_SECONDS / 2:
            a.driver.stop(signal.SIGKILL)  # nobody supervises while it is down
            plugin_killed = True
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
            a.driver.start()
            log.append(f"{time.monotonic() - start:.1f}s node plugin and dataplane killed")
        else:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            log.append(f"{time.monotonic() - start:.1f}s killed {sorted(pids)}")
        kills += bool(pids)  # successors starting up or taking over are killed too
    job = finished(fio, timeout=STORM_SECONDS + 300)
    wait_for_new_dataplane(a.driver.state_dir, name, set(), timeout=120)
    print("\n".join(log))
    assert kills >= MIN_KILLS, log
    assert plugin_killed
    assert kernel_io_errors() == errors
    assert ext4_errors() == fs_errors
    # The filesystem checks clean once unmounted; then the volume is unstaged as usual.
    a.driver.node_stub.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target))
    )
    [record] = a.records()
    sh("umount", str(staging))
    check = sh("e2fsck", "-f", "-n", record["device"], check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    a.unstage(volume)
    nothing_left_of(a, volume)
    print(f"{kills} kills, {job['write']['io_bytes'] // MiB} MiB written and verified")  # type: ignore[index]
