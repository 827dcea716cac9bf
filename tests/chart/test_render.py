"""The chart lints clean and every object it renders is valid Kubernetes, for every value set,
on the oldest and the newest Kubernetes minor the chart supports."""

from __future__ import annotations

import json
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.chart import CHART_DIR, Manifest, Obj, render
from tests.chart.scenarios import SCENARIOS

# Chart.yaml's kubeVersion floor, and the newest minor kubernetes-validate ships schemas for.
OLDEST = "1.30"
NEWEST = "1.37"

# VolumeSnapshotClass is a CRD (external-snapshotter's volumesnapshotclasses CRD), so
# Kubernetes' own schemas lack it; these are the v1 CRD's structural rules.
VOLUME_SNAPSHOT_CLASS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "driver", "deletionPolicy"],
    "properties": {
        "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
        "kind": {"const": "VolumeSnapshotClass"},
        "metadata": {"type": "object", "required": ["name"]},
        "driver": {"type": "string", "minLength": 1},
        "deletionPolicy": {"enum": ["Delete", "Retain"]},
        "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


# VolumeGroupSnapshotClass is a CRD too (groupsnapshot.storage.k8s.io, external-snapshotter's
# volumegroupsnapshotclasses CRD); the same structural rules in its v1beta1, v1beta2 and v1.
VOLUME_GROUP_SNAPSHOT_CLASS_SCHEMA: dict[str, Any] = {
    **VOLUME_SNAPSHOT_CLASS_SCHEMA,
    "properties": {
        **VOLUME_SNAPSHOT_CLASS_SCHEMA["properties"],
        "apiVersion": {
            "enum": [
                f"groupsnapshot.storage.k8s.io/{version}"
                for version in ("v1", "v1beta2", "v1beta1")
            ]
        },
        "kind": {"const": "VolumeGroupSnapshotClass"},
    },
}
CRD_SCHEMAS = {
    "VolumeSnapshotClass": VOLUME_SNAPSHOT_CLASS_SCHEMA,
    "VolumeGroupSnapshotClass": VOLUME_GROUP_SNAPSHOT_CLASS_SCHEMA,
}


@cache
def rendered(scenario: str) -> Manifest:
    return render(SCENARIOS[scenario])


@cache
def _validate(version: str, obj_json: str) -> None:
    obj = json.loads(obj_json)
    if obj["kind"] in CRD_SCHEMAS:
        jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, f"{version}.0", strict=True)


def validate(obj: Obj, version: str) -> None:
    """Validate against the bundled API schema of ``version`` (strict: no unknown fields)."""
    _validate(version, json.dumps(obj, sort_keys=True))


def test_chart_supports_the_versions_tested() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={OLDEST}.0-0"
    assert kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version()) == (
        NEWEST
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_is_clean(scenario: str) -> None:
    report = helm_python.lint(CHART_DIR, SCENARIOS[scenario], strict=True, namespace="kube-system")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_valid(scenario: str, version: str) -> None:
    manifest = rendered(scenario)
    assert manifest.objects
    for obj in manifest.objects:
        try:
            validate(obj, version)
        except (jsonschema.ValidationError, kubernetes_validate.utils.ValidationError) as exc:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            pytest.fail(f"{name} invalid on Kubernetes {version}: {exc.message} at {exc.path}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_objects_are_named_once_and_namespaced_in_the_release(scenario: str) -> None:
    manifest = rendered(scenario)
    cluster_scoped = {
        "CSIDriver",
        "StorageClass",
        "VolumeSnapshotClass",
        "VolumeGroupSnapshotClass",
    }
    cluster_scoped |= {"ClusterRole", "ClusterRoleBinding"}
    seen: set[tuple[str, str]] = set()
    for obj in manifest.objects:
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)
        namespace = obj["metadata"].get("namespace")
        assert namespace == (None if obj["kind"] in cluster_scoped else "kube-system"), key
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "csi-vduse", key


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_notes_render(scenario: str) -> None:
    notes = rendered(scenario).notes
    assert "modprobe vduse" in notes
    assert "<no value>" not in notes


def test_an_invalid_object_is_caught() -> None:
    daemonset = rendered("defaults").node
    broken = json.loads(json.dumps(daemonset))
    broken["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        validate(broken, OLDEST)
    snapshot_class = rendered("defaults").one("VolumeSnapshotClass")
    broken = {**snapshot_class, "deletionPolicy": "Keep"}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, NEWEST)
    group_class = rendered("group-snapshots").one("VolumeGroupSnapshotClass")
    broken = {**group_class, "apiVersion": "snapshot.storage.k8s.io/v1"}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, NEWEST)


def test_a_broken_template_is_caught(tmp_path: Path) -> None:
    chart = tmp_path / "csi-vduse"
    shutil.copytree(CHART_DIR, chart)
    template = chart / "templates" / "csidriver.yaml"
    template.write_text(
        template.read_text().replace("{{ .Values.driverName }}", "{{ .Values.driverName")
    )
    report = helm_python.lint(chart, strict=True)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"])
    with pytest.raises(helm_python.HelmError):
        render({}, chart_dir=chart)


def test_a_value_outside_the_schema_is_refused() -> None:
    for bad in (
        {"logLevel": "verbose"},
        {"logFormat": "xml"},
        {"kubeletDir": "var/lib/kubelet"},
        {"storageClasses": [{"name": "x", "fsType": "btrfs"}]},
        {"storageClasses": [{"name": "x", "blockSize": "1024"}]},
        {"storageClasses": [{"name": "x", "numQueues": "4"}]},
        {"driverName": "-bad-"},
        {"metrics": {"port": 70000}},
        {"sidecars": {"provisioner": {"timeout": "soon"}}},
        {"nodeSelector": {"a": "b"}},
        {"volumeAttributesClasses": {"enabled": "true"}},
        {"volumeAttributesClasses": {"enable": True}},
        {"snapshots": {"groupSnapshots": {"enabled": 1}}},
        {"volumeGroupSnapshotClass": {"enabled": "yes"}},
        {"volumeGroupSnapshotClass": {"maxPauseMilliseconds": 0}},
        {"volumeGroupSnapshotClass": {"maxPauseMilliseconds": 60001}},
        {"volumeGroupSnapshotClass": {"maxPauseMilliseconds": "5000"}},
        {"rbd": {"storageClasses": [{"name": "x", "pool": "p"}]}},  # no clusterID
        {"rbd": {"storageClasses": [{"name": "x", "clusterID": "c", "pool": "a/b"}]}},
        {
            "rbd": {
                "storageClasses": [
                    {"name": "x", "clusterID": "c", "pool": "p", "imageFeatures": "journal"}
                ]
            }
        },
        {"rbd": {"clusters": [{"clusterID": "c"}]}},  # no monitors
        {"rbd": {"keyDir": "run/keys"}},
        {"volumeGroupSnapshotClass": {"apiVersion": "groupsnapshot.storage.k8s.io/v2"}},
        {"volumeGroupSnapshotClass": {"deletionPolicy": "Keep"}},
    ):
        with pytest.raises(helm_python.HelmValuesError, match=re.escape(next(iter(bad)))):
            render(bad)
