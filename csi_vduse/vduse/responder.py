"""Stands in for a dead dataplane while a device is torn down.

Detaching (VDPA_CMD_DEV_DEL) resets the device, and the kernel waits for that
SET_STATUS to be answered; with no dataplane the call would stall for the
device's message timeout. This thread holds the node and acknowledges every
message until stopped.
"""

from __future__ import annotations

import logging
import select
import threading
from types import TracebackType

from csi_vduse.vduse.errors import VduseError
from csi_vduse.vduse.messages import Response
from csi_vduse.vduse.node import DeviceNode

log = logging.getLogger(__name__)


class StandInResponder:
    def __init__(self, name: str) -> None:
        self.node = DeviceNode(name, nonblocking=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"responder-{name}", daemon=True)

    def __enter__(self) -> StandInResponder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.node.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                while (request := self.node.read_request()) is not None:
                    log.debug("stand-in answers request type %d", request.type)
                    self.node.write_response(
                        Response(request.request_id, vq_index=request.vq_index)
                    )
            except VduseError as exc:
                log.warning("stand-in responder for %s: %s", self.node.name, exc)
                return

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.node.close()
