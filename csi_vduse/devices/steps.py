"""Lifecycle steps: every failure inside one is reported as that step's DeviceError.

A create or delete is a sequence of steps against several kernel interfaces, each with
its own errors; callers see one error type that says which step failed and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from csi_vduse.devices.errors import DeviceError
from csi_vduse.errors import CsiVduseError

log = logging.getLogger(__name__)

T = TypeVar("T")


@contextmanager
def as_step(name: str, step: str) -> Iterator[None]:
    """Report any failure inside as ``step``'s DeviceError."""
    try:
        yield
    except DeviceError:
        raise
    except CsiVduseError as exc:
        raise DeviceError(step, f"{name}: {exc.message}", exc.errno) from exc
    except OSError as exc:
        raise DeviceError(step, f"{name}: {exc.strerror or exc}", exc.errno) from exc


def step(name: str, what: str, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` as the step ``what`` of device ``name``."""
    with as_step(name, what):
        return fn(*args)


def quietly(what: str, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Undo steps must not hide the original failure; log theirs instead."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        log.error("cleanup step %r failed: %s", what, exc)
