"""The "vdpa" generic netlink family: attach (DEV_NEW), detach (DEV_DEL) and list devices.

pyroute2 has no vdpa module; the message class below follows the kernel's
``enum vdpa_attr`` order (6.12 numbering), which is what pyroute2 encodes by.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from csi_vduse.vdpa.errors import VdpaError

log = logging.getLogger(__name__)

VDPA_GENL_NAME = "vdpa"
VDPA_GENL_VERSION = 1

VDPA_CMD_MGMTDEV_GET = 2
VDPA_CMD_DEV_NEW = 3
VDPA_CMD_DEV_DEL = 4
VDPA_CMD_DEV_GET = 5

VDUSE_MGMTDEV = "vduse"


class vdpamsg(genlmsg):  # type: ignore[misc]  # noqa: N801 -- pyroute2 names messages so
    prefix = "VDPA_ATTR_"
    nla_map = (
        ("VDPA_ATTR_UNSPEC", "none"),
        ("VDPA_ATTR_MGMTDEV_BUS_NAME", "asciiz"),
        ("VDPA_ATTR_MGMTDEV_DEV_NAME", "asciiz"),
        ("VDPA_ATTR_MGMTDEV_SUPPORTED_CLASSES", "uint64"),
        ("VDPA_ATTR_DEV_NAME", "asciiz"),
        ("VDPA_ATTR_DEV_ID", "uint32"),
        ("VDPA_ATTR_DEV_VENDOR_ID", "uint32"),
        ("VDPA_ATTR_DEV_MAX_VQS", "uint32"),
        ("VDPA_ATTR_DEV_MAX_VQ_SIZE", "uint16"),
        ("VDPA_ATTR_DEV_MIN_VQ_SIZE", "uint16"),
        ("VDPA_ATTR_DEV_NET_CFG_MACADDR", "hex"),
        ("VDPA_ATTR_DEV_NET_STATUS", "uint8"),
        ("VDPA_ATTR_DEV_NET_CFG_MAX_VQP", "uint16"),
        ("VDPA_ATTR_DEV_NET_CFG_MTU", "uint16"),
        ("VDPA_ATTR_DEV_NEGOTIATED_FEATURES", "uint64"),
        ("VDPA_ATTR_DEV_MGMTDEV_MAX_VQS", "uint32"),
        ("VDPA_ATTR_DEV_SUPPORTED_FEATURES", "uint64"),
        ("VDPA_ATTR_DEV_QUEUE_INDEX", "uint32"),
        ("VDPA_ATTR_DEV_VENDOR_ATTR_NAME", "asciiz"),
        ("VDPA_ATTR_DEV_VENDOR_ATTR_VALUE", "uint64"),
        ("VDPA_ATTR_DEV_FEATURES", "uint64"),
        ("VDPA_ATTR_DEV_BLK_CFG_CAPACITY", "uint64"),
        ("VDPA_ATTR_DEV_BLK_CFG_SIZE_MAX", "uint32"),
        ("VDPA_ATTR_DEV_BLK_CFG_BLK_SIZE", "uint32"),
        ("VDPA_ATTR_DEV_BLK_CFG_SEG_MAX", "uint32"),
        ("VDPA_ATTR_DEV_BLK_CFG_NUM_QUEUES", "uint16"),
        ("VDPA_ATTR_DEV_BLK_CFG_PHY_BLK_EXP", "uint8"),
        ("VDPA_ATTR_DEV_BLK_CFG_ALIGN_OFFSET", "uint8"),
        ("VDPA_ATTR_DEV_BLK_CFG_MIN_IO_SIZE", "uint16"),
        ("VDPA_ATTR_DEV_BLK_CFG_OPT_IO_SIZE", "uint32"),
        ("VDPA_ATTR_DEV_BLK_CFG_MAX_DISCARD_SEC", "uint32"),
        ("VDPA_ATTR_DEV_BLK_CFG_MAX_DISCARD_SEG", "uint32"),
        ("VDPA_ATTR_DEV_BLK_CFG_DISCARD_SEC_ALIGN", "uint32"),
        ("VDPA_ATTR_DEV_BLK_CFG_MAX_WRITE_ZEROES_SEC", "uint32"),
        ("VDPA_ATTR_DEV_BLK_CFG_MAX_WRITE_ZEROES_SEG", "uint32"),
        ("VDPA_ATTR_DEV_BLK_READ_ONLY", "uint8"),
        ("VDPA_ATTR_DEV_BLK_FLUSH", "uint8"),
    )


@dataclass(frozen=True, kw_only=True)
class VdpaDevice:
    name: str
    mgmtdev: str
    device_id: int
    vendor_id: int
    max_vqs: int
    max_vq_size: int


def request(command: int, **attrs: str) -> vdpamsg:
    """A vdpa request message with string attributes given by short name (``dev_name=...``)."""
    msg = vdpamsg()
    msg["cmd"] = command
    msg["version"] = VDPA_GENL_VERSION
    msg["attrs"] = [(vdpamsg.name2nla(key), value) for key, value in attrs.items()]
    return msg


def device_from_message(msg: Any) -> VdpaDevice:
    return VdpaDevice(
        name=msg.get_attr("VDPA_ATTR_DEV_NAME"),
        mgmtdev=msg.get_attr("VDPA_ATTR_MGMTDEV_DEV_NAME") or "",
        device_id=msg.get_attr("VDPA_ATTR_DEV_ID") or 0,
        vendor_id=msg.get_attr("VDPA_ATTR_DEV_VENDOR_ID") or 0,
        max_vqs=msg.get_attr("VDPA_ATTR_DEV_MAX_VQS") or 0,
        max_vq_size=msg.get_attr("VDPA_ATTR_DEV_MAX_VQ_SIZE") or 0,
    )


_HINTS = {
    ("attach", errno.EINVAL): "the kernel refused: the VDUSE device is missing or its "
    "virtqueues are not set up",
    ("attach", errno.EEXIST): "a vDPA device with this name is already attached",
    ("attach", errno.ENODEV): "no vduse management device (modprobe vduse)",
    ("attach", errno.EPERM): "permission denied: CAP_NET_ADMIN in the host network namespace "
    "is needed",
    ("detach", errno.EPERM): "permission denied: CAP_NET_ADMIN in the host network namespace "
    "is needed",
}


def _error(step: str, exc: NetlinkError) -> VdpaError:
    code = int(exc.code)
    hint = _HINTS.get((step, code)) or os.strerror(code)
    return VdpaError(step, f"{hint} ({errno.errorcode.get(code, code)})", code)


class VdpaClient:
    """A bound vdpa generic netlink socket."""

    def __init__(self) -> None:
        self.sock = GenericNetlinkSocket()
        try:
            self.sock.bind(VDPA_GENL_NAME, vdpamsg)
        except NetlinkError as exc:
            self.sock.close()
            if exc.code == errno.ENOENT:
                raise VdpaError(
                    "open vdpa netlink",
                    "the vdpa netlink family is missing (modprobe vdpa vduse)",
                    exc.code,
                ) from exc
            raise _error("open vdpa netlink", exc) from exc

    def _request(self, step: str, msg: vdpamsg, flags: int) -> list[Any]:
        try:
            return list(self.sock.nlm_request(msg, msg_type=self.sock.prid, msg_flags=flags))
        except NetlinkError as exc:
            raise _error(step, exc) from exc

    def attach(self, name: str, *, mgmtdev: str = VDUSE_MGMTDEV) -> None:
        """VDPA_CMD_DEV_NEW: put the VDUSE device on the bus; drivers probe it synchronously."""
        msg = request(VDPA_CMD_DEV_NEW, dev_name=name, mgmtdev_dev_name=mgmtdev)
        self._request("attach", msg, NLM_F_REQUEST | NLM_F_ACK)
        log.info("attached %s to the vDPA bus", name)

    def detach(self, name: str) -> bool:
        """VDPA_CMD_DEV_DEL; False when no such vDPA device existed."""
        msg = request(VDPA_CMD_DEV_DEL, dev_name=name)
        try:
            self._request("detach", msg, NLM_F_REQUEST | NLM_F_ACK)
        except VdpaError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
        log.info("detached %s from the vDPA bus", name)
        return True

    def devices(self) -> list[VdpaDevice]:
        msgs = self._request("list devices", request(VDPA_CMD_DEV_GET), NLM_F_REQUEST | NLM_F_DUMP)
        return [device_from_message(m) for m in msgs if m.get_attr("VDPA_ATTR_DEV_NAME")]

    def device(self, name: str) -> VdpaDevice | None:
        return next((d for d in self.devices() if d.name == name), None)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> VdpaClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
