"""What every RPC shares: logging, timing and the mapping of errors to status codes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from csi_vduse import metrics
from csi_vduse.csi.errors import status_of

log = logging.getLogger("csi_vduse.rpc")

Handler = TypeVar("Handler", bound=Callable[..., Any])

_SUBJECT_FIELDS = ("volume_id", "source_volume_id", "snapshot_id", "name")


def subject_of(request: Any) -> str:
    """The volume or snapshot a request is about, for the log line."""
    for field in _SUBJECT_FIELDS:
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            return value
    return "-"


def rpc(handler: Handler) -> Handler:
    """Wrap a servicer method: one log line per call, errors turned into statuses."""
    name = handler.__name__

    @functools.wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        subject = subject_of(request)
        started = time.monotonic()
        try:
            response = handler(self, request, context)
        except Exception as exc:
            code, message = status_of(exc)
            elapsed = time.monotonic() - started
            context_fields = {
                "rpc": name,
                "volume": subject,
                "code": code.name,
                "seconds": round(elapsed, 6),
            }
            if code == grpc.StatusCode.INTERNAL:
                log.error(
                    "%s %s: %s %s (%.3f s)",
                    name,
                    subject,
                    code.name,
                    message,
                    elapsed,
                    exc_info=not hasattr(exc, "step"),
                    extra=context_fields,
                )
            else:
                log.info(
                    "%s %s: %s %s (%.3f s)",
                    name,
                    subject,
                    code.name,
                    message,
                    elapsed,
                    extra=context_fields,
                )
            metrics.record_rpc(name, code.name, elapsed)
            context.abort(code, message)
        elapsed = time.monotonic() - started
        log.info(
            "%s %s: OK (%.3f s)",
            name,
            subject,
            elapsed,
            extra={"rpc": name, "volume": subject, "code": "OK", "seconds": round(elapsed, 6)},
        )
        metrics.record_rpc(name, "OK", elapsed)
        return response

    return wrapper  # type: ignore[return-value]
