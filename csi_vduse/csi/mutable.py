"""Mutable parameters: a volume's I/O limits, set at CreateVolume and changed live.

Kubernetes passes a VolumeAttributesClass's parameters as CreateVolume's
``mutable_parameters``, and again as ControllerModifyVolume's when a claim moves to another
class. This module reads their text into the ``QosLimits`` a device's dataplane enforces
(dataplane.qos); a problem is INVALID_ARGUMENT naming the key and what it takes. Values are
plain decimal integers, as ``blockSize`` is: a unit suffix ("10Mi") is refused, not guessed.
"""

from __future__ import annotations

import re

from csi_vduse.csi import parameters
from csi_vduse.csi.errors import invalid
from csi_vduse.dataplane import qos
from csi_vduse.dataplane.qos import QosError, QosLimits
from csi_vduse.pool.store import Pool

MAX_IOPS = "maxIops"
MAX_READ_BYTES = "maxReadBytesPerSecond"
MAX_WRITE_BYTES = "maxWriteBytesPerSecond"
BURST_SECONDS = "burstSeconds"
KEYS = (MAX_IOPS, MAX_READ_BYTES, MAX_WRITE_BYTES, BURST_SECONDS)
DEFAULT_BURST_SECONDS = qos.DEFAULT_BURST_MS // 1000
MAX_BURST_SECONDS = qos.MAX_BURST_MS // 1000
# No sign, no leading zero, at most 16 digits (MAX_RATE has 16), so int() stays cheap.
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,15}")


def accepted() -> str:
    """What this driver takes, for the messages that refuse something else."""
    return (
        f"{MAX_IOPS}, {MAX_READ_BYTES} and {MAX_WRITE_BYTES} (0 to {qos.MAX_RATE}; "
        f"0: no limit) and {BURST_SECONDS} (0 to {MAX_BURST_SECONDS}, "
        f"default {DEFAULT_BURST_SECONDS})"
    )


def _number(key: str, *, value: str) -> int:
    top = MAX_BURST_SECONDS if key == BURST_SECONDS else qos.MAX_RATE
    if not _DECIMAL.fullmatch(value) or int(value) > top:
        meaning = "" if key == BURST_SECONDS else " (0: no limit)"
        raise invalid(f"{key} must be a whole number from 0 to {top}{meaning}, not {value!r}")
    return int(value)


def check(mutable: dict[str, str]) -> dict[str, str]:
    """The keys of ours in ``mutable`` (Kubernetes' bookkeeping dropped), each checked."""
    ours = parameters.own(mutable)
    unknown = sorted(key for key in ours if key not in KEYS)
    if unknown:
        raise invalid(
            f"unknown mutable parameter(s) {', '.join(unknown)}; this driver takes {accepted()}"
        )
    for key, value in sorted(ours.items()):
        _number(key, value=value)
    return ours


def limits(mutable: dict[str, str]) -> QosLimits:
    """The limits ``mutable`` asks for; a rate it leaves out is unlimited, the burst 1 s."""
    ours = check(mutable)
    try:
        return QosLimits(
            iops=_number(MAX_IOPS, value=ours.get(MAX_IOPS, "0")),
            read_bps=_number(MAX_READ_BYTES, value=ours.get(MAX_READ_BYTES, "0")),
            write_bps=_number(MAX_WRITE_BYTES, value=ours.get(MAX_WRITE_BYTES, "0")),
            burst_ms=1000
            * _number(BURST_SECONDS, value=ours.get(BURST_SECONDS, str(DEFAULT_BURST_SECONDS))),
        )
    except QosError as exc:  # the checks above leave nothing for it to refuse
        raise invalid(str(exc)) from exc


def merged(current: dict[str, str], *, changes: dict[str, str]) -> dict[str, str]:
    """``current`` with each key ``changes`` gives replaced, the others kept: the spec has
    a plugin modify nothing on the absence of a key. "0" is a value like any other, so a
    rate given as "0" is cleared (unlimited) and stays in the record as "0"."""
    return {**current, **check(changes)}


def current_limits(pool: Pool | None, volume_id: str) -> QosLimits:
    """The limits a volume's device should enforce now, from its pool record: what the node
    starts a device with. A volume the pool does not know (or a node without one) has none."""
    record = pool.volume(volume_id) if pool is not None else None
    return limits(record.mutable_parameters) if record is not None else qos.UNLIMITED
