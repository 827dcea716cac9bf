"""The Controller's RBD volumes through gRPC, as external-provisioner and external-resizer
call it: ``csi-vduse serve --controller --ceph-clusters FILE`` (no pool: the central
instance) against the test cluster, with ceph-csi's StorageClass parameters and secrets.
Every answer carries the code the spec names, nothing is half made, and the key reaches
neither an answer nor the driver's log."""

from __future__ import annotations

import json
import random
from typing import Any

import grpc
import pytest

from tests.ceph import CephClient
from tests.ceph.fixtures import CEPH_CLUSTER_ID
from tests.driver import Driver, block_capability, mount_capability, pb
from tests.kernel.conftest import Cli

pytestmark = pytest.mark.vm

MiB = 1 << 20
CLUSTER = CEPH_CLUSTER_ID
RPC = pb.ControllerServiceCapability.RPC.Type
OTHER_KEY = "AQAAAAAAAAAAABAAmibQn9YVzYG5kYWZG/JNWA=="  # well-formed, nobody's


def storage_class(ceph_client: CephClient, **extra: str) -> dict[str, str]:
    return {"backend": "rbd", "clusterID": CLUSTER, "pool": ceph_client.pool,
            "csi.storage.k8s.io/provisioner-secret-name": "csi-rbd-secret", **extra}  # fmt: skip


def create(
    driver: Driver, name: str, parameters: dict[str, str], secrets: dict[str, str],
    *, size: int = 64 * MiB, capability: pb.VolumeCapability | None = None,
) -> Any:  # fmt: skip
    return driver.controller_stub.CreateVolume(
        pb.CreateVolumeRequest(
            name=name,
            capacity_range=pb.CapacityRange(required_bytes=size),
            volume_capabilities=[capability or mount_capability()],
            parameters=parameters,
            secrets=secrets,
        )
    )


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value.code()


def test_a_volume_is_created_found_again_grown_and_deleted(
    central: Driver, ceph_client: CephClient, secrets: dict[str, str]
) -> None:
    caps = central.controller_stub.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    assert {c.rpc.type for c in caps.capabilities} >= {RPC.CREATE_DELETE_VOLUME, RPC.EXPAND_VOLUME}
    name = f"pvc-{random.randrange(1 << 30):x}"
    params = storage_class(ceph_client, blockSize="4096")
    first = create(central, name, params, secrets).volume
    assert first.volume_id.startswith(f"rbd-{CLUSTER}-")
    assert first.capacity_bytes == 64 * MiB
    assert not first.accessible_topology  # reachable from every node
    context = dict(first.volume_context)
    assert context["backend"] == "rbd" and context["pool"] == ceph_client.pool
    assert context["blockSize"] == "4096" and context["imageName"].startswith("csi-vol-")
    info = json.loads(ceph_client.rbd("info", "--format", "json",
                                      ceph_client.image(context["imageName"])).stdout)  # fmt: skip
    assert info["size"] == 64 * MiB
    assert set(info["features"]) == {"layering", "exclusive-lock", "object-map", "fast-diff"}
    assert create(central, name, params, secrets, capability=block_capability()).volume == first
    other_size = lambda: create(central, name, params, secrets, size=128 * MiB)  # noqa: E731
    assert code_of(other_size) == grpc.StatusCode.ALREADY_EXISTS
    other_params = lambda: create(central, name, storage_class(ceph_client), secrets)  # noqa: E731
    assert code_of(other_params) == grpc.StatusCode.ALREADY_EXISTS
    validated = central.controller_stub.ValidateVolumeCapabilities(
        pb.ValidateVolumeCapabilitiesRequest(
            volume_id=first.volume_id, volume_capabilities=[block_capability()], secrets=secrets
        )
    )
    assert validated.HasField("confirmed")
    grown = central.controller_stub.ControllerExpandVolume(
        pb.ControllerExpandVolumeRequest(
            volume_id=first.volume_id,
            capacity_range=pb.CapacityRange(required_bytes=96 * MiB),
            secrets=secrets,
        )
    )
    assert grown.capacity_bytes == 96 * MiB and grown.node_expansion_required
    delete = pb.DeleteVolumeRequest(volume_id=first.volume_id, secrets=secrets)
    central.controller_stub.DeleteVolume(delete)
    central.controller_stub.DeleteVolume(delete)  # gone: still OK
    gone = ceph_client.rbd("info", ceph_client.image(context["imageName"]), check=False)
    assert gone.returncode != 0
    validate_gone = lambda: central.controller_stub.ValidateVolumeCapabilities(  # noqa: E731
        pb.ValidateVolumeCapabilitiesRequest(
            volume_id=first.volume_id, volume_capabilities=[block_capability()], secrets=secrets
        )
    )
    assert code_of(validate_gone) == grpc.StatusCode.NOT_FOUND
    assert secrets["userKey"] not in central.log()


def test_a_volume_a_node_serves_is_not_deleted(
    central: Driver, ceph_client: CephClient, secrets: dict[str, str], cli: Cli
) -> None:
    volume = create(central, f"pvc-{random.randrange(1 << 30):x}",
                    storage_class(ceph_client), secrets).volume  # fmt: skip
    image = ceph_client.image(volume.volume_context["imageName"])
    delete = pb.DeleteVolumeRequest(volume_id=volume.volume_id, secrets=secrets)
    try:
        cli.run(
            "device", "create", "served", "--rbd", image,
            "--ceph-conf", str(ceph_client.cluster.conf_path),
            "--ceph-user", ceph_client.user, "--ceph-keyfile", str(ceph_client.keyring),
        )  # fmt: skip
        assert code_of(lambda: central.controller_stub.DeleteVolume(delete)) == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
    finally:
        cli.run("device", "delete", "served", check=False)
    central.controller_stub.DeleteVolume(delete)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"pool": "no-such-pool"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"clusterID": "elsewhere"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"imageFeatures": "layering"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"imageFeatures": "layering,exclusive-lock,warp-drive"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"backend": "tape"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"userKey": OTHER_KEY}, grpc.StatusCode.PERMISSION_DENIED),
        ({"userKey": ""}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)  # fmt: skip
def test_bad_input_gets_the_specs_code_and_makes_nothing(
    central: Driver, ceph_client: CephClient, secrets: dict[str, str],
    change: dict[str, str], code: grpc.StatusCode,
) -> None:  # fmt: skip
    before = ceph_client.rbd("ls", ceph_client.pool).stdout.split()
    secret_change = {k: v for k, v in change.items() if k.startswith("user")}
    params = storage_class(
        ceph_client, **{k: v for k, v in change.items() if k not in secret_change}
    )
    with_secrets = {**secrets, **secret_change}
    name = f"pvc-{random.randrange(1 << 30):x}"
    failed = code_of(lambda: create(central, name, params, with_secrets))
    assert failed == code
    assert ceph_client.rbd("ls", ceph_client.pool).stdout.split() == before
    assert secrets["userKey"] not in central.log()
