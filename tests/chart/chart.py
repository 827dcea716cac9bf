"""The Helm chart rendered by Helm's own engine, and ways to look into what it made.

Rendering goes through helm-python-sdk (Helm 4's Go SDK), offline: the same template engine,
value coalescing and values.schema.json check that `helm install` runs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "csi-vduse"
RELEASE = "csi-vduse"
NAMESPACE = "kube-system"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """Every object one render produced, plus the rendered NOTES.txt."""

    objects: list[Obj]
    notes: str

    def of_kind(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> Obj:
        found = [
            obj
            for obj in self.of_kind(kind)
            if component is None
            or obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
        return found[0]

    @property
    def node(self) -> Obj:
        return self.one("DaemonSet", "node")

    @property
    def controller(self) -> Obj:
        return self.one("Deployment", "controller")

    @property
    def rbd_node(self) -> Obj:
        return self.one("DaemonSet", "rbd-node")

    @property
    def rbd_controller(self) -> Obj:
        return self.one("Deployment", "rbd-controller")

    def copy(self) -> Manifest:
        return Manifest(copy.deepcopy(self.objects), self.notes)


def render(values: Mapping[str, Any] | None = None, chart_dir: Path = CHART_DIR) -> Manifest:
    """Render the chart with ``values`` over its defaults, as release RELEASE in NAMESPACE."""
    with helm_python.Chart.load(chart_dir) as chart:
        files = chart.render(dict(values or {}), name=RELEASE, namespace=NAMESPACE)
    objects: list[Obj] = []
    notes = ""
    for name, text in sorted(files.items()):
        if name.endswith("NOTES.txt"):
            notes = text
        elif name.endswith(".yaml"):
            objects.extend(obj for obj in yaml.safe_load_all(text) if obj)
    return Manifest(objects, notes)


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> dict[str, Obj]:
    return {container["name"]: container for container in pod_spec(workload)["containers"]}


def container(workload: Obj, name: str) -> Obj:
    found = containers(workload)
    assert name in found, f"{workload['metadata']['name']} has no container {name}"
    return found[name]


def flags(container_: Obj) -> dict[str, str]:
    """``--name=value`` arguments as a mapping; a bare ``--name`` maps to ``""``."""
    parsed: dict[str, str] = {}
    for arg in container_.get("args", []):
        if arg.startswith("-"):
            name, _, value = arg.lstrip("-").partition("=")
            assert name not in parsed, f"{container_['name']}: --{name} given twice"
            parsed[name] = value
    return parsed


def feature_gates(container_: Obj) -> list[str]:
    """The ``Gate=bool`` entries of a sidecar's ``--feature-gates`` (none without one)."""
    value = flags(container_).get("feature-gates")
    return value.split(",") if value else []


def env_field_refs(container_: Obj) -> dict[str, str]:
    """Environment variables set from the downward API: name -> fieldPath."""
    return {
        env["name"]: env["valueFrom"]["fieldRef"]["fieldPath"]
        for env in container_.get("env", [])
        if "fieldRef" in env.get("valueFrom", {})
    }


def volumes(workload: Obj) -> dict[str, Obj]:
    return {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}


def mounts(container_: Obj) -> dict[str, Obj]:
    """Volume mounts by mount path."""
    return {mount["mountPath"]: mount for mount in container_.get("volumeMounts", [])}


def host_path_at(workload: Obj, container_: Obj, mount_path: str) -> str:
    """The host path a container sees at ``mount_path`` (which must be a hostPath mount)."""
    mount = mounts(container_).get(mount_path)
    assert mount is not None, f"{container_['name']} mounts nothing at {mount_path}"
    volume = volumes(workload)[mount["name"]]
    assert "hostPath" in volume, f"{mount['name']} is not a hostPath volume"
    path: str = volume["hostPath"]["path"]
    return path


def workloads(manifest: Manifest) -> Iterator[Obj]:
    yield from manifest.of_kind("DaemonSet")
    yield from manifest.of_kind("Deployment")


_ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def env_references(container_: Obj) -> set[str]:
    """Names referenced as ``$(NAME)`` in a container's args."""
    return {name for arg in container_.get("args", []) for name in _ENV_REF.findall(arg)}
