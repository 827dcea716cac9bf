"""The on-disk device records and the per-device lifecycle lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from csi_vduse.dataplane import control
from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.state import DeviceRecord, DeviceState, StateStore, default_state_dir

# Tries to take the lock without blocking; prints "locked" or "busy".
_TRY_LOCK = textwrap.dedent(
    """
    import fcntl, sys
    with open(sys.argv[1], "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("busy")
        else:
            print("locked")
    """
)


def _try_lock_elsewhere(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _TRY_LOCK, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def _record(name: str, readonly: bool = False, **changes: object) -> DeviceRecord:
    record = DeviceRecord(
        name=name,
        backing=f"/var/lib/{name}.img",
        size=1 << 20,
        profile=BlkProfile(readonly=readonly),
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def test_saved_record_loads_back_equal(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    record = _record(
        "vol-1",
        readonly=True,
        state="running",
        pid=4242,
        pid_start_time=123456789,
        block_device="/dev/vda",
        created_backing=True,
    )
    store.save(record)
    assert store.load("vol-1") == record


def test_save_writes_json_under_devices_dir(tmp_path: Path) -> None:
    StateStore(tmp_path).save(_record("vol-1", pid=7))
    data = json.loads((tmp_path / "devices" / "vol-1.json").read_text())
    assert data["name"] == "vol-1"
    assert data["pid"] == 7
    assert data["state"] == "creating"


def test_save_replaces_an_earlier_record_and_leaves_no_tmp_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(_record("vol-1"))
    store.save(_record("vol-1", state="running"))
    loaded = store.load("vol-1")
    assert loaded is not None
    assert loaded.state == "running" and loaded.state is DeviceState.RUNNING
    assert sorted(p.name for p in (tmp_path / "devices").iterdir()) == ["vol-1.json"]


def test_load_of_missing_name_is_none(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.load("nothing") is None
    store.save(_record("other"))
    assert store.load("nothing") is None


def test_records_are_sorted_by_name(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for name in ("vol-c", "vol-a", "vol-b"):
        store.save(_record(name))
    assert [r.name for r in store.records()] == ["vol-a", "vol-b", "vol-c"]


def test_records_ignore_stray_tmp_and_log_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(_record("vol-a"))
    (tmp_path / "devices" / "vol-z.tmp").write_text('{"name": "vol-z"')  # torn write
    store.log_path("vol-a").write_text("log line\n")
    assert [r.name for r in store.records()] == ["vol-a"]


def test_records_of_a_fresh_state_dir_are_empty(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "never-created").records() == []


def test_remove_deletes_record_and_log(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(_record("vol-1"))
    store.save(_record("vol-2"))
    store.log_path("vol-1").write_text("dataplane output\n")
    store.qos_path("vol-1").write_bytes(b"limits")
    control.listen(store.control_path("vol-1")).close()
    store.remove("vol-1")
    assert not (tmp_path / "devices" / "vol-1.json").exists()
    assert not store.log_path("vol-1").exists()
    assert not store.qos_path("vol-1").exists()
    assert not store.control_path("vol-1").exists()
    assert store.load("vol-1") is None
    assert [r.name for r in store.records()] == ["vol-2"]


def test_remove_of_missing_name_is_not_an_error(tmp_path: Path) -> None:
    StateStore(tmp_path).remove("nothing")


def test_lock_is_held_against_other_processes_until_released(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    lock_file = tmp_path / "locks" / "vol-1.lock"
    with store.locked("vol-1"):
        assert lock_file.exists()
        assert _try_lock_elsewhere(lock_file) == "busy"
    assert _try_lock_elsewhere(lock_file) == "locked"


def test_lock_of_one_name_does_not_block_another(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.locked("vol-1"):
        assert _try_lock_elsewhere(tmp_path / "locks" / "vol-2.lock") == "locked"


def test_lock_is_released_when_the_body_raises(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(RuntimeError), store.locked("vol-1"):
        raise RuntimeError("boom")
    assert _try_lock_elsewhere(tmp_path / "locks" / "vol-1.lock") == "locked"


def test_state_dir_comes_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CSI_VDUSE_STATE_DIR", str(tmp_path))
    assert default_state_dir() == tmp_path
    assert StateStore().devices == tmp_path / "devices"


def test_state_dir_defaults_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CSI_VDUSE_STATE_DIR", raising=False)
    assert default_state_dir() == Path("/run/csi-vduse")


def test_corrupt_record_is_reported_as_a_state_directory_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.devices.mkdir(parents=True)
    (store.devices / "broken.json").write_text("{not json")
    with pytest.raises(DeviceError) as caught:
        store.load("broken")
    assert caught.value.step == "state directory"
    assert "corrupt device record" in caught.value.message
