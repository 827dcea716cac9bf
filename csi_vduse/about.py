"""The driver's name and version: light enough for every command to import."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DRIVER_NAME = "csi.vduse.dev"


def package_version() -> str:
    try:
        return version("csi-vduse")
    except PackageNotFoundError:
        return "0+unknown"
