"""``PersistentVolumes`` through the ``kubernetes`` client, configured in-cluster or from
KUBECONFIG.

Requests take raw JSON (``_preload_content=False``) and reduce it with ``pv_from_json``, so
nothing depends on the client's model classes, which change between its releases. Every
failure becomes a ``KubeError`` (``WatchExpiredError`` for 410 Gone) carrying the HTTP status
and the server's short message, never a request body or a credential.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from csi_vduse.kube.volumes import GONE, KubeError, Pv, WatchEvent, WatchExpiredError, pv_from_json

T = TypeVar("T")
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a call to a sick API server fails, not hangs
CONNECT_TIMEOUT = 5.0
MERGE_PATCH = "application/merge-patch+json"
EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED")


def _reason(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{exc.status} {exc.reason}" + (f": {message}" if message else "")


def _call(step: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except ApiException as exc:
        if exc.status == GONE:
            raise WatchExpiredError(_reason(exc)) from exc
        raise KubeError(step, _reason(exc), exc.status) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeError(step, f"the API server did not answer: {exc}") from exc


def _json(response: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(response.data)
    return value


class KubePersistentVolumes:
    def __init__(self, core: Any, *, topology_key: str) -> None:
        self._core = core
        self._topology_key = topology_key

    def _pv(self, raw: Mapping[str, Any]) -> Pv:
        return pv_from_json(raw, topology_key=self._topology_key)

    def get(self, name: str) -> Pv | None:
        try:
            raw = _call(
                f"get PersistentVolume {name}",
                lambda: _json(
                    self._core.read_persistent_volume(
                        name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                    )
                ),
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return self._pv(raw)

    def list(self) -> tuple[list[Pv], str]:
        raw = _call(
            "list PersistentVolumes",
            lambda: _json(
                self._core.list_persistent_volume(
                    _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            ),
        )
        version = str((raw.get("metadata") or {}).get("resourceVersion", ""))
        return [self._pv(item) for item in raw.get("items") or []], version

    def watch(self, resource_version: str, *, timeout_seconds: float) -> Iterator[WatchEvent]:
        seconds = max(1, math.ceil(timeout_seconds))
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self._core.list_persistent_volume,
            resource_version=resource_version,
            timeout_seconds=seconds,  # the server ends the watch; no client-side retries
            _request_timeout=(CONNECT_TIMEOUT, seconds + 15.0),
        )
        events = iter(stream)
        while True:
            event = _call("watch PersistentVolumes", lambda: next(events, None))
            if event is None:
                return
            if event.get("type") in EVENT_TYPES:
                yield WatchEvent(event["type"], self._pv(event["raw_object"]))

    def patch_annotations(
        self, name: str, annotations: Mapping[str, str | None], *, resource_version: str = ""
    ) -> Pv:
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        raw = _call(
            f"annotate PersistentVolume {name}",
            lambda: _json(
                self._core.patch_persistent_volume(
                    name,
                    {"metadata": metadata},
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            ),
        )
        return self._pv(raw)


def connect(*, topology_key: str) -> KubePersistentVolumes:
    """The API server this process runs under (in-cluster), else the one KUBECONFIG (or
    ~/.kube/config) names; KubeError when there is neither."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError, TypeError) as exc:
            raise KubeError(
                "connect to Kubernetes",
                f"neither an in-cluster service account nor a usable KUBECONFIG: {exc}",
            ) from exc
    return KubePersistentVolumes(client.CoreV1Api(), topology_key=topology_key)
