"""A ControllerModifyVolume routed from the central controller to the node holding the volume.

The central side (``ModifyRouter``) and the node side (``ModifyWatcher`` over a real pool)
run against one in-memory API server (``fake_kube``), as they run against one cluster: the
central writes the request on the PV, the node's watcher applies it through the same path
as a local call and answers on the PV.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi_vduse.csi.errors import RpcError, status_of
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.csi.modify import VolumeModifier
from csi_vduse.csi.modify_routing import DEADLINE_MARGIN, PV_NAME, ModifyRouter
from csi_vduse.csi.modify_watcher import ModifyWatcher, WatchTimings
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.state import StateStore
from csi_vduse.kube.modify_annotations import (
    REQUEST,
    RESULT,
    ModifyRequest,
    ModifyResult,
    next_generation,
    request_of,
    result_of,
)
from csi_vduse.kube.volumes import KubeError, Pv, pv_from_json
from csi_vduse.pool import ids
from csi_vduse.pool.store import Pool
from tests.unit.fake_kube import FakePersistentVolumes

Code = grpc.StatusCode
DRIVER = "csi.vduse.dev"
NODE = "node-a"
MiB = 1 << 20
PATIENCE = 10.0
FAST = WatchTimings(watch_seconds=0.2, retry_seconds=0.05, backoff_seconds=0.01)
METADATA = {  # what external-resizer --extra-modify-metadata adds
    PV_NAME: "pv-1",
    "csi.storage.k8s.io/pvc/name": "data",
    "csi.storage.k8s.io/pvc/namespace": "default",
}


def wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@dataclass
class Node:
    """One node's pool, with the lock table its Controller service would hold."""

    pool: Pool
    devices: DeviceManager
    locks: OperationLocks

    def volume(self, name: str) -> str:
        return self.pool.create_volume(name, MiB, {}).volume_id

    def limits_of(self, volume_id: str) -> dict[str, str]:
        record = self.pool.volume(volume_id)
        assert record is not None
        return record.mutable_parameters

    def watcher(self, api: FakePersistentVolumes, node_id: str = NODE) -> ModifyWatcher:
        return ModifyWatcher(
            api, VolumeModifier(self.pool, self.devices, self.locks),
            driver_name=DRIVER, node_id=node_id, timings=FAST,
        )  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(Pool(tmp_path / "pool"), DeviceManager(StateStore(tmp_path / "state")),
                OperationLocks())  # fmt: skip


@pytest.fixture
def api() -> FakePersistentVolumes:
    return FakePersistentVolumes()


@pytest.fixture
def watching(api: FakePersistentVolumes, node: Node) -> Iterator[ModifyWatcher]:
    watcher = node.watcher(api).start()
    yield watcher
    watcher.stop()


def pv_of(
    volume_id: str, *, name: str = "pv-1", driver: str = DRIVER, nodes: tuple[str, ...] = (NODE,)
) -> Pv:
    return Pv(name=name, driver=driver, volume_handle=volume_id, nodes=frozenset(nodes))


def router(api: FakePersistentVolumes, timeout: float = PATIENCE) -> ModifyRouter:
    return ModifyRouter(api, DRIVER, timeout=timeout, poll_seconds=0.01)


def requests_written(api: FakePersistentVolumes) -> int:
    return sum(REQUEST in annotations for _, annotations in api.patches)


def answer(api: FakePersistentVolumes, name: str = "pv-1") -> ModifyResult | None:
    return result_of(api.annotations(name))


def refused(call: Callable[[], object]) -> RpcError:
    with pytest.raises(RpcError) as caught:
        call()
    return caught.value


# -- the annotations ------------------------------------------------------------------------


def test_requests_read_back_canonically_and_hand_edits_read_as_none() -> None:
    request = ModifyRequest(2, {"maxIops": "5", "burstSeconds": "1"})
    assert request.encode() == '{"generation":2,"parameters":{"burstSeconds":"1","maxIops":"5"}}'
    assert request_of({REQUEST: request.encode()}) == request
    for text in ("", "[]", "{", '{"generation":0,"parameters":{}}',
                 '{"generation":true,"parameters":{}}', '{"generation":1,"parameters":{"a":1}}',
                 '{"generation":1}'):  # fmt: skip
        assert request_of({REQUEST: text}) is None, text
    assert result_of({RESULT: '{"generation":1,"code":"OK"}'}) is None


