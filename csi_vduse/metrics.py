"""Prometheus metrics of the driver process (served with --metrics-address)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from csi_vduse.dataplane import stats as dpstats

log = logging.getLogger(__name__)

RPC_CALLS = Counter(
    "csi_vduse_rpc_calls",
    "CSI calls answered, by RPC and gRPC status code",
    ["rpc", "code"],
)
RPC_SECONDS = Histogram(
    "csi_vduse_rpc_duration_seconds",
    "Time to answer a CSI call, by RPC and gRPC status code",
    ["rpc", "code"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
GROUP_PAUSE_SECONDS = Histogram(
    "csi_vduse_group_snapshot_pause_seconds",
    "How long a group snapshot held the I/O of its volumes on this node",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
_BUCKET_LABELS = [repr(ns / 1e9) for ns in dpstats.BUCKET_BOUNDS_NS] + ["+Inf"]


def record_rpc(rpc: str, *, code: str, seconds: float) -> None:
    RPC_CALLS.labels(rpc, code).inc()
    RPC_SECONDS.labels(rpc, code).observe(seconds)


class VolumeStatsCollector(Collector):
    """Per-volume I/O metrics, read at scrape time from the dataplanes' stats files.

    The files are the dataplanes' own counters (see ``csi_vduse.dataplane.stats``); reading them
    when scraped keeps the driver out of the I/O path and needs no coordination.
    """

    def __init__(self, devices_dir: Path) -> None:
        self.devices_dir = devices_dir

    def _volumes(self) -> Iterator[tuple[str, dpstats.VolumeStats]]:
        try:
            paths = sorted(self.devices_dir.glob("*.stats"))
        except OSError as exc:
            log.debug("no volume stats in %s: %s", self.devices_dir, exc)
            return
        for path in paths:
            try:
                yield path.stem, dpstats.read(path)
            except (OSError, dpstats.StatsError) as exc:
                log.debug("skipping volume stats %s: %s", path, exc)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "csi_vduse_volume_requests", "virtio-blk requests served, by volume and op",
            labels=["volume", "op"],
        )  # fmt: skip
        transferred = CounterMetricFamily(
            "csi_vduse_volume_bytes", "Bytes read or written by the guest, by volume",
            labels=["volume", "direction"],
        )  # fmt: skip
        errors = CounterMetricFamily(
            "csi_vduse_volume_errors", "Requests answered with an error status, by volume",
            labels=["volume", "status"],
        )  # fmt: skip
        direct = CounterMetricFamily(
            "csi_vduse_volume_direct_io_requests",
            "Reads and writes done with O_DIRECT (the rest use the node's page cache)",
            labels=["volume"],
        )
        waiting = GaugeMetricFamily(
            "csi_vduse_volume_backend_wait_seconds",
            "How long requests have waited on the backend (file or Ceph) with none finishing; "
            "0 while none waits",
            labels=["volume"],
        )
        now_ns = time.monotonic_ns()
        latency = HistogramMetricFamily(
            "csi_vduse_volume_request_duration_seconds",
            "Time from taking a request off the ring to writing its status, by volume",
            labels=["volume"],
        )
        for volume, found in self._volumes():
            for op, count in found.requests.items():
                requests.add_metric([volume, op], count)
            transferred.add_metric([volume, "read"], found.bytes_read)
            transferred.add_metric([volume, "write"], found.bytes_written)
            errors.add_metric([volume, "ioerr"], found.ioerr)
            errors.add_metric([volume, "unsupp"], found.unsupp)
            direct.add_metric([volume], found.direct)
            waiting.add_metric([volume], found.waiting_ns(now_ns) / 1e9)
            cumulative, buckets = 0, []
            for label, count in zip(_BUCKET_LABELS, found.buckets, strict=True):
                cumulative += count
                buckets.append((label, float(cumulative)))
            latency.add_metric([volume], buckets, found.latency_ns / 1e9)
        yield from (requests, transferred, errors, direct, waiting, latency)


_watching: list[VolumeStatsCollector] = []


def watch_volumes(state_dir: Path) -> None:
    """Export the I/O metrics of the devices whose records live in ``state_dir``."""
    while _watching:
        REGISTRY.unregister(_watching.pop())
    _watching.append(VolumeStatsCollector(state_dir / "devices"))
    REGISTRY.register(_watching[0])


def serve(address: str) -> None:
    """Serve /metrics on ``host:port`` (an empty host listens on every address)."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
