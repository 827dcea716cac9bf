"""Each pod's ServiceAccount holds exactly the permissions its containers use: the union of
what each sidecar needs (after the sidecars' upstream RBAC, in the mode the chart runs them),
for the driver itself only what routing ControllerModifyVolume needs when it is on, and
nothing else."""

from __future__ import annotations

from functools import cache

import pytest

from tests.chart.chart import (
    NAMESPACE,
    Manifest,
    Obj,
    containers,
    feature_gates,
    flags,
    pod_spec,
    render,
    workloads,
)
from tests.chart.scenarios import SCENARIOS

# (scope, apiGroup, resource, verb); scope is "cluster" or the namespace of a Role.
Permission = tuple[str, str, str, str]

READ = ("get", "list", "watch")
EVENTS = ("list", "watch", "create", "update", "patch")
LEASES = ("get", "watch", "list", "delete", "update", "create")


def grant(
    scope: str, group: str, resources: tuple[str, ...], verbs: tuple[str, ...]
) -> set[Permission]:
    return {(scope, group, resource, verb) for resource in resources for verb in verbs}


# external-provisioner in node-deployment mode with capacity tracking: no leader election,
# no attach (attachRequired is false), no secrets; CSIStorageCapacity owned by the DaemonSet.
PROVISIONER = (
    grant(
        "cluster", "", ("persistentvolumes",), ("get", "list", "watch", "create", "patch", "delete")
    )
    | grant("cluster", "", ("persistentvolumeclaims",), ("get", "list", "watch", "update"))
    | grant("cluster", "", ("events",), EVENTS)
    | grant("cluster", "", ("nodes",), READ)
    | grant(
        "cluster", "storage.k8s.io", ("storageclasses", "csinodes", "volumeattributesclasses"), READ
    )
    | grant(
        "cluster",
        "snapshot.storage.k8s.io",
        ("volumesnapshots", "volumesnapshotcontents"),
        ("get", "list"),
    )
    | grant(
        NAMESPACE,
        "storage.k8s.io",
        ("csistoragecapacities",),
        ("get", "list", "watch", "create", "update", "patch", "delete"),
    )
    | grant(NAMESPACE, "", ("pods",), ("get",))
    | grant(NAMESPACE, "apps", ("daemonsets",), ("get",))
)
# csi-snapshotter in node-deployment mode: no leader election.
SNAPSHOTTER = (
    grant("cluster", "", ("events",), EVENTS)
    | grant("cluster", "snapshot.storage.k8s.io", ("volumesnapshotclasses",), READ)
    | grant(
        "cluster",
        "snapshot.storage.k8s.io",
        ("volumesnapshotcontents",),
        ("create", "get", "list", "watch", "update", "delete", "patch"),
    )
    | grant(
        "cluster",
        "snapshot.storage.k8s.io",
        ("volumesnapshotcontents/status",),
        ("update", "patch"),
    )
)
# csi-snapshotter with CSIVolumeGroupSnapshot on: the group contents the snapshot-controller
# hands it (upstream's rbac-csi-snapshotter.yaml).
GROUP_SNAPSHOTTER = (
    grant("cluster", "groupsnapshot.storage.k8s.io", ("volumegroupsnapshotclasses",), READ)
    | grant(
        "cluster",
        "groupsnapshot.storage.k8s.io",
        ("volumegroupsnapshotcontents",),
        ("get", "list", "watch", "update", "patch"),
    )
    | grant(
        "cluster",
        "groupsnapshot.storage.k8s.io",
        ("volumegroupsnapshotcontents/status",),
        ("update", "patch"),
    )
)
# external-resizer, central, with leader election.
RESIZER = (
    grant("cluster", "", ("persistentvolumes",), ("get", "list", "watch", "patch"))
    | grant("cluster", "", ("persistentvolumeclaims",), READ)
    | grant("cluster", "", ("persistentvolumeclaims/status",), ("patch",))
    | grant("cluster", "", ("pods",), READ)
    | grant("cluster", "", ("events",), EVENTS)
    | grant("cluster", "storage.k8s.io", ("volumeattributesclasses",), READ)
    | grant(NAMESPACE, "coordination.k8s.io", ("leases",), LEASES)
)
# csi-vduse serve --modify-routing: the central one reads a PV and writes the change on it;
# a node plugin watches PVs and answers on them.
# external-provisioner run centrally (RBD volumes): no topology and no capacity tracking, so
# no nodes, csinodes, CSIStorageCapacities or owner lookups; leader election instead.
CENTRAL_PROVISIONER = (
    grant(
        "cluster", "", ("persistentvolumes",), ("get", "list", "watch", "create", "patch", "delete")
    )
    | grant("cluster", "", ("persistentvolumeclaims",), ("get", "list", "watch", "update"))
    | grant("cluster", "", ("events",), EVENTS)
    | grant("cluster", "storage.k8s.io", ("storageclasses", "volumeattributesclasses"), READ)
    | grant(
        "cluster",
        "snapshot.storage.k8s.io",
        ("volumesnapshots", "volumesnapshotcontents"),
        ("get", "list"),
    )
    | grant(NAMESPACE, "coordination.k8s.io", ("leases",), LEASES)
)
# A sidecar passing the StorageClasses' secrets (the RBD driver's) reads them.
SECRETS = grant("cluster", "", ("secrets",), ("get",))
CENTRAL_ROUTING = grant("cluster", "", ("persistentvolumes",), ("get", "patch"))
NODE_ROUTING = grant("cluster", "", ("persistentvolumes",), ("get", "list", "watch", "patch"))
NEEDS: dict[str, set[Permission]] = {
    "csi-vduse": set(),
    "node-driver-registrar": set(),
    "liveness-probe": set(),
    "csi-provisioner": PROVISIONER,
    "csi-snapshotter": SNAPSHOTTER,
    "csi-resizer": RESIZER,
}