def test_a_new_request_outnumbers_every_earlier_request_and_result() -> None:
    """A result left from an earlier request can never answer a new one."""
    stale = ModifyResult(generation=7, code="OK", message="applied", node=NODE)
    assert next_generation({}) == 1
    assert next_generation({RESULT: stale.encode(), REQUEST: "not json"}) == 8
    assert next_generation({REQUEST: ModifyRequest(9, {}).encode(), RESULT: stale.encode()}) == 10


def test_a_pv_is_read_down_to_its_driver_volume_and_nodes() -> None:
    key = "topology.vduse.csi/node"
    raw = {
        "metadata": {"name": "pv-1", "resourceVersion": "42", "annotations": {"a": "b"}},
        "spec": {
            "csi": {"driver": DRIVER, "volumeHandle": "vol-1"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [
                    {"key": key, "operator": "In", "values": [NODE]},
                    {"key": "other", "operator": "In", "values": ["x"]},
                ]},
            ]}},
        },
    }  # fmt: skip
    assert pv_from_json(raw, topology_key=key) == Pv(
        name="pv-1", resource_version="42", driver=DRIVER, volume_handle="vol-1",
        nodes=frozenset({NODE}), annotations={"a": "b"},
    )  # fmt: skip
    assert pv_from_json({"metadata": {"name": "nfs"}, "spec": {}}, topology_key=key) == Pv(
        name="nfs"
    )


# -- the central controller -----------------------------------------------------------------


def test_a_routed_change_reaches_the_nodes_pool(
    api: FakePersistentVolumes, node: Node, watching: ModifyWatcher
) -> None:
    volume_id = node.volume("pvc-1")
    api.put(pv_of(volume_id))
    router(api).modify(volume_id, {"maxIops": "100", **METADATA})
    assert node.limits_of(volume_id) == {"maxIops": "100"}
    # Kubernetes' own keys travel no further than the central controller.
    assert request_of(api.annotations("pv-1")) == ModifyRequest(1, {"maxIops": "100"})
    assert answer(api) == ModifyResult(generation=1, code="OK", message="applied", node=NODE)


def test_a_retry_with_the_same_parameters_writes_nothing_new(
    api: FakePersistentVolumes, node: Node, watching: ModifyWatcher
) -> None:
    volume_id = node.volume("pvc-1")
    api.put(pv_of(volume_id))
    for _ in range(3):
        router(api).modify(volume_id, {"maxIops": "100", **METADATA})
    assert requests_written(api) == 1
    router(api).modify(volume_id, {"maxIops": "200", **METADATA})
    assert requests_written(api) == 2 and node.limits_of(volume_id) == {"maxIops": "200"}


def test_no_answer_in_time_is_unavailable_and_the_retry_waits_for_the_same_request(
    api: FakePersistentVolumes, node: Node
) -> None:
    volume_id = node.volume("pvc-1")
    api.put(pv_of(volume_id))
    error = refused(
        lambda: router(api, timeout=0.1).modify(volume_id, {"maxIops": "1", **METADATA})
    )
    assert error.code == Code.UNAVAILABLE and NODE in error.message
    assert requests_written(api) == 1 and answer(api) is None
    watcher = node.watcher(api).start()  # the node plugin comes back
    try:
        router(api).modify(volume_id, {"maxIops": "1", **METADATA})
    finally:
        watcher.stop()
    assert requests_written(api) == 1 and node.limits_of(volume_id) == {"maxIops": "1"}


def test_the_callers_deadline_bounds_the_wait(api: FakePersistentVolumes, node: Node) -> None:
    volume_id = node.volume("pvc-1")
    api.put(pv_of(volume_id))
    started = time.monotonic()
    error = refused(
        lambda: router(api, timeout=60).modify(
            volume_id, {"maxIops": "1", **METADATA}, time_remaining=DEADLINE_MARGIN + 0.1
        )
    )
    assert error.code == Code.UNAVAILABLE and time.monotonic() - started < 5


