"""Snapshots, restores and clones of RBD volumes through gRPC, as external-snapshotter and
external-provisioner call them, on the central instance against the test cluster: the
data each starts with, the codes the spec names, removal in any order with nothing left
behind in the pool or its trash, and clone chains kept within their bound (a bound of one,
to see every kind of flattening in a few calls).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.ceph import CephClient
from tests.ceph.fixtures import clusters_file
from tests.driver import Driver, pb
from tests.kernel.test_rbd_controller import RPC, code_of, create, storage_class

pytestmark = pytest.mark.vm

MiB = 1 << 20
SIZE = 16 * MiB


class Pool:
    """The test pool's images, read and written with the rbd tool."""

    def __init__(self, ceph: CephClient, scratch: Path) -> None:
        self.ceph = ceph
        self.scratch = scratch

    def write_random(self, image: str) -> str:
        """Fill ``image`` (SIZE bytes) with new random bytes; their digest."""
        data = os.urandom(SIZE)
        source, diff = self.scratch / "data", self.scratch / "diff"
        source.write_bytes(data)
        staging = f"scratch-{random.randrange(1 << 30):x}"
        diff.unlink(missing_ok=True)
        self.ceph.rbd("import", "--no-progress", str(source), self.ceph.image(staging))
        self.ceph.rbd("export-diff", "--no-progress", self.ceph.image(staging), str(diff))
        self.ceph.rbd("import-diff", "--no-progress", str(diff), self.ceph.image(image))
        self.ceph.rbd("rm", "--no-progress", self.ceph.image(staging))
        return hashlib.sha256(data).hexdigest()

    def digest(self, image: str, length: int = SIZE) -> str:
        out = self.scratch / "export"
        out.unlink(missing_ok=True)
        self.ceph.rbd("export", "--no-progress", self.ceph.image(image), str(out))
        return hashlib.sha256(out.read_bytes()[:length]).hexdigest()

    def info(self, image: str) -> dict[str, Any]:
        done = self.ceph.rbd("info", "--format", "json", self.ceph.image(image))
        return dict(json.loads(done.stdout))

    def depths(self) -> dict[str, int]:
        """How many images are above each image of the pool, from one listing (parents in
        the trash are not listed: call it before anything is deleted)."""
        done = self.ceph.rbd("ls", "-l", "--format", "json", self.ceph.pool)
        parents = {
            entry["image"]: entry.get("parent", {}).get("image")
            for entry in json.loads(done.stdout)
            if "snapshot" not in entry
        }

        def depth(image: str) -> int:
            parent = parents.get(image)
            return 0 if parent is None else 1 + depth(parent)

        return {image: depth(image) for image in parents}

    def images(self) -> set[str]:
        return set(self.ceph.rbd("ls", self.ceph.pool).stdout.split())

    def trash(self) -> list[str]:
        done = self.ceph.rbd("trash", "ls", "--format", "json", self.ceph.pool)
        return [entry["name"] for entry in json.loads(done.stdout)]


@pytest.fixture
def pool(ceph_client: CephClient, tmp_path: Path) -> Pool:
    return Pool(ceph_client, tmp_path)


def fresh(kind: str) -> str:
    return f"{kind}-{random.randrange(1 << 30):x}"


def image_of(volume: Any) -> str:
    return str(volume.volume_context["imageName"])


def snapshot(driver: Driver, name: str, source: str, secrets: dict[str, str]) -> Any:
    request = pb.CreateSnapshotRequest(name=name, source_volume_id=source, secrets=secrets)
    return driver.controller_stub.CreateSnapshot(request).snapshot


def content_from(snapshot_id: str = "", volume_id: str = "") -> pb.VolumeContentSource:
    if snapshot_id:
        return pb.VolumeContentSource(
            snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snapshot_id)
        )
    return pb.VolumeContentSource(volume=pb.VolumeContentSource.VolumeSource(volume_id=volume_id))


def create_from(
    driver: Driver, name: str, parameters: dict[str, str], secrets: dict[str, str],
    source: pb.VolumeContentSource, *, size: int = SIZE, limit: int = 0,
) -> Any:  # fmt: skip
    return driver.controller_stub.CreateVolume(
        pb.CreateVolumeRequest(
            name=name,
            capacity_range=pb.CapacityRange(required_bytes=size, limit_bytes=limit),
            volume_capabilities=[pb.VolumeCapability(
                mount=pb.VolumeCapability.MountVolume(),
                access_mode=pb.VolumeCapability.AccessMode(
                    mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
                ),
            )],
            parameters=parameters,
            secrets=secrets,
            volume_content_source=source,
        )
    ).volume  # fmt: skip


