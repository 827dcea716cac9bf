"""Group snapshots in the pool: one instant for every member, nothing half-made left."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from csi_vduse.pool import ids
from csi_vduse.pool.errors import PoolError
from csi_vduse.pool.groups import GroupSnapshots
from csi_vduse.pool.store import Pool

MiB = 1 << 20


class StopError(Exception):
    """What a hold raises when its pause did not last: the copies must be thrown away."""


@pytest.fixture
def groups(tmp_path: Path) -> GroupSnapshots:
    return GroupSnapshots(Pool(tmp_path / "pool"))


def volumes(groups: GroupSnapshots, *contents: bytes) -> list[str]:
    made = []
    for index, content in enumerate(contents):
        record = groups.pool.create_volume(f"pv-{index}", MiB, {})
        with open(groups.pool.backing_path(record.volume_id), "r+b") as backing:
            backing.write(content)
        made.append(record.volume_id)
    return made


def files(pool: Pool) -> list[str]:
    return sorted(str(p.relative_to(pool.root)) for p in pool.root.rglob("*") if p.is_file())


def test_members_are_copied_inside_the_hold_and_recorded_after_it(groups: GroupSnapshots) -> None:
    pool = groups.pool
    ids_ = volumes(groups, b"first", b"second")
    seen: list[list[str]] = []

    @contextmanager
    def hold() -> Iterator[None]:
        yield
        # The copies exist by now; neither they nor any record are in place yet.
        seen.append(files(pool))
        for volume_id in ids_:
            with open(pool.backing_path(volume_id), "r+b") as backing:
                backing.write(b"changed after the instant")

    record = groups.create("nightly", ids_, parameters={"k": "v"}, hold=hold)
    assert not [
        f for f in seen[0] if f.startswith("groups/") or (f.endswith(".json") and "snap-" in f)
    ]
    assert record.group_snapshot_id == ids.group_snapshot_id_for("nightly")
    members = groups.members(record)
    assert [m.source_volume_id for m in members] == ids_
    assert {m.group_snapshot_id for m in members} == {record.group_snapshot_id}
    assert {m.created_ns for m in members} == {record.created_ns}
    for member, expected in zip(members, (b"first", b"second"), strict=True):
        assert pool.snapshot_data_path(member.snapshot_id).read_bytes()[:6].startswith(expected[:5])
    assert groups.get(record.group_snapshot_id) == record


def test_a_hold_that_fails_leaves_nothing_behind(groups: GroupSnapshots) -> None:
    pool = groups.pool
    ids_ = volumes(groups, b"a", b"b")
    before = files(pool)

    @contextmanager
    def hold() -> Iterator[None]:
        yield
        raise StopError

    with pytest.raises(StopError):
        groups.create("doomed", ids_, parameters={}, hold=hold)
    assert files(pool) == before


def test_a_record_that_cannot_be_written_takes_the_members_with_it(
    groups: GroupSnapshots, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = groups.pool
    ids_ = volumes(groups, b"a", b"b")
    before = files(pool)

    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("csi_vduse.pool.groups.write_atomic", full)
    with pytest.raises(PoolError, match="No space left"):
        groups.create("full", ids_, parameters={}, hold=nothing_held)
    assert files(pool) == before


@contextmanager
def nothing_held() -> Iterator[None]:
    yield


def test_members_of_a_group_never_recorded_are_swept_when_the_pool_opens(
    groups: GroupSnapshots,
) -> None:
    pool = groups.pool
    record = groups.create(
        "interrupted", volumes(groups, b"a", b"b"), parameters={}, hold=nothing_held
    )
    (groups.root / f"{record.group_snapshot_id}.json").unlink()  # as if the driver died
    alone = pool.create_snapshot("not in a group", source_volume_id=record.source_volume_ids[0])
    GroupSnapshots(Pool(pool.root))
    assert [s.snapshot_id for s in pool.snapshot_records()] == [alone.snapshot_id]


def test_delete_removes_the_group_then_its_members_and_is_idempotent(
    groups: GroupSnapshots,
) -> None:
    record = groups.create("gone", volumes(groups, b"a", b"b"), parameters={}, hold=nothing_held)
    assert groups.delete(record.group_snapshot_id)
    assert groups.pool.snapshot_records() == []
    assert groups.get(record.group_snapshot_id) is None
    assert not groups.delete(record.group_snapshot_id)


def test_a_retry_after_a_failure_takes_the_group_afresh(groups: GroupSnapshots) -> None:
    ids_ = volumes(groups, b"a", b"b")

    @contextmanager
    def failing() -> Iterator[None]:
        yield
        raise StopError

    with pytest.raises(StopError):
        groups.create("retried", ids_, parameters={}, hold=failing)
    record = groups.create("retried", ids_, parameters={}, hold=nothing_held)
    assert len(groups.members(record)) == 2


def test_a_group_that_lost_a_member_says_so(groups: GroupSnapshots) -> None:
    record = groups.create("damaged", volumes(groups, b"a"), parameters={}, hold=nothing_held)
    groups.pool.delete_snapshot(record.snapshot_ids[0])
    with pytest.raises(PoolError, match="lost its snapshot"):
        groups.members(record)


def test_member_records_keep_the_form_of_snapshots_outside_groups(groups: GroupSnapshots) -> None:
    pool = groups.pool
    volume_id = volumes(groups, b"a")[0]
    alone = pool.create_snapshot("alone", source_volume_id=volume_id)
    written = json.loads((pool.snapshots / f"{alone.snapshot_id}.json").read_text())
    assert "group_snapshot_id" not in written  # as every earlier version wrote it
    record = groups.create("grouped", [volume_id], parameters={}, hold=nothing_held)
    member = json.loads((pool.snapshots / f"{record.snapshot_ids[0]}.json").read_text())
    assert member["group_snapshot_id"] == record.group_snapshot_id


def test_group_ids_are_safe_and_distinct_from_other_ids() -> None:
    group = ids.group_snapshot_id_for("nightly")
    assert ids.is_group_snapshot_id(group)
    assert not ids.is_snapshot_id(group) and not ids.is_volume_id(group)
    assert not ids.is_group_snapshot_id("../" + group) and not ids.is_group_snapshot_id(
        "fake-vol-id"
    )
    member = ids.member_snapshot_id(group, volume_id="vol-" + "0" * 32)
    assert ids.is_snapshot_id(member) and member == ids.member_snapshot_id(
        group, volume_id="vol-" + "0" * 32
    )
