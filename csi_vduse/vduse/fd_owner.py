"""Ownership of one open file descriptor, closed once, usable as a context manager."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self


class FdOwner:
    fd: int = -1

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