@pytest.mark.parametrize(
    "pv",
    [
        None,
        Pv(name="pv-1", driver="other.csi.example.org", volume_handle=ids.volume_id_for("pvc-1")),
        Pv(name="pv-1", driver=DRIVER, volume_handle=ids.volume_id_for("pvc-2")),
        Pv(name="pv-1"),  # not a CSI volume
    ],
    ids=["no-pv", "other-driver", "other-volume", "not-csi"],
)
def test_a_pv_that_is_not_the_volume_is_not_found(
    api: FakePersistentVolumes, pv: Pv | None
) -> None:
    if pv is not None:
        api.put(pv)
    volume_id = ids.volume_id_for("pvc-1")
    error = refused(lambda: router(api).modify(volume_id, {"maxIops": "1", **METADATA}))
    assert error.code == Code.NOT_FOUND and "pv-1" in error.message
    assert api.patches == []


def test_without_the_pv_name_the_resizer_needs_extra_modify_metadata(
    api: FakePersistentVolumes,
) -> None:
    error = refused(lambda: router(api).modify(ids.volume_id_for("x"), {"maxIops": "1"}))
    assert error.code == Code.INVALID_ARGUMENT and "--extra-modify-metadata" in error.message
    assert api.calls == {}


@pytest.mark.parametrize(
    "bad", [{"maxIops": "10Mi"}, {"maxIops": "-1"}, {"bogus": "1"}, {"burstSeconds": "3601"}]
)
def test_bad_parameters_are_refused_before_anything_is_read_or_written(
    api: FakePersistentVolumes, node: Node, bad: dict[str, str]
) -> None:
    volume_id = node.volume("pvc-1")
    api.put(pv_of(volume_id))
    error = refused(lambda: router(api).modify(volume_id, {**bad, **METADATA}))
    assert error.code == Code.INVALID_ARGUMENT
    assert api.calls == {} and REQUEST not in api.annotations("pv-1")


def test_no_change_needs_no_node(api: FakePersistentVolumes, node: Node) -> None:
    volume_id = node.volume("pvc-1")
    api.put(pv_of(volume_id))
    router(api, timeout=0).modify(volume_id, dict(METADATA))
    assert api.patches == []


def test_the_nodes_refusal_comes_back_with_its_code_and_a_retry_asks_again(
    api: FakePersistentVolumes, node: Node, watching: ModifyWatcher
) -> None:
    missing = ids.volume_id_for("pvc-lost")  # the PV names this node, its pool lacks it
    api.put(pv_of(missing))
    for generation in (1, 2):
        error = refused(lambda: router(api).modify(missing, {"maxIops": "1", **METADATA}))
        assert error.code == Code.NOT_FOUND
        assert error.message.startswith(f"node {NODE}: ") and missing in error.message
        assert request_of(api.annotations("pv-1")) == ModifyRequest(generation, {"maxIops": "1"})


def test_api_failures_map_to_retryable_codes(api: FakePersistentVolumes, node: Node) -> None:
    volume_id = node.volume("pvc-1")
    api.put(pv_of(volume_id))
    for error, code in (
        (KubeError("annotate", "the object has been modified", 409), Code.ABORTED),
        (KubeError("annotate", "connection refused"), Code.UNAVAILABLE),
        (KubeError("annotate", "forbidden", 403), Code.FAILED_PRECONDITION),
    ):
        api.fail("patch_annotations", error)
        with pytest.raises(KubeError) as caught:
            router(api).modify(volume_id, {"maxIops": "1", **METADATA})
        assert status_of(caught.value)[0] == code


# -- the node -------------------------------------------------------------------------------


def request(volume_id: str, parameters: dict[str, str], generation: int = 1, **pv: str) -> Pv:
    """A PV with a pending request, as the central controller leaves it."""
    return Pv(
        name=pv.get("name", "pv-1"), driver=pv.get("driver", DRIVER), volume_handle=volume_id,
        nodes=frozenset({pv.get("node", NODE)}),
        annotations={REQUEST: ModifyRequest(generation, parameters).encode()},
    )  # fmt: skip


def answered(api: FakePersistentVolumes, name: str = "pv-1") -> ModifyResult:
    wait_for(f"an answer on {name}", lambda: answer(api, name) is not None)
    result = answer(api, name)
    assert result is not None
    return result


