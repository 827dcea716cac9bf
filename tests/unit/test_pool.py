"""The node-local pool: ids, sparse volumes, snapshots and clones, crash-safe records."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from csi_vduse.pool import ids
from csi_vduse.pool.copy import clone_file
from csi_vduse.pool.errors import PoolError
from csi_vduse.pool.store import Pool

MiB = 1 << 20
STATVFS_FIELDS = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                  "f_ffree", "f_favail", "f_flag", "f_namemax")  # fmt: skip


@pytest.fixture
def pool(tmp_path: Path) -> Pool:
    return Pool(tmp_path / "pool")


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_ids_are_stable_safe_and_distinct() -> None:
    assert ids.volume_id_for("pvc-1") == ids.volume_id_for("pvc-1")
    assert ids.volume_id_for("pvc-1") != ids.volume_id_for("pvc-2")
    for name in ("../../etc/passwd", "a/b", "x" * 500, "\x00", "ünïcode"):
        volume_id = ids.volume_id_for(name)
        assert ids.is_volume_id(volume_id) and len(volume_id) <= 64
        assert "/" not in volume_id and ".." not in volume_id
    assert not ids.is_volume_id("../vol-" + "0" * 32)
    assert not ids.is_volume_id(ids.snapshot_id_for("s"))
    assert ids.is_snapshot_id(ids.snapshot_id_for("s"))


def test_unknown_or_hostile_ids_find_nothing_and_touch_nothing(pool: Pool) -> None:
    for hostile in ("../../etc/passwd", "/etc/passwd", "vol-../x", "", "vol-" + "g" * 32):
        assert pool.volume(hostile) is None
        assert pool.snapshot(hostile) is None
        assert pool.delete_volume(hostile) is False
    assert os.path.exists("/etc/passwd")


def test_volume_is_sparse_and_listed_oldest_first(pool: Pool) -> None:
    first = pool.create_volume("a", 64 * MiB, {})
    second = pool.create_volume("b", 32 * MiB, {"blockSize": "4096"})
    path = pool.backing_path(first.volume_id)
    assert os.stat(path).st_size == 64 * MiB
    assert allocated(path) < MiB
    assert [v.volume_id for v in pool.volume_records()] == [first.volume_id, second.volume_id]
    assert pool.volume(second.volume_id) == second


def test_snapshot_and_clone_copy_data_and_keep_holes(pool: Pool) -> None:
    volume = pool.create_volume("src", 64 * MiB, {})
    data = os.urandom(MiB)
    with open(pool.backing_path(volume.volume_id), "r+b") as backing:
        backing.seek(40 * MiB)
        backing.write(data)
    snapshot = pool.create_snapshot("snap", source_volume_id=volume.volume_id)
    assert snapshot.size == 64 * MiB and snapshot.method in ("reflink", "sparse-copy")
    # Later writes to the volume do not reach the snapshot.
    with open(pool.backing_path(volume.volume_id), "r+b") as backing:
        backing.seek(40 * MiB)
        backing.write(b"\0" * MiB)
    restored = pool.create_volume(
        "restored", 128 * MiB, {}, source_snapshot_id=snapshot.snapshot_id
    )
    path = pool.backing_path(restored.volume_id)
    assert os.stat(path).st_size == 128 * MiB
    with open(path, "rb") as backing:
        backing.seek(40 * MiB)
        assert backing.read(MiB) == data
    assert allocated(path) < 4 * MiB
    clone = pool.create_volume("clone", 128 * MiB, {}, source_volume_id=restored.volume_id)
    with open(pool.backing_path(clone.volume_id), "rb") as backing:
        backing.seek(40 * MiB)
        assert backing.read(MiB) == data


def test_a_source_larger_than_the_new_volume_is_refused_without_leftovers(pool: Pool) -> None:
    volume = pool.create_volume("big", 64 * MiB, {})
    with pytest.raises(PoolError) as refused:
        pool.create_volume("small", 32 * MiB, {}, source_volume_id=volume.volume_id)
    assert refused.value.errno == errno.EFBIG
    assert [v.name for v in pool.volume_records()] == ["big"]
    assert sorted(p.name for p in pool.volumes.iterdir()) == sorted(
        [f"{volume.volume_id}.img", f"{volume.volume_id}.json"]
    )


def test_missing_sources_are_not_found(pool: Pool) -> None:
    sources: list[dict[str, str | None]] = [
        {"source_snapshot_id": ids.snapshot_id_for("nope")},
        {"source_volume_id": ids.volume_id_for("nope")},
    ]
    for kwargs in sources:
        with pytest.raises(PoolError) as refused:
            pool.create_volume("x", MiB, {}, **kwargs)  # type: ignore[arg-type]
        assert refused.value.errno == errno.ENOENT
    with pytest.raises(PoolError) as refused:
        pool.create_snapshot("s", source_volume_id=ids.volume_id_for("nope"))
    assert refused.value.errno == errno.ENOENT


def test_expand_grows_never_shrinks(pool: Pool) -> None:
    volume = pool.create_volume("v", 8 * MiB, {})
    assert pool.expand_volume(volume.volume_id, 16 * MiB).capacity == 16 * MiB
    assert pool.expand_volume(volume.volume_id, 4 * MiB).capacity == 16 * MiB
    assert os.stat(pool.backing_path(volume.volume_id)).st_size == 16 * MiB


def test_delete_is_idempotent_and_removes_data(pool: Pool) -> None:
    volume = pool.create_volume("v", MiB, {})
    assert pool.delete_volume(volume.volume_id) is True
    assert pool.delete_volume(volume.volume_id) is False
    assert list(pool.volumes.iterdir()) == []


def test_an_orphan_data_file_from_a_crash_is_replaced(pool: Pool) -> None:
    # A crash after the data rename but before the record: the name can be created again.
    orphan = pool.backing_path(ids.volume_id_for("v"))
    orphan.write_bytes(b"old")
    volume = pool.create_volume("v", MiB, {})
    assert os.stat(pool.backing_path(volume.volume_id)).st_size == MiB


def test_clone_file_copies_sparse_data_exactly(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    with open(src, "wb") as f:
        f.truncate(32 * MiB)
        for offset in (0, 5 * MiB + 123, 31 * MiB):
            f.seek(offset)
            f.write(os.urandom(70_000))
    with open(src, "rb") as s, open(dst, "w+b") as d:
        clone_file(s.fileno(), d.fileno())
    assert src.read_bytes() == dst.read_bytes()
    assert allocated(dst) <= allocated(src) + 64 * 1024


def test_copies_a_crash_interrupted_are_removed_when_the_pool_opens(tmp_path: Path) -> None:
    Pool(tmp_path)
    partial = tmp_path / "volumes" / f".{ids.volume_id_for('v')}.img.partial"
    partial.write_bytes(b"half a copy")
    keep = tmp_path / "volumes" / "unrelated"
    keep.write_bytes(b"x")
    Pool(tmp_path)
    assert not partial.exists() and keep.exists()


@pytest.mark.parametrize("what", ["volume", "snapshot"])
def test_a_record_that_cannot_be_written_leaves_no_data_behind(
    pool: Pool, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    source = pool.create_volume("src", 8 * MiB, {})
    with open(pool.backing_path(source.volume_id), "r+b") as backing:
        backing.write(os.urandom(MiB))
    before = sorted([*pool.volumes.iterdir(), *pool.snapshots.iterdir()])

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("csi_vduse.pool.store.write_atomic", full)
    with pytest.raises(PoolError) as refused:
        if what == "volume":
            pool.create_volume("new", 8 * MiB, {}, source_volume_id=source.volume_id)
        else:
            pool.create_snapshot("snap", source_volume_id=source.volume_id)
    assert refused.value.errno == errno.ENOSPC
    assert sorted([*pool.volumes.iterdir(), *pool.snapshots.iterdir()]) == before


def test_records_of_an_earlier_version_load_and_save_back_in_the_same_form(pool: Pool) -> None:
    """Records are read by field name: what earlier versions wrote still loads, and a
    volume record saved back (by an expansion) keeps its form."""
    volume_id, snapshot_id = ids.volume_id_for("old"), ids.snapshot_id_for("old-snap")
    volume = {
        "capacity": MiB,
        "created_ns": 1,
        "name": "old",
        "parameters": {"blockSize": "4096"},
        "source_snapshot_id": None,
        "source_volume_id": None,
        "volume_id": volume_id,
    }
    snapshot = {
        "created_ns": 2,
        "method": "sparse-copy",
        "name": "old-snap",
        "size": MiB,
        "snapshot_id": snapshot_id,
        "source_volume_id": volume_id,
    }
    record_path = pool.volumes / f"{volume_id}.json"
    record_path.write_text(json.dumps(volume, indent=2, sort_keys=True) + "\n")
    pool.backing_path(volume_id).write_bytes(b"")
    os.truncate(pool.backing_path(volume_id), MiB)
    (pool.snapshots / f"{snapshot_id}.json").write_text(json.dumps(snapshot, indent=2))
    loaded = pool.volume(volume_id)
    assert loaded is not None and loaded.capacity == MiB and loaded.created_ns == 1
    assert loaded.parameters == {"blockSize": "4096"}
    taken = pool.snapshot(snapshot_id)
    assert taken is not None and taken.source_volume_id == volume_id
    assert taken.size == MiB and taken.method == "sparse-copy"
    pool.expand_volume(volume_id, 2 * MiB)
    volume["capacity"] = 2 * MiB
    assert record_path.read_text() == json.dumps(volume, indent=2, sort_keys=True) + "\n"


def test_a_volume_record_without_mutable_parameters_loads_and_saves_back_byte_identical(
    pool: Pool,
) -> None:
    """Records written before mutable parameters existed have none, and a save that leaves
    them empty (an expansion, a modify to nothing) writes the record in its old form."""
    volume_id = ids.volume_id_for("before-vac")
    earlier = {
        "capacity": MiB,
        "created_ns": 7,
        "name": "before-vac",
        "parameters": {},
        "source_snapshot_id": None,
        "source_volume_id": None,
        "volume_id": volume_id,
    }
    record_path = pool.volumes / f"{volume_id}.json"
    text = json.dumps(earlier, indent=2, sort_keys=True) + "\n"
    record_path.write_text(text)
    pool.backing_path(volume_id).write_bytes(b"")
    os.truncate(pool.backing_path(volume_id), MiB)
    loaded = pool.volume(volume_id)
    assert loaded is not None and loaded.mutable_parameters == {}
    pool.set_mutable_parameters(volume_id, {})
    pool.expand_volume(volume_id, MiB)
    assert record_path.read_text() == text
    # Given some, the record gains the field and keeps everything else as it was.
    pool.set_mutable_parameters(volume_id, {"maxIops": "10"})
    assert json.loads(record_path.read_text()) == {
        **earlier,
        "mutable_parameters": {"maxIops": "10"},
    }
    reloaded = pool.volume(volume_id)
    assert reloaded is not None and reloaded.mutable_parameters == {"maxIops": "10"}


def test_mutable_parameters_are_set_atomically_and_only_when_changed(pool: Pool) -> None:
    record = pool.create_volume("vac", MiB, {}, mutable_parameters={"maxIops": "5"})
    path = pool.volumes / f"{record.volume_id}.json"
    written = path.stat().st_mtime_ns, path.stat().st_ino
    pool.set_mutable_parameters(record.volume_id, {"maxIops": "5"})
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == written
    changed = pool.set_mutable_parameters(record.volume_id, {"maxIops": "6"})
    assert changed.mutable_parameters == {"maxIops": "6"}
    assert path.stat().st_ino != written[1]  # replaced by rename, never rewritten in place
    assert not list(pool.volumes.glob(".*"))
    with pytest.raises(PoolError) as missing:
        pool.set_mutable_parameters(ids.volume_id_for("nobody"), {})
    assert missing.value.errno == errno.ENOENT


def test_a_healthy_volume_has_no_problem_and_each_fault_is_named(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = pool.create_volume("health", 2 * MiB, {})
    path = pool.backing_path(record.volume_id)
    assert pool.problem(record) is None
    real = os.statvfs(pool.root)

    def statvfs_with(**changes: int) -> os.statvfs_result:
        fields = {name: getattr(real, name) for name in STATVFS_FIELDS} | changes
        return os.statvfs_result(tuple(fields.values()))

    monkeypatch.setattr(os, "statvfs", lambda _: statvfs_with(f_flag=os.ST_RDONLY))
    assert "read-only" in (pool.problem(record) or "")
    monkeypatch.setattr(os, "statvfs", lambda _: statvfs_with(f_bfree=0, f_bavail=0))
    assert "full" in (pool.problem(record) or "")
    monkeypatch.undo()
    os.truncate(path, MiB)
    assert f"{MiB} bytes, less than the volume's {2 * MiB}" in (pool.problem(record) or "")
    path.unlink()
    assert "missing" in (pool.problem(record) or "")
    gone = Pool(pool.root / "elsewhere")
    (pool.root / "elsewhere" / "volumes").rmdir()
    (pool.root / "elsewhere" / "snapshots").rmdir()
    (pool.root / "elsewhere").rmdir()
    assert "unreachable" in (gone.problem(record) or "")
