"""The pool directory: one sparse backing file and one JSON record per volume or snapshot.

Layout under the pool root::

    volumes/vol-<hex>.img     data, exposed to the node as a virtio-blk device
    volumes/vol-<hex>.json    the record; a volume exists exactly when this file does
    snapshots/snap-<hex>.img  a point-in-time copy (reflink or sparse copy) of a volume
    snapshots/snap-<hex>.json
    groups/group-<hex>.json   a group snapshot (see ``groups``)

Data files are built under a temporary name and renamed into place before the record
is written, so a crash leaves either a whole volume or an orphan file the next create
of the same name overwrites. Deletion removes the record first for the same reason.
Callers serialise operations on one id (the CSI layer's per-volume locks).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from csi_vduse.durable import sync_directory, write_atomic
from csi_vduse.pool import ids
from csi_vduse.pool.copy import clone_file
from csi_vduse.pool.errors import PoolError

log = logging.getLogger(__name__)

SIZE_ALIGNMENT = 1 << 20  # volumes are whole MiB: any logical block size divides them


@dataclass(kw_only=True)
class VolumeRecord:
    volume_id: str
    name: str
    capacity: int
    parameters: dict[str, str] = field(default_factory=dict)
    source_snapshot_id: str | None = None
    source_volume_id: str | None = None
    created_ns: int = 0
    # The VolumeAttributesClass's parameters as last set (csi.mutable reads them); records
    # written before them have none and keep that form when saved back (see ``_dump``).
    mutable_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class SnapshotRecord:
    snapshot_id: str
    name: str
    source_volume_id: str
    size: int
    created_ns: int
    method: str  # how the data was captured: "reflink" or "sparse-copy"
    group_snapshot_id: str | None = None  # taken with others, at one instant (``groups``)


R = TypeVar("R", VolumeRecord, SnapshotRecord)


@contextmanager
def as_pool_error(step: str) -> Iterator[None]:
    """An OSError of the pool's filesystem as the pool layer reports it, naming ``step``."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise PoolError(step, f"{exc.strerror or exc}{where}", exc.errno) from exc


