"""The QoS page: what the driver writes is what a dataplane's mapping reads, live."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from csi_vduse.dataplane import qos
from csi_vduse.dataplane.qos import QosError, QosLimits


def _sequence(path: Path) -> int:
    return int(struct.unpack_from("<I", path.read_bytes(), qos.SEQUENCE_OFFSET)[0])


def test_a_page_reads_back_the_limits_it_was_made_with(tmp_path: Path) -> None:
    path = tmp_path / "vol.qos"
    limits = QosLimits(iops=100, read_bps=1 << 20, write_bps=0, burst_ms=250)
    qos.create(path, limits)
    assert path.stat().st_size == qos.PAGE_SIZE
    assert qos.read(path) == limits
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_a_mapped_page_sees_an_update_without_being_mapped_again(tmp_path: Path) -> None:
    path = tmp_path / "vol.qos"
    qos.create(path, qos.UNLIMITED)
    page = qos.map_page(qos.open_page(path))
    try:
        qos.update(path, QosLimits(iops=7, write_bps=4096))
        assert qos.parse(bytes(page)) == QosLimits(iops=7, write_bps=4096)
        assert _sequence(path) == 2  # even: no writer at work
        qos.update(path, QosLimits(iops=9))
        assert qos.parse(bytes(page)).iops == 9
        assert _sequence(path) == 4
    finally:
        page.close()


def test_an_update_left_half_done_is_finished_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "vol.qos"
    qos.create(path, qos.UNLIMITED)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, qos.SEQUENCE_OFFSET, 3)  # a writer died mid-update
    path.write_bytes(bytes(data))
    qos.update(path, QosLimits(iops=5))
    assert _sequence(path) == 4
    assert qos.read(path).iops == 5


def test_update_writes_a_missing_or_foreign_page_afresh(tmp_path: Path) -> None:
    missing = tmp_path / "missing.qos"
    qos.update(missing, QosLimits(iops=1))
    assert qos.read(missing).iops == 1
    foreign = tmp_path / "foreign.qos"
    foreign.write_bytes(b"x" * 100)
    qos.update(foreign, QosLimits(read_bps=2))
    assert qos.read(foreign) == QosLimits(read_bps=2)


def test_a_device_made_before_limits_existed_gets_an_unlimited_page(tmp_path: Path) -> None:
    path = tmp_path / "old.qos"
    page = qos.map_page(qos.open_page(path))
    try:
        assert qos.parse(bytes(page)) == qos.UNLIMITED
        assert qos.UNLIMITED.unlimited
    finally:
        page.close()


@pytest.mark.parametrize("content", [b"", b"short", b"NOTQOS!\0" + bytes(56)])
def test_a_dataplane_refuses_a_page_that_is_not_ours(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.qos"
    path.write_bytes(content)
    with pytest.raises(QosError):
        qos.map_page(os.open(path, os.O_RDONLY))


@pytest.mark.parametrize(
    "fields",
    [{"iops": -1}, {"read_bps": qos.MAX_RATE + 1}, {"burst_ms": qos.MAX_BURST_MS + 1}],
)
def test_limits_out_of_range_are_refused(fields: dict[str, int]) -> None:
    with pytest.raises(QosError, match=next(iter(fields))):
        QosLimits(**fields)
