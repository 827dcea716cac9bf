"""The pods are wired the way the driver and the kubelet need: sidecar arguments that match the
driver's flags and socket, the registration path the kubelet dials, host network, privileges
and mount propagation where (and only where) the driver needs them.

Each check is a plain function that raises AssertionError, so the tests at the bottom can show
that a wrong argument or a wrong mount is caught.
"""

from __future__ import annotations

import copy
import json
import posixpath
from functools import cache
from typing import Any

import helm_python
import pytest

from csi_vduse import cli
from tests.chart.chart import (
    NAMESPACE,
    RELEASE,
    Manifest,
    Obj,
    container,
    containers,
    env_field_refs,
    env_references,
    feature_gates,
    flags,
    host_path_at,
    mounts,
    pod_spec,
    render,
    volumes,
    workloads,
)
from tests.chart.scenarios import SCENARIOS

# `csi-vduse serve` as the driver defines it (issue 4 and the lead's interface): flag -> takes
# a value. The chart may pass nothing else.
SERVE_FLAGS = {
    "endpoint": True,
    "node-id": True,
    "state-dir": True,
    "pool-dir": True,
    "controller": False,
    "driver-name": True,
    "log-level": True,
    "log-format": True,
    "metrics-address": True,
    "max-volumes": True,
    "dataplane-cgroup": True,
    "modify-routing": False,
    "modify-timeout": True,
    "node": False,
    "ceph-clusters": True,
    "ceph-controller-secret": True,
    "ceph-key-dir": True,
}
SIDECARS = ("node-driver-registrar", "liveness-probe", "csi-provisioner", "csi-snapshotter")


@cache
def rendered(scenario: str) -> Manifest:
    return render(SCENARIOS[scenario])


def values(scenario: str) -> dict[str, Any]:
    """The scenario's effective values for the keys these checks read."""
    given = SCENARIOS[scenario]
    return {
        "driverName": given.get("driverName", "csi.vduse.dev"),
        "kubeletDir": given.get("kubeletDir", "/var/lib/kubelet").rstrip("/"),
        "stateDir": given.get("stateDir", "/var/lib/csi-vduse/state"),
        "poolDir": given.get("poolDir", "/var/lib/csi-vduse/pool"),
        "attributesClasses": given.get("volumeAttributesClasses", {}).get("enabled", False),
        "groupSnapshots": given.get("snapshots", {}).get("enabled", True)
        and given.get("snapshots", {}).get("groupSnapshots", {}).get("enabled", False),
        "rbd": given.get("rbd", {}).get("enabled", False),
        "rbdDriverName": given.get("rbd", {}).get("driverName", "rbd.csi.vduse.dev"),
        "rbdStateDir": given.get("rbd", {}).get("stateDir", "/var/lib/csi-vduse/rbd-state"),
        "rbdKeyDir": given.get("rbd", {}).get("keyDir", "/run/csi-vduse/ceph-keys"),
        "rbdClusters": given.get("rbd", {}).get("clustersConfigMap") or f"{RELEASE}-ceph-clusters",
        "rbdSnapshots": given.get("rbd", {}).get("snapshots", {}).get("enabled", True),
        "rbdSecret": given.get("rbd", {}).get("secret", {}).get("name", "csi-rbd-secret"),
        "rbdSnapshotClass": given.get("rbd", {})
        .get("volumeSnapshotClass", {})
        .get("name", "csi-vduse-rbd"),
    }


def socket_of(workload: Obj) -> str:
    """The socket path the driver serves on inside its container (from --endpoint)."""
    endpoint = flags(container(workload, "csi-vduse"))["endpoint"]
    assert endpoint.startswith("unix:///"), f"--endpoint {endpoint} is not an absolute unix URL"
    return endpoint.removeprefix("unix://")


def check_serve_args(workload: Obj, node: bool, *, rbd: bool = False) -> None:
    """The node-local driver's plugins serve the Controller too, and the node alone a pool;
    the RBD driver's node serves only Node (--node) and its controller only Controller,
    both reading the clusters file, and neither a pool."""
    plugin = container(workload, "csi-vduse")
    args = plugin["args"]
    assert args[0] == "serve", args
    for name, value in flags(plugin).items():
        assert name in SERVE_FLAGS, f"csi-vduse serve has no --{name}"
        assert SERVE_FLAGS[name] == (value != ""), f"--{name}: value {value!r}"
    given = flags(plugin)
    for required in ("endpoint", "node-id", "state-dir", "driver-name"):
        assert required in given, f"csi-vduse serve without --{required}"
    if rbd:
        assert "pool-dir" not in given, "--pool-dir on the RBD driver"
        assert "ceph-clusters" in given, "the RBD driver without --ceph-clusters"
        assert ("node" in given) == node and ("controller" in given) != node, given
        assert ("ceph-key-dir" in given) == node, "--ceph-key-dir is the RBD node's"
    else:
        assert "controller" in given, "csi-vduse serve without --controller"
        for flag in ("node", "ceph-clusters", "ceph-key-dir"):
            assert flag not in given, f"--{flag} on the node-local driver"
        # --pool-dir turns the Node service on; the central controller must not serve a
        # pool (it would answer NOT_FOUND for every node's volume).
        assert ("pool-dir" in given) == node, (
            f"--pool-dir on the {'node' if node else 'controller'}"
        )
    assert given["node-id"] == "$(NODE_NAME)"
    assert env_field_refs(plugin).get("NODE_NAME") == "spec.nodeName"


