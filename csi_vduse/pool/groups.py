"""Group snapshots: snapshots of several volumes taken at one instant.

Layout under the pool root: ``groups/group-<hex>.json``, the record, naming its members; a
group exists exactly when its record does. Members are ordinary snapshots
(``snapshots/snap-<hex>.*``) whose records name their group, so ListSnapshots shows them
and CreateVolume restores from them; they go when their group goes.

Taking one: every source is opened and every copy's file made first; then, inside the
caller's ``hold`` (which pauses the volumes' I/O, so the copies are of one instant), each
source is copied (a reflink where the filesystem has them); after it, each copy is made
durable, renamed into place and recorded, and the group is recorded last. Members whose
group was never recorded (a failed or interrupted create) are removed by the next create of
the same name and when the pool is next opened.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from csi_vduse.durable import sync_directory, write_atomic
from csi_vduse.pool import ids
from csi_vduse.pool.copy import clone_file
from csi_vduse.pool.errors import PoolError
from csi_vduse.pool.store import Pool, SnapshotRecord, as_pool_error

log = logging.getLogger(__name__)

Hold = Callable[[], AbstractContextManager[object]]


@dataclass(kw_only=True)
class GroupSnapshotRecord:
    group_snapshot_id: str
    name: str
    source_volume_ids: list[str]
    snapshot_ids: list[str]  # in the order of source_volume_ids
    parameters: dict[str, str] = field(default_factory=dict)
    created_ns: int = 0


@dataclass(frozen=True, kw_only=True)
class _Member:
    volume_id: str
    snapshot_id: str
    partial: Path
    data: Path


class GroupSnapshots:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.root = pool.root / "groups"
        with as_pool_error("open pool"):
            self.root.mkdir(parents=True, exist_ok=True)
        self._remove_orphans()

    def _path(self, group_snapshot_id: str) -> Path:
        return self.root / f"{group_snapshot_id}.json"

    def get(self, group_snapshot_id: str) -> GroupSnapshotRecord | None:
        if not ids.is_group_snapshot_id(group_snapshot_id):
            return None
        path = self._path(group_snapshot_id)
        with as_pool_error("read group snapshot"):
            try:
                text = path.read_text()
            except FileNotFoundError:
                return None
        try:
            return GroupSnapshotRecord(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise PoolError("read group snapshot", f"corrupt record {path}: {exc}") from exc

    def members(self, record: GroupSnapshotRecord) -> list[SnapshotRecord]:
        """The group's snapshots; PoolError if one is gone (the pool was tampered with)."""
        found = []
        for snapshot_id in record.snapshot_ids:
            member = self.pool.snapshot(snapshot_id)
            if member is None:
                raise PoolError(
                    "read group snapshot",
                    f"{record.group_snapshot_id} lost its snapshot {snapshot_id}",
                    errno.EIO,
                )
            found.append(member)
        return found

    def create(
        self, name: str, source_volume_ids: Sequence[str], *, parameters: dict[str, str],
        hold: Hold,
    ) -> GroupSnapshotRecord:  # fmt: skip
        """Snapshot the volumes together, copying them inside ``hold``; see the module."""
        step = "create group snapshot"
        group_id = ids.group_snapshot_id_for(name)
        members = []
        for volume_id in source_volume_ids:
            snapshot_id = ids.member_snapshot_id(group_id, volume_id=volume_id)
            self.pool.delete_snapshot(snapshot_id)  # a failed attempt's
            data = self.pool.snapshot_data_path(snapshot_id)
            partial = data.with_name(f".{data.name}.partial")
            members.append(
                _Member(volume_id=volume_id, snapshot_id=snapshot_id, partial=partial, data=data)
            )
        with ExitStack() as opened, as_pool_error(step):
            copies = []
            for member in members:
                member.partial.unlink(missing_ok=True)
                opened.callback(member.partial.unlink, missing_ok=True)
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                target = os.open(member.partial, flags, 0o600)
                opened.callback(os.close, target)
                source = os.open(
                    self.pool.backing_path(member.volume_id), os.O_RDONLY | os.O_CLOEXEC
                )
                opened.callback(os.close, source)
                copies.append((source, target))
            with hold():
                created_ns = time.time_ns()
                methods = [clone_file(source, target) for source, target in copies]
            sizes = []
            for member, (_, target) in zip(members, copies, strict=True):
                os.fsync(target)
                sizes.append(os.fstat(target).st_size)
                os.replace(member.partial, member.data)
            sync_directory(self.pool.snapshots)
            record = GroupSnapshotRecord(
                group_snapshot_id=group_id, name=name, source_volume_ids=list(source_volume_ids),
                snapshot_ids=[m.snapshot_id for m in members], parameters=dict(parameters),
                created_ns=created_ns,
            )  # fmt: skip
            try:
                for member, size, method in zip(members, sizes, methods, strict=True):
                    snapshot = SnapshotRecord(
                        snapshot_id=member.snapshot_id, name=f"{name}/{member.volume_id}",
                        source_volume_id=member.volume_id, size=size, created_ns=created_ns,
                        method=method, group_snapshot_id=group_id,
                    )  # fmt: skip
                    self.pool.record_snapshot(snapshot, step=step)
                write_atomic(self._path(group_id), _dump(record))
            except BaseException:
                for member in members:
                    self.pool.delete_snapshot(member.snapshot_id)
                    member.data.unlink(missing_ok=True)
                raise
        log.info(
            "group snapshot %s of %s taken by %s", group_id, ", ".join(source_volume_ids),
            ", ".join(sorted(set(methods))),
        )  # fmt: skip
        return record

    def delete(self, group_snapshot_id: str) -> bool:
        """Remove the group and its snapshots; False when there was none. The record goes
        first: a crash then leaves members without a group, which are swept."""
        record = self.get(group_snapshot_id)
        if record is None:
            return False
        with as_pool_error("delete group snapshot"):
            self._path(group_snapshot_id).unlink(missing_ok=True)
            sync_directory(self.root)
        for snapshot_id in record.snapshot_ids:
            self.pool.delete_snapshot(snapshot_id)
        return True

    def _remove_orphans(self) -> None:
        for snapshot in self.pool.snapshot_records():
            group = snapshot.group_snapshot_id
            if group is not None and self.get(group) is None:
                log.warning(
                    "removing snapshot %s of an unfinished group %s", snapshot.snapshot_id, group
                )
                self.pool.delete_snapshot(snapshot.snapshot_id)


def _dump(record: GroupSnapshotRecord) -> str:
    return json.dumps(asdict(record), indent=2, sort_keys=True) + "\n"
