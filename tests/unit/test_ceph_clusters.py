"""The clusters file, as ceph-csi writes it: read unchanged, and refused with the reason
where it says something a volume could not use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csi_vduse.ceph.clusters import CephCluster, ClusterConfigError, load, parse

CEPH_CSI_CONFIG = [
    {
        "clusterID": "b9127830-b0cc-4e34-aa47-9d1a2e9949a8",
        "monitors": ["192.168.1.1:6789", "[fd00::2]:3300"],
        "cephFS": {"subvolumeGroup": "csi"},
        "rbd": {"radosNamespace": "k8s", "netNamespaceFilePath": ""},
        "readAffinity": {"enabled": False},
    },
    {"clusterID": "lab", "monitors": ["v2:10.0.0.5:3300/0"]},
]


def test_ceph_csis_config_is_read_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CEPH_CSI_CONFIG))
    clusters = load(path)
    assert clusters["lab"] == CephCluster(id="lab", monitors=("v2:10.0.0.5:3300/0",))
    first = clusters["b9127830-b0cc-4e34-aa47-9d1a2e9949a8"]
    assert first.mon_host == "192.168.1.1:6789,[fd00::2]:3300"
    assert first.rados_namespace == "k8s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not JSON"),
        ("{}", "is not a JSON list of clusters"),
        ("[7]", "entry 0: not a JSON object"),
        ('[{"clusterID": "a/b", "monitors": ["m:1"]}]', "clusterID 'a/b' must be"),
        ('[{"clusterID": "' + "x" * 65 + '", "monitors": ["m:1"]}]', "must be 1-64"),
        ('[{"clusterID": "a", "monitors": []}]', "cluster a: monitors must be a list"),
        ('[{"clusterID": "a", "monitors": ["m 1"]}]', "monitors must be a list"),
        ('[{"clusterID": "a", "monitors": ["m:1"], "rbd": {"radosNamespace": "x/y"}}]',
         "rbd.radosNamespace must be a plain name"),
        ('[{"clusterID": "a", "monitors": ["m:1"]}, {"clusterID": "a", "monitors": ["n:1"]}]',
         "names clusterID a twice"),
    ],
)  # fmt: skip
def test_what_a_volume_could_not_use_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        parse(text)


def test_a_missing_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match=r"config\.json: No such file"):
        load(tmp_path / "config.json")
