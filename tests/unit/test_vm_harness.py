"""The test-VM harness pieces that run on the host without QEMU or network."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.vm import initramfs
from tests.vm import rounds as rounds_module
from tests.vm.initramfs import _Cpio, module_load_order
from tests.vm.kernel import GuestKernel, KernelFetchError, debian_mirror, newest_version
from tests.vm.machine import stage2_script
from tests.vm.plugin import _GuestReporter, stacks_file

# -- a tiny newc reader -------------------------------------------------------------------

NEWC_MAGIC = b"070701"
NEWC_FIELDS = (
    "ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
    "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check",
)  # fmt: skip
NEWC_HEADER = len(NEWC_MAGIC) + 8 * len(NEWC_FIELDS)  # 110


@dataclass
class CpioEntry:
    name: str
    fields: dict[str, int]
    body: bytes

    @property
    def mode(self) -> int:
        return self.fields["mode"]


def _align4(offset: int) -> int:
    return (offset + 3) & ~3


def read_newc(archive: bytes) -> list[CpioEntry]:
    """Every entry of a newc archive, TRAILER!!! included; checks all padding is zero."""
    entries = []
    offset = 0
    while True:
        assert archive[offset : offset + 6] == NEWC_MAGIC, f"bad magic at {offset}"
        raw_fields = archive[offset + 6 : offset + NEWC_HEADER]
        values = [int(raw_fields[i * 8 : i * 8 + 8], 16) for i in range(len(NEWC_FIELDS))]
        fields = dict(zip(NEWC_FIELDS, values, strict=True))
        name_start = offset + NEWC_HEADER
        name_end = name_start + fields["namesize"]
        assert archive[name_end - 1] == 0, "name is not NUL-terminated"
        name = archive[name_start : name_end - 1].decode()
        body_start = _align4(name_end)
        assert archive[name_end:body_start] == bytes(body_start - name_end)
        body_end = body_start + fields["filesize"]
        body = archive[body_start:body_end]
        assert len(body) == fields["filesize"], "truncated body"
        offset = _align4(body_end)
        assert archive[body_end:offset] == bytes(offset - body_end)
        entries.append(CpioEntry(name, fields, body))
        if name == "TRAILER!!!":
            assert offset == len(archive), "data after the trailer"
            return entries


def test_cpio_archive_parses_back_to_its_entries() -> None:
    archive = _Cpio()
    archive.add("bin", stat.S_IFDIR | 0o755)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.add("init", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n")
    entries = read_newc(archive.finish())
    assert [e.name for e in entries] == ["bin", "dev/console", "init", "TRAILER!!!"]
    bin_dir, _console, init, _trailer = entries
    assert stat.S_ISDIR(bin_dir.mode)
    assert stat.S_IMODE(bin_dir.mode) == 0o755
    assert init.mode == stat.S_IFREG | 0o755
    assert init.body == b"#!/bin/sh\necho hi\n"


def test_cpio_console_is_char_device_5_1() -> None:
    archive = _Cpio()
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    console = read_newc(archive.finish())[0]
    assert stat.S_ISCHR(console.mode)
    assert stat.S_IMODE(console.mode) == 0o600
    assert (console.fields["rdevmajor"], console.fields["rdevminor"]) == (5, 1)
    assert console.body == b""


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 1021])
def test_cpio_pads_bodies_of_any_length_to_4_bytes(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    archive = _Cpio()
    archive.add("a", stat.S_IFREG | 0o644, body)
    archive.add("bb", stat.S_IFREG | 0o644, b"next")
    data = archive.finish()
    assert len(data) % 4 == 0
    entries = read_newc(data)
    assert [(e.name, e.body) for e in entries[:2]] == [("a", body), ("bb", b"next")]


def test_cpio_gives_each_entry_its_own_inode_and_ends_with_trailer() -> None:
    archive = _Cpio()
    for name in ("x", "y", "z"):
        archive.add(name, stat.S_IFREG | 0o644, name.encode())
    entries = read_newc(archive.finish())
    assert entries[-1].name == "TRAILER!!!"
    assert entries[-1].fields["filesize"] == 0
    inodes = [e.fields["ino"] for e in entries]
    assert len(set(inodes)) == len(inodes)


# -- modules ------------------------------------------------------------------------------

VERSION = "6.12.43+deb12-amd64"

MODULES_DEP = """\
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet.ko.xz:
kernel/fs/netfs/netfs.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz
kernel/fs/overlayfs/overlay.ko.xz:
kernel/drivers/a/top-level.ko.xz: kernel/drivers/a/middle.ko.xz
kernel/drivers/a/middle.ko.xz: kernel/drivers/a/bottom.ko.xz
kernel/drivers/a/bottom.ko.xz:
"""


def _fake_kernel(root: Path, modules_dep: str = MODULES_DEP) -> GuestKernel:
    kernel = GuestKernel(VERSION, root)
    kernel.modules_dir.mkdir(parents=True)
    (kernel.modules_dir / "modules.dep").write_text(modules_dep)
    return kernel


def _relative(kernel: GuestKernel, paths: list[Path]) -> list[str]:
    return [str(p.relative_to(kernel.modules_dir)) for p in paths]


def test_module_load_order_puts_dependencies_first(tmp_path: Path) -> None:
    kernel = _fake_kernel(tmp_path)
    order = _relative(kernel, module_load_order(kernel, ("9p",)))
    assert sorted(order) == sorted(
        ["kernel/fs/9p/9p.ko.xz", "kernel/net/9p/9pnet.ko.xz", "kernel/fs/netfs/netfs.ko.xz"]
    )
    assert order[-1] == "kernel/fs/9p/9p.ko.xz"


def test_module_load_order_follows_dependencies_transitively(tmp_path: Path) -> None:
    kernel = _fake_kernel(tmp_path)
    order = _relative(kernel, module_load_order(kernel, ("top_level",)))
    assert order == [
        "kernel/drivers/a/bottom.ko.xz",
        "kernel/drivers/a/middle.ko.xz",
        "kernel/drivers/a/top-level.ko.xz",
    ]


def test_module_load_order_lists_shared_dependencies_once(tmp_path: Path) -> None:
    kernel = _fake_kernel(tmp_path)
    order = _relative(kernel, module_load_order(kernel, ("9p", "9pnet_virtio", "overlay")))
    assert len(order) == len(set(order)) == 5
    shared = order.index("kernel/net/9p/9pnet.ko.xz")
    assert shared < order.index("kernel/fs/9p/9p.ko.xz")
    assert shared < order.index("kernel/net/9p/9pnet_virtio.ko.xz")


def test_module_load_order_returns_paths_inside_the_modules_dir(tmp_path: Path) -> None:
    kernel = _fake_kernel(tmp_path)
    assert module_load_order(kernel, ("overlay",)) == [
        tmp_path / "lib/modules" / VERSION / "kernel/fs/overlayfs/overlay.ko.xz"
    ]


def test_module_load_order_rejects_unknown_module(tmp_path: Path) -> None:
    kernel = _fake_kernel(tmp_path)
    with pytest.raises(KeyError, match="vduse"):
        module_load_order(kernel, ("9p", "vduse"))


def test_initramfs_build_carries_init_console_and_decompressed_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = _fake_kernel(tmp_path / "kernel")
    for line in MODULES_DEP.splitlines():
        path = kernel.modules_dir / line.split(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(f"module {path.name}".encode()))
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake busybox")
    monkeypatch.setattr(initramfs, "BUSYBOX", busybox)
    cache = tmp_path / "cache"
    cache.mkdir()

    target = initramfs.build(kernel, cache)

    entries = {e.name: e for e in read_newc(gzip.decompress(target.read_bytes()))}
    assert entries["init"].body == initramfs.INIT_SCRIPT.encode()
    assert entries["bin/busybox"].body == b"\x7fELF fake busybox"
    assert stat.S_ISCHR(entries["dev/console"].mode)
    assert entries["modules/9pnet.ko"].body == b"module 9pnet.ko.xz"
    order = entries["modules.order"].body.decode().split()
    assert set(order) == {"9p", "9pnet", "netfs", "9pnet_virtio", "overlay"}
    assert order.index("9pnet") < order.index("9p")
    assert initramfs.build(kernel, cache) == target  # cached: same inputs, same file


# -- apt sources --------------------------------------------------------------------------

SECURITY_STANZA = """\
Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
"""

DEB822 = f"""\
{SECURITY_STANZA}
Types: deb
URIs: http://deb.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_debian_mirror_reads_deb822_stanza_with_bookworm_suite(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "x.sources").write_text(DEB822)
    assert debian_mirror(tmp_path) == "http://deb.example/debian"


