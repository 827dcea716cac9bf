"""A volume's life exactly as a kubelet drives it, on the real kernel.

The paths and call order are the kubelet's: stage at
``<kubelet>/plugins/kubernetes.io/csi/<driver>/<hash>/globalmount`` (mount) or
``<kubelet>/plugins/kubernetes.io/csi/volumeDevices/staging/<pv>`` (block), publish at
``<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount`` or a device file under
``.../volumeDevices/publish/<pv>/<uid>``; the kubelet creates the staging directory and
the target's parent, the driver the target itself.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from csi_vduse.mounts import mountinfo
from tests.driver import Driver, block_capability, mount_capability, pb
from tests.kernel.conftest import leftovers, sh

pytestmark = pytest.mark.vm

MiB = 1 << 20
DRIVER = "csi.vduse.dev"


class Kubelet:
    def __init__(self, driver: Driver, root: Path) -> None:
        self.driver = driver
        self.root = root

    def create(self, capability: pb.VolumeCapability, size: int = 64 * MiB) -> tuple[str, str]:
        pv = f"pvc-{uuid.uuid4()}"
        volume = self.driver.controller_stub.CreateVolume(
            pb.CreateVolumeRequest(
                name=pv,
                capacity_range=pb.CapacityRange(required_bytes=size),
                volume_capabilities=[capability],
            )
        ).volume
        return pv, volume.volume_id

    def mount_staging(self, pv: str) -> Path:
        digest = hashlib.sha256(pv.encode()).hexdigest()
        path = self.root / "plugins/kubernetes.io/csi" / DRIVER / digest / "globalmount"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def block_staging(self, pv: str) -> Path:
        path = self.root / "plugins/kubernetes.io/csi/volumeDevices/staging" / pv
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mount_target(self, pv: str, pod: str) -> Path:
        parent = self.root / "pods" / pod / "volumes/kubernetes.io~csi" / pv
        parent.mkdir(parents=True, exist_ok=True)
        return parent / "mount"

    def block_target(self, pv: str, pod: str) -> Path:
        parent = self.root / "plugins/kubernetes.io/csi/volumeDevices/publish" / pv
        parent.mkdir(parents=True, exist_ok=True)
        return parent / pod

    def stage(self, volume_id: str, staging: Path, capability: pb.VolumeCapability) -> None:
        self.driver.node_stub.NodeStageVolume(
            pb.NodeStageVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                volume_capability=capability,
            )
        )

    def publish(
        self,
        volume_id: str,
        staging: Path,
        target: Path,
        capability: pb.VolumeCapability,
        readonly: bool = False,
    ) -> None:
        self.driver.node_stub.NodePublishVolume(
            pb.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=str(staging),
                target_path=str(target),
                volume_capability=capability,
                readonly=readonly,
            )
        )

    def unpublish(self, volume_id: str, target: Path) -> None:
        self.driver.node_stub.NodeUnpublishVolume(
            pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
        )

    def unstage(self, volume_id: str, staging: Path) -> None:
        self.driver.node_stub.NodeUnstageVolume(
            pb.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging))
        )

    def stats(self, volume_id: str, path: Path) -> pb.NodeGetVolumeStatsResponse:
        response: pb.NodeGetVolumeStatsResponse = self.driver.node_stub.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(path))
        )
        return response

    def delete(self, volume_id: str) -> None:
        self.driver.controller_stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume_id))


@contextmanager
def running_kubelet(
    tmp_path: Path, pool: Path | None = None, extra: Sequence[str] = ()
) -> Iterator[Kubelet]:
    """A driver under ``tmp_path`` and a kubelet for it; on a clean exit, nothing may be left.

    ``pool`` is a pool directory the caller made (its own filesystem, say): its mount is
    the caller's to remove, everything else under ``tmp_path`` must be gone.
    """
    driver = Driver(tmp_path / "driver", extra=list(extra), pool=pool).start()
    try:
        yield Kubelet(driver, tmp_path / "kubelet")
    except BaseException:
        driver.stop()
        print("driver log, last lines:", *driver.log().splitlines()[-150:], sep="\n")
        _clear(tmp_path, driver)
        raise
    try:
        assert driver.stop() == 0, driver.log()
        stray = [m for m in mounts_under(tmp_path) if m != str(driver.pool_dir)]
        assert stray == [], f"mounts left: {stray}"
        records = sorted(p.name for p in (driver.state_dir / "volumes").glob("*"))
        assert records == [], f"node records left: {records}"
        devices = sorted(p.name for p in (driver.state_dir / "devices").glob("*"))
        assert devices == [], f"device records left: {devices}"
        assert sorted(p.name for p in (driver.pool_dir / "volumes").glob("*")) == []
    finally:
        _clear(tmp_path, driver)


def mounts_under(root: Path) -> list[str]:
    return [m.mount_point for m in mountinfo.mounts() if m.mount_point.startswith(str(root))]


def _clear(tmp_path: Path, driver: Driver) -> None:
    """Whatever a failed test left must not leak into the next one."""
    for mount in reversed(mounts_under(tmp_path)):
        if mount != str(driver.pool_dir):
            sh("umount", "-l", mount, check=False)
    vduse = Path("/dev/vduse")
    for name in os.listdir(vduse) if vduse.is_dir() else []:
        if name.startswith("vol-"):
            sh(sys.executable, "-m", "csi_vduse", "--state-dir", str(driver.state_dir),
               "device", "delete", name, check=False)  # fmt: skip


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[Kubelet]:
    with running_kubelet(tmp_path) as kubelet:
        yield kubelet


def test_mount_volume_two_pods_restage_keeps_data(kubelet: Kubelet) -> None:
    capability = mount_capability("ext4")
    pv, volume_id = kubelet.create(capability)
    staging = kubelet.mount_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    kubelet.stage(volume_id, staging, capability)  # the kubelet retries: must be OK
    pod_a, pod_b = str(uuid.uuid4()), str(uuid.uuid4())
    target_a, target_b = kubelet.mount_target(pv, pod_a), kubelet.mount_target(pv, pod_b)
    kubelet.publish(volume_id, staging, target_a, capability)
    kubelet.publish(volume_id, staging, target_b, capability, readonly=True)
    kubelet.publish(volume_id, staging, target_a, capability)  # repeated: OK

    data = os.urandom(3 * MiB)
    (target_a / "data").write_bytes(data)
    os.sync()
    assert (target_b / "data").read_bytes() == data
    with pytest.raises(OSError) as refused:
        (target_b / "other").write_bytes(b"x")
    assert refused.value.errno == errno.EROFS

    stats = kubelet.stats(volume_id, target_a)
    by_unit = {u.unit: u for u in stats.usage}
    assert 50 * MiB < by_unit[pb.VolumeUsage.BYTES].total <= 64 * MiB
    assert by_unit[pb.VolumeUsage.BYTES].used >= 3 * MiB
    assert by_unit[pb.VolumeUsage.INODES].total > 0
    assert not stats.volume_condition.abnormal

    kubelet.unpublish(volume_id, target_a)
    kubelet.unpublish(volume_id, target_b)
    kubelet.unpublish(volume_id, target_b)  # repeated: OK
    assert not target_a.exists() and not target_b.exists()
    kubelet.unstage(volume_id, staging)
    kubelet.unstage(volume_id, staging)  # repeated: OK
    assert not mountinfo.is_mount_point(staging)
    assert leftovers(volume_id) == []

    # A later pod on the same node sees what the first one wrote.
    kubelet.stage(volume_id, staging, capability)
    target_c = kubelet.mount_target(pv, str(uuid.uuid4()))
    kubelet.publish(volume_id, staging, target_c, capability)
    assert (target_c / "data").read_bytes() == data
    kubelet.unpublish(volume_id, target_c)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_block_volume_published_as_device_file(kubelet: Kubelet) -> None:
    capability = block_capability()
    pv, volume_id = kubelet.create(capability, 32 * MiB)
    staging = kubelet.block_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    target = kubelet.block_target(pv, str(uuid.uuid4()))
    kubelet.publish(volume_id, staging, target, capability)
    assert target.is_block_device()

    data = os.urandom(MiB)
    with open(target, "r+b", buffering=0) as disk:
        disk.seek(7 * MiB)
        disk.write(data)
        os.fsync(disk.fileno())
    stats = kubelet.stats(volume_id, target)
    assert [u.total for u in stats.usage] == [32 * MiB]

    kubelet.unpublish(volume_id, target)
    assert not target.exists()
    kubelet.unstage(volume_id, staging)
    kubelet.stage(volume_id, staging, capability)
    kubelet.publish(volume_id, staging, target, capability)
    with open(target, "rb", buffering=0) as disk:
        disk.seek(7 * MiB)
        assert disk.read(MiB) == data
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_never_reformats_and_refuses_a_different_filesystem(kubelet: Kubelet) -> None:
    ext4 = mount_capability("ext4")
    pv, volume_id = kubelet.create(ext4)
    staging = kubelet.mount_staging(pv)
    kubelet.stage(volume_id, staging, ext4)
    (staging / "keep").write_text("kept")
    kubelet.unstage(volume_id, staging)

    with pytest.raises(grpc.RpcError) as refused:
        kubelet.stage(volume_id, staging, mount_capability("xfs"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already holds ext4" in (refused.value.details() or "")
    assert leftovers(volume_id) == []

    kubelet.stage(volume_id, staging, ext4)
    assert (staging / "keep").read_text() == "kept"
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_xfs_volume_with_mount_flags(kubelet: Kubelet) -> None:
    capability = mount_capability("xfs", flags=("noatime",))
    pv, volume_id = kubelet.create(capability, 320 * MiB)
    staging = kubelet.mount_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    mount = mountinfo.mount_at(staging)
    assert mount is not None and mount.fs_type == "xfs" and "noatime" in mount.options
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_driver_killed_between_stage_and_publish_keeps_the_volume(kubelet: Kubelet) -> None:
    capability = mount_capability("ext4")
    pv, volume_id = kubelet.create(capability)
    staging = kubelet.mount_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    (staging / "before").write_text("staged before the crash")

    kubelet.driver.stop(signal.SIGKILL)
    kubelet.driver.start()

    assert mountinfo.is_mount_point(staging)
    kubelet.stage(volume_id, staging, capability)  # the kubelet's retry after a restart
    target = kubelet.mount_target(pv, str(uuid.uuid4()))
    kubelet.publish(volume_id, staging, target, capability)
    assert (target / "before").read_text() == "staged before the crash"
    assert not kubelet.stats(volume_id, target).volume_condition.abnormal
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_a_stage_cut_short_by_a_crash_is_rolled_back_on_restart(kubelet: Kubelet) -> None:
    capability = mount_capability("ext4")
    pv, volume_id = kubelet.create(capability)
    staging = kubelet.mount_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    kubelet.driver.stop(signal.SIGKILL)
    # What the record says when the driver dies after mounting, before it could finish.
    record_path = kubelet.driver.state_dir / "volumes" / f"{volume_id}.json"
    record = json.loads(record_path.read_text())
    record["state"] = "staging"
    record_path.write_text(json.dumps(record))

    kubelet.driver.start()

    assert not record_path.exists()
    assert not mountinfo.is_mount_point(staging)
    assert leftovers(volume_id) == []
    kubelet.stage(volume_id, staging, capability)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_storage_class_parameters_shape_the_device(kubelet: Kubelet) -> None:
    capability = block_capability()
    pv = f"pvc-{uuid.uuid4()}"
    volume_id = kubelet.driver.controller_stub.CreateVolume(
        pb.CreateVolumeRequest(
            name=pv,
            capacity_range=pb.CapacityRange(required_bytes=16 * MiB),
            volume_capabilities=[capability],
            parameters={"blockSize": "4096", "numQueues": "2", "packedRings": "true"},
        )
    ).volume.volume_id
    staging = kubelet.block_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    record = json.loads((kubelet.driver.state_dir / "volumes" / f"{volume_id}.json").read_text())
    disk = Path(record["device"]).name
    assert Path(f"/sys/block/{disk}/queue/logical_block_size").read_text().strip() == "4096"
    assert len(list(Path(f"/sys/block/{disk}/mq").iterdir())) == 2
    features = Path(f"/sys/block/{disk}/device/features").read_text()
    assert features[34] == "1"  # VIRTIO_F_RING_PACKED
    assert Path(f"/sys/block/{disk}/serial").read_text().strip() == volume_id[:20]
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)


def test_a_mounted_volume_grows_online(kubelet: Kubelet) -> None:
    capability = mount_capability("ext4")
    pv, volume_id = kubelet.create(capability, 64 * MiB)
    staging = kubelet.mount_staging(pv)
    kubelet.stage(volume_id, staging, capability)
    target = kubelet.mount_target(pv, str(uuid.uuid4()))
    kubelet.publish(volume_id, staging, target, capability)
    (target / "data").write_bytes(os.urandom(MiB))
    before = kubelet.stats(volume_id, target).usage[0].total

    grown = kubelet.driver.controller_stub.ControllerExpandVolume(
        pb.ControllerExpandVolumeRequest(
            volume_id=volume_id, capacity_range=pb.CapacityRange(required_bytes=128 * MiB)
        )
    )
    assert grown.node_expansion_required and grown.capacity_bytes == 128 * MiB
    answer = kubelet.driver.node_stub.NodeExpandVolume(
        pb.NodeExpandVolumeRequest(
            volume_id=volume_id,
            volume_path=str(target),
            capacity_range=pb.CapacityRange(required_bytes=128 * MiB),
        )
    )
    assert answer.capacity_bytes == 128 * MiB
    after = kubelet.stats(volume_id, target).usage[0].total
    assert after > before + 50 * MiB
    assert (target / "data").stat().st_size == MiB
    kubelet.unpublish(volume_id, target)
    kubelet.unstage(volume_id, staging)
    kubelet.delete(volume_id)
