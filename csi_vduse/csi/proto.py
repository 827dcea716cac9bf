"""The generated CSI protocol code (built from proto/csi.proto at install time)."""

from __future__ import annotations

from csi_vduse._proto import csi_pb2 as pb
from csi_vduse._proto import csi_pb2_grpc as rpc

__all__ = ["pb", "register", "rpc"]


def register(server: object, service: str, servicer: object) -> None:
    """Add ``servicer`` as CSI ``service`` (Identity, Controller, Node) to ``server``."""
    adder = getattr(rpc, f"add_{service}Servicer_to_server")
    adder(servicer, server)
