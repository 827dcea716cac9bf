"""The few PersistentVolume calls the driver makes, behind a Protocol the tests fake.

A ``Pv`` is the driver's view of a PersistentVolume: its name and resourceVersion, the CSI
driver and volume handle, the nodes its node affinity names for our topology key, and its
annotations. Errors are ``KubeError`` with the HTTP status (None: the server was not
reached); a watch whose resourceVersion the server no longer has raises ``WatchExpiredError``
(410 Gone), after which the caller lists again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from csi_vduse.errors import CsiVduseError

GONE = 410
EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class KubeError(CsiVduseError):
    """An API call that failed; ``status`` is the HTTP status, None when none came back."""

    def __init__(self, step: str, message: str, status: int | None = None) -> None:
        super().__init__(step, message)
        self.status = status


class WatchExpiredError(KubeError):
    """The watch's resourceVersion is too old (410 Gone): list again, then watch from there."""

    def __init__(self, message: str) -> None:
        super().__init__("watch persistentvolumes", message, GONE)


@dataclass(frozen=True, kw_only=True)
class Pv:
    name: str
    resource_version: str = ""
    driver: str = ""  # spec.csi.driver; empty for a PV that is not CSI
    volume_handle: str = ""  # spec.csi.volumeHandle
    nodes: frozenset[str] = frozenset()  # node affinity values for the topology key
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    pv: Pv


class PersistentVolumes(Protocol):
    def get(self, name: str) -> Pv | None:
        """The PV, or None when there is none of that name."""

    def list(self) -> tuple[list[Pv], str]:
        """Every PV, and the resourceVersion to watch from."""

    def watch(self, resource_version: str, *, timeout_seconds: float) -> Iterator[WatchEvent]:
        """Changes after ``resource_version``, ending after about ``timeout_seconds``."""

    def patch_annotations(
        self, name: str, annotations: Mapping[str, str | None], *, resource_version: str = ""
    ) -> Pv:
        """Merge ``annotations`` into the PV's (None removes a key), in one JSON merge patch;
        with ``resource_version``, only if the PV is still at it (else 409 Conflict)."""


def pv_from_json(raw: Mapping[str, Any], *, topology_key: str) -> Pv:
    """A PV as the API serves it (JSON), reduced to what the driver reads."""
    metadata = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    csi = spec.get("csi") or {}
    terms = ((spec.get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")
    nodes = {
        value
        for term in terms or []
        for expression in term.get("matchExpressions") or []
        if expression.get("key") == topology_key and expression.get("operator") == "In"
        for value in expression.get("values") or []
    }
    return Pv(
        name=str(metadata.get("name", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        driver=str(csi.get("driver", "")),
        volume_handle=str(csi.get("volumeHandle", "")),
        nodes=frozenset(nodes),
        annotations=dict(metadata.get("annotations") or {}),
    )
