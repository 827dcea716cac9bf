"""I/O stall of a killed dataplane, ours against qemu-storage-daemon's vduse-blk export.

One VDUSE kernel, one raw block device at a time (no filesystem), a steady fio load on
it (4 KiB random reads and writes at a fixed rate and moderate depth), and every I/O's
completion time logged (fio ``--write_lat_log`` with ``--log_avg_msec=0``). The serving
process is SIGKILLed ``--kills`` times, each once I/O flows again after the previous one;
the stall of a kill is the longest gap between two completions from the kill until the
next kill. The systems:

* ours: a ``csi-vduse`` device with the driver's ``Supervisor`` running in this process,
  as ``csi-vduse serve`` runs it: it sees the death through a pidfd and starts a successor
  (setpriv, ``python -m dataplane``) that takes the device over from the in-flight log.
* qsd: ``qemu-storage-daemon`` with a ``vduse-blk`` export, killed with SIGKILL and at once
  started again with the same arguments. Its libvduse finds the device still there
  (VDUSE_CREATE_DEV fails with EEXIST, it opens ``/dev/vduse/NAME``), maps its reconnect
  log ``$TMPDIR/vduse-blk-ID`` and resubmits what the log shows in flight. If it cannot
  take the device back, I/O stays stalled and the bench says so instead of a number.

With ``--backing rbd`` each system serves its own RBD image on a test Ceph brought up in
the VM (bench/ceph_pool.py), librbd's cache off in both: our successor breaks its dead
predecessor's lock at once (it knows whose it is); qsd's librbd waits for the lock. A
third system then runs there, ``rbd-nbd`` (librbd behind ``/dev/nbdN``, as ceph-csi maps
it): nothing takes its device over, so it is killed once, and the bench reports what fio
and the kernel made of it. The nbd driver has, rarely, left that daemon and its unmap in
uninterruptible sleep after the kill; the bench never waits on either without a bound.

For ours it also times each takeover's phases (the supervisor's steps from wrappers put
around them here, the dataplane's from its ``start-up:`` log line, the first completion
from fio's log), and it times interpreter start and imports without load
(``--startup-only`` does just that, also outside a VDUSE kernel).

Run in the test VM: ``bash bench/run.sh takeover [--kills N] [--backing rbd]``. Prints the
tables and one ``TAKEOVER-JSON`` line with every number.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import ceph_pool, compare_rbd
from bench.compare import Backing, device_spec, qsd_argv
from csi_vduse.devices import dataplane_process
from csi_vduse.devices.launcher import wanted
from csi_vduse.devices.manager import DeviceManager
from csi_vduse.devices.rbd_source import RbdSource
from csi_vduse.devices.state import StateStore
from csi_vduse.devices.supervisor import Supervisor
from csi_vduse.vdpa import sysfs
from tests.ceph import CephClient

SIZE = 256 << 20
RESUME_TIMEOUT = 60.0  # seconds without a completion after a kill: the system hangs
# (librbd waits out a dead lock owner's watch, 30 s by default, before it breaks the lock)
POLL = 0.05
T = TypeVar("T")


# -- fio and its completion log -------------------------------------------------------------


def start_fio(dev: str, prefix: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    rate = [f"--rate_iops={args.rate_iops // 2},{args.rate_iops // 2}"] if args.rate_iops else []
    return subprocess.Popen(
        ["fio", "--name=steady", f"--filename={dev}", "--ioengine=libaio", "--direct=1",
         "--rw=randrw", "--rwmixread=50", "--bs=4k", f"--iodepth={args.iodepth}",
         f"--size={SIZE}", "--time_based", "--runtime=3600", "--randrepeat=0", *rate,
         "--clocksource=clock_gettime", f"--write_lat_log={prefix}", "--log_avg_msec=0",
         "--log_unix_epoch=1", "--disable_slat=1", "--output-format=json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop_fio(fio: subprocess.Popen[str]) -> dict[str, Any]:
    """SIGINT (fio then finishes as at its runtime's end and writes its logs); its summary."""
    fio.send_signal(signal.SIGINT)
    try:
        out, err = fio.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        fio.kill()
        return {"error": "fio did not stop within 120 s of SIGINT"}
    try:
        job = json.loads(out[out.index("{") :])["jobs"][0]
    except (ValueError, KeyError, IndexError):
        return {"error": f"fio exited {fio.returncode}: {err.strip()[-500:]}"}
    return {
        "error": job["error"],
        "ios": job["read"]["total_ios"] + job["write"]["total_ios"],
        "iops": job["read"]["iops"] + job["write"]["iops"],
    }


def completions(prefix: Path) -> list[float]:
    """Every logged completion, seconds since the epoch, sorted (fio logs milliseconds)."""
    times: list[float] = []
    for log in prefix.parent.glob(f"{prefix.name}_clat.*.log"):
        with log.open() as lines:
            times += [int(line.split(",", 1)[0]) / 1000 for line in lines if line.strip()]
    times.sort()
    return times


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float] | None:
    """The longest gap between consecutive completions that ends after ``start`` and before
    ``end`` (the next kill's gap, which spans it, is that kill's): (its length, its end).
    None when nothing completed before ``start``: fio was not under way yet."""
    lo = bisect.bisect_right(times, start) - 1
    if lo < 0:
        return None
    hi = bisect.bisect_left(times, end)
    best = (0.0, start)
    for a, b in zip(times[lo : hi - 1], times[lo + 1 : hi], strict=True):
        if b - a > best[0]:
            best = (b - a, b)
    return best


