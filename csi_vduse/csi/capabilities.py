"""What the driver advertises: one table each, so what is announced is what is served."""

from __future__ import annotations

from csi_vduse.csi.proto import pb

TOPOLOGY_KEY = "topology.vduse.csi/node"

_PluginService = pb.PluginCapability.Service.Type
_PluginExpansion = pb.PluginCapability.VolumeExpansion.Type
_Controller = pb.ControllerServiceCapability.RPC.Type
_Node = pb.NodeServiceCapability.RPC.Type


def plugin(
    controller: bool, *, group_controller: bool = False, topology: bool = True
) -> list[pb.PluginCapability]:
    """``topology``: volumes are reachable from one node only (the node-local pool's); an
    RBD-only instance has none, so external-provisioner needs no view of the nodes."""
    services = [_PluginService.VOLUME_ACCESSIBILITY_CONSTRAINTS] if topology else []
    if group_controller:
        services.insert(0, _PluginService.GROUP_CONTROLLER_SERVICE)
    if controller:
        services.insert(0, _PluginService.CONTROLLER_SERVICE)
    return [
        *(pb.PluginCapability(service=pb.PluginCapability.Service(type=t)) for t in services),
        pb.PluginCapability(
            volume_expansion=pb.PluginCapability.VolumeExpansion(type=_PluginExpansion.ONLINE)
        ),
    ]


CONTROLLER = (
    _Controller.CREATE_DELETE_VOLUME,
    _Controller.LIST_VOLUMES,
    _Controller.GET_CAPACITY,
    _Controller.CREATE_DELETE_SNAPSHOT,
    _Controller.LIST_SNAPSHOTS,
    _Controller.CLONE_VOLUME,
    _Controller.EXPAND_VOLUME,
    _Controller.MODIFY_VOLUME,
    _Controller.GET_VOLUME,
    _Controller.VOLUME_CONDITION,
    _Controller.SINGLE_NODE_MULTI_WRITER,
)

NODE = (
    _Node.STAGE_UNSTAGE_VOLUME,
    _Node.GET_VOLUME_STATS,
    _Node.EXPAND_VOLUME,
    _Node.VOLUME_CONDITION,
    _Node.SINGLE_NODE_MULTI_WRITER,
)


def controller() -> list[pb.ControllerServiceCapability]:
    return [
        pb.ControllerServiceCapability(rpc=pb.ControllerServiceCapability.RPC(type=t))
        for t in CONTROLLER
    ]


def node() -> list[pb.NodeServiceCapability]:
    return [pb.NodeServiceCapability(rpc=pb.NodeServiceCapability.RPC(type=t)) for t in NODE]
