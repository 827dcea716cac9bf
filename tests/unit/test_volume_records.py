"""Node volume records: what earlier versions wrote still loads, and saves back the same."""

from __future__ import annotations

import json
from pathlib import Path

from csi_vduse.pool import ids
from csi_vduse.volumes.records import SINGLE_WRITER, NodeVolumeStore, VolumeState

VOLUME_ID = ids.volume_id_for("pvc-1")
EARLIER = {
    "volume_id": VOLUME_ID,
    "staging_path": "/staging",
    "block": False,
    "fs_type": "ext4",
    "mount_flags": [],
    "mode": 6,
    "readonly": False,
    "state": "staged",
    "device": "/dev/vda",
    "publications": {"/target": {"target": "/target", "readonly": False, "mount_flags": []}},
}


def test_a_record_of_an_earlier_version_loads_with_its_state_and_saves_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "volumes" / f"{VOLUME_ID}.json"
    path.parent.mkdir()
    text = json.dumps(EARLIER, indent=2) + "\n"
    path.write_text(text)
    store = NodeVolumeStore(tmp_path)
    [record] = store.records()
    assert record.state is VolumeState.STAGED
    assert record.mode == SINGLE_WRITER  # the proto's number, as records carry it
    store.save(record)
    assert path.read_text() == text