def io_completed(dev: str) -> int:
    """Reads plus writes the guest saw complete on ``dev`` (/sys/block/X/stat)."""
    fields = Path(f"/sys/block/{Path(dev).name}/stat").read_text().split()
    return int(fields[0]) + int(fields[4])


def wait_for_io(dev: str, after: int, timeout: float = RESUME_TIMEOUT) -> bool:
    """Whether completions go on past ``after`` (a count read after the kill) in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if io_completed(dev) > after + 16:
            return True
        time.sleep(POLL)
    return False


def warm_up(dev: str, seconds: float) -> None:
    """Once fio's I/O flows (it takes seconds to start in the TCG VM), ``seconds`` more."""
    if not wait_for_io(dev, io_completed(dev), timeout=120):
        raise RuntimeError(f"fio completed no I/O on {dev} within 120 s")
    time.sleep(seconds)


# -- one kill -------------------------------------------------------------------------------


@dataclass
class Kill:
    wall: float  # time.time() at the kill
    mono: float  # time.monotonic() right after it
    resumed: bool = True
    stall: float | None = None  # seconds
    phases: dict[str, float] = field(default_factory=dict)  # CLOCK_MONOTONIC stamps


def kill_now(pid: int) -> Kill:
    wall = time.time()
    os.kill(pid, signal.SIGKILL)
    return Kill(wall, time.monotonic())


def measure_stalls(kills: list[Kill], times: list[float], end: float) -> None:
    for i, kill in enumerate(kills):
        until = kills[i + 1].wall if i + 1 < len(kills) else end
        gap = longest_gap(times, kill.wall - 0.2, until) if kill.resumed else None
        if gap is not None:
            kill.stall, resumed_at = gap
            kill.phases["first completion"] = kill.mono + (resumed_at - kill.wall)


# -- ours -----------------------------------------------------------------------------------