@cache
def rendered(scenario: str) -> Manifest:
    return render(SCENARIOS[scenario])


def rules_of(manifest: Manifest, kind: str, name: str, namespace: str | None) -> list[Obj]:
    for role in manifest.of_kind(kind):
        if role["metadata"]["name"] == name and role["metadata"].get("namespace") == namespace:
            rules: list[Obj] = role["rules"]
            return rules
    raise AssertionError(f"{kind} {name} is bound but not rendered")


def granted(manifest: Manifest, service_account: str, namespace: str) -> set[Permission]:
    """Every permission the bindings in ``manifest`` give to the ServiceAccount."""
    permissions: set[Permission] = set()
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for binding in manifest.of_kind(kind):
            subjects = binding.get("subjects", [])
            if not any(
                s["kind"] == "ServiceAccount"
                and s["name"] == service_account
                and s.get("namespace") == namespace
                for s in subjects
            ):
                continue
            ref = binding["roleRef"]
            assert ref["apiGroup"] == "rbac.authorization.k8s.io"
            role_namespace = (
                None if ref["kind"] == "ClusterRole" else binding["metadata"]["namespace"]
            )
            scope = "cluster" if kind == "ClusterRoleBinding" else binding["metadata"]["namespace"]
            for rule in rules_of(manifest, ref["kind"], ref["name"], role_namespace):
                assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            assert "*" not in (group, resource, verb), f"wildcard in {ref['name']}"
                            permissions.add((scope, group, resource, verb))
    return permissions


def needs(name: str, container_: Obj, driver: Obj) -> set[Permission]:
    """What one container uses, given the features its arguments, and those of the
    ``driver`` container next to it, turn on."""
    needed = set(NEEDS[name])
    args = flags(container_)
    if name == "csi-provisioner" and args.get("node-deployment") != "true":
        needed = set(CENTRAL_PROVISIONER)
    if name == "csi-snapshotter" and args.get("leader-election") == "true":  # central
        needed |= grant(NAMESPACE, "coordination.k8s.io", ("leases",), LEASES)
    if name in ("csi-provisioner", "csi-resizer", "csi-snapshotter") and "ceph-clusters" in flags(
        driver
    ):
        needed |= SECRETS
    if name == "csi-vduse" and "modify-routing" in args:
        needed |= NODE_ROUTING if "pool-dir" in args else CENTRAL_ROUTING
    # csi-snapshotter v8.7 watches group snapshots unless its gate is turned off.
    if name == "csi-snapshotter" and "CSIVolumeGroupSnapshot=false" not in feature_gates(
        container_
    ):
        needed |= GROUP_SNAPSHOTTER
    return needed


