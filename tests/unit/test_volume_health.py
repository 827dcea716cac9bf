"""A staged volume's condition (NodeGetVolumeStats) read from what its dataplane leaves:
requests that have waited on the backend past the threshold, with none finishing, make it
abnormal, naming the image and its cluster, or the backing file; requests that move, or a
wait still short of the threshold, do not."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.state import DeviceRecord, DeviceState, StateStore
from csi_vduse.devices.status import DeviceStatus
from csi_vduse.volumes import kinds
from csi_vduse.volumes.lifecycle import STALL_ABNORMAL_S, NodeVolumes
from csi_vduse.volumes.records import NodeVolume, NodeVolumeStore, VolumeState
from tests.unit.test_volume_stats import _block, write_stats

RBD_VOLUME = "rbd-east-1-0000000000000001-" + "ab" * 16
FILE_VOLUME = "pvc-" + "12345678-1234-1234-1234-123456789abc"
NODE = "node-a"


@dataclass
class Machine:
    """Stands in for the device manager's probes of the machine: the device is up and
    running. Its counters are read from a real stats file, by the manager's own code."""

    store: StateStore
    record_of: DeviceRecord

    def record(self, name: str) -> DeviceRecord | None:
        return self.record_of if name == self.record_of.name else None

    def status(self, record: DeviceRecord) -> DeviceStatus:
        return DeviceStatus(
            record=record, dataplane_running=True, vduse_present=True, vdpa_attached=True,
            block_device="/dev/vda",
        )  # fmt: skip

    def waiting_ns(self, record: DeviceRecord) -> int:
        return DeviceManager.waiting_ns(cast(DeviceManager, self), record)


def health_of(tmp_path: Path, volume_id: str, *, waited_s: float | None) -> tuple[bool, str]:
    name = kinds.device_name(volume_id, node_id=NODE)
    rbd = kinds.is_rbd(volume_id)
    device = DeviceRecord(
        name=name, backing="rbd:replicapool/csi-vol-x" if rbd else "/pool/x.img", size=1 << 20,
        profile=BlkProfile(), state=DeviceState.RUNNING,
        rbd={"pool": "replicapool", "image": "csi-vol-x", "mon_host": "192.0.2.1:6789"}
        if rbd else None,
    )  # fmt: skip
    machine = Machine(StateStore(tmp_path), device)
    since = 0 if waited_s is None else time.monotonic_ns() - int(waited_s * 1e9)
    write_stats(machine.store.stats_path(name), _block(read=3), _block(waiting_since=since))
    volumes = NodeVolumes(
        None, cast(DeviceManager, cast(Any, machine)), NodeVolumeStore(tmp_path),
        max_volumes=1, node_id=NODE,
    )  # fmt: skip
    record = NodeVolume(
        volume_id=volume_id, staging_path=str(tmp_path), block=True, fs_type="",
        mount_flags=[], mode=1, readonly=False, state=VolumeState.STAGED, device="/dev/vda",
    )  # fmt: skip
    health = volumes.health(record)
    return health.abnormal, health.message


def test_an_rbd_volume_whose_cluster_stopped_answering_is_abnormal(tmp_path: Path) -> None:
    abnormal, message = health_of(tmp_path, RBD_VOLUME, waited_s=STALL_ABNORMAL_S + 12)
    assert abnormal, message
    waited = re.search(r"waited (\d+) s", message)
    assert waited and STALL_ABNORMAL_S + 12 <= int(waited[1]) < STALL_ABNORMAL_S + 72, message
    assert "RBD image replicapool/csi-vol-x" in message
    assert "Ceph cluster at 192.0.2.1:6789 is unreachable" in message


def test_a_file_volume_whose_disk_stopped_answering_is_abnormal(tmp_path: Path) -> None:
    abnormal, message = health_of(tmp_path, FILE_VOLUME, waited_s=STALL_ABNORMAL_S + 1)
    assert abnormal
    assert "backing file /pool/x.img" in message


@pytest.mark.parametrize("waited_s", [None, STALL_ABNORMAL_S - 5], ids=["idle", "short"])
def test_requests_that_move_or_wait_briefly_leave_the_volume_normal(
    tmp_path: Path, waited_s: float | None
) -> None:
    abnormal, message = health_of(tmp_path, RBD_VOLUME, waited_s=waited_s)
    assert not abnormal
    assert message == "the device is running"
