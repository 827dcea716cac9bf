"""The root of every layer's exception hierarchy."""

from __future__ import annotations


class CsiVduseError(Exception):
    """Something csi-vduse could not do; ``step`` names the operation that failed."""

    def __init__(self, step: str, message: str, errno: int | None = None) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.errno = errno
