"""Builds the cffi extension modules at install time; metadata lives in pyproject.toml."""

from setuptools import setup

setup(
    cffi_modules=[
        "csi_vduse/vduse/uapi_build.py:ffibuilder",
        "dataplane/fast/ring_build.py:ffibuilder",
    ]
)
