"""Per-volume I/O counters: the C loop's stats file, and the driver's collector reading it."""

from __future__ import annotations

import os
import re
import socket
import struct
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from csi_vduse.dataplane import stats
from csi_vduse.metrics import VolumeStatsCollector
from csi_vduse.virtio.blk import SECTOR_SIZE, BlkStatus
from csi_vduse.virtio.blk import RequestType as Blk
from tests.driver import Driver, pb
from tests.unit.test_dataplane import make_rig


def test_the_c_loop_counts_requests_bytes_errors_and_latency(tmp_path: Path) -> None:
    path = tmp_path / "vol.stats"
    counters = stats.StatsFile(stats.create(path, queues=1), queues=1)
    rig = make_rig(tmp_path, engine="fast", stats=counters)
    try:
        data = os.urandom(4 * SECTOR_SIZE)
        for sector in range(3):
            [done] = rig.roundtrip(Blk.OUT, sector=sector * 8, out=data)
            assert done.status == BlkStatus.OK
        for _ in range(2):
            [done] = rig.roundtrip(Blk.IN, sector=0, in_len=2 * SECTOR_SIZE)
            assert done.status == BlkStatus.OK
        [done] = rig.roundtrip(Blk.FLUSH)
        [done] = rig.roundtrip(Blk.IN, sector=1 << 40, in_len=SECTOR_SIZE)
        assert done.status == BlkStatus.IOERR
        [done] = rig.roundtrip(99, out=b"\0" * 16)
        assert done.status == BlkStatus.UNSUPP
    finally:
        rig.close()
        counters.close()
    found = stats.read(path)
    assert found.requests == {
        "read": 3, "write": 3, "flush": 1, "discard": 0, "write_zeroes": 0, "get_id": 0,
        "other": 1,
    }  # fmt: skip
    assert (found.bytes_read, found.bytes_written) == (2 * 2 * SECTOR_SIZE, 3 * len(data))
    assert (found.ioerr, found.unsupp) == (1, 1)
    assert sum(found.buckets) == 8
    assert found.latency_ns > 0
    assert found.waiting_since_ns == 0  # every request finished: none waits


def _block(**words: int) -> list[int]:
    block = [0] * stats.WORDS
    for index, op in enumerate(stats.OPS):
        block[index] = words.get(op, 0)
    block[stats.BYTES_READ] = words.get("bytes_read", 0)
    block[stats.BYTES_WRITTEN] = words.get("bytes_written", 0)
    block[stats.IOERR] = words.get("ioerr", 0)
    block[stats.LATENCY_NS] = words.get("latency_ns", 0)
    block[stats.DIRECT] = words.get("direct", 0)
    block[stats.WAITING_SINCE] = words.get("waiting_since", 0)
    block[stats.FIRST_BUCKET] = words.get("fast", 0)
    block[stats.FIRST_BUCKET + stats.BUCKETS - 1] = words.get("slow", 0)
    return block


