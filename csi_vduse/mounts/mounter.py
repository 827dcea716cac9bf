"""Mounting and unmounting, each idempotent: ``be_*`` helpers state the wanted end state."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from csi_vduse.mounts import mountinfo, tools
from csi_vduse.mounts.errors import MountError

log = logging.getLogger(__name__)


def _options(readonly: bool, flags: Sequence[str]) -> list[str]:
    options = [flag for flag in flags if flag]
    if readonly and "ro" not in options:
        options.append("ro")
    return ["-o", ",".join(options)] if options else []


def mount_filesystem(
    device: Path, target: Path, *, fs_type: str, readonly: bool, flags: Sequence[str]
) -> None:
    tools.run(
        "mount",
        ["mount", "-t", fs_type, *_options(readonly, flags), str(device), str(target)],
    )


def bind(source: Path, target: Path, *, readonly: bool, flags: Sequence[str]) -> None:
    """Bind ``source`` onto ``target``; read-only needs a second, remount step."""
    tools.run("bind mount", ["mount", "--bind", str(source), str(target)])
    extra = [flag for flag in flags if flag and flag not in ("bind", "rw")]
    if readonly or extra:
        try:
            tools.run(
                "bind mount",
                [
                    "mount",
                    "-o",
                    ",".join(["remount", "bind", *(["ro"] if readonly else []), *extra]),
                    str(target),
                ],
            )
        except MountError:
            unmount(target)
            raise


def unmount(target: Path) -> bool:
    """Unmount everything stacked on ``target``; False when nothing was mounted."""
    unmounted = False
    while mountinfo.is_mount_point(target):
        tools.run("unmount", ["umount", str(target)])
        unmounted = True
    return unmounted


def be_directory(path: Path) -> None:
    try:
        path.mkdir(mode=0o750, exist_ok=True)
    except OSError as exc:
        raise MountError("create target", f"{path}: {exc.strerror}", exc.errno) from exc
    if not path.is_dir():
        raise MountError("create target", f"{path} exists and is not a directory", errno.ENOTDIR)


def be_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o640)
    except IsADirectoryError:
        raise MountError(
            "create target", f"{path} is a directory, a block volume needs a file", errno.EISDIR
        ) from None
    except OSError as exc:
        raise MountError("create target", f"{path}: {exc.strerror}", exc.errno) from exc
    os.close(fd)


def be_absent(path: Path) -> None:
    """Remove a target we created: an empty directory or a plain file."""
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise MountError("remove target", f"{path}: {exc.strerror}", exc.errno) from exc
