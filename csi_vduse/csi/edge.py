"""What every RPC shares: logging, timing and the mapping of errors to status codes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from csi_vduse import logs, metrics
from csi_vduse.csi.errors import status_of

log = logging.getLogger("csi_vduse.rpc")

Handler = TypeVar("Handler", bound=Callable[..., Any])

_SUBJECT_FIELDS = ("volume_id", "source_volume_id", "snapshot_id", "group_snapshot_id", "name")


def subject_of(request: Any) -> str:
    """The volume or snapshot a request is about, for the log line."""
    for field in _SUBJECT_FIELDS:
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            return value
    return "-"


def rpc(handler: Handler) -> Handler:
    """Wrap a servicer method: one log line per call, errors turned into statuses.

    While the call runs, every record logged anywhere in the driver carries the RPC's
    name and volume (see ``logs.call_context``).
    """
    name = handler.__name__

    @functools.wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        subject = subject_of(request)
        started = time.monotonic()
        with logs.call_context(name, volume=subject):
            failure: Exception | None = None
            try:
                response = handler(self, request, context)
                code, message = grpc.StatusCode.OK, "OK"
            except Exception as exc:
                failure = exc
                code, message = status_of(exc)
            elapsed = time.monotonic() - started
            internal = code == grpc.StatusCode.INTERNAL
            log.log(
                logging.ERROR if internal else logging.INFO,
                "%s %s: %s (%.3f s)",
                name,
                subject,
                message if failure is None else f"{code.name} {message}",
                elapsed,
                exc_info=internal and not hasattr(failure, "step"),
                extra={"code": code.name, "seconds": round(elapsed, 6)},
            )
        metrics.record_rpc(name, code=code.name, seconds=elapsed)
        if failure is not None:
            context.abort(code, message)
        return response

    return wrapper  # type: ignore[return-value]
