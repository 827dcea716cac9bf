"""A cluster as a whole (``survey.c``): its pools, and the space the monitors say each has
left, for the controller's listings and GetCapacity.

Failures are ``RbdError`` with librados's errno (EACCES where the user may not ask).
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from csi_vduse.ceph._librbd import ffi, lib
from csi_vduse.ceph.connection import c_target
from csi_vduse.ceph.image import ERROR_BYTES, RbdError
from csi_vduse.ceph.target import CephAccess

ANSWER_BYTES = 64 * 1024  # a first guess at `ceph df`'s answer; it is asked again if larger


@dataclass(frozen=True, kw_only=True)
class PoolSpace:
    stored: int  # bytes of data in the pool, before replication
    max_avail: int  # bytes more it can hold, replication and full ratios counted


class Survey:
    """``access``'s cluster, connected until ``close``."""

    def __init__(self, access: CephAccess) -> None:
        out = ffi.new("struct cv_survey **")
        err = ffi.new("char[]", ERROR_BYTES)
        with c_target(access) as target:
            rc = lib.cv_survey_open(out, target, err, ERROR_BYTES)
        if rc:
            raise RbdError("connect to Ceph", ffi.string(err).decode(errors="replace"), -rc)
        self._survey: Any = out[0]

    def __enter__(self) -> Survey:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._survey is not None:
            lib.cv_survey_close(self._survey)
            self._survey = None

    def rbd_pools(self) -> list[str]:
        """The names of the pools for RBD (``rbd pool init`` enabled the application)."""
        answer = self._mon_command({"prefix": "osd pool ls", "detail": "detail", "format": "json"})
        if not isinstance(answer, list):
            raise RbdError("list Ceph pools", "the answer is no JSON list", errno.EPROTO)
        return [
            str(entry["pool_name"])
            for entry in answer
            if isinstance(entry, dict)
            and "pool_name" in entry
            and "rbd" in (entry.get("application_metadata") or {})
        ]

    def pools(self) -> list[str]:
        """The names of the cluster's pools."""
        size = ffi.new("size_t *", 4096)
        while True:
            buf = ffi.new("char[]", size[0] + 1)
            rc = lib.cv_survey_pools(self._survey, buf, size)
            if rc != -errno.ERANGE:
                break
        if rc:
            raise RbdError("list Ceph pools", os.strerror(-rc), -rc)
        return [name.decode() for name in ffi.unpack(buf, size[0]).split(b"\0") if name]

    def space(self, pool: str | int) -> PoolSpace | None:
        """What pool ``pool`` (a name or an id) holds and can still hold, as ``ceph df``
        says; None where there is no such pool."""
        answer = self._mon_command({"prefix": "df", "format": "json"})
        if not isinstance(answer, dict):
            raise RbdError("measure Ceph pools", "the answer is no JSON object", errno.EPROTO)
        for entry in answer.get("pools", []):
            if pool in (entry.get("name"), entry.get("id")):
                stats = entry.get("stats", {})
                return PoolSpace(
                    stored=int(stats.get("stored", stats.get("bytes_used", 0))),
                    max_avail=int(stats.get("max_avail", 0)),
                )
        return None

    def _mon_command(self, command: dict[str, str]) -> Any:
        """The monitors' answer to ``command``, parsed from JSON."""
        text = json.dumps(command).encode()
        size = ffi.new("size_t *", ANSWER_BYTES)
        err = ffi.new("char[]", ERROR_BYTES)
        while True:
            out = ffi.new("char[]", size[0])
            rc = lib.cv_survey_mon_command(self._survey, text, out, size, err, ERROR_BYTES)
            if rc != -errno.ERANGE:
                break
        if rc:
            raise RbdError("ask the Ceph monitors", ffi.string(err).decode(errors="replace"), -rc)
        try:
            return json.loads(ffi.string(out).decode(errors="replace"))
        except ValueError as exc:
            raise RbdError("ask the Ceph monitors", f"not JSON: {exc}", errno.EPROTO) from None