def check_env_references_resolve(workload: Obj) -> None:
    for name, item in containers(workload).items():
        defined = {env["name"] for env in item.get("env", [])}
        missing = env_references(item) - defined
        assert not missing, f"{name} refers to undefined $({', '.join(sorted(missing))})"


def check_sidecars_share_the_socket(workload: Obj) -> None:
    socket = socket_of(workload)
    socket_dir = posixpath.dirname(socket)
    plugin = container(workload, "csi-vduse")
    plugin_volume = mounts(plugin)[socket_dir]["name"]
    for name, item in containers(workload).items():
        if name == "csi-vduse":
            continue
        address = flags(item).get("csi-address")
        assert address == socket, f"{name} dials {address}, the driver serves {socket}"
        mount = mounts(item).get(socket_dir)
        assert mount is not None and mount["name"] == plugin_volume, (
            f"{name} does not see the driver's socket directory {socket_dir}"
        )


def check_registration(workload: Obj, kubelet_dir: str, driver: str) -> None:
    """The kubelet finds the driver at <kubelet dir>/plugins/<driver>/csi.sock on the host."""
    plugin = container(workload, "csi-vduse")
    registrar = container(workload, "node-driver-registrar")
    expected = f"{kubelet_dir}/plugins/{driver}/csi.sock"
    assert flags(registrar)["kubelet-registration-path"] == expected
    socket = socket_of(workload)
    host_dir = host_path_at(workload, plugin, posixpath.dirname(socket))
    assert posixpath.join(host_dir, posixpath.basename(socket)) == expected, (
        f"the driver's socket is {host_dir} on the host, the kubelet dials {expected}"
    )
    assert host_path_at(workload, registrar, "/registration") == f"{kubelet_dir}/plugins_registry"


def check_node_privileges(workload: Obj, kubelet_dir: str) -> None:
    spec = pod_spec(workload)
    assert spec.get("hostNetwork") is True, "vdpa netlink needs the host network namespace"
    assert spec.get("dnsPolicy") == "ClusterFirstWithHostNet"
    assert spec.get("hostPID") is True, "dataplanes must not die with the plugin's PID namespace"
    plugin = container(workload, "csi-vduse")
    assert plugin["securityContext"].get("privileged") is True
    plugin_mounts = mounts(plugin)
    for path in ("/dev", "/sys", "/lib/modules"):
        assert host_path_at(workload, plugin, path) == path, f"{path} is not the host's"
    assert plugin_mounts["/lib/modules"].get("readOnly") is True
    assert host_path_at(workload, plugin, kubelet_dir) == kubelet_dir


def check_propagation(manifest: Manifest, kubelet_dir: str) -> None:
    """Bidirectional on each node plugin's kubelet dir mount and nowhere else in the chart."""
    found = []
    for workload in workloads(manifest):
        for name, item in containers(workload).items():
            for path, mount in mounts(item).items():
                if mount.get("mountPropagation", "None") != "None":
                    found.append((workload["kind"], name, path, mount["mountPropagation"]))
    daemonsets = len(manifest.of_kind("DaemonSet"))
    assert found == [("DaemonSet", "csi-vduse", kubelet_dir, "Bidirectional")] * daemonsets, found


def check_state_and_pool(workload: Obj, state_dir: str, pool_dir: str) -> None:
    plugin = container(workload, "csi-vduse")
    given = flags(plugin)
    assert given["state-dir"] == state_dir and given["pool-dir"] == pool_dir
    assert host_path_at(workload, plugin, state_dir) == state_dir
    assert host_path_at(workload, plugin, pool_dir) == pool_dir
    for path in (state_dir, pool_dir):
        volume = volumes(workload)[mounts(plugin)[path]["name"]]
        assert volume["hostPath"]["type"] == "DirectoryOrCreate"


