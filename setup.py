"""Build steps pyproject.toml cannot express: the cffi extensions and the CSI protocol code.

Metadata lives in pyproject.toml. The gRPC code for ``proto/csi.proto`` is generated into
``csi_vduse/_proto/`` before ``build_py`` runs, so both ``pip install .`` and editable
installs get it; it is build output and never committed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO = ROOT / "proto" / "csi.proto"
PACKAGE = "csi_vduse/_proto"


def generate_csi_code() -> None:
    """Compile proto/csi.proto with grpcio-tools into the csi_vduse._proto package.

    The proto is compiled from a scratch tree that mirrors the package path, so the
    generated modules import each other as ``csi_vduse._proto.csi_pb2``.
    """
    from grpc_tools import protoc  # noqa: PLC0415 -- a build requirement, absent at lint time

    out = ROOT / PACKAGE
    sources = [PROTO, Path(__file__)]
    targets = [out / "csi_pb2.py", out / "csi_pb2_grpc.py", out / "csi_pb2.pyi"]
    if all(t.exists() for t in targets) and min(t.stat().st_mtime for t in targets) > max(
        s.stat().st_mtime for s in sources
    ):
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "__init__.py").write_text('"""Generated CSI protocol code (build output)."""\n')
    builtin = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / PACKAGE / "csi.proto"
        staged.parent.mkdir(parents=True)
        shutil.copyfile(PROTO, staged)
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{scratch}",
                f"-I{builtin}",
                f"--python_out={ROOT}",
                f"--pyi_out={ROOT}",
                f"--grpc_python_out={ROOT}",
                str(staged),
            ]
        )
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (exit {status})")


class BuildPyWithProto(build_py):
    def run(self) -> None:
        generate_csi_code()
        # A clean checkout has no _proto package when packages are discovered.
        package = PACKAGE.replace("/", ".")
        if self.packages is not None and package not in self.packages:
            self.packages.append(package)
        super().run()


setup(
    cffi_modules=[
        "csi_vduse/vduse/uapi_build.py:ffibuilder",
        "csi_vduse/dataplane/fast/ring_build.py:ffibuilder",
        "csi_vduse/ceph/librbd_build.py:ffibuilder",
        "csi_vduse/dataplane/rbd/rbd_build.py:ffibuilder",
    ],
    cmdclass={"build_py": BuildPyWithProto},
)
