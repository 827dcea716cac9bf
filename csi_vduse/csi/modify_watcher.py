"""The node's half of a routed ControllerModifyVolume: watch PersistentVolumes, apply, answer.

A background thread lists and watches PersistentVolumes. A PV of this driver with a modify
request that no result answers yet (``csi_vduse.kube.modify_annotations``) is this node's
to answer when its volume is in this node's pool: the change goes through the same code
path, under the same per-volume lock, as a ControllerModifyVolume call here
(``VolumeModifier``), and the outcome is written back as a status code name. A PV whose
node affinity names this node but whose volume the pool lacks is answered NOT_FOUND;
every other PV is another node's business.

Listing first means a restarted plugin answers whatever was asked while it was down. The
list is redone every ``resync_seconds``, after a 410 Gone at once, and after any other API
error with a backoff of 1 s doubling to 30 s. A volume busy with another call (ABORTED) is
not answered but tried again a second later.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from csi_vduse import logs
from csi_vduse.csi.errors import Code, status_of
from csi_vduse.csi.modify import VolumeModifier
from csi_vduse.kube.modify_annotations import (
    OK,
    RESULT,
    ModifyRequest,
    ModifyResult,
    answer_to,
    request_of,
)
from csi_vduse.kube.volumes import KubeError, PersistentVolumes, Pv, WatchExpiredError

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404


@dataclass(frozen=True, kw_only=True)
class WatchTimings:
    resync_seconds: float = 300.0  # list everything again this often
    watch_seconds: float = 60.0  # one watch request lasts this long
    retry_seconds: float = 1.0  # a busy volume is tried again after this
    backoff_seconds: float = 1.0  # after a failed list or watch, doubling...
    max_backoff_seconds: float = 30.0  # ...up to this


class ModifyWatcher:
    def __init__(
        self,
        volumes: PersistentVolumes,
        modifier: VolumeModifier,
        *,
        driver_name: str,
        node_id: str,
        timings: WatchTimings = WatchTimings(),
    ) -> None:
        self.volumes = volumes
        self.modifier = modifier
        self.driver_name = driver_name
        self.node_id = node_id
        self.timings = timings
        self._stopping = threading.Event()
        self._busy: set[str] = set()  # PVs whose volume was busy: tried again soon
        self._thread: threading.Thread | None = None

    def start(self) -> ModifyWatcher:
        log.info("applying modify requests routed through PersistentVolumes to %s", self.node_id)
        self._thread = threading.Thread(target=self.run, name="modify-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Stop watching; a watch in flight is left to end by itself (a daemon thread)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """List and watch until stopped, starting again after any failure."""
        failures = 0
        while not self._stopping.is_set():
            try:
                self._list_and_watch()
                failures = 0
            except WatchExpiredError as exc:
                log.info("PersistentVolume watch expired (%s); listing again", exc.message)
            except Exception as exc:
                failures += 1
                delay = min(
                    self.timings.max_backoff_seconds,
                    self.timings.backoff_seconds * 2 ** (failures - 1),
                )
                log.warning(
                    "PersistentVolume list or watch failed (%s); again in %.1f s", exc, delay,
                    exc_info=not hasattr(exc, "step"),
                )  # fmt: skip
                self._stopping.wait(delay)

    def _list_and_watch(self) -> None:
        pvs, version = self.volumes.list()
        self._busy.clear()
        for pv in pvs:
            self.reconcile(pv)
        timings = self.timings
        resync_at = time.monotonic() + timings.resync_seconds
        while not self._stopping.is_set():
            left = resync_at - time.monotonic()
            if left <= 0:
                return
            wait = min(timings.retry_seconds if self._busy else timings.watch_seconds, left)
            for event in self.volumes.watch(version, timeout_seconds=wait):
                version = event.pv.resource_version or version
                if event.type == "DELETED":
                    self._busy.discard(event.pv.name)
                else:
                    self.reconcile(event.pv)
                if self._stopping.is_set():
                    return
            for name in sorted(self._busy):
                current = self.volumes.get(name)
                if current is None:
                    self._busy.discard(name)
                else:
                    self.reconcile(current)

    def reconcile(self, pv: Pv) -> None:
        """Answer the PV's pending request if it is this node's to answer."""
        waited = pv.name in self._busy
        self._busy.discard(pv.name)
        if pv.driver != self.driver_name:
            return
        request = request_of(pv.annotations)
        if request is None or answer_to(pv.annotations, request) is not None:
            return
        volume_id = pv.volume_handle
        if self.modifier.holds(volume_id):
            with logs.call_context("ControllerModifyVolume", volume=volume_id):
                self._apply(pv, request, waited=waited)
        elif self.node_id in pv.nodes:
            self._answer(
                pv,
                ModifyResult(
                    generation=request.generation,
                    code=Code.NOT_FOUND.name,
                    message=f"volume {volume_id} is not in node {self.node_id}'s pool",
                    node=self.node_id,
                ),
            )

    def _apply(self, pv: Pv, request: ModifyRequest, *, waited: bool) -> None:
        try:
            self.modifier.modify(pv.volume_handle, request.parameters)
        except Exception as exc:
            code, message = status_of(exc)
            if code == Code.ABORTED:  # another call holds the volume: a second later, again
                log.log(
                    logging.DEBUG if waited else logging.INFO,
                    "volume %s is busy with another call; request %d waits",
                    pv.volume_handle, request.generation,
                )  # fmt: skip
                self._busy.add(pv.name)
                return
            if code == Code.INTERNAL:
                log.error("volume %s: request %d failed", pv.volume_handle, request.generation,
                          exc_info=not hasattr(exc, "step"))  # fmt: skip
            result = ModifyResult(
                generation=request.generation, code=code.name, message=message, node=self.node_id
            )
        else:
            result = ModifyResult(
                generation=request.generation, code=OK, message="applied", node=self.node_id
            )
        self._answer(pv, result)

    def _answer(self, pv: Pv, result: ModifyResult) -> None:
        try:
            self.volumes.patch_annotations(pv.name, {RESULT: result.encode()})
        except KubeError as exc:
            if exc.status != HTTP_NOT_FOUND:
                raise
            log.info("PV %s is gone; request %d needs no answer", pv.name, result.generation)
            return
        log.info(
            "volume %s: answered request %d on PV %s: %s %s",
            pv.volume_handle, result.generation, pv.name, result.code, result.message,
        )  # fmt: skip