def check_node_mode_sidecars(workload: Obj) -> None:
    provisioner = container(workload, "csi-provisioner")
    given = flags(provisioner)
    assert "Topology=true" in feature_gates(provisioner), given.get("feature-gates")
    for name, value in {
        "node-deployment": "true",
        "node-deployment-immediate-binding": "false",
        "leader-election": "false",
        "strict-topology": "true",
        "enable-capacity": "true",
        "capacity-ownerref-level": "1",
    }.items():
        assert given.get(name) == value, f"csi-provisioner --{name}={given.get(name)}"
    assert env_field_refs(provisioner) == {
        "NODE_NAME": "spec.nodeName",
        "POD_NAME": "metadata.name",
        "NAMESPACE": "metadata.namespace",
    }
    sidecars = containers(workload)
    if "csi-snapshotter" in sidecars:
        snapshotter = sidecars["csi-snapshotter"]
        assert flags(snapshotter).get("node-deployment") == "true"
        assert flags(snapshotter).get("leader-election") == "false"
        assert env_field_refs(snapshotter) == {"NODE_NAME": "spec.nodeName"}


def check_feature_gates(workload: Obj, attributes_classes: bool, group_snapshots: bool) -> None:
    """Each sidecar gets one --feature-gates (flags() refuses a second) naming exactly the
    gates the values turned on."""
    sidecars = containers(workload)
    if "csi-provisioner" in sidecars:
        provisioner = feature_gates(sidecars["csi-provisioner"])
        expected = ["Topology=true"] + (
            ["VolumeAttributesClass=true"] if attributes_classes else []
        )
        assert provisioner == expected, f"csi-provisioner --feature-gates={','.join(provisioner)}"
    if "csi-snapshotter" in sidecars:
        snapshotter = feature_gates(sidecars["csi-snapshotter"])
        expected = ["CSIVolumeGroupSnapshot=true"] if group_snapshots else []
        assert snapshotter == expected, f"csi-snapshotter --feature-gates={','.join(snapshotter)}"
    if "csi-resizer" in sidecars:
        resizer = feature_gates(sidecars["csi-resizer"])
        expected = ["VolumeAttributesClass=true"] if attributes_classes else []
        assert resizer == expected, f"csi-resizer --feature-gates={','.join(resizer)}"


def check_modify_routing(manifest: Manifest, attributes_classes: bool) -> None:
    """A class changed on a bound claim reaches the node: the resizer passes the PV's name,
    both drivers route (the central one waiting as long as the resizer waits for it), or
    none of it."""
    node, controller = manifest.node, manifest.controller
    for workload in (node, controller):
        routing = "modify-routing" in flags(container(workload, "csi-vduse"))
        assert routing == attributes_classes, f"{workload['kind']} --modify-routing={routing}"
    resizer = flags(container(controller, "csi-resizer"))
    assert ("extra-modify-metadata" in resizer) == attributes_classes, "--extra-modify-metadata"
    central = flags(container(controller, "csi-vduse"))
    assert "modify-timeout" not in flags(container(node, "csi-vduse"))
    if attributes_classes:
        assert seconds(central["modify-timeout"]) == seconds(resizer["timeout"]), (
            f"--modify-timeout={central['modify-timeout']}, the resizer's --timeout is "
            f"{resizer['timeout']}"
        )
    else:
        assert "modify-timeout" not in central


def seconds(duration: str) -> float:
    """A Go duration of one unit (``10s``, ``500ms``, ``1m``), as the sidecars take them."""
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * scale
    raise ValueError(f"not a duration: {duration!r}")


def check_health_and_metrics(workload: Obj, manifest: Manifest, *, services: bool = True) -> None:
    """The probe and metrics ports agree; ``services``: the chart's metrics Services select
    this workload."""
    plugin = container(workload, "csi-vduse")
    ports = {port["name"]: port["containerPort"] for port in plugin["ports"]}
    probe = container(workload, "liveness-probe")
    assert int(flags(probe)["health-port"]) == ports["healthz"]
    assert plugin["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    # The sidecar answers a slow Probe with a failure before the kubelet gives up on it.
    assert seconds(flags(probe)["probe-timeout"]) < plugin["livenessProbe"]["timeoutSeconds"]
    address = flags(plugin).get("metrics-address")
    if address is None:
        assert "metrics" not in ports
        assert not [
            s for s in manifest.of_kind("Service") if s["metadata"]["name"].endswith("-metrics")
        ]
        return
    host, _, port = address.rpartition(":")
    assert host == "$(POD_IP)" and env_field_refs(plugin)["POD_IP"] == "status.podIP"
    assert int(port) == ports["metrics"]
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert annotations["prometheus.io/port"] == port
    for service in manifest.of_kind("Service") if services else []:
        assert service["spec"]["ports"][0]["port"] == int(port)
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]


