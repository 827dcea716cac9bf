"""The per-device dataplane process: serves one VDUSE virtio-blk device from its virtqueues."""

import time

from dataplane.errors import DataplaneError

# When this process first ran our code (``python -m dataplane`` imports this package before
# anything else of ours): the dataplane logs its start-up phases from here, so a takeover's
# cost splits into interpreter start (before this), imports and set-up (after it).
STARTED = time.monotonic()

__all__ = ["STARTED", "DataplaneError"]
