"""Fetch, unpack and cache a guest kernel that has VDUSE.

Debian bookworm's own kernel lacks vDPA; bookworm-backports ships 6.12 with
``vduse``, ``vdpa`` and ``virtio_vdpa`` as modules. The package is fetched with
apt-get pointed at private list, cache and source files, so the machine's apt
configuration is never touched, and the unpacked tree is cached across runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE_PATTERN = re.compile(r"^linux-image-(6\.12\.\d+\+deb12-amd64)$")
SUITE = "bookworm-backports"


class KernelFetchError(RuntimeError):
    """The guest kernel could not be obtained."""


@dataclass(frozen=True)
class GuestKernel:
    """An unpacked kernel package: its image and module tree."""

    version: str
    root: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def default_cache_dir() -> Path:
    if env := os.environ.get("CSI_VDUSE_VM_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "csi-vduse" / "vm"


def debian_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The URI of the Debian archive the system's apt already uses for bookworm."""
    for path in sorted(sources_dir.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n[ \t]*\n", path.read_text()):
            fields = _deb822_fields(stanza)
            suites = fields.get("suites", "").split()
            enabled = fields.get("enabled", "yes").lower() != "no"
            if enabled and "deb" in fields.get("types", "").split() and "bookworm" in suites:
                return fields["uris"].split()[0].rstrip("/")
    list_files = [sources_dir / "sources.list", *sorted(sources_dir.glob("sources.list.d/*.list"))]
    for path in list_files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                return words[1].rstrip("/")
    raise KernelFetchError("no apt source for Debian bookworm found under /etc/apt")


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#"):
            continue
        if line[:1].isspace() and key is not None:  # a continuation of the previous field
            fields[key] = f"{fields[key]} {line.strip()}".strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


def newest_version(package_names: list[str]) -> str:
    """Pick the highest 6.12 upload from apt-cache's package names."""
    versions = [m.group(1) for name in package_names if (m := PACKAGE_PATTERN.match(name))]
    if not versions:
        raise KernelFetchError(f"no linux-image-6.12.*+deb12-amd64 package in {SUITE}")
    return max(versions, key=lambda v: [int(part) for part in re.findall(r"\d+", v)])


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class KernelCache:
    """The cached kernel tree; downloads on first use only."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir or default_cache_dir()

    def cached(self) -> list[GuestKernel]:
        kernels = []
        for entry in sorted(self.cache_dir.glob("kernel-*")):
            kernel = GuestKernel(entry.name.removeprefix("kernel-"), entry)
            if kernel.vmlinuz.exists() and (kernel.modules_dir / "modules.dep").exists():
                kernels.append(kernel)
        return kernels

    def get(self, version: str | None = None) -> GuestKernel:
        """A cached kernel (``version`` or any), fetching the newest when none is cached."""
        version = version or os.environ.get("CSI_VDUSE_VM_KERNEL") or None
        with _locked(self.cache_dir / "lock"):
            for kernel in reversed(self.cached()):
                if version in (None, kernel.version):
                    return kernel
            return self._fetch(version)

    def _fetch(self, version: str | None) -> GuestKernel:
        apt = _PrivateApt(self.cache_dir / "apt", debian_mirror())
        apt.update()
        version = version or newest_version(apt.search(r"^linux-image-6\.12\..*\+deb12-amd64$"))
        log.info("fetching guest kernel %s from %s", version, SUITE)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            deb = apt.download(f"linux-image-{version}", Path(tmp))
            root = Path(tmp) / "root"
            _run(["dpkg-deb", "-x", str(deb), str(root)])
            kernel = GuestKernel(version, root)
            if not kernel.vmlinuz.exists():
                raise KernelFetchError(f"{deb.name} has no {kernel.vmlinuz.name}")
            _run(["depmod", "-b", str(root), version])
            final = self.cache_dir / f"kernel-{version}"
            shutil.rmtree(final, ignore_errors=True)
            root.rename(final)
        return GuestKernel(version, final)


class _PrivateApt:
    """apt-get with its own sources, lists and cache: the system's stay untouched."""

    def __init__(self, state: Path, mirror: str) -> None:
        self.state = state
        (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.sources = state / "sources.list"
        self.sources.write_text(f"deb {mirror} {SUITE} main\n")

    def _options(self) -> list[str]:
        settings = {
            "Dir::Etc::SourceList": str(self.sources),
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::State::Lists": str(self.state / "lists"),
            "Dir::Cache": str(self.state / "cache"),
            "Debug::NoLocking": "1",
            "APT::Sandbox::User": "root",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def update(self) -> None:
        _run(["apt-get", "-q", *self._options(), "update"])

    def search(self, regex: str) -> list[str]:
        out = _run(["apt-cache", *self._options(), "search", "--names-only", regex])
        return [line.split(" - ", 1)[0].strip() for line in out.splitlines() if line.strip()]

    def download(self, package: str, into: Path) -> Path:
        _run(["apt-get", "-q", *self._options(), "download", package], cwd=into)
        debs = list(into.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise KernelFetchError(f"apt-get download {package} produced {debs}")
        return debs[0]


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise KernelFetchError(f"{argv[0]} is not installed") from exc
    if done.returncode != 0:
        raise KernelFetchError(f"{' '.join(argv[:3])}... failed: {done.stderr.strip()[-2000:]}")
    return done.stdout
