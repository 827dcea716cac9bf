"""``csi-vduse demo``: a volume's whole life through the driver's CSI API, step by step.

Starts ``csi-vduse serve`` on a private socket and plays the part of Kubernetes:
provision a volume, stage it (a VDUSE device, formatted ext4 and mounted), publish it
to a "pod", write and read a file, read the volume's stats, snapshot it, tear it down,
restore the snapshot into a new volume and find the file there, then delete everything
and check that nothing is left. Needs root and a kernel with vduse and virtio_vdpa.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from csi_vduse.csi.proto import pb, stub
from csi_vduse.errors import CsiVduseError
from csi_vduse.mounts.mountinfo import mount_at

Say = Callable[[str], None]
SIZE = 64 << 20
START_TIMEOUT = 30.0


class DemoError(CsiVduseError):
    pass


class _Csi:
    """The CO's side of the conversation, narrating each call."""

    def __init__(self, channel: grpc.Channel, say: Say) -> None:
        self.say = say
        self.services = {name: stub(channel, name) for name in ("Identity", "Controller", "Node")}

    def call(self, service: str, method: str, request: Any) -> Any:
        self.say(f"    -> {method}")
        try:
            return getattr(self.services[service], method)(request)
        except grpc.RpcError as exc:
            raise DemoError("demo", f"{method}: {exc.code().name} {exc.details()}") from exc


def _capability() -> pb.VolumeCapability:
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type="ext4"),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        ),
    )


def run_demo(say: Say) -> None:
    with tempfile.TemporaryDirectory(prefix="csi-vduse-demo-") as tmp:
        work = Path(tmp)
        socket = work / "csi.sock"
        log = work / "driver.log"
        argv = [
            sys.executable, "-m", "csi_vduse", "serve", "--controller",
            "--endpoint", f"unix://{socket}", "--node-id", "demo-node",
            "--state-dir", str(work / "state"), "--pool-dir", str(work / "pool"),
        ]  # fmt: skip
        say(f"[1/9] start the driver: csi-vduse serve on {socket}")
        with open(log, "wb") as output:
            driver = subprocess.Popen(argv, stdout=output, stderr=output)
        channel = grpc.insecure_channel(f"unix://{socket}")
        try:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
            _lifecycle(_Csi(channel, say), work, say)
        except grpc.FutureTimeoutError:
            raise DemoError("demo", f"the driver did not start:\n{log.read_text()}") from None
        except DemoError:
            say(f"driver log:\n{log.read_text()}")
            raise
        finally:
            channel.close()
            driver.send_signal(signal.SIGTERM)
            driver.wait(timeout=60)


