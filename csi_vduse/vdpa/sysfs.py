"""The sysfs side of the vDPA bus: which driver took a device, and the block device it made."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from csi_vduse.vdpa.errors import VdpaError

log = logging.getLogger(__name__)

VDPA_BUS = Path("/sys/bus/vdpa")
HOST_BLOCK_DRIVER = "virtio_vdpa"  # exposes the device to this kernel as /dev/vdX


def driver_loaded(driver: str = HOST_BLOCK_DRIVER, bus: Path = VDPA_BUS) -> bool:
    return (bus / "drivers" / driver).is_dir()


def bound_driver(name: str, bus: Path = VDPA_BUS) -> str | None:
    link = bus / "devices" / name / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def bind(name: str, *, driver: str = HOST_BLOCK_DRIVER, bus: Path = VDPA_BUS) -> None:
    """Move ``name`` to ``driver``: every vDPA driver matches every device, first come wins."""
    current = bound_driver(name, bus)
    if current == driver:
        return
    device = bus / "devices" / name
    try:
        (device / "driver_override").write_text(driver)
        if current is not None:
            (bus / "drivers" / current / "unbind").write_text(name)
        (bus / "drivers_probe").write_text(name)
    except OSError as exc:
        raise VdpaError("bind driver", f"cannot bind {name} to {driver}: {exc}", exc.errno) from exc
    if bound_driver(name, bus) != driver:
        raise VdpaError("bind driver", f"{driver} did not take {name}", errno.ENODEV)
    log.info("rebound %s from %s to %s", name, current, driver)


def block_device(name: str, *, bus: Path = VDPA_BUS, dev: Path = Path("/dev")) -> Path | None:
    """The /dev node of the disk virtio_blk made for ``name``, once it exists."""
    for block in sorted((bus / "devices" / name).glob("virtio*/block/*")):
        node = dev / block.name
        if node.exists():
            return node
    return None


def wait_for_block_device(name: str, timeout: float, bus: Path = VDPA_BUS) -> Path:
    deadline = time.monotonic() + timeout
    while (node := block_device(name, bus=bus)) is None:
        if time.monotonic() >= deadline:
            driver = bound_driver(name, bus)
            raise VdpaError(
                "wait for block device",
                f"no block device appeared within {timeout:.0f}s (bound driver: {driver}; "
                "is virtio_blk loaded?)",
                errno.ETIMEDOUT,
            )
        time.sleep(0.02)
    return node