def test_debian_mirror_ignores_a_security_only_deb822_stanza(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "x.sources").write_text(SECURITY_STANZA)
    with pytest.raises(KernelFetchError):
        debian_mirror(tmp_path)


def test_debian_mirror_ignores_a_deb_src_only_deb822_stanza(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "x.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    with pytest.raises(KernelFetchError):
        debian_mirror(tmp_path)


def test_debian_mirror_reads_classic_line_with_options(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [signed-by=/etc/apt/d.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_debian_mirror_reads_classic_list_in_sources_list_d(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.list").write_text(
        "deb http://other.example/debian/ bookworm main contrib\n"
    )
    assert debian_mirror(tmp_path) == "http://other.example/debian"


def test_debian_mirror_without_bookworm_source_raises(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://deb.example/debian trixie main\n")
    with pytest.raises(KernelFetchError, match="bookworm"):
        debian_mirror(tmp_path)


def test_debian_mirror_of_empty_apt_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(KernelFetchError):
        debian_mirror(tmp_path)


# -- kernel versions ----------------------------------------------------------------------


def test_newest_version_compares_upload_numbers_numerically() -> None:
    names = [
        "linux-image-6.12.9+deb12-amd64",
        "linux-image-6.12.95+deb12-amd64",
        "linux-image-6.12.43+deb12-amd64",
    ]
    assert newest_version(names) == "6.12.95+deb12-amd64"


def test_newest_version_prefers_three_digit_upload_over_two_digit() -> None:
    # A string comparison would pick 6.12.95 here.
    names = ["linux-image-6.12.95+deb12-amd64", "linux-image-6.12.100+deb12-amd64"]
    assert newest_version(names) == "6.12.100+deb12-amd64"


def test_newest_version_ignores_debug_and_unsigned_packages() -> None:
    names = [
        "linux-image-6.12.43+deb12-amd64",
        "linux-image-6.12.99+deb12-amd64-dbg",
        "linux-image-6.12.99+deb12-amd64-unsigned",
        "linux-image-6.12.99+deb12-cloud-amd64",
        "linux-image-6.13.1+deb12-amd64",
    ]
    assert newest_version(names) == "6.12.43+deb12-amd64"


@pytest.mark.parametrize(
    "names", [[], ["linux-image-6.12.99+deb12-amd64-dbg", "linux-image-amd64"]]
)
def test_newest_version_without_a_candidate_raises(names: list[str]) -> None:
    with pytest.raises(KernelFetchError):
        newest_version(names)


def test_guest_kernel_paths_follow_debian_layout(tmp_path: Path) -> None:
    kernel = GuestKernel(VERSION, tmp_path)
    assert kernel.vmlinuz == tmp_path / "boot" / f"vmlinuz-{VERSION}"
    assert kernel.modules_dir == tmp_path / "lib" / "modules" / VERSION


# -- stage 2 ------------------------------------------------------------------------------

ARGV = ["python", "-m", "pytest", "-k", "a b", "$HOME"]


def _lines(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip()]


def _stage2(kernel_root: Path, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    kernel = GuestKernel(VERSION, kernel_root)
    return _lines(stage2_script(kernel, ARGV, cwd, env or {}))


def test_stage2_loads_the_vduse_modules() -> None:
    lines = _stage2(Path("/cache/kernel"), Path("/work/main"))
    modprobes = [shlex.split(line) for line in lines if line.startswith("modprobe")]
    assert len(modprobes) == 1
    assert {"vduse", "virtio_vdpa", "virtio_blk"} <= set(modprobes[0])


def test_stage2_bind_mounts_the_kernel_modules_dir(tmp_path: Path) -> None:
    root = tmp_path / "cache dir" / "kernel-x"
    lines = _stage2(root, Path("/work/main"))
    target = f"/lib/modules/{VERSION}"
    assert f"mkdir -p {target}" in lines
    binds = [shlex.split(line) for line in lines if line.startswith("mount --bind")]
    assert binds == [["mount", "--bind", str(root / "lib/modules" / VERSION), target]]
    assert lines.index(f"mkdir -p {target}") < lines.index(
        next(line for line in lines if line.startswith("mount --bind"))
    )


def test_stage2_runs_the_quoted_command_in_cwd() -> None:
    cwd = Path("/work/my checkout")
    lines = _stage2(Path("/cache/kernel"), cwd)
    commands = [line for line in lines if line.startswith("cd ")]
    assert len(commands) == 1
    assert shlex.split(commands[0]) == ["cd", str(cwd), "&&", *ARGV]


def test_stage2_records_the_command_exit_status_right_after_it() -> None:
    lines = _stage2(Path("/cache/kernel"), Path("/work/main"))
    command = next(i for i, line in enumerate(lines) if line.startswith("cd "))
    assert lines[command + 1] == f"echo $? > {initramfs.RESULTS_MOUNT}/exit-status"


def test_stage2_loads_modules_before_running_the_command() -> None:
    lines = _stage2(Path("/cache/kernel"), Path("/work/main"))
    modprobe = next(i for i, line in enumerate(lines) if line.startswith("modprobe"))
    command = next(i for i, line in enumerate(lines) if line.startswith("cd "))
    assert modprobe < command


def test_stage2_exports_quoted_environment() -> None:
    lines = _stage2(Path("/cache/kernel"), Path("/work/main"), {"FOO": "x y", "BAR": "$(id)"})
    assert "export FOO='x y'" in lines
    assert "export BAR='$(id)'" in lines


def test_stage2_powers_off_at_the_end() -> None:
    lines = _stage2(Path("/cache/kernel"), Path("/work/main"))
    assert "echo o > /proc/sysrq-trigger" in lines[-3:]


def test_stage2_mounts_private_run_when_nothing_lives_there() -> None:
    lines = _stage2(Path("/cache/kernel"), Path("/work/main"))
    assert "mount -t tmpfs tmpfs /run" in lines


def test_stage2_keeps_host_run_when_cwd_is_under_run() -> None:
    lines = _stage2(Path("/cache/kernel"), Path("/run/user/1000/checkout"))
    assert not [line for line in lines if line.startswith("mount -t tmpfs") and "/run" in line]


def test_stage2_keeps_host_run_when_the_kernel_is_under_run() -> None:
    lines = _stage2(Path("/run/cache/kernel"), Path("/work/main"))
    assert "mount -t tmpfs tmpfs /run" not in lines


def test_stage2_mounts_private_run_for_a_sibling_directory_of_run() -> None:
    lines = _stage2(Path("/cache/kernel"), Path("/runner/work/checkout"))
    assert "mount -t tmpfs tmpfs /run" in lines


def test_debian_mirror_skips_a_disabled_deb822_stanza(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "x.sources").write_text(
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\n"
    )
    assert debian_mirror(tmp_path) == "http://on.example/debian"


def test_debian_mirror_reads_continued_fields_and_blank_lines_with_spaces(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "x.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n"
        "  \n"
        "Types: deb\nURIs: http://main.example/debian\nSuites:\n bookworm bookworm-updates\n"
    )
    assert debian_mirror(tmp_path) == "http://main.example/debian"


# -- the guest's report -------------------------------------------------------------------


def test_guest_report_is_on_disk_as_each_test_starts_and_ends_so_a_timed_out_vm_still_reports(
    tmp_path: Path,
) -> None:
    path = tmp_path / "report.json"
    reporter = _GuestReporter(path, None)

    def phase(nodeid: str, when: str) -> None:
        report = SimpleNamespace(
            nodeid=nodeid, when=when, outcome="passed", skipped=False, longrepr=None,
            longreprtext="",
        )  # fmt: skip
        reporter.pytest_runtest_logreport(report)  # type: ignore[arg-type]

    reporter.pytest_runtest_logstart("t::a")
    assert json.loads(path.read_text()) == {"t::a": {}}  # started, not finished
    phase("t::a", "setup")
    phase("t::a", "call")
    phase("t::a", "teardown")
    reporter.pytest_runtest_logstart("t::b")
    phase("t::b", "setup")
    written = json.loads(path.read_text())
    assert set(written["t::a"]) == {"setup", "call", "teardown"}
    assert written["t::b"] == {}
    phase("t::b", "call")
    phase("t::b", "teardown")
    assert set(json.loads(path.read_text())["t::b"]) == {"setup", "call", "teardown"}
    assert not list(tmp_path.glob("*.tmp"))
    later_round = _GuestReporter(path, None)
    later_round.pytest_runtest_logstart("t::c")
    assert set(json.loads(path.read_text())) == {"t::a", "t::b", "t::c"}


HANGS = """
import time

def test_passes():
    pass

def test_hangs():
    time.sleep(600)

def test_never_reached():
    pass
"""


def test_a_test_past_its_limit_ends_its_pytest_with_every_stack_and_shows_unfinished(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_hangs.py").write_text(HANGS)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.vm.plugin", "-p", "no:cacheprovider",
         f"--vm-report={report}", "--vm-test-limit=3", "--rootdir", str(tmp_path),
         str(tmp_path / "test_hangs.py")],
        check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert done.returncode != 0
    assert "line 8 in test_hangs" in stacks_file(report).read_text()  # this thread's stack
    phases = json.loads(report.read_text())
    [passed, hung] = phases.values()
    assert set(passed) == {"setup", "call", "teardown"}
    assert "teardown" not in hung
    assert not any(key.endswith("test_never_reached") for key in phases)


def test_rounds_fail_a_hung_test_clean_and_run_the_rest_in_a_new_round(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    rounds: list[list[str]] = []
    cleaned: list[int] = []

    def run_round(pending: list[str]) -> int:
        rounds.append(list(pending))
        written = json.loads(report.read_text()) if report.exists() else {}
        done = {"setup": {"outcome": "passed"}, "call": {"outcome": "passed"},
                "teardown": {"outcome": "passed"}}  # fmt: skip
        written[pending[0]] = done
        if len(pending) > 1:
            written[pending[1]] = {"setup": {"outcome": "passed"}}  # it hangs here
        report.write_text(json.dumps(written))
        return 1 if len(pending) > 1 else 0

    status = rounds_module.run_rounds(
        ["a", "b", "c", "d"], report, 5, run_round, clean=lambda: cleaned.append(len(rounds))
    )
    assert rounds == [["a", "b", "c", "d"], ["c", "d"]]
    assert cleaned == [1, 2]
    assert status == 1
    written = json.loads(report.read_text())
    assert written["b"]["call"]["outcome"] == "failed"
    assert "did not finish within 5 s" in written["b"]["call"]["longrepr"]
    assert "(no stacks were written)" in written["b"]["call"]["longrepr"]
    assert written["d"]["call"]["outcome"] == "failed"
    assert written["a"]["call"]["outcome"] == written["c"]["call"]["outcome"] == "passed"


def test_rounds_stop_after_a_round_that_ended_of_itself(tmp_path: Path) -> None:
    report = tmp_path / "report.json"

    def run_round(pending: list[str]) -> int:
        report.write_text(json.dumps({pending[0]: {"teardown": {"outcome": "passed"}}}))
        return 2  # pytest stopped early (an interrupted session, say)

    cleaned: list[bool] = []
    status = rounds_module.run_rounds(
        ["a", "b"], report, 5, run_round, clean=lambda: cleaned.append(True)
    )
    assert (status, cleaned) == (2, [])
