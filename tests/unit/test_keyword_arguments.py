"""Issue 13: no constructor or function of the product takes a run of positional arguments
that could be swapped silently. Dataclasses with more than three fields, or two fields of
one type, are keyword-only (past at most one leading field); functions take at most three
positional parameters besides self, none two of the same type, save the pairs below."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import csi_vduse

PACKAGE = Path(csi_vduse.__file__).parent
MAX_POSITIONAL = 3

# Pairs kept positional on purpose: ranges in kernel order, source before destination,
# a value before the field it came from, and forwarders whose trailing arguments belong
# to the function they call.
ORDERED_PAIRS = {
    "csi/proto.py:register",  # grpc's add_*Servicer_to_server(servicer, server) shape
    "csi/validate.py:require_id",
    "csi/validate.py:require_name",
    "csi/validate.py:require_lookup_path",
    "csi/validate.py:require_path",
    "dataplane/blk/backend.py:zero",  # (offset, length)
    "dataplane/fast/engine.py:invalidate",  # (start, last), as the kernel sends them
    "dataplane/fast/fuzz/make_seeds.py:fill",  # (iova, length)
    "dataplane/fast/fuzz/make_seeds.py:invalidate",
    "dataplane/fast/fuzz/make_seeds.py:seed_split_engine",
    "dataplane/launcher.py:_place",
    "dataplane/reference/engine.py:invalidate",
    "dataplane/reference/handler.py:_serve",
    "dataplane/reference/handler.py:_check_range",  # (sector, length)
    "dataplane/reference/iotlb.py:locate",  # (iova, length)
    "dataplane/reference/iotlb.py:views",
    "dataplane/reference/iotlb.py:invalidate",
    "dataplane/virtio/queues.py:invalidate",
    "demo.py:call",  # (service, method, request)
    "devices/dataplane_process.py:_contains",
    "devices/steps.py:as_step",  # (device name, step)
    "devices/steps.py:step",
    "errors.py:__init__",  # (step, message, errno) at every raise
    "kube/volumes.py:__init__",  # (step, message, status), as CsiVduseError
    "mounts/filesystem.py:grow",  # (device, mount point)
    "mounts/mounter.py:mount_filesystem",  # (device, target), as mount(8) takes them
    "mounts/mounter.py:bind",  # (source, target)
    "pool/copy.py:clone_file",  # (src_fd, dst_fd)
    "vduse/uapi.py:ioctl",  # (fd, request, arg), as fcntl.ioctl
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text()))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "_proto" not in path.parts
    ]


def _dataclass_keywords(cls: ast.ClassDef) -> bool | None:
    """None if ``cls`` is no dataclass, else whether it is kw_only as a whole."""
    for decorator in cls.decorator_list:
        if isinstance(decorator, ast.Name) and decorator.id == "dataclass":
            return False
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "dataclass":
            return any(
                k.arg == "kw_only" and getattr(k.value, "value", False) for k in decorator.keywords
            )
    return None


def _positional_fields(cls: ast.ClassDef) -> list[tuple[str, str]]:
    fields = []
    for statement in cls.body:
        if not isinstance(statement, ast.AnnAssign) or not isinstance(statement.target, ast.Name):
            continue
        annotation = ast.unparse(statement.annotation)
        if annotation in ("KW_ONLY", "dataclasses.KW_ONLY"):
            break
        if "ClassVar" in annotation:
            continue
        value = statement.value
        if isinstance(value, ast.Call) and any(
            k.arg == "init" and getattr(k.value, "value", True) is False for k in value.keywords
        ):
            continue
        fields.append((statement.target.id, annotation))
    return fields


def test_dataclasses_with_swappable_fields_are_keyword_only() -> None:
    positional = []
    for where, module in _modules():
        for cls in ast.walk(module):
            if not isinstance(cls, ast.ClassDef) or _dataclass_keywords(cls) in (None, True):
                continue
            fields = _positional_fields(cls)
            repeated = [t for t, n in Counter(t for _, t in fields).items() if n > 1]
            if len(fields) > 1 and (len(fields) > MAX_POSITIONAL or repeated):
                positional.append(f"{where}:{cls.name} {[name for name, _ in fields]}")
    assert positional == []


def test_functions_take_no_run_of_swappable_positional_arguments() -> None:
    offending = []
    for where, module in _modules():
        for fn in ast.walk(module):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            params = [a for a in fn.args.posonlyargs + fn.args.args if a.arg not in ("self", "cls")]
            types = Counter(ast.unparse(a.annotation) for a in params if a.annotation is not None)
            repeated = [t for t, n in types.items() if n > 1]
            if len(params) > MAX_POSITIONAL or (
                repeated and f"{where}:{fn.name}" not in ORDERED_PAIRS
            ):
                offending.append(f"{where}:{fn.name}({', '.join(a.arg for a in params)})")
    assert offending == []


def test_every_kept_pair_still_exists() -> None:
    """The list above names real functions: a renamed one must leave it, not linger."""
    names = {
        f"{where}:{fn.name}"
        for where, module in _modules()
        for fn in ast.walk(module)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    assert ORDERED_PAIRS - names == set()
