"""End to end on a real cluster with the chart installed: runs only when KUBECONFIG is set.

StorageClass -> PVC -> a pod writes -> a second pod reads -> the claim grows online ->
everything is deleted and the PV goes away. Where the cluster serves storage.k8s.io/v1
VolumeAttributesClasses (Kubernetes 1.34+), a claim in use also moves to another class, which
needs the chart installed with volumeAttributesClasses.enabled. The image used for the pods
is $CSI_VDUSE_E2E_IMAGE (default busybox), the driver name $CSI_VDUSE_E2E_DRIVER.
"""

from __future__ import annotations

import json
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
from kubernetes.client.exceptions import ApiException

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


@pytest.fixture
def storage_class(api: tuple[Any, Any], namespace: str) -> Iterator[str]:
    _, storage = api
    name = f"{namespace}-sc"
    storage.create_storage_class(
        client.V1StorageClass(
            metadata=client.V1ObjectMeta(name=name),
            provisioner=DRIVER,
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
        )
    )
    yield name
    storage.delete_storage_class(name)


def claim(name: str, storage_class: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": "64Mi"}},
            **spec,
        },
    }


def phase(core: Any, name: str, namespace: str) -> str:
    return str(core.read_namespaced_pod(name, namespace).status.phase)


def delete_claim(core: Any, name: str, namespace: str) -> None:
    """Delete a claim whose pods are gone, and wait for its PV to go too."""
    volume = core.read_namespaced_persistent_volume_claim(name, namespace).spec.volume_name
    core.delete_namespaced_persistent_volume_claim(name, namespace)

    def gone() -> bool:
        return volume not in {pv.metadata.name for pv in core.list_persistent_volume().items}

    wait("the PV to be deleted", gone)


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


def test_claim_written_read_expanded_and_deleted(
    api: tuple[Any, Any], namespace: str, storage_class: str
) -> None:
    core, _ = api
    core.create_namespaced_persistent_volume_claim(namespace, claim("data", storage_class))
    core.create_namespaced_pod(namespace, pod("writer", "data", "echo hello > /data/f; sync"))
    wait("the writer pod", lambda: phase(core, "writer", namespace) in ("Succeeded", "Failed"))
    assert phase(core, "writer", namespace) == "Succeeded"
    core.create_namespaced_pod(
        namespace, pod("reader", "data", 'test "$(cat /data/f)" = hello; sleep 600')
    )
    wait(
        "the reader pod",
        lambda: phase(core, "reader", namespace) in ("Running", "Failed", "Succeeded"),
    )
    assert phase(core, "reader", namespace) == "Running"

    core.patch_namespaced_persistent_volume_claim(
        "data", namespace, {"spec": {"resources": {"requests": {"storage": "128Mi"}}}}
    )

    def grown() -> bool:
        status = core.read_namespaced_persistent_volume_claim("data", namespace).status
        return (status.capacity or {}).get("storage") == "128Mi"

    wait("the claim to grow online", grown)
    core.delete_namespaced_pod("reader", namespace, grace_period_seconds=0)
    core.delete_namespaced_pod("writer", namespace)
    delete_claim(core, "data", namespace)


VAC = ("storage.k8s.io", "v1", "volumeattributesclasses")


def test_a_claim_in_use_moves_to_another_attributes_class(
    api: tuple[Any, Any], namespace: str, storage_class: str
) -> None:
    """The new class's limits reach the node that holds the volume, which says so on the PV."""
    core, _ = api
    custom = client.CustomObjectsApi()
    try:
        custom.list_cluster_custom_object(*VAC)
    except ApiException as exc:
        if exc.status == 404:
            pytest.skip("no storage.k8s.io/v1 VolumeAttributesClass (Kubernetes 1.34+)")
        raise
    classes = {
        f"{namespace}-slow": {"maxIops": "100"},
        f"{namespace}-fast": {"maxIops": "2000", "maxWriteBytesPerSecond": "52428800"},
    }
    for name, parameters in classes.items():
        custom.create_cluster_custom_object(*VAC, {
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass",
            "metadata": {"name": name}, "driverName": DRIVER, "parameters": parameters,
        })  # fmt: skip
    slow, fast = classes
    try:
        core.create_namespaced_persistent_volume_claim(
            namespace, claim("data", storage_class, volumeAttributesClassName=slow)
        )
        core.create_namespaced_pod(namespace, pod("user", "data", "sleep 600"))
        wait("the pod", lambda: phase(core, "user", namespace) in ("Running", "Failed"))
        assert phase(core, "user", namespace) == "Running"

        def status() -> dict[str, Any]:
            raw = core.read_namespaced_persistent_volume_claim(
                "data", namespace, _preload_content=False
            )
            found: dict[str, Any] = json.loads(raw.data)["status"]
            return found

        core.patch_namespaced_persistent_volume_claim(
            "data", namespace, {"spec": {"volumeAttributesClassName": fast}}
        )
        wait("the new class", lambda: status().get("currentVolumeAttributesClassName") == fast)
        volume = core.read_namespaced_persistent_volume_claim("data", namespace).spec.volume_name
        annotations = core.read_persistent_volume(volume).metadata.annotations or {}
        answer = json.loads(annotations["csi-vduse.io/modify-result"])
        node = core.read_namespaced_pod("user", namespace).spec.node_name
        assert (answer["code"], answer["node"]) == ("OK", node)
        request = json.loads(annotations["csi-vduse.io/modify-request"])
        assert request["parameters"] == classes[fast]
        assert request["generation"] == answer["generation"]
        core.delete_namespaced_pod("user", namespace, grace_period_seconds=0)
        delete_claim(core, "data", namespace)
    finally:
        for name in classes:
            custom.delete_cluster_custom_object(*VAC, name)