def delete_volume(driver: Driver, volume_id: str, secrets: dict[str, str]) -> None:
    request = pb.DeleteVolumeRequest(volume_id=volume_id, secrets=secrets)
    driver.controller_stub.DeleteVolume(request)


def delete_snapshot(driver: Driver, snapshot_id: str, secrets: dict[str, str]) -> None:
    driver.controller_stub.DeleteSnapshot(
        pb.DeleteSnapshotRequest(snapshot_id=snapshot_id, secrets=secrets)
    )


def test_a_snapshot_restores_and_a_clone_copies_whatever_is_deleted_first(
    central: Driver, ceph_client: CephClient, secrets: dict[str, str], pool: Pool
) -> None:
    caps = central.controller_stub.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    assert {c.rpc.type for c in caps.capabilities} >= {
        RPC.CREATE_DELETE_SNAPSHOT, RPC.CLONE_VOLUME
    }  # fmt: skip
    params = storage_class(ceph_client)
    before = pool.images()
    volume = create(central, fresh("pvc"), params, secrets, size=SIZE).volume
    first = pool.write_random(image_of(volume))
    name = fresh("snap")
    taken = snapshot(central, name, volume.volume_id, secrets)
    assert taken.ready_to_use and taken.size_bytes == SIZE
    assert taken.source_volume_id == volume.volume_id
    assert taken.snapshot_id.startswith("rbdsnap-")
    assert snapshot(central, name, volume.volume_id, secrets) == taken  # a retry finds it
    second = pool.write_random(image_of(volume))  # the volume goes on; the snapshot stays

    restored = create_from(central, fresh("pvc"), params, secrets,
                           content_from(snapshot_id=taken.snapshot_id), size=2 * SIZE)  # fmt: skip
    assert restored.capacity_bytes == 2 * SIZE
    assert restored.content_source.snapshot.snapshot_id == taken.snapshot_id
    assert pool.digest(image_of(restored)) == first
    assert pool.info(image_of(restored))["size"] == 2 * SIZE
    clone_name = fresh("pvc")
    clone = create_from(central, clone_name, params, secrets,
                        content_from(volume_id=volume.volume_id))  # fmt: skip
    assert pool.digest(image_of(clone)) == second
    assert (
        create_from(central, clone_name, params, secrets, content_from(volume_id=volume.volume_id))
        == clone
    )  # a retry finds it
    listed = ceph_client.rbd("snap", "ls", ceph_client.image(image_of(volume))).stdout
    assert not listed.strip()  # what the snapshot and the clone took of it is kept out of sight

    # The source first, then the snapshot: the copies keep their data all along.
    delete_volume(central, volume.volume_id, secrets)
    assert image_of(volume) not in pool.images()
    assert pool.digest(image_of(restored)) == first
    assert pool.digest(image_of(clone)) == second
    restored_again = create_from(central, fresh("pvc"), params, secrets,
                                 content_from(snapshot_id=taken.snapshot_id))  # fmt: skip
    assert pool.digest(image_of(restored_again)) == first
    delete_snapshot(central, taken.snapshot_id, secrets)
    delete_snapshot(central, taken.snapshot_id, secrets)  # gone: still OK
    gone = lambda: create_from(central, fresh("pvc"), params, secrets,  # noqa: E731
                               content_from(snapshot_id=taken.snapshot_id))  # fmt: skip
    assert code_of(gone) == grpc.StatusCode.NOT_FOUND
    assert pool.digest(image_of(restored_again)) == first
    for copy in (restored, clone, restored_again):
        delete_volume(central, copy.volume_id, secrets)
    assert pool.images() == before
    assert not [name for name in pool.trash() if name.startswith("csi-")]  # all reaped


