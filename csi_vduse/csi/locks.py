"""Per-volume serialisation: a second call on a busy volume is ABORTED, as the spec asks.

Calls on different volumes run in parallel; the CO retries an aborted call with backoff.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from csi_vduse.csi.errors import Code, RpcError


class OperationLocks:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy: set[str] = set()

    @contextmanager
    def hold(self, *keys: str) -> Iterator[None]:
        wanted = [key for key in dict.fromkeys(keys) if key]
        with self._mutex:
            for key in wanted:
                if key in self._busy:
                    raise RpcError(Code.ABORTED, f"an operation on {key} is already in progress")
            self._busy.update(wanted)
        try:
            yield
        finally:
            with self._mutex:
                self._busy.difference_update(wanted)