def _lifecycle(csi: _Csi, work: Path, say: Say) -> None:
    info = csi.call("Identity", "GetPluginInfo", pb.GetPluginInfoRequest())
    say(f"      {info.name} {info.vendor_version}")
    capability = _capability()
    say(f"[2/9] provision a {SIZE >> 20} MiB volume (a sparse file in the node's pool)")
    volume = csi.call(
        "Controller",
        "CreateVolume",
        pb.CreateVolumeRequest(
            name="demo-pvc",
            capacity_range=pb.CapacityRange(required_bytes=SIZE),
            volume_capabilities=[capability],
        ),
    ).volume
    say(f"      volume {volume.volume_id}")
    staging = work / "kubelet" / "globalmount"
    staging.mkdir(parents=True)
    target = work / "kubelet" / "pod" / "mount"
    target.parent.mkdir(parents=True)
    say("[3/9] stage: VDUSE device + dataplane + vDPA attach, mkfs.ext4, mount")
    _stage(csi, volume.volume_id, staging=staging, capability=capability)
    say(f"      {_mount_source(staging)} mounted at {staging}")
    say("[4/9] publish into the pod, write a file and read it back")
    _publish(csi, volume.volume_id, staging=staging, target=target, capability=capability)
    message = "hello from a virtio-blk disk emulated in userspace\n"
    (target / "hello.txt").write_text(message)
    subprocess.run(["sync"], check=True)
    if (target / "hello.txt").read_text() != message:
        raise DemoError("demo", "the file read back differs from what was written")
    stats = csi.call(
        "Node",
        "NodeGetVolumeStats",
        pb.NodeGetVolumeStatsRequest(volume_id=volume.volume_id, volume_path=str(target)),
    )
    used = next(u for u in stats.usage if u.unit == pb.VolumeUsage.BYTES)
    say(f"      {used.used >> 10} KiB used of {used.total >> 10} KiB; "
        f"condition: {stats.volume_condition.message}")  # fmt: skip
    say("[5/9] snapshot the volume")
    snapshot = csi.call(
        "Controller",
        "CreateSnapshot",
        pb.CreateSnapshotRequest(name="demo-snap", source_volume_id=volume.volume_id),
    ).snapshot
    say(f"      snapshot {snapshot.snapshot_id}, ready: {snapshot.ready_to_use}")
    say("[6/9] unpublish and unstage (unmount, detach, destroy the device)")
    _teardown(csi, volume.volume_id, staging=staging, target=target)
    say("[7/9] restore the snapshot into a new volume and read the file there")
    restored = csi.call(
        "Controller",
        "CreateVolume",
        pb.CreateVolumeRequest(
            name="demo-restored",
            capacity_range=pb.CapacityRange(required_bytes=SIZE),
            volume_capabilities=[capability],
            volume_content_source=pb.VolumeContentSource(
                snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snapshot.snapshot_id)
            ),
        ),
    ).volume
    _stage(csi, restored.volume_id, staging=staging, capability=capability)
    _publish(csi, restored.volume_id, staging=staging, target=target, capability=capability)
    found = (target / "hello.txt").read_text()
    say(f"      read back: {found.strip()!r}")
    if found != message:
        raise DemoError("demo", "the restored volume does not hold the file")
    _teardown(csi, restored.volume_id, staging=staging, target=target)
    say("[8/9] delete the snapshot and both volumes")
    csi.call(
        "Controller", "DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id)
    )
    for volume_id in (volume.volume_id, restored.volume_id):
        csi.call("Controller", "DeleteVolume", pb.DeleteVolumeRequest(volume_id=volume_id))
    say("[9/9] check that nothing is left")
    left = sorted(p.name for p in (work / "pool" / "volumes").iterdir())
    devices = sorted(p.name for p in (work / "state" / "devices").glob("*.json"))
    vduse = sorted(p.name for p in Path("/dev/vduse").iterdir() if p.name.startswith("vol-"))
    say(f"      pool files: {left or 'none'}; device records: {devices or 'none'}; "
        f"VDUSE devices: {vduse or 'none'}")  # fmt: skip
    if left or devices or vduse:
        raise DemoError("demo", "something was left behind")
    digest = hashlib.sha256(message.encode()).hexdigest()[:12]
    say(f"done: a volume lived and died through CSI; its data (sha256 {digest}) survived "
        "a snapshot and restore")  # fmt: skip


def _stage(csi: _Csi, volume_id: str, *, staging: Path, capability: pb.VolumeCapability) -> None:
    csi.call(
        "Node",
        "NodeStageVolume",
        pb.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=str(staging), volume_capability=capability
        ),
    )


def _publish(
    csi: _Csi, volume_id: str, *, staging: Path, target: Path, capability: pb.VolumeCapability
) -> None:
    csi.call(
        "Node",
        "NodePublishVolume",
        pb.NodePublishVolumeRequest(
            volume_id=volume_id,
            staging_target_path=str(staging),
            target_path=str(target),
            volume_capability=capability,
        ),
    )


def _teardown(csi: _Csi, volume_id: str, *, staging: Path, target: Path) -> None:
    csi.call(
        "Node",
        "NodeUnpublishVolume",
        pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)),
    )
    csi.call(
        "Node",
        "NodeUnstageVolume",
        pb.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=str(staging)),
    )


def _mount_source(path: Path) -> str:
    mount = mount_at(path)
    return mount.source if mount else "?"