def test_snapshot_and_restore_answer_bad_input_with_the_specs_codes(
    central: Driver, ceph_client: CephClient, secrets: dict[str, str], pool: Pool
) -> None:
    params = storage_class(ceph_client)
    volume = create(central, fresh("pvc"), params, secrets, size=SIZE).volume
    other = create(central, fresh("pvc"), params, secrets, size=SIZE).volume
    name = fresh("snap")
    taken = snapshot(central, name, volume.volume_id, secrets)
    gone = volume.volume_id[:-32] + "0" * 32
    calls: dict[str, tuple[Callable[[], Any], grpc.StatusCode, str]] = {
        "the name, for another volume": (
            lambda: snapshot(central, name, other.volume_id, secrets),
            grpc.StatusCode.ALREADY_EXISTS, "of another volume",
        ),
        "a volume that is gone": (
            lambda: snapshot(central, fresh("snap"), gone, secrets),
            grpc.StatusCode.NOT_FOUND, "does not exist",
        ),
        "a restore limited to less than its snapshot": (
            lambda: create_from(central, fresh("pvc"), params, secrets,
                                content_from(snapshot_id=taken.snapshot_id), size=SIZE // 2,
                                limit=SIZE // 2),
            grpc.StatusCode.OUT_OF_RANGE, "source",
        ),
        "a clone of a volume that is gone": (
            lambda: create_from(central, fresh("pvc"), params, secrets,
                                content_from(volume_id=gone)),
            grpc.StatusCode.NOT_FOUND, "does not exist",
        ),
        "a restore without layering": (
            lambda: create_from(central, fresh("pvc"),
                                storage_class(ceph_client, imageFeatures="exclusive-lock"),
                                secrets, content_from(snapshot_id=taken.snapshot_id)),
            grpc.StatusCode.INVALID_ARGUMENT, "needs layering",
        ),
    }  # fmt: skip
    images = pool.images()
    for what, (call, code, said) in calls.items():
        with pytest.raises(grpc.RpcError) as failed:
            call()
        assert failed.value.code() == code, what
        assert said in str(failed.value.details()), (what, failed.value.details())
    assert pool.images() == images  # nothing half made
    # A snapshot somebody made by hand is not ours to remove: the volume stays.
    ceph_client.rbd("snap", "create", ceph_client.image(image_of(other)) + "@by-hand")
    with pytest.raises(grpc.RpcError) as failed:
        delete_volume(central, other.volume_id, secrets)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "by-hand" in str(failed.value.details())
    ceph_client.rbd("snap", "rm", ceph_client.image(image_of(other)) + "@by-hand")
    delete_snapshot(central, taken.snapshot_id, secrets)
    for made in (volume, other):
        delete_volume(central, made.volume_id, secrets)
    assert not [name for name in pool.trash() if name.startswith("csi-")]


@pytest.fixture
def shallow(tmp_path: Path, ceph_client: CephClient) -> Iterator[Driver]:
    """The central instance with chains of one image at most (``--rbd-chain-limit 1``): every
    second generation is flattened, so a few calls show every kind of it."""
    clusters = clusters_file(tmp_path, ceph_client)
    driver = Driver(tmp_path / "shallow", node=False,
                    extra=["--ceph-clusters", str(clusters), "--rbd-chain-limit", "1"])  # fmt: skip
    driver.start()
    yield driver
    driver.stop()


def test_restores_snapshots_and_clones_stay_within_the_chain_limit_and_keep_their_data(
    shallow: Driver, ceph_client: CephClient, secrets: dict[str, str], pool: Pool
) -> None:
    params = storage_class(ceph_client)
    volume = create(shallow, fresh("pvc"), params, secrets, size=SIZE).volume
    digest = pool.write_random(image_of(volume))

    def snap(of: Any) -> Any:
        return snapshot(shallow, fresh("snap"), of.volume_id, secrets)

    def restore(taken: Any) -> Any:
        return create_from(shallow, fresh("pvc"), params, secrets,
                           content_from(snapshot_id=taken.snapshot_id))  # fmt: skip

    def clone(of: Any) -> Any:
        return create_from(shallow, fresh("pvc"), params, secrets,
                           content_from(volume_id=of.volume_id))  # fmt: skip

    first = snap(volume)  # 1 image above it
    restored = restore(first)  # 2 above it: flattened
    cloned = clone(restored)  # 1
    second = snap(cloned)  # 2: the snapshot's image flattened
    restored_again = restore(second)  # 1
    cloned_again = clone(cloned)  # 2: flattened
    snapshots, made = [first, second], [volume, restored, cloned, restored_again, cloned_again]
    depths = pool.depths()
    images = [image_of(v) for v in made] + ["csi-snap-" + s.snapshot_id[-32:] for s in snapshots]
    assert {image: depths[image] for image in images} == {
        image_of(volume): 0, images[5]: 1, image_of(restored): 0, image_of(cloned): 1,
        images[6]: 0, image_of(restored_again): 1, image_of(cloned_again): 0,
    }  # fmt: skip
    for copy in made[1:]:
        assert pool.digest(image_of(copy)) == digest
    for taken in snapshots:
        delete_snapshot(shallow, taken.snapshot_id, secrets)
    for made_volume in made:
        delete_volume(shallow, made_volume.volume_id, secrets)
    assert not [name for name in pool.trash() if name.startswith("csi-")]