def write_stats(path: Path, *blocks: list[int], version: int = stats.VERSION) -> None:
    """A stats file as a dataplane would leave it, written by hand from the documented layout."""
    header = struct.pack(
        "<8sIIII", b"CSIVDST\0", version, len(blocks), stats.WORDS, stats.BUCKETS
    ).ljust(64, b"\0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(struct.pack(f"<{stats.WORDS}Q", *b) for b in blocks))


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_collector_sums_queues_and_skips_unreadable_files(tmp_path: Path) -> None:
    devices = tmp_path / "devices"
    write_stats(
        devices / "pvc-a.stats",
        _block(read=5, write=2, bytes_read=4096, bytes_written=1024, ioerr=1, latency_ns=3_000_000,
               fast=6, direct=3),
        _block(read=1, flush=4, latency_ns=2_000_000_000, slow=5, direct=1,
               waiting_since=time.monotonic_ns() - 45_000_000_000),
    )  # fmt: skip
    write_stats(devices / "old.stats", _block(read=9), version=stats.VERSION + 1)
    (devices / "short.stats").write_bytes((devices / "pvc-a.stats").read_bytes()[:100])
    (devices / "junk.stats").write_bytes(b"not stats at all" * 10)
    registry = CollectorRegistry()
    registry.register(VolumeStatsCollector(devices))
    samples = _samples(registry)
    vol = ("volume", "pvc-a")
    assert samples["csi_vduse_volume_requests_total", (("op", "read"), vol)] == 6
    assert samples["csi_vduse_volume_requests_total", (("op", "flush"), vol)] == 4
    assert samples["csi_vduse_volume_bytes_total", (("direction", "read"), vol)] == 4096
    assert samples["csi_vduse_volume_bytes_total", (("direction", "write"), vol)] == 1024
    assert samples["csi_vduse_volume_errors_total", (("status", "ioerr"), vol)] == 1
    assert samples["csi_vduse_volume_errors_total", (("status", "unsupp"), vol)] == 0
    assert samples["csi_vduse_volume_direct_io_requests_total", (vol,)] == 4
    assert 45 <= samples["csi_vduse_volume_backend_wait_seconds", (vol,)] < 45 + 60
    histogram = "csi_vduse_volume_request_duration_seconds"
    assert samples[histogram + "_bucket", (("le", "1.6e-05"), vol)] == 6
    assert samples[histogram + "_bucket", (("le", "1.048576"), vol)] == 6
    assert samples[histogram + "_bucket", (("le", "+Inf"), vol)] == 11
    assert samples[histogram + "_count", (vol,)] == 11
    assert samples[histogram + "_sum", (vol,)] == 2.003
    assert {dict(labels).get("volume") for _, labels in samples} == {"pvc-a"}


def test_collector_with_no_devices_directory_yields_empty_families(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(VolumeStatsCollector(tmp_path / "missing"))
    assert _samples(registry) == {}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_exposes_volume_metrics(tmp_path: Path) -> None:
    port = _free_port()
    driver = Driver(tmp_path, extra=["--metrics-address", f"127.0.0.1:{port}"])
    write_stats(
        driver.state_dir / "devices" / "pvc-b.stats", _block(write=7, bytes_written=7 << 12)
    )
    driver.start()
    try:
        with pytest.raises(grpc.RpcError):
            driver.controller_stub.DeleteVolume(pb.DeleteVolumeRequest())
        driver.identity.Probe(pb.ProbeRequest())
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        driver.stop()
    assert 'csi_vduse_volume_requests_total{op="write",volume="pvc-b"} 7.0' in text
    assert 'csi_vduse_volume_bytes_total{direction="write",volume="pvc-b"} 28672.0' in text
    assert 'csi_vduse_volume_request_duration_seconds_count{volume="pvc-b"} 0.0' in text
    # CSI operations, by RPC and status code.
    assert 'csi_vduse_rpc_calls_total{code="INVALID_ARGUMENT",rpc="DeleteVolume"} 1.0' in text
    assert 'csi_vduse_rpc_duration_seconds_count{code="OK",rpc="Probe"} 1.0' in text


def test_stats_h_and_the_python_layout_agree() -> None:
    header = (Path(stats.__file__).parent / "fast" / "stats.h").read_text()
    defined = dict(re.findall(r"#define (DP_ST_\w+) (\d+)", header))
    expected = {f"DP_ST_{op.upper()}": index for index, op in enumerate(stats.OPS)} | {
        "DP_ST_BYTES_READ": stats.BYTES_READ, "DP_ST_BYTES_WRITTEN": stats.BYTES_WRITTEN,
        "DP_ST_IOERR": stats.IOERR, "DP_ST_UNSUPP": stats.UNSUPP,
        "DP_ST_LATENCY_NS": stats.LATENCY_NS, "DP_ST_BUCKET0": stats.FIRST_BUCKET,
        "DP_ST_BUCKETS": stats.BUCKETS, "DP_ST_WORDS": stats.WORDS, "DP_ST_DIRECT": stats.DIRECT,
        "DP_ST_WAITING_SINCE": stats.WAITING_SINCE,
    }  # fmt: skip
    assert {name: int(value) for name, value in defined.items()} == expected


def test_the_earliest_queue_waiting_says_how_long_requests_have_waited(tmp_path: Path) -> None:
    path = tmp_path / "vol.stats"
    write_stats(path, _block(read=1), _block(waiting_since=7_000), _block(waiting_since=5_000))
    found = stats.read(path)
    assert found.waiting_since_ns == 5_000
    assert found.waiting_ns(65_000) == 60_000
    write_stats(path, _block(read=1), _block(write=2))  # idle, or from before the mark
    assert stats.read(path).waiting_ns(65_000) == 0
