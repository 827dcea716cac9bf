"""ListVolumes/ListSnapshots paging that survives entries added or deleted between pages.

Entries are walked oldest first; a token names the last entry returned (its creation
time and id), so the next page starts after it even if that entry is gone by then, and
entries created meanwhile come at the end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from csi_vduse.csi.errors import Code, RpcError, invalid

# A file's id, or an RBD one (``rbd.ids``): a name, or a cluster and a pool, then digits.
_TOKEN = re.compile(
    r"(\d{1,20}):((?:[a-z]+|rbd(?:snap)?-[A-Za-z0-9._-]{1,64}-[0-9a-f]{16})-[0-9a-f]{32})"
)

T = TypeVar("T")


def page(
    entries: Sequence[T], *, keys: Sequence[tuple[int, str]], token: str, max_entries: int
) -> tuple[list[T], str]:
    """One page of ``entries`` (sorted by ``keys``) and the token for the next one."""
    if max_entries < 0:
        raise invalid("max_entries must not be negative")
    start = 0
    if token:
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise RpcError(Code.ABORTED, f"starting_token {token!r} is not one this driver issued")
        after = (int(match.group(1)), match.group(2))
        start = next((i for i, key in enumerate(keys) if key > after), len(keys))
    end = len(entries) if max_entries == 0 else min(len(entries), start + max_entries)
    next_token = ""
    if end < len(entries):
        last = keys[end - 1]
        next_token = f"{last[0]}:{last[1]}"
    return list(entries[start:end]), next_token


def page_of(
    keyed: list[tuple[tuple[int, str], T]], *, token: str, max_entries: int
) -> tuple[list[T], str]:
    """``page`` of entries given with their keys in any order (a pool's and a cluster's
    merged): sorted by key first."""
    keyed.sort(key=lambda pair: pair[0])
    return page(
        [entry for _, entry in keyed], keys=[key for key, _ in keyed], token=token,
        max_entries=max_entries,
    )  # fmt: skip
