"""Prometheus metrics of the driver process (served with --metrics-address)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_CALLS = Counter(
    "csi_vduse_rpc_calls",
    "CSI calls answered, by RPC and gRPC status code",
    ["rpc", "code"],
)
RPC_SECONDS = Histogram(
    "csi_vduse_rpc_duration_seconds",
    "Time to answer a CSI call, by RPC",
    ["rpc"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


def record_rpc(rpc: str, code: str, seconds: float) -> None:
    RPC_CALLS.labels(rpc, code).inc()
    RPC_SECONDS.labels(rpc).observe(seconds)


def serve(address: str) -> None:
    """Serve /metrics on ``host:port`` (an empty host listens on every address)."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