def check_least_privilege(manifest: Manifest) -> None:
    accounts = {sa["metadata"]["name"] for sa in manifest.of_kind("ServiceAccount")}
    used = set()
    for workload in workloads(manifest):
        account = pod_spec(workload)["serviceAccountName"]
        assert account in accounts, f"{workload['metadata']['name']} runs as missing {account}"
        assert account not in used, f"{account} is shared between workloads"
        used.add(account)
        items = containers(workload)
        needed = set().union(
            *(needs(name, item, items["csi-vduse"]) for name, item in items.items())
        )
        given = granted(manifest, account, NAMESPACE)
        assert given - needed == set(), (
            f"{account} may do more than it uses: {sorted(given - needed)}"
        )
        assert needed - given == set(), f"{account} lacks {sorted(needed - given)}"
    assert used == accounts, f"ServiceAccounts no pod uses: {accounts - used}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_pod_has_exactly_the_permissions_its_sidecars_use(scenario: str) -> None:
    check_least_privilege(rendered(scenario))


def test_snapshotter_permissions_go_with_the_snapshotter() -> None:
    manifest = rendered("no-snapshots")
    account = pod_spec(manifest.node)["serviceAccountName"]
    assert granted(manifest, account, NAMESPACE) == PROVISIONER


def test_group_snapshot_permissions_go_with_the_snapshotter() -> None:
    for scenario in ("defaults", "group-snapshots"):
        manifest = rendered(scenario)
        account = pod_spec(manifest.node)["serviceAccountName"]
        expected = PROVISIONER | SNAPSHOTTER | GROUP_SNAPSHOTTER
        assert granted(manifest, account, NAMESPACE) == expected, scenario
    # Without a snapshotter, asking for group snapshots grants nothing.
    manifest = render({"snapshots": {"enabled": False, "groupSnapshots": {"enabled": True}}})
    account = pod_spec(manifest.node)["serviceAccountName"]
    assert granted(manifest, account, NAMESPACE) == PROVISIONER


def test_the_driver_gets_its_own_pv_permissions_only_when_it_routes_modifies() -> None:
    def driver_roles(manifest: Manifest) -> dict[str, set[Permission]]:
        roles = {}
        for role in manifest.of_kind("ClusterRole"):
            if role["metadata"]["name"].endswith("-driver"):
                component = role["metadata"]["labels"]["app.kubernetes.io/component"]
                roles[component] = {
                    ("cluster", group, resource, verb)
                    for rule in role["rules"]
                    for group in rule["apiGroups"]
                    for resource in rule["resources"]
                    for verb in rule["verbs"]
                }
        return roles

    assert driver_roles(rendered("defaults")) == {}
    assert driver_roles(rendered("attributes-classes")) == {
        "node": NODE_ROUTING,
        "controller": CENTRAL_ROUTING,
    }


def test_an_extra_permission_is_caught() -> None:
    manifest = rendered("defaults").copy()
    role = next(
        r for r in manifest.of_kind("ClusterRole") if r["metadata"]["name"].endswith("-provisioner")
    )
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    with pytest.raises(AssertionError, match="more than it uses"):
        check_least_privilege(manifest)


def test_a_missing_permission_is_caught() -> None:
    manifest = rendered("defaults").copy()
    role = next(r for r in manifest.of_kind("Role") if r["metadata"]["name"].endswith("-resizer"))
    role["rules"] = []
    with pytest.raises(AssertionError, match="lacks"):
        check_least_privilege(manifest)
