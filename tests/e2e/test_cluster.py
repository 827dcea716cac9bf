"""End to end on a real cluster with the chart installed: runs only when KUBECONFIG is set.

StorageClass -> PVC -> a pod writes -> a second pod reads -> the claim grows online ->
everything is deleted and the PV goes away. The image used for the pods is
$CSI_VDUSE_E2E_IMAGE (default busybox), the driver name $CSI_VDUSE_E2E_DRIVER.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

if not os.environ.get("KUBECONFIG"):
    pytest.skip(
        "no KUBECONFIG: the cluster end-to-end test needs a cluster", allow_module_level=True
    )

from kubernetes import client, config

IMAGE = os.environ.get("CSI_VDUSE_E2E_IMAGE", "busybox:1.36")
DRIVER = os.environ.get("CSI_VDUSE_E2E_DRIVER", "csi.vduse.dev")
TIMEOUT = float(os.environ.get("CSI_VDUSE_E2E_TIMEOUT", "300"))


def wait(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[Any, Any]]:
    config.load_kube_config()  # type: ignore[no-untyped-call]
    yield client.CoreV1Api(), client.StorageV1Api()


@pytest.fixture
def namespace(api: tuple[Any, Any]) -> Iterator[str]:
    core, _ = api
    name = f"csi-vduse-e2e-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def pod(name: str, claim: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


def test_claim_written_read_expanded_and_deleted(api: tuple[Any, Any], namespace: str) -> None:
    core, storage = api
    class_name = f"{namespace}-sc"
    storage.create_storage_class(
        client.V1StorageClass(
            metadata=client.V1ObjectMeta(name=class_name),
            provisioner=DRIVER,
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
        )
    )
    try:
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": class_name,
                    "resources": {"requests": {"storage": "64Mi"}},
                },
            },
        )
        core.create_namespaced_pod(namespace, pod("writer", "data", "echo hello > /data/f; sync"))

        def phase(name: str) -> str:
            return str(core.read_namespaced_pod(name, namespace).status.phase)

        wait("the writer pod", lambda: phase("writer") in ("Succeeded", "Failed"))
        assert phase("writer") == "Succeeded"
        core.create_namespaced_pod(
            namespace, pod("reader", "data", 'test "$(cat /data/f)" = hello; sleep 600')
        )
        wait("the reader pod", lambda: phase("reader") in ("Running", "Failed", "Succeeded"))
        assert phase("reader") == "Running"

        core.patch_namespaced_persistent_volume_claim(
            "data", namespace, {"spec": {"resources": {"requests": {"storage": "128Mi"}}}}
        )

        def grown() -> bool:
            status = core.read_namespaced_persistent_volume_claim("data", namespace).status
            return (status.capacity or {}).get("storage") == "128Mi"

        wait("the claim to grow online", grown)
        volume = core.read_namespaced_persistent_volume_claim("data", namespace).spec.volume_name

        core.delete_namespaced_pod("reader", namespace, grace_period_seconds=0)
        core.delete_namespaced_pod("writer", namespace)
        core.delete_namespaced_persistent_volume_claim("data", namespace)

        def gone() -> bool:
            return volume not in {pv.metadata.name for pv in core.list_persistent_volume().items}

        wait("the PV to be deleted", gone)
    finally:
        storage.delete_storage_class(class_name)
