"""Logging set-up for the command line: one line per event, as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

LEVELS = ("debug", "info", "warning", "error")
# Fields the CSI edge attaches to its records (logging's ``extra``).
CONTEXT_FIELDS = ("rpc", "volume", "code", "seconds")


_CALL: ContextVar[tuple[str, str] | None] = ContextVar("csi_call", default=None)


@contextmanager
def call_context(rpc: str, *, volume: str) -> Iterator[None]:
    """Tag every record logged inside with the CSI call and the volume it is about."""
    token = _CALL.set((rpc, volume))
    try:
        yield
    finally:
        _CALL.reset(token)


class CallFilter(logging.Filter):
    """Copies the current call's RPC and volume onto each record (empty outside calls)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rpc, volume = _CALL.get() or ("", "")
        fields = record.__dict__
        fields.setdefault("rpc", rpc)
        fields.setdefault("volume", volume)
        fields["call"] = f" [{fields['rpc']} {fields['volume']}]" if fields["rpc"] else ""
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            if getattr(record, field, ""):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str, *, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s%(call)s: %(message)s")
        )
    handler.addFilter(CallFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Its debug output is every netlink message, not events of ours.
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, root.level))
