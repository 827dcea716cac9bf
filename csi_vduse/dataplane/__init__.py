"""The per-device dataplane process: serves one VDUSE virtio-blk device from its virtqueues."""

import time

from csi_vduse.dataplane.errors import DataplaneError

# When this process first ran dataplane code (``python -m csi_vduse.dataplane`` imports this
# package before any other of its modules): the dataplane logs its start-up phases from here,
# so a takeover's cost splits into interpreter start (before this), imports and set-up.
STARTED = time.monotonic()

__all__ = ["STARTED", "DataplaneError"]
