"""Build the guest's initramfs: busybox, the modules for 9p and overlayfs, and /init.

/init mounts the host's root filesystem read-only over 9p, puts a tmpfs overlay on
top so the guest can write, mounts the writable results share and switches root
into a script the host placed there. Writing the cpio archive here (newc format)
lets it carry /dev/console without mknod or root.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tests.vm.kernel import GuestKernel

BUSYBOX = Path("/bin/busybox")
ROOT_MODULES = ("9p", "9pnet_virtio", "overlay")
RESULTS_MOUNT = "/mnt/vm-results"
STAGE2 = f"{RESULTS_MOUNT}/stage2.sh"

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() {{ echo "vm-init: $*"; echo o > /proc/sysrq-trigger; sleep 60; }}
mkdir -p /proc /sys /dev /lower /rw /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules.order); do
    insmod "/modules/$module.ko" || fail "insmod $module"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \\
    || fail "mount host root"
mount -t tmpfs -o size=75% tmpfs /rw || fail "mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \\
    || fail "mount overlay"
mkdir -p /newroot{RESULTS_MOUNT}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /newroot{RESULTS_MOUNT} \\
    || fail "mount results"
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh {STAGE2}
"""


@dataclass
class _Cpio:
    """A newc ("070701") archive writer."""

    data: bytearray = field(default_factory=bytearray)
    inode: int = 1

    def add(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.data += b"070701" + b"".join(b"%08X" % value for value in fields)
        self.data += encoded
        self._pad()
        self.data += body
        self._pad()
        self.inode += 1

    def _pad(self) -> None:
        self.data += b"\0" * (-len(self.data) % 4)

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self.data)


def module_load_order(kernel: GuestKernel, wanted: tuple[str, ...]) -> list[Path]:
    """Module files for ``wanted`` and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    for line in (kernel.modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {_module_name(path): path for path in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps[path]:
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise KeyError(f"module {name} is not in {kernel.version}")
        visit(by_name[name])
    return [kernel.modules_dir / path for path in order]


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def build(kernel: GuestKernel, cache_dir: Path) -> Path:
    """The initramfs for ``kernel``, rebuilt only when its inputs change."""
    modules = module_load_order(kernel, ROOT_MODULES)
    busybox = BUSYBOX.read_bytes()
    key = hashlib.sha256(INIT_SCRIPT.encode() + busybox + kernel.version.encode()).hexdigest()
    target = cache_dir / f"initramfs-{kernel.version}-{key[:12]}.cpio.gz"
    if target.exists():
        return target
    archive = _Cpio()
    for directory in ("bin", "dev", "modules"):
        archive.add(directory, stat.S_IFDIR | 0o755)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.add("bin/busybox", stat.S_IFREG | 0o755, busybox)
    archive.add("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode())
    names = []
    for path in modules:
        name = _module_name(path.name)
        body = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
        archive.add(f"modules/{name}.ko", stat.S_IFREG | 0o644, body)
        names.append(name)
    archive.add("modules.order", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode())
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(archive.finish(), compresslevel=6))
    tmp.rename(target)
    return target