class Stamps:
    """Wraps functions so each call notes when it began and ended (CLOCK_MONOTONIC)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[float, float]]] = {}
        self.lock = threading.Lock()

    def wrap(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        def timed(*args: Any, **kwargs: Any) -> T:
            began = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.calls.setdefault(name, []).append((began, time.monotonic()))

        return timed

    def first_after(self, name: str, t: float) -> tuple[float, float] | None:
        with self.lock:
            return next((c for c in self.calls.get(name, []) if c[0] >= t), None)


START_UP = re.compile(r"CLOCK_MONOTONIC started=([\d.]+) imported=([\d.]+) set_up=([\d.]+) "
                      r"resumed=([\d.]+) ready=([\d.]+)")  # fmt: skip


RBD_OPEN = re.compile(r"CLOCK_MONOTONIC opened=([\d.]+) locked=([\d.]+)")


def dataplane_timelines(log: Path, line: re.Pattern[str] = START_UP) -> list[list[float]]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [[float(x) for x in m.groups()] for m in line.finditer(text)]


def run_ours(backing: Backing, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    name = "tko-ours"
    store = StateStore(work / "state")
    # As `csi-vduse serve` runs it: successors forked by the launcher, unless switched off.
    launcher = dataplane_process.start_launcher(store.root / "launcher.log") if wanted() else None
    manager = DeviceManager(store, launcher=launcher)
    stamps = Stamps()
    # The supervisor's steps, timed: check() runs on every pidfd wake and scan; revive() and
    # _start() (files opened, process spawned, readiness line read) on a restart.
    manager.revive = stamps.wrap("revive", manager.revive)  # type: ignore[method-assign]
    original_start = dataplane_process._start
    dataplane_process._start = stamps.wrap("spawn", original_start)
    record = manager.create(device_spec(name, backing, args.queues))
    assert record.block_device is not None
    dev = record.block_device
    supervisor = Supervisor(manager)
    supervisor.check = stamps.wrap("check", supervisor.check)  # type: ignore[method-assign]
    supervisor.start()
    if launcher is not None:
        deadline = time.monotonic() + 120
        while not launcher.ready and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"  ours: dataplane launcher {'ready' if launcher.ready else 'NOT ready'}")
    kills: list[Kill] = []
    prefix = work / "ours"
    fio = start_fio(dev, prefix, args)
    try:
        warm_up(dev, args.warmup)
        for n in range(args.kills):
            current = store.load(name)
            assert current is not None and current.pid is not None
            kill = kill_now(current.pid)
            kills.append(kill)
            after = io_completed(dev)
            kill.resumed = wait_for_io(dev, after)
            if not kill.resumed:
                print(f"  ours: kill {n + 1}: no I/O for {RESUME_TIMEOUT:.0f} s", flush=True)
                break
            print(f"  ours: kill {n + 1}: I/O flows again", flush=True)
            time.sleep(args.settle + random.uniform(0, 0.5))
        end = time.time()
        summary = stop_fio(fio)
    finally:
        if fio.poll() is None:
            fio.kill()
        supervisor.stop()
        if launcher is not None:
            launcher.close()
        dataplane_process._start = original_start
        timelines = dataplane_timelines(store.log_path(name))  # delete removes the log
        images = dataplane_timelines(store.log_path(name), RBD_OPEN)
        manager.delete(name)
    measure_stalls(kills, completions(prefix), end)
    for kill in kills:
        check = stamps.first_after("check", kill.mono)
        revive = stamps.first_after("revive", kill.mono)
        spawn = stamps.first_after("spawn", kill.mono)
        if check:
            kill.phases["supervisor wakes"] = check[0]
        if revive:
            kill.phases["revive begins"] = revive[0]
        if spawn:
            kill.phases["spawn"] = spawn[0]
            kill.phases["supervisor has ready line"] = spawn[1]
        line = next((t for t in timelines if t[0] > kill.mono), None)
        if line:
            for key, value in zip(
                ("interpreter up", "imports done", "set-up done", "queues resumed", "ready"),
                line,
                strict=True,
            ):
                kill.phases[key] = value
        opened = next((t for t in images if t[0] > kill.mono), None)
        if opened:
            kill.phases["image connected and open"], kill.phases["image locked"] = opened
    return {"fio": summary, "kills": [asdict(k) for k in kills]}


# -- qemu-storage-daemon ----------------------------------------------------------------------


def qsd_node(backing: Backing) -> str:
    """qsd's block node on ``backing``; for a file as compare.py's, for an image librbd's
    cache off as ours runs it."""
    if isinstance(backing, RbdSource):
        return ceph_pool.qsd_blockdev(backing)
    return f"file,node-name=f0,filename={backing},cache.direct=off"


def run_qsd(backing: Backing, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    name = "tko-qsd"
    argv = qsd_argv(qsd_node(backing), name, args.queues)
    log = work / "qsd.log"
    out = log.open("ab")
    recon = Path(tempfile.gettempdir()) / f"vduse-blk-{name}"
    daemon = subprocess.Popen(argv, stdout=out, stderr=out)
    for _ in range(400):
        if Path(f"/dev/vduse/{name}").exists():
            break
        time.sleep(0.05)
    subprocess.run(["vdpa", "dev", "add", "name", name, "mgmtdev", "vduse"], check=True)
    dev = str(sysfs.wait_for_block_device(name, 20))
    kills: list[Kill] = []
    prefix = work / "qsd"
    fio = start_fio(dev, prefix, args)
    hung = False
    result: dict[str, Any] = {"reconnect_log": str(recon)}
    try:
        warm_up(dev, args.warmup)
        result["reconnect_log_present"] = recon.exists()
        for n in range(args.kills):
            kill = kill_now(daemon.pid)
            kills.append(kill)
            daemon.wait()
            kill.phases["dead"] = time.monotonic()
            after = io_completed(dev)
            daemon = subprocess.Popen(argv, stdout=out, stderr=out)  # the same export, again
            kill.phases["spawn"] = time.monotonic()
            kill.resumed = wait_for_io(dev, after)
            if not kill.resumed:
                hung = True
                state = "running" if daemon.poll() is None else f"exited {daemon.returncode}"
                print(f"  qsd: kill {n + 1}: no I/O for {RESUME_TIMEOUT:.0f} s "
                      f"(the restarted daemon is {state})", flush=True)  # fmt: skip
                break
            print(f"  qsd: kill {n + 1}: I/O flows again", flush=True)
            time.sleep(args.settle + random.uniform(0, 0.5))
        end = time.time()
        if hung:
            result["fio"] = {"error": "stalled: I/O did not resume"}
            fio.kill()  # it may stay in D state with I/O that never completes
            result["daemon_log"] = log.read_text(errors="replace")[-2000:]
        else:
            result["fio"] = stop_fio(fio)
    finally:
        if fio.poll() is None:
            fio.kill()
        if not hung:
            subprocess.run(["vdpa", "dev", "del", name], check=False, timeout=60)
            daemon.terminate()
            daemon.wait(timeout=30)
        out.close()
    if not hung:
        measure_stalls(kills, completions(prefix), end)
    result["hung"] = hung
    result["kills"] = [asdict(k) for k in kills]
    return result


# -- rbd-nbd -------------------------------------------------------------------------------

NBD_END_WAIT = 120.0  # seconds for fio to end after rbd-nbd's death, and for its unmap


def kernel_io_errors(dev: str) -> int:
    """The kernel's I/O error lines about ``dev`` so far."""
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    name = Path(dev).name
    return sum("I/O error" in line and name in line for line in log.splitlines())


