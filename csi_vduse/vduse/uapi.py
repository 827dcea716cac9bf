"""Access to the compiled uAPI module and a raising ``ioctl``."""

from __future__ import annotations

import os
from typing import Any

from csi_vduse.vduse._uapi import ffi, lib

__all__ = ["ffi", "ioctl", "lib"]


def ioctl(fd: int, request: int, arg: Any = None) -> int:
    """ioctl(2) with a cffi pointer argument; raises OSError with the errno on failure."""
    pointer = ffi.cast("void *", 0) if arg is None else arg
    result: int = lib.ioctl(ffi.cast("int", fd), ffi.cast("unsigned long", request), pointer)
    if result < 0:
        code = ffi.errno
        raise OSError(code, os.strerror(code))
    return result
