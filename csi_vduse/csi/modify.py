"""ControllerModifyVolume where the volume is: this node's pool record, then its device.

One code path for both ways a change arrives: a ControllerModifyVolume call to this node's
plugin, and a request the central controller routed here through the volume's
PersistentVolume (``modify_watcher``). Both hold the volume's operation lock, so a routed
change and a local call, a stage or a delete never interleave.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from csi_vduse.csi import mutable
from csi_vduse.csi.errors import not_found
from csi_vduse.csi.locks import OperationLocks
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.pool.store import Pool

log = logging.getLogger(__name__)


class VolumeModifier:
    def __init__(self, pool: Pool, devices: DeviceManager, locks: OperationLocks) -> None:
        self.pool = pool
        self.devices = devices
        self.locks = locks

    def holds(self, volume_id: str) -> bool:
        """Whether this node's pool has the volume."""
        return self.pool.volume(volume_id) is not None

    def modify(self, volume_id: str, mutable_parameters: Mapping[str, str]) -> None:
        """Merge ``mutable_parameters`` into the volume's (Kubernetes' own keys ignored, the
        rest checked before anything is touched): in its pool record first, then live on its
        device when it is staged here; a node that stages it later reads the record.
        INVALID_ARGUMENT, NOT_FOUND, ABORTED while another call holds the volume."""
        changes = mutable.check(dict(mutable_parameters))
        with self.locks.hold(volume_id):
            record = self.pool.volume(volume_id)
            if record is None:
                raise not_found(f"volume {volume_id} does not exist")
            if not changes:  # keys left out change nothing, so none changes nothing
                return
            wanted = mutable.merged(record.mutable_parameters, changes=changes)
            limits = mutable.limits(wanted)
            self.pool.set_mutable_parameters(volume_id, wanted)
            # Applied again on a retry, so a failure here (after the record) converges.
            live = self.devices.set_limits(volume_id, limits)
        log.info(
            "volume %s: mutable parameters now %s%s",
            volume_id,
            wanted,
            " (applied to its device)" if live else "",
        )
