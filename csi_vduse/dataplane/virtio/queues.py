"""What serves a device's virtqueues, as the session sees it.

The session answers control messages; once the driver is ready it hands each enabled
queue (its addresses, kick fd and negotiated features) to a queue engine, which serves
it from then on. The dataplane serves with the C engine (``fast.engine``); the Python
reference (``reference.engine``) implements the same contract for the differential tests.
"""

from __future__ import annotations

from typing import Protocol

from csi_vduse.vduse.node import VqInfo


class RingError(Exception):
    """The driver broke the ring protocol (an index out of range, say)."""


class QueueEngine(Protocol):
    """Serves enabled queues; owns each kick fd it is given."""

    def start_queue(
        self, info: VqInfo, *, kickfd: int, features: int, resume: bool = False
    ) -> None: ...
    def last_avail(self, index: int) -> int | None: ...
    def packed_state(self, index: int) -> tuple[int, int] | None: ...
    def invalidate(self, start: int, last: int) -> None: ...
    def stop(self) -> None: ...
