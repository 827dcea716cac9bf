"""The driver's name and version: light enough for every command to import.

importlib.metadata costs most of a second to import and search under emulation, where
every command and dataplane start counts, so only asking for the version imports it.
"""

from __future__ import annotations

DRIVER_NAME = "csi.vduse.dev"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 -- see above

    try:
        return version("csi-vduse")
    except PackageNotFoundError:
        return "0+unknown"
