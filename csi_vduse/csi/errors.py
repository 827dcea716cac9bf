"""The one place where every layer's errors become gRPC status codes."""

from __future__ import annotations

import errno

import grpc

from csi_vduse.devices.errors import DeviceError, RbdImageError
from csi_vduse.devices.pausing import PauseError
from csi_vduse.errors import CsiVduseError
from csi_vduse.kube.volumes import KubeError
from csi_vduse.mounts.errors import MountError
from csi_vduse.pool.errors import PoolError
from csi_vduse.rbd.errors import RbdVolumeError
from csi_vduse.volumes.errors import VolumeError

Code = grpc.StatusCode


class RpcError(CsiVduseError):
    """A request the CSI spec says to refuse with ``code``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__("request", message)
        self.code = code


def invalid(message: str) -> RpcError:
    return RpcError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> RpcError:
    return RpcError(Code.NOT_FOUND, message)


def already_exists(message: str) -> RpcError:
    return RpcError(Code.ALREADY_EXISTS, message)


def failed_precondition(message: str) -> RpcError:
    return RpcError(Code.FAILED_PRECONDITION, message)


def unimplemented(message: str) -> RpcError:
    return RpcError(Code.UNIMPLEMENTED, message)


_POOL_CODES = {
    errno.ENOENT: Code.NOT_FOUND,
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.ENOSPC: Code.RESOURCE_EXHAUSTED,
    errno.EDQUOT: Code.RESOURCE_EXHAUSTED,
    errno.EFBIG: Code.OUT_OF_RANGE,
    errno.EINVAL: Code.INVALID_ARGUMENT,
}
_DEVICE_CODES = {
    errno.ENODEV: Code.FAILED_PRECONDITION,  # the kernel lacks vduse / virtio_vdpa
    errno.ENOSPC: Code.RESOURCE_EXHAUSTED,
}
_RBD_IMAGE_CODES = {  # what Ceph said about the image a device is to serve
    errno.ENOENT: Code.NOT_FOUND,
    errno.EBUSY: Code.FAILED_PRECONDITION,  # another client (node) holds its lock
    errno.EINVAL: Code.INVALID_ARGUMENT,
    errno.EACCES: Code.PERMISSION_DENIED,  # the secrets' user was refused
    errno.EPERM: Code.PERMISSION_DENIED,
    errno.ETIMEDOUT: Code.UNAVAILABLE,  # no monitor answered
}
_VOLUME_CODES = {
    errno.ENOENT: Code.NOT_FOUND,
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.ENXIO: Code.FAILED_PRECONDITION,  # not staged
    errno.EBUSY: Code.FAILED_PRECONDITION,  # still published
    errno.EINVAL: Code.INVALID_ARGUMENT,
    errno.ENOSPC: Code.RESOURCE_EXHAUSTED,  # the node's volume limit
}
_RBD_CODES = {
    errno.EINVAL: Code.INVALID_ARGUMENT,  # the secrets, or a name Ceph refused
    errno.ENXIO: Code.INVALID_ARGUMENT,  # a clusterID not in the clusters file
    errno.ENOENT: Code.NOT_FOUND,
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.EBUSY: Code.FAILED_PRECONDITION,  # a node still has the image open
    errno.ENOTEMPTY: Code.FAILED_PRECONDITION,  # it has snapshots not made through CSI
    errno.EXDEV: Code.INVALID_ARGUMENT,  # a restore or clone into another pool
    errno.EACCES: Code.PERMISSION_DENIED,  # the cluster refused the secrets' user
    errno.EPERM: Code.PERMISSION_DENIED,
    errno.ETIMEDOUT: Code.UNAVAILABLE,  # the monitors or OSDs did not answer in time
    errno.EAGAIN: Code.ABORTED,
    errno.ENOKEY: Code.FAILED_PRECONDITION,  # the controller has no credentials of its own
    errno.ENODATA: Code.UNAVAILABLE,  # no space figures yet (ceph-mgr down)
}
# HTTP statuses of the Kubernetes API (None: it did not answer).
_KUBE_CODES: dict[int | None, grpc.StatusCode] = {
    None: Code.UNAVAILABLE,
    401: Code.FAILED_PRECONDITION,  # the driver's own credentials or RBAC
    403: Code.FAILED_PRECONDITION,
    404: Code.NOT_FOUND,
    409: Code.ABORTED,  # changed meanwhile: the CO retries
    429: Code.UNAVAILABLE,
    500: Code.UNAVAILABLE,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.UNAVAILABLE,
}
_MOUNT_CODES = {
    errno.EEXIST: Code.FAILED_PRECONDITION,  # data of another kind on the volume
    errno.ENOTDIR: Code.INVALID_ARGUMENT,
    errno.EISDIR: Code.INVALID_ARGUMENT,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed RPC answers with."""
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    if isinstance(exc, PauseError):
        # The volumes could not be paused together, or not for as long as their copies
        # took; nothing was kept, and another try may fare better.
        return Code.UNAVAILABLE, f"{exc.step}: {exc.message}"
    if isinstance(exc, KubeError):
        return _KUBE_CODES.get(exc.status, Code.INTERNAL), f"{exc.step}: {exc.message}"
    if isinstance(exc, PoolError):
        table = _POOL_CODES
    elif isinstance(exc, RbdImageError):
        table = _RBD_IMAGE_CODES
    elif isinstance(exc, DeviceError):
        table = _DEVICE_CODES
    elif isinstance(exc, VolumeError):
        table = _VOLUME_CODES
    elif isinstance(exc, MountError):
        table = _MOUNT_CODES
    elif isinstance(exc, RbdVolumeError):
        table = _RBD_CODES
    elif isinstance(exc, CsiVduseError):
        table = {}
    else:
        return Code.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
    assert isinstance(exc, CsiVduseError)
    code = table.get(exc.errno or 0, Code.INTERNAL)
    return code, f"{exc.step}: {exc.message}"
