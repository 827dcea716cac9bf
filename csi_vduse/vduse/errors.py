"""VDUSE failures, each with the step, the errno and a hint at the usual cause."""

from __future__ import annotations

import errno as errno_codes
import os

from csi_vduse.errors import CsiVduseError

_HINTS: dict[tuple[str, int], str] = {
    ("open control", errno_codes.ENOENT): "the vduse kernel module is not loaded (modprobe vduse)",
    ("open control", errno_codes.EACCES): "permission denied: /dev/vduse/control needs root",
    ("open control", errno_codes.EPERM): "permission denied: /dev/vduse/control needs root",
    ("create device", errno_codes.EEXIST): "a VDUSE device with this name already exists",
    ("create device", errno_codes.EINVAL): "the kernel refused the device configuration",
    ("create device", errno_codes.EPERM): "the kernel refused: operation not permitted",
    ("open device", errno_codes.ENOENT): "no VDUSE device with this name",
    ("open device", errno_codes.EBUSY): "the device is already open in another process",
    ("destroy device", errno_codes.EBUSY): "the device is still attached to the vDPA bus or open",
    ("set api version", errno_codes.EINVAL): "the kernel does not support this API version",
    ("vq setup", errno_codes.EINVAL): "the kernel refused the virtqueue configuration",
    ("set bounce size", errno_codes.EINVAL): "the kernel refused the bounce buffer size",
    ("set bounce size", errno_codes.EPERM): "the device is already attached",
}


class VduseError(CsiVduseError):
    """A VDUSE ioctl or device-node operation failed."""

    @classmethod
    def from_os_error(cls, step: str, exc: OSError) -> VduseError:
        code = exc.errno or 0
        hint = _HINTS.get((step, code)) or os.strerror(code)
        return cls(step, f"{hint} ({errno_codes.errorcode.get(code, code)})", code)