def check_controller(workload: Obj) -> None:
    """A central Deployment: unprivileged, no host access, a leader-elected resizer."""
    spec = pod_spec(workload)
    assert not spec.get("hostNetwork"), "the central controller needs no host network"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert all("hostPath" not in volume for volume in volumes(workload).values())
    for name, item in containers(workload).items():
        assert not item.get("securityContext", {}).get("privileged"), name
    resizer = container(workload, "csi-resizer")
    assert flags(resizer)["leader-election"] == "true"
    assert flags(resizer)["handle-volume-inuse-error"] == "false"


def check_driver_name(manifest: Manifest, driver: str, rbd_driver: str | None = None) -> None:
    """Each object of the RBD driver (component rbd*) names ``rbd_driver``, every other
    ``driver``."""

    def expected(obj: Obj) -> str:
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
        if component.startswith("rbd"):
            assert rbd_driver is not None, f"{obj['kind']} {obj['metadata']['name']}"
            return rbd_driver
        return driver

    assert {obj["metadata"]["name"] for obj in manifest.of_kind("CSIDriver")} == (
        {driver} if rbd_driver is None else {driver, rbd_driver}
    )
    for csi_driver in manifest.of_kind("CSIDriver"):
        assert csi_driver["metadata"]["name"] == expected(csi_driver)
    for workload in workloads(manifest):
        assert flags(container(workload, "csi-vduse"))["driver-name"] == expected(workload)
    for storage_class in manifest.of_kind("StorageClass"):
        assert storage_class["provisioner"] == expected(storage_class)
    for kind in ("VolumeSnapshotClass", "VolumeGroupSnapshotClass"):
        for snapshot_class in manifest.of_kind(kind):
            assert snapshot_class["driver"] == expected(snapshot_class)


def check_all(manifest: Manifest, scenario_values: dict[str, Any]) -> None:
    node, controller = manifest.node, manifest.controller
    kubelet_dir = scenario_values["kubeletDir"]
    check_serve_args(node, node=True)
    check_serve_args(controller, node=False)
    for workload in (node, controller):
        check_env_references_resolve(workload)
        check_sidecars_share_the_socket(workload)
    check_registration(node, kubelet_dir, scenario_values["driverName"])
    check_node_privileges(node, kubelet_dir)
    check_propagation(manifest, kubelet_dir)
    check_state_and_pool(node, scenario_values["stateDir"], scenario_values["poolDir"])
    check_node_mode_sidecars(node)
    for workload in (node, controller):
        check_feature_gates(
            workload, scenario_values["attributesClasses"], scenario_values["groupSnapshots"]
        )
    check_modify_routing(manifest, scenario_values["attributesClasses"])
    check_health_and_metrics(node, manifest)
    check_controller(controller)
    if scenario_values["rbd"]:
        check_rbd(manifest, scenario_values)
    check_driver_name(
        manifest,
        scenario_values["driverName"],
        scenario_values["rbdDriverName"] if scenario_values["rbd"] else None,
    )


def check_rbd(manifest: Manifest, scenario_values: dict[str, Any]) -> None:
    """The RBD driver's node plugin and central controller."""
    node, controller = manifest.rbd_node, manifest.rbd_controller
    kubelet_dir = scenario_values["kubeletDir"]
    check_serve_args(node, node=True, rbd=True)
    check_serve_args(controller, node=False, rbd=True)
    for workload in (node, controller):
        check_env_references_resolve(workload)
        check_sidecars_share_the_socket(workload)
        check_clusters_file(workload, scenario_values["rbdClusters"])
    check_registration(node, kubelet_dir, scenario_values["rbdDriverName"])
    check_node_privileges(node, kubelet_dir)
    check_rbd_state_and_keys(node, scenario_values["rbdStateDir"], scenario_values["rbdKeyDir"])
    assert set(containers(node)) == {"csi-vduse", "node-driver-registrar", "liveness-probe"}
    check_health_and_metrics(node, manifest, services=False)
    check_controller(controller)
    check_central_provisioner(controller)
    if not scenario_values["rbdSnapshots"]:
        assert "csi-snapshotter" not in containers(controller)
        assert not [c for c in manifest.of_kind("VolumeSnapshotClass")
                    if c["driver"] == scenario_values["rbdDriverName"]]  # fmt: skip
        return
    check_central_snapshotter(controller)
    snapshot_class = manifest.one("VolumeSnapshotClass", "rbd")
    assert snapshot_class["metadata"]["name"] == scenario_values["rbdSnapshotClass"]
    assert snapshot_class["driver"] == scenario_values["rbdDriverName"]
    secret = scenario_values["rbdSecret"]
    assert snapshot_class["parameters"] == {
        "csi.storage.k8s.io/snapshotter-secret-name": secret,
        "csi.storage.k8s.io/snapshotter-secret-namespace": NAMESPACE,
    }


