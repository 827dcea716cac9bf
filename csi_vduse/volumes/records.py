"""What the node made for each volume, persisted so a restarted driver knows all of it.

A record's ``mode`` is the CSI access mode it was staged with, as the proto numbers it;
its ``state`` is written as the plain string, so records of earlier versions load.
"""

from __future__ import annotations

import errno
import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from csi_vduse._proto.csi_pb2 import VolumeCapability
from csi_vduse.durable import write_atomic
from csi_vduse.volumes import kinds
from csi_vduse.volumes.errors import VolumeError

# The one access mode that allows a single publication: the rule stage and publish share.
SINGLE_WRITER = VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER


class VolumeState(StrEnum):
    """Where a volume is in its life on this node: staging -> staged -> unstaging."""

    STAGING = "staging"
    STAGED = "staged"
    UNSTAGING = "unstaging"


@dataclass
class Publication:
    target: str
    readonly: bool
    mount_flags: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class NodeVolume:
    volume_id: str
    staging_path: str
    block: bool
    fs_type: str
    mount_flags: list[str]
    mode: int  # the CSI access mode it was staged with
    readonly: bool  # the device itself is read-only (a *_READER_ONLY access mode)
    state: VolumeState = VolumeState.STAGING
    device: str | None = None  # /dev/vdX once the device is up
    publications: dict[str, Publication] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = VolumeState(self.state)  # a record read back holds the plain string

    @staticmethod
    def from_json(fields: dict[str, Any]) -> NodeVolume:
        publications = {
            target: Publication(**publication)
            for target, publication in fields.pop("publications", {}).items()
        }
        return NodeVolume(**fields, publications=publications)


class NodeVolumeStore:
    """One JSON file per volume under ``<state dir>/volumes``."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "volumes"

    def _path(self, volume_id: str) -> Path:
        if not kinds.is_volume_id(volume_id):
            raise VolumeError("state directory", f"not a volume id: {volume_id!r}", errno.ENOENT)
        return self.directory / f"{volume_id}.json"

    def load(self, volume_id: str) -> NodeVolume | None:
        path = self._path(volume_id)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VolumeError("state directory", f"cannot read {path}: {exc.strerror}") from exc
        try:
            return NodeVolume.from_json(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise VolumeError("state directory", f"corrupt volume record {path}: {exc}") from exc

    def save(self, volume: NodeVolume) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path(volume.volume_id), json.dumps(asdict(volume), indent=2) + "\n")
        except OSError as exc:
            raise VolumeError(
                "state directory", f"cannot write {self._path(volume.volume_id)}: {exc.strerror}"
            ) from exc

    def remove(self, volume_id: str) -> None:
        try:
            self._path(volume_id).unlink(missing_ok=True)
        except OSError as exc:
            raise VolumeError("state directory", f"cannot remove record: {exc.strerror}") from exc

    def records(self) -> list[NodeVolume]:
        """Every volume this node has a record of, by id."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            volume = self.load(path.stem)
            if volume is not None:
                found.append(volume)
        return found
