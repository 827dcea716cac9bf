"""Value sets the chart is rendered, linted and validated with: the defaults and, between them,
every documented value set to something other than its default (test_values_docs checks that).
"""

from __future__ import annotations

from typing import Any

RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
TOLERATIONS = [{"key": "storage", "operator": "Exists", "effect": "NoSchedule"}]
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "vduse", "operator": "In", "values": ["yes"]}]}
            ]
        }
    }
}


def _sidecar(repository: str, tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Always"},
        "resources": RESOURCES,
        **extra,
    }


SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "custom-paths": {
        "driverName": "vduse.example.org",
        "kubeletDir": "/var/lib/k0s/kubelet",
        "stateDir": "/srv/csi-vduse/state",
        "poolDir": "/srv/csi-vduse/pool",
        "nameOverride": "vduse",
        "image": {"repository": "registry.example.org/csi-vduse", "tag": "v9.9.9"},
        "imagePullSecrets": [{"name": "pull-secret"}],
    },
    "fullname": {"fullnameOverride": "storage"},
    "logging": {
        "logLevel": "debug",
        "logFormat": "json",
        "sidecarLogLevel": 5,
        "maxVolumesPerNode": 64,
    },
    "metrics-service": {
        "metrics": {
            "port": 9900,
            "podAnnotations": False,
            "service": {"enabled": True, "annotations": {"example.org/scrape": "yes"}},
        }
    },
    "metrics-off": {"metrics": {"enabled": False}},
    "placement": {
        "image": {"pullPolicy": "Always"},
        "node": {
            "healthPort": 9911,
            "livenessProbe": {
                "probeTimeout": "30s",
                "periodSeconds": 30,
                "timeoutSeconds": 40,
                "failureThreshold": 4,
            },
            "nodeSelector": {"vduse": "yes"},
            "tolerations": TOLERATIONS,
            "affinity": AFFINITY,
            "priorityClassName": "storage-critical",
            "updateStrategy": {"type": "OnDelete"},
            "dataplaneCgroup": "",
            "dataplaneUser": "1000:1000",
            "podAnnotations": {"example.org/owner": "storage"},
            "podLabels": {"team": "storage"},
            "resources": RESOURCES,
        },
        "controller": {
            "replicas": 2,
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            "tolerations": TOLERATIONS,
            "affinity": AFFINITY,
            "priorityClassName": "storage-critical",
            "podAnnotations": {"example.org/owner": "storage"},
            "podLabels": {"team": "storage"},
            "resources": RESOURCES,
        },
        "sidecars": {
            "nodeDriverRegistrar": _sidecar("mirror.example.org/registrar", "v2.16.0"),
            "livenessProbe": _sidecar("mirror.example.org/livenessprobe", "v2.19.0"),
            "provisioner": _sidecar(
                "mirror.example.org/provisioner",
                "v6.3.0",
                timeout="2m",
                capacityPollInterval="30s",
            ),
            "snapshotter": _sidecar("mirror.example.org/snapshotter", "v8.6.0"),
            "resizer": _sidecar("mirror.example.org/resizer", "v2.2.0", timeout="90s"),
        },
    },
    "no-snapshots": {"snapshots": {"enabled": False}},
    "classes": {
        "storageClasses": [
            {
                "name": "vduse-xfs",
                "isDefaultClass": True,
                "fsType": "xfs",
                "blockSize": "4096",
                "numQueues": 4,
                "packedRings": True,
                "reclaimPolicy": "Retain",
                "allowVolumeExpansion": False,
                "mountOptions": ["noatime"],
                "annotations": {"example.org/tier": "fast"},
                "additionalParameters": {"example.org/extra": "1"},
            },
            {"name": "vduse-ext4", "blockSize": "512"},
        ],
        "volumeSnapshotClass": {
            "name": "vduse-snapshots",
            "isDefaultClass": True,
            "deletionPolicy": "Retain",
        },
    },
    "no-classes": {"storageClasses": [], "volumeSnapshotClass": {"enabled": False}},
    "attributes-classes": {
        "volumeAttributesClasses": {"enabled": True},
        "sidecars": {"resizer": {"timeout": "2m"}},  # the central driver waits as long
    },
    # RBD volumes with the chart's own clusters file and Secret, every class setting given,
    # and everything the node-local driver has on alongside (metrics, a volume limit).
    "rbd": {
        "maxVolumesPerNode": 32,
        "rbd": {
            "enabled": True,
            "driverName": "rbd.vduse.example.org",
            "clusters": [
                {
                    "clusterID": "east-1",
                    "monitors": ["10.0.0.1:6789", "10.0.0.2:6789"],
                    "rbd": {"radosNamespace": "k8s"},
                }
            ],
            "secret": {
                "create": True,
                "name": "ceph-user",
                "userID": "kubernetes",
                "userKey": "AQAAAAAAAAAAABAAc2l4dGVlbiBieXRlIGtleQ==",
            },
            "stateDir": "/srv/csi-vduse/rbd-state",
            "keyDir": "/run/vduse-keys",
            "node": {"healthPort": 9912, "metricsPort": 9913},
            "controller": {"replicas": 2, "ownSecret": "ceph-lister"},
            "snapshots": {"enabled": True},
            "volumeSnapshotClass": {
                "enabled": True,
                "name": "ceph-snapshots",
                "isDefaultClass": True,
                "deletionPolicy": "Retain",
            },
            "storageClasses": [
                {
                    "name": "ceph-fast",
                    "clusterID": "east-1",
                    "pool": "fast",
                    "imageFeatures": "layering,exclusive-lock",
                    "dataPool": "ec-data",
                    "fsType": "xfs",
                    "secretName": "other-user",
                    "secretNamespace": "ceph",
                    "isDefaultClass": True,
                    "reclaimPolicy": "Retain",
                    "allowVolumeExpansion": False,
                    "volumeBindingMode": "WaitForFirstConsumer",
                    "mountOptions": ["noatime"],
                    "annotations": {"example.org/tier": "ceph"},
                    "additionalParameters": {"numQueues": "2"},
                },
                {"name": "ceph", "clusterID": "east-1", "pool": "kubernetes"},
            ],
        },
    },
    # ceph-csi's own ConfigMap and a Secret made outside Helm; no snapshots.
    "rbd-from-ceph-csi": {
        "metrics": {"enabled": False},
        "rbd": {
            "enabled": True,
            "clustersConfigMap": "ceph-csi-config",
            "snapshots": {"enabled": False},
            "storageClasses": [{"name": "ceph", "clusterID": "east-1", "pool": "kubernetes"}],
        },
    },
    "group-snapshots": {
        "snapshots": {"groupSnapshots": {"enabled": True}},
        "volumeGroupSnapshotClass": {
            "enabled": True,
            "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2",
            "name": "vduse-groups",
            "deletionPolicy": "Retain",
            "maxPauseMilliseconds": 250,
        },
    },
}