def check_clusters_file(workload: Obj, config_map: str) -> None:
    """--ceph-clusters reads config.json of the ConfigMap the values name."""
    plugin = container(workload, "csi-vduse")
    path = flags(plugin)["ceph-clusters"]
    directory, name = posixpath.split(path)
    volume = volumes(workload)[mounts(plugin)[directory]["name"]]
    assert volume["configMap"]["name"] == config_map, volume
    assert {"key": "config.json", "path": name} in volume["configMap"]["items"], volume


def check_rbd_state_and_keys(workload: Obj, state_dir: str, key_dir: str) -> None:
    plugin = container(workload, "csi-vduse")
    given = flags(plugin)
    assert given["state-dir"] == state_dir and given["ceph-key-dir"] == key_dir
    for path in (state_dir, key_dir):
        assert host_path_at(workload, plugin, path) == path, f"{path} is not the host's"
        volume = volumes(workload)[mounts(plugin)[path]["name"]]
        assert volume["hostPath"]["type"] == "DirectoryOrCreate"


def check_central_provisioner(workload: Obj) -> None:
    """RBD volumes are made centrally: one leader-elected provisioner for the cluster, with
    no topology (every node reaches an image) and no capacity of a node's to track."""
    provisioner = container(workload, "csi-provisioner")
    given = flags(provisioner)
    assert given.get("leader-election") == "true"
    for flag in ("node-deployment", "enable-capacity", "strict-topology", "feature-gates"):
        assert flag not in given, f"csi-provisioner --{flag} on the central provisioner"
    assert given.get("extra-create-metadata") == "true"
    assert given.get("leader-election-namespace") == "$(NAMESPACE)"


def check_central_snapshotter(workload: Obj) -> None:
    """RBD snapshots are taken centrally too, by one leader-elected csi-snapshotter that
    watches no group snapshots (the RBD driver serves no GroupController)."""
    given = flags(container(workload, "csi-snapshotter"))
    assert given.get("leader-election") == "true"
    assert given.get("leader-election-namespace") == "$(NAMESPACE)"
    assert "node-deployment" not in given
    assert given.get("feature-gates") == "CSIVolumeGroupSnapshot=false"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_wired_for_the_driver(scenario: str) -> None:
    check_all(rendered(scenario), values(scenario))


def test_csidriver_is_node_local() -> None:
    spec = rendered("defaults").one("CSIDriver")["spec"]
    assert spec == {
        "attachRequired": False,
        "podInfoOnMount": True,
        "volumeLifecycleModes": ["Persistent"],
        "fsGroupPolicy": "File",
        "storageCapacity": True,
    }


def test_node_pod_runs_the_node_mode_sidecars() -> None:
    assert set(containers(rendered("defaults").node)) == {"csi-vduse", *SIDECARS}
    assert "csi-snapshotter" not in containers(rendered("no-snapshots").node)
    assert set(containers(rendered("defaults").controller)) == {"csi-vduse", "csi-resizer"}


