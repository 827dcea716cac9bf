"""An API server's PersistentVolumes in memory, for the modify routing tests.

It implements ``csi_vduse.kube.volumes.PersistentVolumes`` the way the API server behaves
where the driver relies on it: every write bumps one resourceVersion counter and is kept as
a watch event; a watch returns the events after its version, waits for new ones until its
timeout, and raises 410 Gone for a version older than the history keeps (``compact``); a merge
patch of annotations removes a key given None; a patch with a stale resourceVersion is a
409 Conflict; a missing PV is a 404. ``fail`` makes the next call of a method raise, as a
dropped connection or a sick server would.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Mapping
from dataclasses import replace

from csi_vduse.kube.volumes import (
    EventType,
    KubeError,
    Pv,
    WatchEvent,
    WatchExpiredError,
)


class FakePersistentVolumes:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pvs: dict[str, Pv] = {}
        self._version = 0
        self._events: list[tuple[int, WatchEvent]] = []
        self._oldest = 0  # a watch from before this version is Gone
        self._failures: defaultdict[str, deque[KubeError]] = defaultdict(deque)
        self.calls: Counter[str] = Counter()
        self.patches: list[tuple[str, dict[str, str | None]]] = []

    # -- what a test does to the cluster ---------------------------------------------------

    def put(self, pv: Pv) -> Pv:
        """Create or replace a PV (an administrator's or a provisioner's write)."""
        with self._changed:
            kind: EventType = "MODIFIED" if pv.name in self._pvs else "ADDED"
            return self._store(pv, kind)

    def delete(self, name: str) -> None:
        with self._changed:
            pv = self._pvs.pop(name)
            self._version += 1
            self._record("DELETED", replace(pv, resource_version=str(self._version)))

    def compact(self) -> None:
        """Other objects were written (resourceVersions are cluster-wide) and the history
        compacted, as etcd does: a watch from any version handed out so far gets 410."""
        with self._changed:
            self._version += 1
            self._oldest = self._version
            self._events.clear()
            self._changed.notify_all()

    def fail(self, method: str, error: KubeError) -> None:
        """Make the next call of ``method`` (get, list, watch, patch_annotations) raise."""
        self._failures[method].append(error)

    def annotations(self, name: str) -> Mapping[str, str]:
        return self._pvs[name].annotations

    # -- the PersistentVolumes protocol ----------------------------------------------------

    def get(self, name: str) -> Pv | None:
        self._enter("get")
        with self._changed:
            return self._pvs.get(name)

    def list(self) -> tuple[list[Pv], str]:
        self._enter("list")
        with self._changed:
            return list(self._pvs.values()), str(self._version)

    def watch(self, resource_version: str, *, timeout_seconds: float) -> Iterator[WatchEvent]:
        self._enter("watch")
        seen = int(resource_version)
        deadline = time.monotonic() + timeout_seconds
        while True:
            with self._changed:
                if seen < self._oldest:
                    raise WatchExpiredError(f"too old resource version: {seen}")
                news = [(v, e) for v, e in self._events if v > seen]
                if not news:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._changed.wait(left)
                    continue
            for version, event in news:
                seen = version
                yield event

    def patch_annotations(
        self, name: str, annotations: Mapping[str, str | None], *, resource_version: str = ""
    ) -> Pv:
        self._enter("patch_annotations")
        with self._changed:
            pv = self._pvs.get(name)
            if pv is None:
                raise KubeError("annotate", f"persistentvolumes {name!r} not found", 404)
            if resource_version and resource_version != pv.resource_version:
                raise KubeError("annotate", "the object has been modified", 409)
            self.patches.append((name, dict(annotations)))
            merged = {**pv.annotations, **annotations}
            kept = {k: v for k, v in merged.items() if v is not None}
            return self._store(replace(pv, annotations=kept), "MODIFIED")

    # -- inside ----------------------------------------------------------------------------

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self._failures[method]:
            raise self._failures[method].popleft()

    def _store(self, pv: Pv, kind: EventType) -> Pv:
        self._version += 1
        stored = replace(pv, resource_version=str(self._version))
        self._pvs[pv.name] = stored
        self._record(kind, stored)
        return stored

    def _record(self, kind: EventType, pv: Pv) -> None:
        self._events.append((self._version, WatchEvent(kind, pv)))
        self._changed.notify_all()
