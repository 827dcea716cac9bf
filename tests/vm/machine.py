"""Run one command inside a throwaway VM that has a real VDUSE kernel.

The guest sees the host's root filesystem read-only (9p) under a tmpfs overlay, so
it runs the same Python, virtual environment and checkout as the host. A second,
writable 9p share carries the stage-2 script in and the exit status, dmesg and any
report files out. QEMU never outlives the call: it is killed on timeout, on error
and, through the parent-death signal, if this process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.vm import initramfs
from tests.vm.kernel import GuestKernel, KernelCache

GUEST_MODULES = ("vduse", "virtio_vdpa", "virtio_blk", "ext4")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


class VmError(RuntimeError):
    """The VM could not be started."""


@dataclass(kw_only=True)
class VmResult:
    """What a guest run produced."""

    exit_status: int | None
    output: str
    timed_out: bool
    seconds: float
    results_dir: Path

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def artifact(self, name: str) -> str:
        path = self.results_dir / name
        return path.read_text(errors="replace") if path.exists() else ""


STARTED = "command-started"  # written by the guest just before it runs the command
BOOT_ATTEMPTS = 2  # a guest that dies before the command starts is booted once more


def stage2_script(
    kernel: GuestKernel, argv: Sequence[str], cwd: Path, env: Mapping[str, str]
) -> str:
    """The guest's second stage: finish the root, load modules, run ``argv``, power off."""
    results = initramfs.RESULTS_MOUNT
    modules_dir = f"/lib/modules/{kernel.version}"
    exports = "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())
    # /run is the guest's own unless the checkout or the kernel lives there.
    protected = [str(cwd), str(kernel.root)]
    under_run = any(Path(p).is_relative_to("/run") for p in protected)
    run_tmpfs = "" if under_run else "mount -t tmpfs tmpfs /run"
    return f"""
export PATH={GUEST_PATH} HOME=/root LANG=C.UTF-8 TERM=dumb CSI_VDUSE_IN_VM=1
{exports}
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -sfn /proc/self/fd /dev/fd
{run_tmpfs}
hostname csi-vduse-vm
mkdir -p {modules_dir}
mount --bind {shlex.quote(str(kernel.modules_dir))} {modules_dir}
modprobe -a {" ".join(GUEST_MODULES)} || echo "vm: modprobe failed"
: > {results}/{STARTED}
cd {shlex.quote(str(cwd))} && {shlex.join(argv)}
echo $? > {results}/exit-status
dmesg > {results}/dmesg.txt 2>&1
sync
echo o > /proc/sysrq-trigger
sleep 60
"""


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class TestVm:
    """A QEMU guest booted for one command."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        kernel: GuestKernel | None = None,
        memory_mb: int = 3072,
        cpus: int = 2,
        accel: str | None = None,
    ) -> None:
        self.cache = KernelCache()
        self.kernel = kernel or self.cache.get()
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.accel = accel or os.environ.get("CSI_VDUSE_VM_ACCEL", "tcg")

    def qemu_argv(self, initrd: Path, results: Path) -> list[str]:
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise VmError("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
        accels = []
        for name in self.accel.split(":"):
            accels += ["-accel", "tcg,thread=multi" if name == "tcg" else name]
        return [
            qemu, "-nodefaults", "-display", "none", "-no-reboot", *accels,
            "-cpu", "max", "-smp", str(self.cpus), "-m", str(self.memory_mb),
            "-kernel", str(self.kernel.vmlinuz), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 quiet",
            "-serial", "stdio", "-monitor", "none", "-nic", "none",
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={results},mount_tag=results,security_model=none",
        ]  # fmt: skip

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
        echo: Callable[[str], None] | None = None,
        results_dir: Path | None = None,
    ) -> VmResult:
        """Boot, run ``argv`` in ``cwd`` as root, power off; never leaves QEMU running."""
        initrd = initramfs.build(self.kernel, self.cache.cache_dir)
        results = results_dir or Path(tempfile.mkdtemp(prefix="csi-vduse-vm-"))
        results.mkdir(parents=True, exist_ok=True)
        script = stage2_script(self.kernel, argv, (cwd or Path.cwd()).resolve(), env or {})
        (results / "stage2.sh").write_text(script)
        started = time.monotonic()
        lines: list[str] = []
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            remaining = max(1.0, timeout - (time.monotonic() - started))
            timed_out = self._boot(initrd, results, lines, echo, remaining)
            # Under emulation the guest kernel has, rarely, died in its own early boot (an
            # oops while patching its code); the command never ran, so it may run now.
            if timed_out or (results / STARTED).exists() or attempt == BOOT_ATTEMPTS:
                break
            log.warning("the guest died before the command started; booting it again")
        status_file = results / "exit-status"
        status = int(status_file.read_text()) if status_file.exists() else None
        return VmResult(
            exit_status=status,
            output="\n".join(lines),
            timed_out=timed_out,
            seconds=time.monotonic() - started,
            results_dir=results,
        )

    def _boot(
        self, initrd: Path, results: Path, lines: list[str],
        echo: Callable[[str], None] | None, timeout: float,
    ) -> bool:  # fmt: skip
        """Run the guest once, its console appended to ``lines``; True if it timed out."""
        proc = subprocess.Popen(
            self.qemu_argv(initrd, results),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 -- only async-signal-safe prctl runs
        )
        reader = threading.Thread(target=_pump, args=(proc, lines, echo), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill(proc)
            reader.join(timeout=5)
        return timed_out


def _pump(
    proc: subprocess.Popen[bytes], lines: list[str], echo: Callable[[str], None] | None
) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
        lines.append(line)
        if echo is not None:
            echo(line)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
