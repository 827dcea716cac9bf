"""Mutable parameters (VolumeAttributesClass) read into a device's I/O limits, and refused
as INVALID_ARGUMENT, naming the key and what it takes, when they are not ours or malformed."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from csi_vduse.csi import mutable
from csi_vduse.csi.errors import RpcError
from csi_vduse.dataplane import qos
from csi_vduse.dataplane.qos import QosLimits
from csi_vduse.pool.store import Pool


def refusal(given: dict[str, str]) -> str:
    with pytest.raises(RpcError) as refused:
        mutable.limits(given)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return refused.value.message


def test_nothing_given_is_no_limit_with_a_one_second_burst() -> None:
    assert mutable.limits({}) == qos.UNLIMITED == QosLimits(burst_ms=1000)
    assert mutable.limits({}).unlimited


def test_every_key_reaches_its_limit() -> None:
    given = {
        "maxIops": "500",
        "maxReadBytesPerSecond": "10485760",
        "maxWriteBytesPerSecond": "5242880",
        "burstSeconds": "3",
    }
    assert mutable.limits(given) == QosLimits(
        iops=500, read_bps=10 << 20, write_bps=5 << 20, burst_ms=3000
    )


def test_zero_is_no_limit_for_a_rate_and_no_burst_for_the_burst() -> None:
    assert mutable.limits({"maxIops": "0", "maxWriteBytesPerSecond": "0"}).unlimited
    assert mutable.limits({"burstSeconds": "0"}).burst_ms == 0


def test_the_bounds_are_accepted() -> None:
    top = str(qos.MAX_RATE)
    assert mutable.limits({"maxIops": top, "burstSeconds": "3600"}) == QosLimits(
        iops=qos.MAX_RATE, burst_ms=3_600_000
    )


def test_kubernetes_bookkeeping_keys_are_not_ours_to_check() -> None:
    assert mutable.check({"csi.storage.k8s.io/pvc/name": "x", "maxIops": "1"}) == {"maxIops": "1"}


def test_an_unknown_key_is_named_with_what_the_driver_takes() -> None:
    message = refusal({"XXX_FakeKey": "XXX_FakeValue", "maxIops": "1"})
    assert "XXX_FakeKey" in message
    for key in mutable.KEYS:
        assert key in message


@pytest.mark.parametrize(
    "value",
    ["", "-1", "+5", "05", "1.5", "10Mi", "1e3", " 1", "1 ", "0x10", "١٢", "9" * 17],
)
def test_a_malformed_rate_is_refused_with_its_key_and_range(value: str) -> None:
    message = refusal({"maxReadBytesPerSecond": value})
    assert "maxReadBytesPerSecond" in message and str(qos.MAX_RATE) in message


def test_a_rate_past_the_dataplane_s_range_is_refused() -> None:
    assert "maxIops" in refusal({"maxIops": str(qos.MAX_RATE + 1)})


@pytest.mark.parametrize("value", ["3601", "-1", "1s", ""])
def test_a_burst_out_of_range_is_refused(value: str) -> None:
    message = refusal({"burstSeconds": value})
    assert "burstSeconds" in message and "3600" in message


def test_merge_replaces_given_keys_and_keeps_the_others() -> None:
    current = {"maxIops": "100", "burstSeconds": "2"}
    assert mutable.merged(current, changes={"maxIops": "0", "maxWriteBytesPerSecond": "7"}) == {
        "maxIops": "0",
        "burstSeconds": "2",
        "maxWriteBytesPerSecond": "7",
    }
    assert mutable.merged(current, changes={}) == current
    assert current == {"maxIops": "100", "burstSeconds": "2"}


def test_a_bad_change_is_refused_before_anything_is_merged() -> None:
    current = {"maxIops": "100"}
    with pytest.raises(RpcError):
        mutable.merged(current, changes={"maxIops": "200", "bogus": "1"})
    assert current == {"maxIops": "100"}


def test_current_limits_come_from_the_pool_record(tmp_path: Path) -> None:
    pool = Pool(tmp_path)
    record = pool.create_volume(
        "limited", 1 << 20, {}, mutable_parameters={"maxIops": "42", "burstSeconds": "5"}
    )
    assert mutable.current_limits(pool, record.volume_id) == QosLimits(iops=42, burst_ms=5000)
    plain = pool.create_volume("plain", 1 << 20, {})
    assert mutable.current_limits(pool, plain.volume_id) == qos.UNLIMITED
    assert mutable.current_limits(pool, "vol-" + "0" * 32) == qos.UNLIMITED