class Pool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.volumes = root / "volumes"
        self.snapshots = root / "snapshots"
        with as_pool_error("open pool"):
            self.volumes.mkdir(parents=True, exist_ok=True)
            self.snapshots.mkdir(parents=True, exist_ok=True)
            # Copies a crash interrupted: never valid data, never referenced by a record.
            for partial in [*self.volumes.glob(".*.partial"), *self.snapshots.glob(".*.partial")]:
                log.warning("removing %s, left by an interrupted create", partial)
                partial.unlink(missing_ok=True)

    # -- volumes ------------------------------------------------------------------------

    def backing_path(self, volume_id: str) -> Path:
        return self.volumes / f"{volume_id}.img"

    def volume(self, volume_id: str) -> VolumeRecord | None:
        if not ids.is_volume_id(volume_id):
            return None
        return self._load(self.volumes / f"{volume_id}.json", VolumeRecord)

    def volume_records(self) -> list[VolumeRecord]:
        """Every volume, oldest first (the order paging walks)."""
        return self._records(self.volumes, VolumeRecord, ids.is_volume_id)

    def create_volume(
        self,
        name: str,
        capacity: int,
        parameters: dict[str, str],
        *,
        source_snapshot_id: str | None = None,
        source_volume_id: str | None = None,
        mutable_parameters: dict[str, str] | None = None,
    ) -> VolumeRecord:
        """Make a new volume of ``capacity`` bytes, filled from a source when given."""
        volume_id = ids.volume_id_for(name)
        source: Path | None = None
        if source_snapshot_id is not None:
            if self.snapshot(source_snapshot_id) is None:
                raise PoolError(
                    "create volume", f"source snapshot {source_snapshot_id} not found", errno.ENOENT
                )
            source = self.snapshots / f"{source_snapshot_id}.img"
        elif source_volume_id is not None:
            if self.volume(source_volume_id) is None:
                raise PoolError(
                    "create volume", f"source volume {source_volume_id} not found", errno.ENOENT
                )
            source = self.backing_path(source_volume_id)
        record = VolumeRecord(
            volume_id=volume_id,
            name=name,
            capacity=capacity,
            parameters=dict(parameters),
            source_snapshot_id=source_snapshot_id,
            source_volume_id=source_volume_id,
            created_ns=time.time_ns(),
            mutable_parameters=dict(mutable_parameters or {}),
        )
        data = self.backing_path(volume_id)
        self._build_data(data, size=capacity, source=source, step="create volume")
        self._write_record(
            self.volumes / f"{volume_id}.json", record, data=data, step="create volume"
        )
        log.info("created volume %s (%s) of %d bytes", volume_id, name, capacity)
        return record

    def delete_volume(self, volume_id: str) -> bool:
        if not ids.is_volume_id(volume_id):
            return False
        return self._delete(self.volumes, volume_id, step="delete volume")

    def expand_volume(self, volume_id: str, capacity: int) -> VolumeRecord:
        """Grow a volume's backing file (sparse) to ``capacity``; never shrinks."""
        record = self.volume(volume_id)
        if record is None:
            raise PoolError("expand volume", f"volume {volume_id} not found", errno.ENOENT)
        path = self.backing_path(volume_id)
        with as_pool_error("expand volume"):
            if os.stat(path).st_size < capacity:
                os.truncate(path, capacity)
            if capacity > record.capacity:
                record.capacity = capacity
                write_atomic(self.volumes / f"{volume_id}.json", _dump(record))
        return record

    def set_mutable_parameters(self, volume_id: str, mutable: dict[str, str]) -> VolumeRecord:
        """Replace a volume's mutable parameters, atomically; unchanged ones write nothing."""
        record = self.volume(volume_id)
        if record is None:
            raise PoolError("modify volume", f"volume {volume_id} not found", errno.ENOENT)
        if record.mutable_parameters != mutable:
            record.mutable_parameters = dict(mutable)
            with as_pool_error("modify volume"):
                write_atomic(self.volumes / f"{volume_id}.json", _dump(record))
        return record

    def problem(self, record: VolumeRecord) -> str | None:
        """Why the pool cannot serve a volume's data as it should, or None: its filesystem
        gone, read-only or full, or the backing file missing, unreadable or short."""
        try:
            stats = os.statvfs(self.root)
        except OSError as exc:
            return f"the pool {self.root} is unreachable: {exc.strerror}"
        path = self.backing_path(record.volume_id)
        try:
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):
                return f"the backing file {path} is not a regular file"
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.pread(fd, 1, 0)  # an I/O error of the pool's disk shows here
            finally:
                os.close(fd)
        except FileNotFoundError:
            return f"the backing file {path} is missing"
        except OSError as exc:
            return f"the backing file {path} cannot be read: {exc.strerror}"
        if info.st_size < record.capacity:
            return (
                f"the backing file {path} holds {info.st_size} bytes, "
                f"less than the volume's {record.capacity}"
            )
        if stats.f_flag & os.ST_RDONLY:
            return f"the pool's filesystem ({self.root}) is read-only"
        if stats.f_bfree == 0:
            return (
                f"the pool's filesystem ({self.root}) is full: writes to blocks "
                "the volume has not used yet fail"
            )
        return None

    # -- snapshots ----------------------------------------------------------------------

    def snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        if not ids.is_snapshot_id(snapshot_id):
            return None
        return self._load(self.snapshots / f"{snapshot_id}.json", SnapshotRecord)

    def snapshot_records(self) -> list[SnapshotRecord]:
        return self._records(self.snapshots, SnapshotRecord, ids.is_snapshot_id)

    def snapshot_data_path(self, snapshot_id: str) -> Path:
        return self.snapshots / f"{snapshot_id}.img"

    def record_snapshot(self, record: SnapshotRecord, *, step: str) -> None:
        """Record a snapshot whose data is in place; if that fails, its data goes too."""
        data = self.snapshot_data_path(record.snapshot_id)
        self._write_record(
            self.snapshots / f"{record.snapshot_id}.json", record, data=data, step=step
        )

    def create_snapshot(self, name: str, *, source_volume_id: str) -> SnapshotRecord:
        source = self.volume(source_volume_id)
        if source is None:
            raise PoolError(
                "create snapshot", f"source volume {source_volume_id} not found", errno.ENOENT
            )
        snapshot_id = ids.snapshot_id_for(name)
        path = self.snapshots / f"{snapshot_id}.img"
        method = self._build_data(
            path, size=None, source=self.backing_path(source_volume_id), step="create snapshot"
        )
        with as_pool_error("create snapshot"):
            size = os.stat(path).st_size
        record = SnapshotRecord(
            snapshot_id=snapshot_id,
            name=name,
            source_volume_id=source_volume_id,
            size=size,
            created_ns=time.time_ns(),
            method=method,
        )
        self._write_record(
            self.snapshots / f"{snapshot_id}.json", record, data=path, step="create snapshot"
        )
        log.info("snapshot %s of %s taken by %s", snapshot_id, source_volume_id, method)
        return record

    def delete_snapshot(self, snapshot_id: str) -> bool:
        if not ids.is_snapshot_id(snapshot_id):
            return False
        return self._delete(self.snapshots, snapshot_id, step="delete snapshot")

    # -- space --------------------------------------------------------------------------

    def space(self) -> tuple[int, int]:
        """(free, total) bytes of the pool's filesystem. Volumes are thin: holes take none."""
        with as_pool_error("read pool capacity"):
            stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize

    # -- helpers ------------------------------------------------------------------------

    def _build_data(self, path: Path, *, size: int | None, source: Path | None, step: str) -> str:
        """Create ``path`` from ``source`` (or empty) at ``size``, atomically."""
        partial = path.with_name(f".{path.name}.partial")
        method = "empty"
        with as_pool_error(step):
            partial.unlink(missing_ok=True)
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if source is not None:
                    src_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        method = clone_file(src_fd, fd)
                    finally:
                        os.close(src_fd)
                if size is not None:
                    if os.fstat(fd).st_size > size:
                        raise PoolError(
                            step,
                            f"the source holds {os.fstat(fd).st_size} bytes, "
                            f"more than the {size} asked for",
                            errno.EFBIG,
                        )
                    os.ftruncate(fd, size)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                partial.unlink(missing_ok=True)
                raise
            os.close(fd)
            os.replace(partial, path)
            sync_directory(path.parent)
        return method

    def _write_record(
        self, path: Path, record: VolumeRecord | SnapshotRecord, *, data: Path, step: str
    ) -> None:
        """Write a new item's record; if it could not be written, drop the data too.

        Without its record the data is nobody's, yet it may hold pool space (a copy).
        """
        with as_pool_error(step):
            try:
                write_atomic(path, _dump(record))
            except BaseException:
                if not path.exists():
                    data.unlink(missing_ok=True)
                raise

    def _delete(self, directory: Path, item_id: str, *, step: str) -> bool:
        record = directory / f"{item_id}.json"
        data = directory / f"{item_id}.img"
        with as_pool_error(step):
            existed = record.exists()
            record.unlink(missing_ok=True)
            sync_directory(directory)
            data.unlink(missing_ok=True)
        return existed

    def _load(self, path: Path, kind: type[R]) -> R | None:
        with as_pool_error("read pool record"):
            try:
                text = path.read_text()
            except FileNotFoundError:
                return None
        try:
            fields: dict[str, Any] = json.loads(text)
            return kind(**fields)
        except (ValueError, TypeError) as exc:
            raise PoolError("read pool record", f"corrupt record {path}: {exc}") from exc

    def _records(self, directory: Path, kind: type[R], valid: Any) -> list[R]:
        found: list[R] = []
        with as_pool_error("list pool"):
            paths = sorted(directory.glob("*.json"))
        for path in paths:
            if valid(path.stem) and (record := self._load(path, kind)) is not None:
                found.append(record)
        found.sort(key=lambda r: (r.created_ns, path_key(r)))
        return found


def path_key(record: VolumeRecord | SnapshotRecord) -> str:
    return record.volume_id if isinstance(record, VolumeRecord) else record.snapshot_id


# Fields later versions added: left out of a record while empty, so a record written before
# them is saved back (by an expansion, say) exactly as it was.
_OMITTED_WHEN_EMPTY = frozenset({"mutable_parameters", "group_snapshot_id"})


def _dump(record: VolumeRecord | SnapshotRecord) -> str:
    fields = {k: v for k, v in asdict(record).items() if v or k not in _OMITTED_WHEN_EMPTY}
    return json.dumps(fields, indent=2, sort_keys=True) + "\n"
