"""``csi-vduse serve`` as a process: socket, shutdown, modes, logs (no kernel needed)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from csi_vduse import cli
from csi_vduse.csi.capabilities import CONTROLLER
from csi_vduse.csi.proto import pb, stub
from csi_vduse.csi.server import ServeError, ServeOptions, build, kubernetes_volumes
from csi_vduse.kube.modify_annotations import result_of
from csi_vduse.kube.volumes import Pv
from csi_vduse.pool import ids
from csi_vduse.pool.store import Pool
from csi_vduse.volumes.records import NodeVolume, NodeVolumeStore
from tests.driver import Driver, mount_capability
from tests.unit.fake_kube import FakePersistentVolumes

Expand = pb.ControllerServiceCapability.RPC.Type.EXPAND_VOLUME
Modify = pb.ControllerServiceCapability.RPC.Type.MODIFY_VOLUME


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    running = Driver(tmp_path).start()
    yield running
    running.stop()


def test_socket_is_private_and_removed_on_sigterm(driver: Driver) -> None:
    mode = os.stat(driver.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert driver.stop(signal.SIGTERM) == 0
    assert not driver.socket.exists()
    assert "stopped" in driver.log()


def test_a_stale_socket_is_replaced_and_a_regular_file_is_not(tmp_path: Path) -> None:
    first = Driver(tmp_path).start()
    assert first.process is not None
    first.process.kill()
    first.process.wait()
    first.process = None
    assert first.socket.exists()
    second = Driver(tmp_path).start()
    assert second.identity.Probe(pb.ProbeRequest()) is not None
    second.stop()

    blocked = tmp_path / "other"
    blocked.mkdir()
    (blocked / "csi.sock").write_text("not a socket")
    with pytest.raises(AssertionError, match="not a socket"):
        Driver(blocked).start()
    assert (blocked / "csi.sock").read_text() == "not a socket"


def test_plugin_info_names_the_driver_and_its_version(driver: Driver) -> None:
    info = driver.identity.GetPluginInfo(pb.GetPluginInfoRequest())
    assert info.name == "csi.vduse.dev" and info.vendor_version
    caps = driver.controller_stub.ControllerGetCapabilities(
        pb.ControllerGetCapabilitiesRequest()
    ).capabilities
    assert [c.rpc.type for c in caps] == list(CONTROLLER)


def test_central_controller_without_pool_only_records_expansions(tmp_path: Path) -> None:
    central = Driver(tmp_path, node=False).start()
    try:
        caps = central.controller_stub.ControllerGetCapabilities(
            pb.ControllerGetCapabilitiesRequest()
        ).capabilities
        assert [c.rpc.type for c in caps] == [Expand]
        answer = central.controller_stub.ControllerExpandVolume(
            pb.ControllerExpandVolumeRequest(
                volume_id="vol-" + "0" * 32,
                capacity_range=pb.CapacityRange(required_bytes=(1 << 30) + 1),
            )
        )
        assert answer.node_expansion_required and answer.capacity_bytes == (1 << 30) + (1 << 20)
        with pytest.raises(grpc.RpcError) as refused:
            central.controller_stub.CreateVolume(
                pb.CreateVolumeRequest(name="x", volume_capabilities=[mount_capability()])
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # Without --modify-routing it does not advertise MODIFY_VOLUME: bad input is still
        # refused as such, the rest is the nodes'.
        modify = central.controller_stub.ControllerModifyVolume
        for request, code in (
            (
                pb.ControllerModifyVolumeRequest(
                    volume_id="vol-" + "0" * 32, mutable_parameters={"bogus": "1"}
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                pb.ControllerModifyVolumeRequest(
                    volume_id="vol-" + "0" * 32, mutable_parameters={"maxIops": "1"}
                ),
                grpc.StatusCode.UNAVAILABLE,
            ),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                modify(request)
            assert refused.value.code() == code
        with pytest.raises(grpc.RpcError) as missing:
            central.node_stub.NodeGetInfo(pb.NodeGetInfoRequest())
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        central.stop()


def test_json_logs_carry_rpc_volume_and_code(tmp_path: Path) -> None:
    driver = Driver(tmp_path, extra=["--log-format", "json"]).start()
    try:
        with pytest.raises(grpc.RpcError):
            driver.controller_stub.DeleteVolume(pb.DeleteVolumeRequest())
        driver.controller_stub.DeleteVolume(pb.DeleteVolumeRequest(volume_id="vol-unknown"))
        created = driver.controller_stub.CreateVolume(
            pb.CreateVolumeRequest(name="logged", volume_capabilities=[mount_capability()])
        ).volume
    finally:
        driver.stop()
    records = [json.loads(line) for line in driver.log().splitlines() if line.startswith("{")]
    calls = [r for r in records if r.get("rpc") == "DeleteVolume"]
    assert [(c["code"], c["volume"]) for c in calls] == [
        ("INVALID_ARGUMENT", "-"),
        ("OK", "vol-unknown"),
    ]
    # Records from deeper layers, logged during a call, carry the call too.
    pool = [r for r in records if r["logger"] == "csi_vduse.pool.store"]
    assert pool and pool[0]["rpc"] == "CreateVolume" and pool[0]["volume"] == "logged"
    assert created.volume_id in pool[0]["message"]


def test_node_info_reports_topology_and_volume_limit(tmp_path: Path) -> None:
    driver = Driver(tmp_path, node_id="node-7", extra=["--max-volumes", "12"]).start()
    try:
        info = driver.node_stub.NodeGetInfo(pb.NodeGetInfoRequest())
    finally:
        driver.stop()
    assert info.node_id == "node-7" and info.max_volumes_per_node == 12
    assert dict(info.accessible_topology.segments) == {"topology.vduse.csi/node": "node-7"}


def test_build_assembles_one_device_manager_and_leaves_recovery_to_the_caller(
    tmp_path: Path,
) -> None:
    """An unfinished stage stays recorded until ``recover``, which ``serve`` runs."""
    state = tmp_path / "state"
    options = ServeOptions(
        endpoint=f"unix://{tmp_path}/csi.sock", node_id="node-1", state_dir=state,
        pool_dir=tmp_path / "pool", controller=True, driver_name="csi.vduse.dev",
    )  # fmt: skip
    store = NodeVolumeStore(state)
    volume_id = ids.volume_id_for("pvc-1")
    record = NodeVolume(
        volume_id=volume_id, staging_path=str(tmp_path / "staging"), block=True, fs_type="",
        mount_flags=[], mode=1, readonly=False,
    )  # fmt: skip
    store.save(record)
    plugin = build(options)
    try:
        assert plugin.volumes is not None and plugin.volumes.devices is plugin.devices
        assert plugin.devices.store.root == state
        assert [v.volume_id for v in store.records()] == [volume_id]  # build touched nothing
    finally:
        plugin.server.stop(None)


def test_modify_routing_takes_a_class_change_from_the_central_controller_to_the_node(
    tmp_path: Path,
) -> None:
    """Both plugins as ``serve --modify-routing`` builds them, one cluster between them."""
    api = FakePersistentVolumes()

    def options(node_id: str, pool_dir: Path | None) -> ServeOptions:
        return ServeOptions(
            endpoint=f"unix://{tmp_path}/{node_id}.sock", node_id=node_id,
            state_dir=tmp_path / node_id, pool_dir=pool_dir, controller=True,
            driver_name="csi.vduse.dev", modify_routing=True,
        )  # fmt: skip

    central = build(options("central", None), kube=api)
    node = build(options("node-1", tmp_path / "pool"), kube=api)
    assert central.watcher is None and node.watcher is not None
    volume_id = Pool(tmp_path / "pool").create_volume("pvc-1", 1 << 20, {}).volume_id
    api.put(Pv(name="pv-1", driver="csi.vduse.dev", volume_handle=volume_id,
               nodes=frozenset({"node-1"})))  # fmt: skip
    central.server.add_insecure_port(f"unix://{tmp_path}/central.sock")
    central.server.start()
    node.watcher.start()
    try:
        with grpc.insecure_channel(f"unix://{tmp_path}/central.sock") as channel:
            controller = stub(channel, "Controller")
            caps = controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
            assert [c.rpc.type for c in caps.capabilities] == [Expand, Modify]
            controller.ControllerModifyVolume(
                pb.ControllerModifyVolumeRequest(
                    volume_id=volume_id,
                    mutable_parameters={"maxIops": "50", "csi.storage.k8s.io/pv/name": "pv-1"},
                ),
                timeout=30,
            )
    finally:
        node.watcher.stop()
        central.server.stop(None)
        node.server.stop(None)
    record = Pool(tmp_path / "pool").volume(volume_id)
    assert record is not None and record.mutable_parameters == {"maxIops": "50"}
    answer = result_of(api.annotations("pv-1"))
    assert answer is not None and answer.ok and answer.node == "node-1"


def test_modify_routing_without_a_cluster_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ServeError, match=r"--modify-routing.*KUBECONFIG"):
        kubernetes_volumes()


def test_modify_timeout_takes_seconds_or_a_sidecars_go_duration() -> None:
    parser = cli.build_parser()
    for given, seconds in (("60s", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("2.5", 2.5)):
        args = parser.parse_args(["serve", "--modify-routing", "--modify-timeout", given])
        assert args.modify_routing and args.modify_timeout == seconds
    for bad in ("", "5 s", "-1", "1m-3s", "inf", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.parse_duration_arg(bad)
