"""ControllerModifyVolume on the central controller, which sees no pool: routed to the node.

external-resizer has no node mode, so it calls the central instance. With
``--extra-modify-metadata`` it adds the PersistentVolume's name to the mutable parameters;
the router checks the parameters, finds the PV, records the change on it
(``csi_vduse.kube.modify_annotations``) and waits for the node whose pool holds the volume
to answer there (``modify_watcher``). The call returns what the node answered; without an
answer in time it is UNAVAILABLE, and the resizer's retry, with the same parameters, writes
nothing new and waits for the same answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import grpc

from csi_vduse.csi import mutable
from csi_vduse.csi.errors import Code, RpcError, invalid, not_found
from csi_vduse.kube.modify_annotations import (
    REQUEST,
    ModifyRequest,
    ModifyResult,
    answer_to,
    next_generation,
    request_of,
)
from csi_vduse.kube.volumes import PersistentVolumes, Pv

log = logging.getLogger(__name__)

PV_NAME = "csi.storage.k8s.io/pv/name"  # external-resizer --extra-modify-metadata
# external-resizer's own default --timeout is 10 s; the call's deadline also bounds the wait.
DEFAULT_TIMEOUT = 8.0
DEADLINE_MARGIN = 2.0  # answer this long before the caller's deadline
POLL_SECONDS = 0.5


def code_named(name: str) -> grpc.StatusCode:
    """The status code a node reported by name; INTERNAL for a name gRPC does not know."""
    return Code.__members__.get(name, Code.INTERNAL)


class ModifyRouter:
    def __init__(
        self,
        volumes: PersistentVolumes,
        driver_name: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.volumes = volumes
        self.driver_name = driver_name
        self.timeout = timeout
        self.poll_seconds = poll_seconds

    def modify(
        self,
        volume_id: str,
        mutable_parameters: Mapping[str, str],
        *,
        time_remaining: float | None = None,
    ) -> None:
        """Have the volume's node apply ``mutable_parameters``; return once it has.

        INVALID_ARGUMENT for bad parameters or no PV name (nothing is written then),
        NOT_FOUND when the PV is not this driver's volume ``volume_id``, the node's own code
        when it refused, UNAVAILABLE when it did not answer within the timeout (or a little
        before the caller's deadline, ``time_remaining`` seconds away)."""
        changes = mutable.check(dict(mutable_parameters))
        pv_name = mutable_parameters.get(PV_NAME, "")
        if not pv_name:
            raise invalid(
                f"no {PV_NAME} among the mutable parameters: the central controller finds a "
                "volume's node through its PersistentVolume, so external-resizer must run "
                "with --extra-modify-metadata"
            )
        pv = self._volume(pv_name, volume_id=volume_id)
        if not changes:  # keys left out change nothing, so none changes nothing
            return
        request = request_of(pv.annotations)
        if request is None or dict(request.parameters) != changes or self._refused(pv, request):
            request = ModifyRequest(next_generation(pv.annotations), changes)
            pv = self.volumes.patch_annotations(
                pv.name, {REQUEST: request.encode()}, resource_version=pv.resource_version
            )
            log.info(
                "volume %s: asked its node for mutable parameters %s on PV %s (request %d)",
                volume_id, changes, pv.name, request.generation,
            )  # fmt: skip
        wait = self.timeout if time_remaining is None else time_remaining - DEADLINE_MARGIN
        answer = self._answer(pv, request, wait=max(0.0, min(self.timeout, wait)))
        if not answer.ok:
            raise RpcError(code_named(answer.code), f"node {answer.node}: {answer.message}")
        log.info(
            "volume %s: node %s applied request %d", volume_id, answer.node, request.generation
        )

    def _volume(self, pv_name: str, *, volume_id: str) -> Pv:
        pv = self.volumes.get(pv_name)
        if pv is None:
            raise not_found(f"PersistentVolume {pv_name} does not exist")
        if pv.driver != self.driver_name or pv.volume_handle != volume_id:
            raise not_found(
                f"PersistentVolume {pv_name} is not volume {volume_id} of {self.driver_name} "
                f"(it is {pv.volume_handle or 'no CSI volume'} of {pv.driver or 'no CSI driver'})"
            )
        return pv

    @staticmethod
    def _refused(pv: Pv, request: ModifyRequest) -> bool:
        """The node answered this very request with an error: a retry asks it again."""
        answer = answer_to(pv.annotations, request)
        return answer is not None and not answer.ok

    def _answer(self, pv: Pv, request: ModifyRequest, *, wait: float) -> ModifyResult:
        """The node's answer to ``request``, read from the PV every ``poll_seconds``."""
        volume_id = pv.volume_handle
        deadline = time.monotonic() + wait
        while True:
            answer = answer_to(pv.annotations, request)
            if answer is not None:
                return answer
            if request_of(pv.annotations) != request:
                raise RpcError(
                    Code.ABORTED,
                    f"another change to volume {volume_id} replaced request {request.generation}",
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise RpcError(
                    Code.UNAVAILABLE,
                    f"the node holding volume {volume_id} (PV {pv.name}"
                    + (f", node {', '.join(sorted(pv.nodes))}" if pv.nodes else "")
                    + f") has not applied request {request.generation} within {wait:.1f} s; "
                    "is its plugin running with --modify-routing?",
                )
            time.sleep(min(self.poll_seconds, left))
            pv = self._volume(pv.name, volume_id=volume_id)
