"""``/dev/vduse/$NAME``: virtqueue setup and info, kick fds, interrupts, IOTLB, messages.

The kernel lets one process at a time hold this node open; whoever holds it
answers the device's control messages.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from csi_vduse.vduse.errors import VduseError
from csi_vduse.vduse.fd_owner import FdOwner
from csi_vduse.vduse.messages import REQUEST_SIZE, Request, Response
from csi_vduse.vduse.uapi import ffi, ioctl, lib

DEVICE_DIR = Path("/dev/vduse")


@dataclass(frozen=True, kw_only=True)
class VqInfo:
    index: int
    num: int
    desc_addr: int
    driver_addr: int
    device_addr: int
    avail_index: int
    ready: bool
    # Packed rings: where the driver starts, as position | wrap counter << 15.
    packed_avail: int = 1 << 15
    packed_used: int = 1 << 15


@dataclass(frozen=True, kw_only=True)
class IotlbEntry:
    """One IOVA region [start, last] backed by a mappable file at ``offset``."""

    offset: int
    start: int
    last: int
    perm: int

    @property
    def size(self) -> int:
        return self.last - self.start + 1

    @property
    def writable(self) -> bool:
        return bool(self.perm & lib.VDUSE_ACCESS_WO)

    @property
    def readable(self) -> bool:
        return bool(self.perm & lib.VDUSE_ACCESS_RO)


class DeviceNode(FdOwner):
    """An open ``/dev/vduse/$NAME``."""

    def __init__(
        self, name: str, *, nonblocking: bool = False, wait: float = 2.0, fd: int | None = None
    ) -> None:
        """Open the node, or adopt ``fd``: the node opened on our behalf."""
        self.name = name
        if fd is not None:
            self.fd = fd
            os.set_blocking(fd, not nonblocking)
            return
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0)
        deadline = time.monotonic() + wait
        while True:
            try:
                self.fd = os.open(DEVICE_DIR / name, flags)
                break
            except FileNotFoundError as exc:
                # devtmpfs may publish the node a moment after VDUSE_CREATE_DEV returns.
                if time.monotonic() >= deadline:
                    raise VduseError.from_os_error("open device", exc) from exc
                time.sleep(0.01)
            except OSError as exc:
                raise VduseError.from_os_error("open device", exc) from exc

    def vq_setup(self, index: int, *, max_size: int) -> None:
        config = ffi.new("struct vduse_vq_config *")
        config.index = index
        config.max_size = max_size
        self._ioctl("vq setup", lib.VDUSE_VQ_SETUP, config)

    def vq_info(self, index: int) -> VqInfo:
        info = ffi.new("struct vduse_vq_info *")
        info.index = index
        self._ioctl("vq get info", lib.VDUSE_VQ_GET_INFO, info)
        return VqInfo(
            index=info.index,
            num=info.num,
            desc_addr=info.desc_addr,
            driver_addr=info.driver_addr,
            device_addr=info.device_addr,
            avail_index=info.split.avail_index,
            ready=bool(info.ready),
            packed_avail=info.packed.last_avail_idx | info.packed.last_avail_counter << 15,
            packed_used=info.packed.last_used_idx | info.packed.last_used_counter << 15,
        )

    def vq_setup_kickfd(self, index: int, *, fd: int) -> None:
        eventfd = ffi.new("struct vduse_vq_eventfd *")
        eventfd.index = index
        eventfd.fd = fd
        self._ioctl("vq setup kickfd", lib.VDUSE_VQ_SETUP_KICKFD, eventfd)

    def vq_inject_irq(self, index: int) -> None:
        self._ioctl("vq inject irq", lib.VDUSE_VQ_INJECT_IRQ, ffi.new("uint32_t *", index))

    def features(self) -> int:
        """The negotiated features; meaningful once FEATURES_OK was set."""
        value = ffi.new("uint64_t *")
        self._ioctl("get features", lib.VDUSE_DEV_GET_FEATURES, value)
        return int(value[0])

    def iotlb_get_fd(self, iova: int, last: int | None = None) -> tuple[int, IotlbEntry]:
        """The fd and region of the first mapping overlapping [iova, last]; the caller closes it."""
        entry = ffi.new("struct vduse_iotlb_entry *")
        entry.start = iova
        entry.last = iova if last is None else last
        fd = self._ioctl("iotlb get fd", lib.VDUSE_IOTLB_GET_FD, entry)
        return fd, IotlbEntry(
            offset=entry.offset, start=entry.start, last=entry.last, perm=entry.perm
        )

    def set_config(self, offset: int, data: bytes) -> None:
        size = ffi.sizeof("struct vduse_config_data") + len(data)
        buffer = ffi.new("char[]", size)
        config = ffi.cast("struct vduse_config_data *", buffer)
        config.offset = offset
        config.length = len(data)
        ffi.memmove(buffer + ffi.sizeof("struct vduse_config_data"), data, len(data))
        self._ioctl("set config", lib.VDUSE_DEV_SET_CONFIG, config)

    def inject_config_irq(self) -> None:
        self._ioctl("inject config irq", lib.VDUSE_DEV_INJECT_CONFIG_IRQ)

    def read_request(self) -> Request | None:
        """The next control message, or None when none is pending (non-blocking mode)."""
        try:
            raw = os.read(self.fd, REQUEST_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise VduseError.from_os_error("read message", exc) from exc
        return Request.decode(raw)

    def write_response(self, response: Response) -> None:
        try:
            os.write(self.fd, response.encode())
        except OSError as exc:
            raise VduseError.from_os_error("write message", exc) from exc

    def _ioctl(self, step: str, request: int, arg: object = None) -> int:
        try:
            return ioctl(self.fd, request, arg)
        except OSError as exc:
            raise VduseError.from_os_error(step, exc) from exc
