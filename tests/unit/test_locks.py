"""Per-volume operation locks: a busy volume answers ABORTED, others go ahead."""

from __future__ import annotations

import threading

import grpc
import pytest

from csi_vduse.csi.errors import RpcError
from csi_vduse.csi.locks import OperationLocks


def test_a_second_call_on_a_busy_volume_is_aborted_and_others_proceed() -> None:
    locks = OperationLocks()
    entered, release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def slow_stage() -> None:
        with locks.hold("vol-a"):
            entered.set()
            release.wait(10)
            outcomes.append("first done")

    worker = threading.Thread(target=slow_stage)
    worker.start()
    assert entered.wait(10)
    with pytest.raises(RpcError) as busy, locks.hold("vol-a"):
        outcomes.append("must not run")
    assert busy.value.code == grpc.StatusCode.ABORTED
    assert "vol-a" in busy.value.message
    with locks.hold("vol-b"):
        outcomes.append("other volume")
    release.set()
    worker.join()
    assert outcomes == ["other volume", "first done"]
    with locks.hold("vol-a"):
        pass


def test_holding_several_keys_is_all_or_nothing() -> None:
    locks = OperationLocks()
    with locks.hold("snap-1"), pytest.raises(RpcError), locks.hold("vol-1", "snap-1"):
        pass
    # The refused call took nothing: vol-1 is free.
    with locks.hold("vol-1"):
        pass


def test_a_failing_call_releases_its_lock() -> None:
    locks = OperationLocks()
    with pytest.raises(ValueError), locks.hold("vol-a"):
        raise ValueError("boom")
    with locks.hold("vol-a"):
        pass
