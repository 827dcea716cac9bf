"""The one device description: checked in one place, handed over whole.

A ``BlkProfile`` goes from the request (StorageClass parameters, command-line flags) into
the device record on disk and, as arguments, into the dataplane; none of these hand-overs
may lose or change a field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csi_vduse.csi import parameters
from csi_vduse.csi.errors import RpcError
from csi_vduse.dataplane.blk.profile import BlkProfile, ProfileError
from csi_vduse.dataplane.interface import DataplaneArgs
from csi_vduse.devices.state import DeviceRecord, StateStore

ODD = BlkProfile(readonly=True, queues=3, queue_size=64, block_size=4096, packed=True)


def test_every_wrong_field_is_named_and_each_layer_may_rename_it() -> None:
    with pytest.raises(ProfileError) as caught:
        BlkProfile(queues=0, queue_size=100, block_size=1024)
    assert set(caught.value.problems) == {"queues", "queue_size", "block_size"}
    assert str(caught.value) == (
        "queues 0: use 1 to 16; queue size 100: use a power of two from 2 to 1024; "
        "block size 1024: use 512 or 4096"
    )
    assert caught.value.describe({"queues": "numQueues"}).startswith("numQueues 0: use 1 to 16")


def test_a_capacity_must_be_whole_blocks() -> None:
    BlkProfile(block_size=4096).check_capacity(8192)
    with pytest.raises(ProfileError, match="4608: not a multiple of the 4096-byte block"):
        BlkProfile(block_size=4096).check_capacity(4608)


def test_the_dataplane_reads_back_the_profile_it_was_started_with() -> None:
    args = DataplaneArgs(
        name="vol", backing=Path("/pool/vol.img"), profile=ODD, serial="vol", ready_fd=9,
        device_fd=5, backing_fd=6, stats_fd=7, inflight_fd=8, direct_fd=10, qos_fd=11,
        control_fd=12,
    )  # fmt: skip
    assert DataplaneArgs.parse(args.argv()) == args
    assert DataplaneArgs.parse(args.argv()).profile.block_size == 4096


def test_the_dataplane_refuses_a_profile_no_device_can_have() -> None:
    argv = DataplaneArgs(name="vol", backing=Path("/x"), device_fd=5, backing_fd=6).argv()
    with pytest.raises(SystemExit):
        DataplaneArgs.parse([*argv, "--queue-size", "100"])


def test_a_record_keeps_its_profile_in_the_flat_form_every_version_wrote(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    record = DeviceRecord(name="vol", backing="/pool/vol.img", size=1 << 20, profile=ODD)
    store.save(record)
    written = json.loads((tmp_path / "devices" / "vol.json").read_text())
    assert {k: written[k] for k in ("readonly", "num_queues", "queue_size", "block_size")} == {
        "readonly": True, "num_queues": 3, "queue_size": 64, "block_size": 4096,
    }  # fmt: skip
    assert written["packed"] is True and "profile" not in written
    assert store.load("vol") == record


@pytest.mark.parametrize(
    ("geometry", "profile"),
    [
        # As the version before the profile wrote it.
        (
            {"num_queues": 2, "queue_size": 128, "block_size": 4096, "packed": True},
            BlkProfile(queues=2, queue_size=128, block_size=4096, packed=True),
        ),
        # From before records held any of the queue, block or ring settings.
        ({}, BlkProfile()),
    ],
)
def test_records_written_by_earlier_versions_still_load(
    tmp_path: Path, geometry: dict[str, object], profile: BlkProfile
) -> None:
    old = {
        "name": "vol", "backing": "/pool/vol.img", "size": 1 << 20, "readonly": False,
        "state": "running", "pid": 42, "pid_start_time": 7, "block_device": "/dev/vda",
        "created_backing": True, "restarts": 1, "restart_error": None, **geometry,
    }  # fmt: skip
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "vol.json").write_text(json.dumps(old))
    record = StateStore(tmp_path).load("vol")
    assert record is not None
    assert record.profile == profile
    assert (record.state, record.pid, record.block_device, record.restarts) == (
        "running", 42, "/dev/vda", 1,
    )  # fmt: skip


def test_storage_class_parameters_choose_part_of_the_profile() -> None:
    chosen = parameters.parse({"blockSize": "4096", "packedRings": "true"})
    assert chosen.profile(readonly=True, default_queues=3) == BlkProfile(
        readonly=True, queues=3, block_size=4096, packed=True
    )
    assert (
        parameters.parse({"numQueues": "2"}).profile(readonly=False, default_queues=3).queues == 2
    )
    for bad in ("0512", "+512", " 512", "5_12"):
        with pytest.raises(RpcError):
            parameters.parse({"blockSize": bad})
