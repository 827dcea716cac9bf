"""The ``kubernetes``-client side of the seam, over HTTP, against a small API server.

The server speaks the few PersistentVolume endpoints the driver uses (get, list, watch as
JSON lines, JSON merge patch), backed by ``FakePersistentVolumes``, so the real client
library's requests, content types and error handling are what is tested.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from csi_vduse.kube.client import MERGE_PATCH, KubePersistentVolumes
from csi_vduse.kube.volumes import KubeError, Pv, WatchExpiredError
from tests.unit.fake_kube import FakePersistentVolumes

KEY = "topology.vduse.csi/node"
PREFIX = "/api/v1/persistentvolumes"


def pv_json(pv: Pv) -> dict[str, Any]:
    terms = [{"matchExpressions": [{"key": KEY, "operator": "In", "values": sorted(pv.nodes)}]}]
    spec: dict[str, Any] = {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}}
    if pv.driver:
        spec["csi"] = {"driver": pv.driver, "volumeHandle": pv.volume_handle}
    metadata = {"name": pv.name, "resourceVersion": pv.resource_version,
                "annotations": dict(pv.annotations)}  # fmt: skip
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": metadata, "spec": spec}


def status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": "Gone" if code == 410 else "Conflict", "code": code}  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    api: FakePersistentVolumes
    content_types: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path != PREFIX:
            pv = self.api.get(url.path.removeprefix(PREFIX + "/"))
            self._send(*(200, pv_json(pv)) if pv else (404, status(404, "not found")))
        elif query.get("watch", "").lower() not in ("true", "1"):  # Go ParseBool
            items, version = self.api.list()
            listed = {"kind": "PersistentVolumeList", "metadata": {"resourceVersion": version},
                      "items": [pv_json(pv) for pv in items]}  # fmt: skip
            self._send(200, listed)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            events = self.api.watch(query["resourceVersion"],
                                    timeout_seconds=float(query["timeoutSeconds"]))  # fmt: skip
            try:
                for event in events:
                    line: dict[str, Any] = {"type": event.type, "object": pv_json(event.pv)}
                    self.wfile.write(json.dumps(line).encode() + b"\n")
                    self.wfile.flush()
            except WatchExpiredError as exc:
                line = {"type": "ERROR", "object": status(410, exc.message)}
                self.wfile.write(json.dumps(line).encode() + b"\n")
            self.close_connection = True

    def do_PATCH(self) -> None:
        self.content_types.append(self.headers["Content-Type"])
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = urlsplit(self.path).path.removeprefix(PREFIX + "/")
        metadata = body["metadata"]
        try:
            pv = self.api.patch_annotations(
                name, metadata["annotations"], resource_version=metadata.get("resourceVersion", "")
            )
        except KubeError as exc:
            self._send(exc.status or 500, status(exc.status or 500, exc.message))
            return
        self._send(200, pv_json(pv))


@pytest.fixture
def api() -> FakePersistentVolumes:
    return FakePersistentVolumes()


@pytest.fixture
def served(api: FakePersistentVolumes) -> Iterator[tuple[KubePersistentVolumes, list[str]]]:
    content_types: list[str] = []
    handler = type("BoundHandler", (Handler,), {"api": api, "content_types": content_types})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    core = client.CoreV1Api(client.ApiClient(configuration))
    yield KubePersistentVolumes(core, topology_key=KEY), content_types
    server.shutdown()
    server.server_close()


def test_get_list_and_merge_patch_go_through_the_client(
    api: FakePersistentVolumes, served: tuple[KubePersistentVolumes, list[str]]
) -> None:
    volumes, content_types = served
    stored = api.put(Pv(name="pv-1", driver="csi.vduse.dev", volume_handle="vol-1",
                        nodes=frozenset({"node-a"}), annotations={"keep": "me"}))  # fmt: skip
    assert volumes.get("pv-1") == stored
    assert volumes.get("pv-none") is None
    assert volumes.list() == ([stored], stored.resource_version)
    patched = volumes.patch_annotations(
        "pv-1", {"new": "yes", "keep": None}, resource_version=stored.resource_version
    )
    assert patched.annotations == {"new": "yes"} and content_types == [MERGE_PATCH]
    with pytest.raises(KubeError) as stale:
        volumes.patch_annotations("pv-1", {"x": "1"}, resource_version=stored.resource_version)
    assert stale.value.status == 409 and "modified" in stale.value.message


def test_watch_streams_changes_and_a_410_becomes_watch_expired(
    api: FakePersistentVolumes, served: tuple[KubePersistentVolumes, list[str]]
) -> None:
    volumes, _ = served
    api.put(Pv(name="pv-1"))
    _, version = volumes.list()
    api.put(Pv(name="pv-2", driver="csi.vduse.dev"))
    api.delete("pv-1")
    events = list(volumes.watch(version, timeout_seconds=1))
    assert [(e.type, e.pv.name, e.pv.driver) for e in events] == [
        ("ADDED", "pv-2", "csi.vduse.dev"),
        ("DELETED", "pv-1", ""),
    ]
    api.compact()
    with pytest.raises(WatchExpiredError):
        list(volumes.watch(version, timeout_seconds=1))


def test_an_api_server_that_is_not_there_is_a_kube_error_without_status() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard: nothing listens
    configuration.retries = False
    volumes = KubePersistentVolumes(client.CoreV1Api(client.ApiClient(configuration)),
                                    topology_key=KEY)  # fmt: skip
    with pytest.raises(KubeError) as failed:
        volumes.list()
    assert failed.value.status is None