def test_requests_made_while_the_node_was_down_are_applied_when_it_starts(
    api: FakePersistentVolumes, node: Node
) -> None:
    first, second = node.volume("pvc-1"), node.volume("pvc-2")
    api.put(request(first, {"maxIops": "10"}, generation=3))
    api.put(request(second, {"maxReadBytesPerSecond": "1048576"}, name="pv-2"))
    watcher = node.watcher(api).start()
    try:
        assert answered(api).generation == 3 and answered(api, "pv-2").ok
    finally:
        watcher.stop()
    assert node.limits_of(first) == {"maxIops": "10"}
    assert node.limits_of(second) == {"maxReadBytesPerSecond": "1048576"}


def test_other_drivers_and_other_nodes_volumes_are_left_alone(
    api: FakePersistentVolumes, node: Node, watching: ModifyWatcher
) -> None:
    ours = node.volume("pvc-1")
    api.put(request(ours, {"maxIops": "5"}, name="pv-foreign", driver="other.example.org"))
    api.put(request(ids.volume_id_for("pvc-b"), {"maxIops": "5"}, name="pv-b", node="node-b"))
    api.put(request(ours, {"maxIops": "7"}))  # events arrive in order: this one comes last
    assert answered(api).ok
    assert answer(api, "pv-foreign") is None and answer(api, "pv-b") is None
    assert node.limits_of(ours) == {"maxIops": "7"}


def test_bad_parameters_in_a_request_are_answered_invalid_and_change_nothing(
    api: FakePersistentVolumes, node: Node, watching: ModifyWatcher
) -> None:
    volume_id = node.volume("pvc-1")
    api.put(request(volume_id, {"maxIops": "lots"}))
    assert answered(api).code == "INVALID_ARGUMENT"
    assert node.limits_of(volume_id) == {}


def test_an_answered_request_is_not_applied_again(api: FakePersistentVolumes, node: Node) -> None:
    volume_id = node.volume("pvc-1")
    done = ModifyResult(generation=1, code="OK", message="applied", node=NODE)
    pv = request(volume_id, {"maxIops": "10"})
    api.put(Pv(**{**pv.__dict__, "annotations": {**pv.annotations, RESULT: done.encode()}}))
    watcher = node.watcher(api)
    watcher.reconcile(api.list()[0][0])
    assert api.patches == [] and node.limits_of(volume_id) == {}


def test_list_and_watch_failures_are_survived_by_listing_again(
    api: FakePersistentVolumes, node: Node
) -> None:
    volume_id = node.volume("pvc-1")
    api.fail("list", KubeError("list", "connection refused"))
    api.fail("watch", KubeError("watch", "internal error", 500))
    watcher = node.watcher(api).start()
    try:
        wait_for("a watch that works", lambda: api.calls["watch"] >= 2)
        api.put(request(volume_id, {"maxIops": "3"}))
        assert answered(api).ok
    finally:
        watcher.stop()
    assert api.calls["list"] >= 3


def test_a_watch_gone_410_lists_again_and_loses_nothing(
    api: FakePersistentVolumes, node: Node, watching: ModifyWatcher
) -> None:
    volume_id = node.volume("pvc-1")
    wait_for("the first watch", lambda: api.calls["watch"] >= 1)
    api.compact()
    api.put(request(volume_id, {"maxIops": "4"}))
    assert answered(api).ok
    assert api.calls["list"] >= 2


def test_a_busy_volume_is_answered_once_it_is_free(
    api: FakePersistentVolumes, node: Node, watching: ModifyWatcher
) -> None:
    volume_id = node.volume("pvc-1")
    with node.locks.hold(volume_id):  # a local call on the same volume
        api.put(request(volume_id, {"maxIops": "9"}))
        time.sleep(0.3)
        assert answer(api) is None
    assert answered(api).ok and node.limits_of(volume_id) == {"maxIops": "9"}


def test_a_pv_deleted_before_the_answer_is_let_go(api: FakePersistentVolumes, node: Node) -> None:
    volume_id = node.volume("pvc-1")
    api.put(request(volume_id, {"maxIops": "2"}))
    pv = api.list()[0][0]
    api.delete("pv-1")
    node.watcher(api).reconcile(pv)  # applies, finds nothing to answer on, does not raise
    assert node.limits_of(volume_id) == {"maxIops": "2"}
