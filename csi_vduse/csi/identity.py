"""The Identity service: who we are, what we offer, whether we are ready."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from google.protobuf.wrappers_pb2 import BoolValue

from csi_vduse.about import package_version
from csi_vduse.csi import capabilities
from csi_vduse.csi.edge import rpc
from csi_vduse.csi.proto import pb

log = logging.getLogger(__name__)


class IdentityService:
    def __init__(
        self, driver_name: str, controller: bool, readiness: Callable[[], str | None], *,
        group_controller: bool = False, topology: bool = True,
    ) -> None:  # fmt: skip
        self.driver_name = driver_name
        self.controller = controller
        self.group_controller = group_controller  # only where there is a pool to snapshot
        self.topology = topology  # only where there is a pool: its volumes are the node's
        self.readiness = readiness  # returns why the plugin is not ready, or None

    @rpc
    def GetPluginInfo(
        self, request: pb.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetPluginInfoResponse:
        return pb.GetPluginInfoResponse(name=self.driver_name, vendor_version=package_version())

    @rpc
    def GetPluginCapabilities(
        self, request: pb.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.GetPluginCapabilitiesResponse:
        return pb.GetPluginCapabilitiesResponse(
            capabilities=capabilities.plugin(
                self.controller, group_controller=self.group_controller, topology=self.topology
            )
        )

    @rpc
    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> pb.ProbeResponse:
        problem = self.readiness()
        if problem:
            log.warning("not ready: %s", problem)
        return pb.ProbeResponse(ready=BoolValue(value=problem is None))