def run_rbd_nbd(
    client: CephClient, spec: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One SIGKILL of the rbd-nbd daemon under the same fio: fio's exit, the kernel's
    errors. Nothing here waits on a process that may be stuck in the nbd driver."""
    name = spec.split("/", 1)[1]
    dev = str(client.map_nbd(name, "--rbd_cache=false"))
    errors = kernel_io_errors(dev)
    fio = start_fio(dev, work / "nbd", args)
    result: dict[str, Any] = {}
    try:
        warm_up(dev, args.warmup)
        kill_now(compare_rbd.nbd_daemon(spec))
        try:
            _, err = fio.communicate(timeout=NBD_END_WAIT)
            result["fio"] = {"exit": fio.returncode, "stderr": err.strip()[-500:]}
        except subprocess.TimeoutExpired:
            result["fio"] = {"exit": None, "stderr": f"still running {NBD_END_WAIT:.0f} s on"}
        result["kernel_io_errors"] = kernel_io_errors(dev) - errors
    finally:
        if fio.poll() is None:
            fio.kill()  # it may not die: I/O to a dead nbd device can wait forever
    unmap = subprocess.Popen(["rbd-nbd", "unmap", dev], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        unmap.wait(timeout=NBD_END_WAIT)
        result["unmapped"] = unmap.returncode == 0
    except subprocess.TimeoutExpired:
        result["unmapped"] = False  # left running, stuck in the nbd driver
    print(f"  rbd-nbd: killed once: fio exited {result['fio']['exit']}, "
          f"{result['kernel_io_errors']} kernel I/O errors", flush=True)  # fmt: skip
    return result


# -- start-up without load ------------------------------------------------------------------


def timed_runs(argv: list[str], runs: int) -> float:
    """Median wall time (ms) of ``argv`` run to completion ``runs`` times."""
    samples = []
    for _ in range(runs):
        began = time.monotonic()
        subprocess.run(argv, check=True, cwd="/", stdout=subprocess.DEVNULL)
        samples.append((time.monotonic() - began) * 1e3)
    return statistics.median(samples)


def startup(runs: int) -> dict[str, Any]:
    """What starting ``python -m dataplane`` costs before it touches the device."""
    py = sys.executable
    result: dict[str, Any] = {
        "python -c pass": timed_runs([py, "-c", "pass"], runs),
        "python -I -S -c pass (no site)": timed_runs([py, "-I", "-S", "-c", "pass"], runs),
        "python -c 'import csi_vduse.dataplane.__main__'": timed_runs(
            [py, "-c", "import csi_vduse.dataplane.__main__"], runs
        ),
    }
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:
        drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
        result["setpriv ... true"] = timed_runs([*drop, "/bin/true"], runs)
        result["setpriv ... python -c pass"] = timed_runs([*drop, py, "-c", "pass"], runs)
    trace = subprocess.run(
        [py, "-X", "importtime", "-c", "import csi_vduse.dataplane.__main__"],
        check=True, cwd="/", capture_output=True, text=True,
    ).stderr  # fmt: skip
    rows = []
    for line in trace.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            rows.append((int(parts[0]), int(parts[1]), parts[2].rstrip()))
    result["importtime"] = {
        "total ms": sum(r[0] for r in rows) / 1e3,
        "top-level (cumulative ms)": {
            r[2].strip(): r[1] / 1e3 for r in rows if not r[2].startswith("  ")
        },
        "largest self times (ms)": {
            r[2].strip(): r[0] / 1e3 for r in sorted(rows, reverse=True)[:15]
        },
    }
    return result


# -- report ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def stall_summary(kills: list[dict[str, Any]]) -> dict[str, float] | None:
    stalls = [k["stall"] * 1e3 for k in kills if k["stall"] is not None]
    if not stalls:
        return None
    return {
        "n": len(stalls),
        "unmeasured": len(kills) - len(stalls),
        "p50": percentile(stalls, 50),
        "p99": percentile(stalls, 99),
        "max": max(stalls),
    }


PHASES = [
    "supervisor wakes", "revive begins", "spawn", "interpreter up", "imports done",
    "image connected and open", "image locked", "set-up done", "queues resumed", "ready",
    "supervisor has ready line", "first completion",
]  # fmt: skip


def phase_table(kills: list[dict[str, Any]]) -> list[tuple[str, float, float, float]]:
    """The phases in the order they end (median time since the kill); per phase the median
    and max of its length since the one before, and the median of its end since the kill."""
    ends: dict[str, float] = {}
    for phase in PHASES:
        since = [(k["phases"][phase] - k["mono"]) * 1e3 for k in kills if phase in k["phases"]]
        if since:
            ends[phase] = statistics.median(since)
    rows = []
    previous = "kill"
    for phase in sorted(ends, key=ends.__getitem__):
        spans = []
        for k in kills:
            stamps = {"kill": k["mono"], **k["phases"]}
            if phase in stamps and previous in stamps:
                spans.append((stamps[phase] - stamps[previous]) * 1e3)
        if spans:
            rows.append((f"{previous} -> {phase}", statistics.median(spans), max(spans),
                         ends[phase]))  # fmt: skip
        previous = phase
    return rows


def print_report(report: dict[str, Any]) -> None:
    if "startup" in report:
        print("\nstart-up without load (median ms):")
        for key, value in report["startup"].items():
            if key != "importtime":
                print(f"  {key:42} {value:8.1f}")
        imports = report["startup"]["importtime"]
        print(f"  -X importtime, all modules: {imports['total ms']:.1f} ms; top level:")
        for key, value in imports["top-level (cumulative ms)"].items():
            print(f"    {key:40} {value:8.1f}")
        print("  largest self times:")
        for key, value in imports["largest self times (ms)"].items():
            print(f"    {key:40} {value:8.1f}")
    if "ours" in report:
        print("\nours: takeover phases, ms (median and max of each phase; median since the kill)")
        for label, median, worst, since in phase_table(report["ours"]["kills"]):
            print(f"  {label:48} {median:8.1f} {worst:8.1f} {since:8.1f}")
    summaries: dict[str, dict[str, float] | None] = {}
    print("\nI/O stall per kill (longest gap between completions), ms")
    for system in ("ours", "qsd"):
        if system not in report:
            continue
        result = report[system]
        summaries[system] = summary = stall_summary(result["kills"])
        fio = result["fio"]
        if result.get("hung"):
            print(f"  {system:5} I/O never resumed after kill {len(result['kills'])}: "
                  f"no stall to report (fio: {fio.get('error')})")  # fmt: skip
        elif summary is None:
            print(f"  {system:5} no kill measured (fio: {fio})")
        else:
            print(f"  {system:5} n={summary['n']:2.0f} (+{summary['unmeasured']:.0f} unmeasured) "
                  f"p50 {summary['p50']:8.1f} p99 {summary['p99']:8.1f} max {summary['max']:8.1f} "
                  f"(fio: {fio.get('ios')} I/Os, {fio.get('error')} errors)")  # fmt: skip
    ours, qsd = summaries.get("ours"), summaries.get("qsd")
    if ours and qsd:
        ratio = {"p50": ours["p50"] / qsd["p50"], "p99": ours["p99"] / qsd["p99"]}
        print(f"  ours/qsd: p50 {ratio['p50']:.2f}x, p99 {ratio['p99']:.2f}x "
              "(target: p99 <= 0.5x and <= 1000 ms)")  # fmt: skip
        report["ratio"] = ratio
    report["stalls"] = summaries


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """1 GiB of tmpfs for the backing image and fio's logs."""
    mnt = Path("/mnt/takeover")
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1G", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20, help="kills per system")
    parser.add_argument("--systems", default="ours,qsd", help="ours, qsd or both")
    parser.add_argument(
        "--backing",
        choices=("file", "rbd"),
        default="file",
        help="a file on tmpfs, or an RBD image on a test Ceph in the VM",
    )
    parser.add_argument("--queues", type=int, default=1)
    parser.add_argument("--iodepth", type=int, default=8)
    parser.add_argument("--rate-iops", type=int, default=1000, help="total; 0: unthrottled")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of fio before kill 1")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds of I/O between kills")
    parser.add_argument("--startup-runs", type=int, default=3, help="0 skips start-up timing")
    parser.add_argument("--startup-only", action="store_true", help="no VDUSE needed")
    args = parser.parse_args()
    report: dict[str, Any] = {"args": vars(args)}
    if args.startup_runs:
        report["startup"] = startup(args.startup_runs)
    if not args.startup_only:
        systems = [s.strip() for s in args.systems.split(",")]
        with contextlib.ExitStack() as stack:
            mnt = stack.enter_context(scratch())
            images: dict[str, Backing] = {}
            if args.backing == "rbd":  # one image each: the first system holds its lock
                client = stack.enter_context(ceph_pool.pool())
                for system in systems:
                    spec = ceph_pool.image(client, f"takeover-{system}", SIZE >> 20)
                    images[system] = ceph_pool.source(client, spec)
            else:
                image = mnt / "disk.img"
                subprocess.run(["fio", "--name=prefill", f"--filename={image}", "--rw=write",
                                "--bs=1M", f"--size={SIZE}", "--output-format=terse"],
                               check=True, capture_output=True)  # fmt: skip
                images = dict.fromkeys(systems, image)
            for system in systems:
                work = mnt / system
                work.mkdir()
                print(f"{system}: {args.kills} kills under fio", flush=True)
                run = run_ours if system == "ours" else run_qsd
                report[system] = run(images[system], work, args)
            if args.backing == "rbd":
                work = mnt / "rbd-nbd"
                work.mkdir()
                print("rbd-nbd: killed once under fio", flush=True)
                spec = ceph_pool.image(client, "takeover-rbd-nbd", SIZE >> 20)
                report["rbd-nbd"] = run_rbd_nbd(client, spec, work, args)
    print_report(report)
    print("TAKEOVER-JSON " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
