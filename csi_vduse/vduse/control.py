"""``/dev/vduse/control``: API version negotiation, device creation and destruction."""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from csi_vduse.vduse.errors import VduseError
from csi_vduse.vduse.fd_owner import FdOwner
from csi_vduse.vduse.uapi import ffi, ioctl, lib

log = logging.getLogger(__name__)

CONTROL_PATH = Path("/dev/vduse/control")
SYSFS_CLASS = Path("/sys/class/vduse")
SUPPORTED_API_VERSION = 0  # the highest uAPI version this code speaks


def valid_device_name(name: str) -> bool:
    """Whether the kernel can take ``name``: it becomes /dev/vduse/NAME and the vDPA name."""
    return 0 < len(name.encode()) < lib.VDUSE_NAME_MAX and "/" not in name and "\0" not in name


def device_exists(name: str) -> bool:
    return (SYSFS_CLASS / name).exists()


# The kernel's bounds for a device's bounce buffer (VDUSE_MIN/MAX_BOUNCE_SIZE); 64 MiB is its
# default. Every byte the guest moves passes through it, and the pages the dataplane has
# touched count in its resident memory.
MIN_BOUNCE_SIZE = 1 << 20
MAX_BOUNCE_SIZE = 1 << 30


def set_bounce_size(name: str, size: int, sysfs: Path = SYSFS_CLASS) -> bool:
    """Size the bounce buffer of a device not yet attached; False where the kernel has no
    such attribute (it then keeps its default)."""
    attribute = sysfs / name / "bounce_size"
    if not attribute.exists():
        return False
    try:
        attribute.write_text(f"{size}\n")
    except OSError as exc:
        raise VduseError.from_os_error("set bounce size", exc) from exc
    return True


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    """What VDUSE_CREATE_DEV is told about a new device."""

    name: str
    device_id: int
    vendor_id: int
    features: int
    vq_num: int
    vq_align: int
    config: bytes


class VduseControl(FdOwner):
    """An open control node with a negotiated API version."""

    def __init__(self, path: Path = CONTROL_PATH) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise VduseError.from_os_error("open control", exc) from exc
        try:
            self.api_version = self._negotiate()
        except BaseException:
            os.close(self.fd)
            raise

    def _negotiate(self) -> int:
        kernel = ffi.new("uint64_t *")
        try:
            ioctl(self.fd, lib.VDUSE_GET_API_VERSION, kernel)
        except OSError as exc:
            raise VduseError.from_os_error("get api version", exc) from exc
        version = min(int(kernel[0]), SUPPORTED_API_VERSION)
        try:
            ioctl(self.fd, lib.VDUSE_SET_API_VERSION, ffi.new("uint64_t *", version))
        except OSError as exc:
            raise VduseError.from_os_error("set api version", exc) from exc
        log.debug("VDUSE API version %d (kernel offers %d)", version, kernel[0])
        return version

    def create_device(self, config: DeviceConfig) -> None:
        if not valid_device_name(config.name):
            raise VduseError("create device", f"invalid device name {config.name!r}", errno.EINVAL)
        size = ffi.sizeof("struct vduse_dev_config") + len(config.config)
        buffer = ffi.new("char[]", size)
        raw = ffi.cast("struct vduse_dev_config *", buffer)
        name = config.name.encode()
        ffi.memmove(raw.name, name, len(name))
        raw.vendor_id = config.vendor_id
        raw.device_id = config.device_id
        raw.features = config.features
        raw.vq_num = config.vq_num
        raw.vq_align = config.vq_align
        raw.config_size = len(config.config)
        ffi.memmove(
            buffer + ffi.sizeof("struct vduse_dev_config"), config.config, len(config.config)
        )
        try:
            ioctl(self.fd, lib.VDUSE_CREATE_DEV, raw)
        except OSError as exc:
            raise VduseError.from_os_error("create device", exc) from exc
        log.info("created VDUSE device %s", config.name)

    def destroy_device(self, name: str) -> bool:
        """Destroy ``name``; False when there was no such device."""
        buffer = ffi.new("char[]", lib.VDUSE_NAME_MAX)
        encoded = name.encode()[: lib.VDUSE_NAME_MAX - 1]
        ffi.memmove(buffer, encoded, len(encoded))
        try:
            ioctl(self.fd, lib.VDUSE_DESTROY_DEV, buffer)
        except OSError as exc:
            if exc.errno == errno.EINVAL and not device_exists(name):
                return False
            raise VduseError.from_os_error("destroy device", exc) from exc
        log.info("destroyed VDUSE device %s", name)
        return True
