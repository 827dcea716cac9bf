"""The generated CSI protocol code (built from proto/csi.proto at install time)."""

from __future__ import annotations

from typing import Any

from csi_vduse._proto import csi_pb2 as pb
from csi_vduse._proto import csi_pb2_grpc as rpc

__all__ = ["pb", "register", "rpc", "stub"]


def register(server: object, service: str, servicer: object) -> None:
    """Add ``servicer`` as CSI ``service`` (Identity, Controller, Node) to ``server``."""
    adder = getattr(rpc, f"add_{service}Servicer_to_server")
    adder(servicer, server)


def stub(channel: object, service: str) -> Any:
    """A client stub for CSI ``service`` (Identity, Controller, Node) on ``channel``."""
    return getattr(rpc, f"{service}Stub")(channel)