def test_storage_classes_bind_on_first_consumer() -> None:
    (default,) = rendered("defaults").of_kind("StorageClass")
    assert default["volumeBindingMode"] == "WaitForFirstConsumer"
    assert default["allowVolumeExpansion"] is True
    assert default["parameters"] == {"csi.storage.k8s.io/fstype": "ext4"}
    xfs, ext4 = sorted(
        rendered("classes").of_kind("StorageClass"), key=lambda sc: sc["metadata"]["name"]
    )[::-1]
    assert xfs["parameters"] == {
        "csi.storage.k8s.io/fstype": "xfs",
        "blockSize": "4096",
        "numQueues": "4",
        "packedRings": "true",
        "example.org/extra": "1",
    }
    assert xfs["reclaimPolicy"] == "Retain" and xfs["allowVolumeExpansion"] is False
    assert xfs["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert ext4["parameters"] == {"csi.storage.k8s.io/fstype": "ext4", "blockSize": "512"}
    assert all(sc["volumeBindingMode"] == "WaitForFirstConsumer" for sc in (xfs, ext4))
    assert rendered("no-classes").of_kind("StorageClass") == []


def test_opt_in_features_add_nothing_by_default() -> None:
    manifest = rendered("defaults")
    assert flags(container(manifest.node, "csi-provisioner"))["feature-gates"] == "Topology=true"
    assert "feature-gates" not in flags(container(manifest.node, "csi-snapshotter"))
    assert manifest.of_kind("VolumeGroupSnapshotClass") == []
    resizer = flags(container(manifest.controller, "csi-resizer"))
    assert "feature-gates" not in resizer and "extra-modify-metadata" not in resizer
    for workload in (manifest.node, manifest.controller):
        assert "modify-routing" not in flags(container(workload, "csi-vduse"))


def test_attributes_classes_gate_both_sidecars_and_route_modifies_to_the_node() -> None:
    manifest = rendered("attributes-classes")
    provisioner = container(manifest.node, "csi-provisioner")
    gates = [arg for arg in provisioner["args"] if arg.startswith("--feature-gates")]
    assert gates == ["--feature-gates=Topology=true,VolumeAttributesClass=true"]
    resizer = container(manifest.controller, "csi-resizer")
    assert {"--extra-modify-metadata", "--feature-gates=VolumeAttributesClass=true"} <= set(
        resizer["args"]
    )
    assert "--modify-timeout=2m" in container(manifest.controller, "csi-vduse")["args"]
    assert "--modify-routing" in container(manifest.node, "csi-vduse")["args"]


def test_group_snapshots_gate_the_snapshotter_and_make_the_class() -> None:
    manifest = rendered("group-snapshots")
    snapshotter = container(manifest.node, "csi-snapshotter")
    gates = [arg for arg in snapshotter["args"] if arg.startswith("--feature-gates")]
    assert gates == ["--feature-gates=CSIVolumeGroupSnapshot=true"]
    assert manifest.one("VolumeGroupSnapshotClass") == {
        "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2",
        "kind": "VolumeGroupSnapshotClass",
        "metadata": {
            "name": "vduse-groups",
            "labels": manifest.one("VolumeGroupSnapshotClass")["metadata"]["labels"],
        },
        "driver": "csi.vduse.dev",
        "deletionPolicy": "Retain",
        "parameters": {"maxPauseMilliseconds": "250"},
    }


def test_group_snapshot_class_defaults_and_what_it_needs() -> None:
    on = {"snapshots": {"groupSnapshots": {"enabled": True}}}
    (made,) = render({**on, "volumeGroupSnapshotClass": {"enabled": True}}).of_kind(
        "VolumeGroupSnapshotClass"
    )
    assert made["apiVersion"] == "groupsnapshot.storage.k8s.io/v1"
    assert made["metadata"]["name"] == "csi-vduse-group"
    assert made["deletionPolicy"] == "Delete"
    assert made["parameters"] == {"maxPauseMilliseconds": "5000"}
    assert render(on).of_kind("VolumeGroupSnapshotClass") == []
    # A class without a snapshotter that serves it is not made.
    for values_ in (
        {"volumeGroupSnapshotClass": {"enabled": True}},
        {
            "snapshots": {"enabled": False, "groupSnapshots": {"enabled": True}},
            "volumeGroupSnapshotClass": {"enabled": True},
        },
    ):
        manifest = render(values_)
        assert manifest.of_kind("VolumeGroupSnapshotClass") == []
        for item in containers(manifest.node).values():
            assert "CSIVolumeGroupSnapshot=true" not in feature_gates(item)


def test_plugin_args_parse_with_the_driver_cli() -> None:
    """The driver's own parser accepts exactly what the chart passes."""
    parser = cli.build_parser()
    for scenario in SCENARIOS:
        for workload in workloads(rendered(scenario)):
            args = [
                arg.replace("$(NODE_NAME)", "node-1").replace("$(POD_IP)", "127.0.0.1")
                for arg in container(workload, "csi-vduse")["args"]
            ]
            parser.parse_args(args)


# The checks catch what they are meant to catch.


def test_a_wrong_registration_path_is_caught() -> None:
    manifest = rendered("defaults").copy()
    registrar = container(manifest.node, "node-driver-registrar")
    registrar["args"] = [
        arg.replace("/plugins/csi.vduse.dev/", "/plugins/other.driver/")
        for arg in registrar["args"]
    ]
    with pytest.raises(AssertionError, match=r"kubelet-registration-path|csi\.sock"):
        check_registration(manifest.node, "/var/lib/kubelet", "csi.vduse.dev")


def test_a_sidecar_on_another_socket_is_caught() -> None:
    manifest = rendered("defaults").copy()
    container(manifest.node, "csi-provisioner")["args"][1] = "--csi-address=/csi/other.sock"
    with pytest.raises(AssertionError, match=r"dials /csi/other\.sock"):
        check_sidecars_share_the_socket(manifest.node)


def test_a_pool_on_the_central_controller_is_caught() -> None:
    manifest = rendered("defaults").copy()
    container(manifest.controller, "csi-vduse")["args"].append("--pool-dir=/x")
    with pytest.raises(AssertionError, match="--pool-dir on the controller"):
        check_serve_args(manifest.controller, node=False)


def test_an_unknown_driver_flag_is_caught() -> None:
    manifest = rendered("defaults").copy()
    container(manifest.node, "csi-vduse")["args"].append("--nodeid=x")
    with pytest.raises(AssertionError, match="no --nodeid"):
        check_serve_args(manifest.node, node=True)


def test_propagation_outside_the_kubelet_dir_is_caught() -> None:
    manifest = rendered("defaults").copy()
    mounts(container(manifest.node, "node-driver-registrar"))["/registration"][
        "mountPropagation"
    ] = "Bidirectional"
    with pytest.raises(AssertionError):
        check_propagation(manifest, "/var/lib/kubelet")


def test_a_node_plugin_without_host_network_is_caught() -> None:
    manifest = rendered("defaults").copy()
    pod_spec(manifest.node)["hostNetwork"] = False
    with pytest.raises(AssertionError, match="host network"):
        check_node_privileges(manifest.node, "/var/lib/kubelet")


def test_a_second_feature_gates_flag_is_caught() -> None:
    manifest = rendered("attributes-classes").copy()
    provisioner = container(manifest.node, "csi-provisioner")
    provisioner["args"] = [
        arg.replace(",VolumeAttributesClass=true", "") for arg in provisioner["args"]
    ] + ["--feature-gates=VolumeAttributesClass=true"]
    with pytest.raises(AssertionError, match="--feature-gates given twice"):
        check_feature_gates(manifest.node, attributes_classes=True, group_snapshots=False)


def test_a_gate_the_values_did_not_ask_for_is_caught() -> None:
    manifest = rendered("defaults").copy()
    container(manifest.node, "csi-snapshotter")["args"].append(
        "--feature-gates=CSIVolumeGroupSnapshot=true"
    )
    with pytest.raises(AssertionError, match="csi-snapshotter --feature-gates"):
        check_feature_gates(manifest.node, attributes_classes=False, group_snapshots=False)


def test_a_resizer_that_does_not_name_the_pv_is_caught() -> None:
    manifest = rendered("attributes-classes").copy()
    resizer = container(manifest.controller, "csi-resizer")
    resizer["args"].remove("--extra-modify-metadata")
    with pytest.raises(AssertionError, match="--extra-modify-metadata"):
        check_modify_routing(manifest, attributes_classes=True)


def test_a_central_wait_longer_than_the_resizers_is_caught() -> None:
    manifest = rendered("attributes-classes").copy()
    args = container(manifest.controller, "csi-vduse")["args"]
    args[:] = [arg.replace("--modify-timeout=2m", "--modify-timeout=5m") for arg in args]
    with pytest.raises(AssertionError, match="the resizer's --timeout"):
        check_modify_routing(manifest, attributes_classes=True)


def test_a_kubelet_probe_shorter_than_the_sidecars_is_caught() -> None:
    manifest = rendered("defaults").copy()
    container(manifest.node, "csi-vduse")["livenessProbe"]["timeoutSeconds"] = 1
    with pytest.raises(AssertionError):
        check_health_and_metrics(manifest.node, manifest)


def test_rbd_volumes_are_off_by_default() -> None:
    for obj in rendered("defaults").objects:
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
        assert not component.startswith("rbd"), f"{obj['kind']} {obj['metadata']['name']}"


def test_rbd_volumes_get_a_driver_classes_clusters_and_secret_of_their_own() -> None:
    manifest = rendered("rbd")
    (rbd_driver,) = [
        d for d in manifest.of_kind("CSIDriver") if d["metadata"]["name"] == "rbd.vduse.example.org"
    ]
    assert rbd_driver["spec"] == {
        "attachRequired": False,
        "podInfoOnMount": True,
        "volumeLifecycleModes": ["Persistent"],
        "fsGroupPolicy": "File",
        "storageCapacity": False,
    }
    classes = {
        sc["metadata"]["name"]: sc
        for sc in manifest.of_kind("StorageClass")
        if sc["provisioner"] == "rbd.vduse.example.org"
    }
    secrets = {
        f"csi.storage.k8s.io/{use}-secret-{field}": value
        for use in ("provisioner", "controller-expand", "node-stage")
        for field, value in (("name", "other-user"), ("namespace", "ceph"))
    }
    fast = classes["ceph-fast"]
    assert fast["parameters"] == {
        "backend": "rbd",
        "clusterID": "east-1",
        "pool": "fast",
        "imageFeatures": "layering,exclusive-lock",
        "dataPool": "ec-data",
        "csi.storage.k8s.io/fstype": "xfs",
        "numQueues": "2",
        **secrets,
    }
    assert fast["volumeBindingMode"] == "WaitForFirstConsumer"
    assert fast["reclaimPolicy"] == "Retain" and fast["allowVolumeExpansion"] is False
    assert fast["mountOptions"] == ["noatime"]
    plain = classes["ceph"]
    assert plain["volumeBindingMode"] == "Immediate" and plain["allowVolumeExpansion"] is True
    assert plain["parameters"]["csi.storage.k8s.io/node-stage-secret-name"] == "ceph-user"
    assert plain["parameters"]["csi.storage.k8s.io/node-stage-secret-namespace"] == NAMESPACE
    assert "imageFeatures" not in plain["parameters"]  # the driver's default
    (config,) = manifest.of_kind("ConfigMap")
    assert json.loads(config["data"]["config.json"]) == SCENARIOS["rbd"]["rbd"]["clusters"]
    (secret,) = manifest.of_kind("Secret")
    assert secret["metadata"]["name"] == "ceph-user"
    assert secret["stringData"] == {
        "userID": "kubernetes",
        "userKey": SCENARIOS["rbd"]["rbd"]["secret"]["userKey"],
    }
    assert set(containers(manifest.rbd_controller)) == {
        "csi-vduse",
        "csi-provisioner",
        "csi-resizer",
        "csi-snapshotter",
    }
    snapshot_class = manifest.one("VolumeSnapshotClass", "rbd")
    assert snapshot_class["deletionPolicy"] == "Retain"
    assert snapshot_class["metadata"]["annotations"] == {
        "snapshot.storage.kubernetes.io/is-default-class": "true"
    }
    assert manifest.rbd_controller["spec"]["replicas"] == 2


def test_rbd_volumes_can_use_ceph_csis_config_map_and_a_secret_made_elsewhere() -> None:
    manifest = rendered("rbd-from-ceph-csi")
    assert manifest.of_kind("ConfigMap") == [] and manifest.of_kind("Secret") == []
    for workload in (manifest.rbd_node, manifest.rbd_controller):
        check_clusters_file(workload, "ceph-csi-config")


def own_secret_of(workload: Obj) -> str | None:
    """The Secret whose userID and userKey --ceph-controller-secret reads, if it is given."""
    plugin = container(workload, "csi-vduse")
    path = flags(plugin).get("ceph-controller-secret")
    if path is None:
        return None
    volume = volumes(workload)[mounts(plugin)[path]["name"]]
    assert mounts(plugin)[path].get("readOnly") is True
    paths = {item["path"] for item in volume["secret"]["items"]}
    assert paths == {"userID", "userKey"}, volume
    # A missing Secret must not keep the pod (and CreateVolume with it) from starting.
    assert volume["secret"].get("optional") is True, volume
    return str(volume["secret"]["secretName"])


def test_the_rbd_controller_has_a_secret_of_its_own_for_the_calls_that_carry_none() -> None:
    assert own_secret_of(rendered("rbd").rbd_controller) == "ceph-lister"
    assert own_secret_of(rendered("rbd-from-ceph-csi").rbd_controller) == "csi-rbd-secret"
    values = copy.deepcopy(SCENARIOS["rbd"])
    values["rbd"]["controller"]["ownSecret"] = ""
    assert own_secret_of(render(values).rbd_controller) == "ceph-user"  # rbd.secret.name
    values["rbd"]["controller"]["ownSecret"] = "-"
    controller = render(values).rbd_controller
    assert own_secret_of(controller) is None
    assert "ceph-own-secret" not in volumes(controller)


def test_an_rbd_secret_to_create_needs_its_user_and_key() -> None:
    with pytest.raises(helm_python.HelmError, match=r"rbd\.secret\.userKey is required"):
        render(
            {
                "rbd": {
                    "enabled": True,
                    "clustersConfigMap": "ceph-csi-config",
                    "secret": {"create": True, "userID": "kubernetes"},
                }
            }
        )


def test_a_central_provisioner_in_node_mode_is_caught() -> None:
    manifest = rendered("rbd").copy()
    container(manifest.rbd_controller, "csi-provisioner")["args"].append("--node-deployment=true")
    with pytest.raises(AssertionError, match="--node-deployment on the central provisioner"):
        check_central_provisioner(manifest.rbd_controller)


def test_an_rbd_node_plugin_given_a_pool_is_caught() -> None:
    manifest = rendered("rbd").copy()
    container(manifest.rbd_node, "csi-vduse")["args"].append("--pool-dir=/x")
    with pytest.raises(AssertionError, match="--pool-dir on the RBD driver"):
        check_serve_args(manifest.rbd_node, node=True, rbd=True)


@pytest.mark.parametrize(
    ("clash", "words"),
    [
        ({"rbd": {"stateDir": "/var/lib/csi-vduse/state"}}, "rbd.stateDir must differ"),
        ({"rbd": {"node": {"healthPort": 9821}}}, "must differ: both node plugins"),
        ({"rbd": {"node": {"metricsPort": 9820}}}, "must differ: both node plugins"),
    ],
)
def test_node_plugins_that_would_share_records_or_host_ports_are_refused(
    clash: dict[str, Any], words: str
) -> None:
    given = {"rbd": {"enabled": True, "clustersConfigMap": "ceph-csi-config"}}
    given["rbd"].update(clash["rbd"])
    with pytest.raises(helm_python.HelmError, match=words):
        render(given)
