"""Where an RBD volume's data goes (ours): a StorageClass's ``dataPool`` holds the data of
the volume, of its snapshots' images and of the volumes restored from them, while their
images (names, headers, metadata) stay in ``pool``. ceph-csi users with erasure-coded data
pools expect exactly this; a snapshot whose data landed in the replicated pool once
flattened would quietly cost them the space they chose the data pool to save."""

from __future__ import annotations

import json

from csi_vduse.csi.proto import pb
from csi_vduse.rbd.ids import RbdSnapshotId, RbdVolumeId
from tests.csi.conftest import (
    TEST_VOLUME_PARAMETERS,
    RbdSetting,
    Resources,
    SanityContext,
    make_create_snapshot_req,
    make_create_volume_req,
    unique_string,
)

BACKENDS = ("rbd",)


def data_pool(ceph: RbdSetting, image: str) -> str | None:
    info = json.loads(
        ceph.cluster.rbd("info", "--format", "json", f"{ceph.client.pool}/{image}").stdout
    )
    found = info.get("data_pool")
    return None if found is None else str(found)


def test_a_volume_its_snapshot_and_its_restore_keep_their_data_in_the_data_pool(
    sc: SanityContext, r: Resources, ceph: RbdSetting | None, ceph_data_pool: str
) -> None:
    assert ceph is not None
    TEST_VOLUME_PARAMETERS["dataPool"] = ceph_data_pool
    volume = r.must_create_volume(make_create_volume_req(unique_string("placed"))).volume
    snapshot = r.must_create_snapshot(
        make_create_snapshot_req(unique_string("placed-snap"), volume.volume_id)
    ).snapshot
    request = make_create_volume_req(unique_string("placed-restore"))
    request.volume_content_source.CopyFrom(
        pb.VolumeContentSource(
            snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snapshot.snapshot_id)
        )
    )
    restored = r.must_create_volume(request).volume
    images = {
        "volume": RbdVolumeId.parse(volume.volume_id),
        "snapshot": RbdSnapshotId.parse(snapshot.snapshot_id),
        "restored": RbdVolumeId.parse(restored.volume_id),
    }
    placed = {}
    for what, parsed in images.items():
        assert parsed is not None, what
        placed[what] = data_pool(ceph, parsed.image)
    assert placed == dict.fromkeys(images, ceph_data_pool)
