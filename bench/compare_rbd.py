"""fio against four clients of RBD images in one test Ceph pool, in one VDUSE kernel.

The sibling of bench/compare.py (same jobs, same fio runs), on the one-node test Ceph that
bench/ceph_pool.py brings up in the VM. Systems:

* ours: a csi-vduse device. Its dataplane runs librbd with ``rbd_cache=false``, always: a
  write is acknowledged once the OSDs hold it.
* krbd: the kernel's RBD client (``rbd device map``). It has no cache of its own, and fio's
  direct I/O bypasses the page cache.
* rbd-nbd: librbd behind ``/dev/nbdN``, mapped with ``--rbd_cache=false``. One connection:
  16.2's rbd-nbd has no option for more.
* qsd: qemu-storage-daemon's vduse-blk export over its ``rbd`` driver with
  ``cache.direct=on``, which is how QEMU turns librbd's cache off (block/rbd.c sets
  ``rbd_cache`` from it).

librbd's cache is on by default, write-around in 16.2, which acknowledges a write before
the OSDs have it: ours never does that, so rbd-nbd and qsd run without it too, and every
system's writes are on the OSD when fio sees them done. rbd-nbd's setting is read back from
its admin socket and printed.

Only one client may hold an image's exclusive lock, and our dataplane takes it at start, so
each system has its own image, all the same size and prefilled alike. Each job runs on
every system before the next job starts, so a shared host's drifting load falls on all
alike; each job starts with another system, and each run waits for the monitor and OSD to
be at rest, since whoever runs first would otherwise take the compactions and discards
the last run left. A run also notes the serving process's CPU time per I/O. Every job runs
with 1 and 2 queues (fio ``numjobs`` = queues, each at the listed depth); krbd and rbd-nbd
have no queue count of ours to set, so each row offers them the same load. Devices stay
attached for a whole queue count's pass.

Run inside a VDUSE kernel: ``bash bench/run.sh --backend rbd`` boots the test VM for it.
Prints a table, the issue's targets met or missed, and one ``RBD-BENCH-JSON`` line with
every number. Absolute numbers under software emulation mean little; the ratios in the
same run are the point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import ceph_pool
from bench.compare import (
    JOBS,
    Result,
    fio,
    our_rss,
    ours,
    peak_rss_mib,
    qsd_argv,
    qsd_export,
    ratio,
    show,
)
from csi_vduse.devices.spec import DEFAULT_BOUNCE_SIZE, parse_size
from tests.ceph import CephClient

SYSTEMS = ("ours", "krbd", "rbd-nbd", "qsd")
LABELS = {"ours": "ours", "krbd": "krbd", "rbd-nbd": "nbd", "qsd": "qsd"}  # per-run lines
CACHE = {
    "ours": "librbd rbd_cache=false (the dataplane always)",
    "krbd": "none (a kernel client; direct I/O bypasses the page cache)",
    "rbd-nbd": "librbd rbd_cache=false (--rbd_cache=false)",
    "qsd": "librbd rbd_cache=false (cache.direct=on)",
}
# 4 images of this size live in the OSD's file, in the VM's tmpfs (3 GiB of memory, shared
# with the OSD's ~900 MiB and every client).
DEFAULT_SIZE_MIB = 256
QSD_NAME = "bench-qsd-rbd"
QSD_TIMEOUT = 120.0  # seconds for qsd to reach the cluster and open its image
ASOK_TIMEOUT = 120.0  # the ceph CLI starts slowly under emulation
RSS_TARGET_MIB = 40.0


@dataclass
class Attached:
    """A system serving its image: the block device, the serving process (None for krbd),
    how it was made and its librbd cache setting, for the report."""

    device: str
    pid: int | None
    command: str
    cache: str


# -- the systems ---------------------------------------------------------------------------


@contextlib.contextmanager
def our_device(
    client: CephClient, image: str, work: Path, queues: int, bounce: int
) -> Iterator[Attached]:
    """Our device on ``image``, made as ``csi-vduse device create`` would make it (the
    command reported is that equivalent)."""
    spec = client.image(image)
    source = ceph_pool.source(client, spec)
    command = shlex.join([
        "csi-vduse", "device", "create", "bench-ours", "--rbd", spec,
        "--ceph-conf", str(source.conf), "--ceph-user", source.user,
        "--ceph-keyfile", str(source.keyfile), "--num-queues", str(queues),
        "--bounce-size", str(bounce),
    ])  # fmt: skip
    with ours(source, work, queues, bounce) as (dev, pid):
        yield Attached(dev, pid, command, CACHE["ours"])


@contextlib.contextmanager
def krbd(client: CephClient, image: str) -> Iterator[Attached]:
    """``image`` mapped by the kernel's client, with the options the tests map with."""
    command = shlex.join([*client.cluster.client_args("rbd", client.user), "device", "map",
                          "--options", "noudev", client.image(image)])  # fmt: skip
    dev = client.map_krbd(image)
    try:
        yield Attached(str(dev), None, command, CACHE["krbd"])
    finally:
        client.unmap_krbd(dev)


@contextlib.contextmanager
def rbd_nbd(client: CephClient, image: str, asok: Path) -> Iterator[Attached]:
    """rbd-nbd without librbd's cache, its admin socket at ``asok`` to read that back."""
    options = ["--rbd_cache=false", f"--admin_socket={asok}"]
    spec = client.image(image)
    command = shlex.join([*client.cluster.client_args("rbd-nbd", client.user), *options,
                          "map", spec])  # fmt: skip
    dev = client.map_nbd(image, *options)
    try:
        seen = librbd_setting(asok, "rbd_cache")
        cache = f"{CACHE['rbd-nbd']}; its admin socket says rbd_cache={seen}"
        yield Attached(str(dev), nbd_daemon(spec), command, cache)
    finally:
        client.unmap_nbd(dev)


def nbd_daemon(spec: str) -> int:
    """The rbd-nbd process serving ``spec``: the child ``rbd-nbd map`` forked and left
    running when it returned, with the same command line."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode(errors="replace")).name == "rbd-nbd" and spec.encode() in argv:
            return int(proc.name)
    raise RuntimeError(f"no rbd-nbd process serves {spec}")


def librbd_setting(asok: Path, option: str) -> str:
    """``option`` as a running Ceph client has it, from its admin socket; "unknown" where
    the socket does not answer."""
    deadline = time.monotonic() + 10
    while not asok.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        done = subprocess.run(
            ["ceph", "--admin-daemon", str(asok), "config", "get", option],
            capture_output=True, text=True, timeout=ASOK_TIMEOUT, check=False,
        )  # fmt: skip
        return str(json.loads(done.stdout)[option])
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return "unknown"


@contextlib.contextmanager
def qsd(client: CephClient, image: str, queues: int) -> Iterator[Attached]:
    """qsd's vduse-blk export over its rbd driver as our user."""
    blockdev = ceph_pool.qsd_blockdev(ceph_pool.source(client, client.image(image)))
    command = shlex.join(qsd_argv(blockdev, QSD_NAME, queues))
    with qsd_export(blockdev, queues, name=QSD_NAME, timeout=QSD_TIMEOUT) as (dev, pid):
        yield Attached(dev, pid, command, CACHE["qsd"])


# -- running -------------------------------------------------------------------------------


def run_queues(
    client: CephClient, images: dict[str, str], work: Path, queues: int, *, seconds: int,
    size: int, names: list[str], report: dict[str, Any], bounce: int,
) -> None:  # fmt: skip
    """Every job on each system in turn before the next job (each job led by another
    system); results into ``report``."""
    results: dict[str, dict[str, Result]] = {system: {} for system in SYSTEMS}
    with contextlib.ExitStack() as stack:
        attached = {
            "ours": stack.enter_context(
                our_device(client, images["ours"], work, queues, bounce)
            ),
            "krbd": stack.enter_context(krbd(client, images["krbd"])),
            "rbd-nbd": stack.enter_context(
                rbd_nbd(client, images["rbd-nbd"], work / f"rbd-nbd-q{queues}.asok")
            ),
            "qsd": stack.enter_context(qsd(client, images["qsd"], queues)),
        }  # fmt: skip
        ours_pid = attached["ours"].pid
        assert ours_pid is not None
        idle = peak_rss_mib(ours_pid)
        print(f"{queues} queue(s):", flush=True)
        for system, one in attached.items():
            print(f"  {system}: {one.device}; cache: {one.cache}\n    {one.command}", flush=True)
        cpu: dict[str, dict[str, float]] = {system: {} for system in SYSTEMS}
        for turn, name in enumerate(names):
            # Who goes first takes whatever the cluster still does after the last run, so
            # each job starts with another system, and each run waits for a quiet OSD.
            for system in SYSTEMS[turn % len(SYSTEMS) :] + SYSTEMS[: turn % len(SYSTEMS)]:
                quiet_cluster(client)
                pid = attached[system].pid
                began = cpu_seconds(pid) if pid is not None else 0.0
                result = fio(attached[system].device, JOBS[name], seconds, queues, size=size)
                results[system][name] = result
                show(LABELS[system], queues, name, result)
                if pid is not None:  # fio's ramp second included in both
                    ios = max(result.iops * (seconds + 1), 1.0)
                    cpu[system][name] = (cpu_seconds(pid) - began) / ios * 1e6
        for system, one in attached.items():
            rss = peak_rss_mib(one.pid) if one.pid is not None else None
            report[f"{system}-q{queues}"] = {
                "results": results[system], "rss": rss, "device": one.device,
                "command": one.command, "cache": one.cache,
                "cpu_us_per_io": cpu[system],
            }  # fmt: skip
        report[f"ours-q{queues}"]["rss"]["idle VmRSS"] = idle["VmRSS"]


QUIET_SHARE = 0.05  # of one CPU: the cluster's daemons at rest
QUIET_WAIT = 30.0  # seconds at most


def quiet_cluster(client: CephClient) -> None:
    """Until the monitor and OSD use under QUIET_SHARE of a CPU over half a second (BlueStore
    discards and RocksDB compactions after a run would slow the next run), QUIET_WAIT at
    most."""
    deadline = time.monotonic() + QUIET_WAIT
    while time.monotonic() < deadline:
        pids = client.cluster.daemon_pids()
        with contextlib.suppress(OSError):  # a daemon gone between the two looks
            began = sum(cpu_seconds(pid) for pid in pids)
            time.sleep(0.5)
            if sum(cpu_seconds(pid) for pid in pids) - began < QUIET_SHARE * 0.5:
                return


def cpu_seconds(pid: int) -> float:
    """User and system time of every thread of ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the report ----------------------------------------------------------------------------


def print_table(report: dict[str, Any], names: list[str]) -> None:
    print("\nIOPS / MiB/s / mean us / p99 us per system; /krbd /nbd /qsd: ours/that by IOPS;")
    print("lat = ours/rbd-nbd mean latency (lower is better)")
    print("librbd cache: " + "; ".join(f"{s} {CACHE[s]}" for s in SYSTEMS))
    titles = {"ours": "ours", "krbd": "krbd", "rbd-nbd": "rbd-nbd", "qsd": "qemu-storage-daemon"}
    header = (f"{'q':>2} {'job':22} | " + " | ".join(f"{titles[s]:>31}" for s in SYSTEMS)
              + f" | {'/krbd':>5} {'/nbd':>5} {'/qsd':>5} {'lat':>5}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for queues in report["queues"]:
        rows = {system: report[f"{system}-q{queues}"]["results"] for system in SYSTEMS}
        for name in names:
            cells = []
            for system in SYSTEMS:
                r = rows[system][name]
                cells.append(f"{r.iops:7.0f} {r.mib_s:6.1f} {r.mean_us:7.1f} {r.p99_us:7.1f}")
            mine = rows["ours"][name]
            ratios = [ratio(mine.iops, rows[other][name].iops) for other in SYSTEMS[1:]]
            lat = ratio(mine.mean_us, rows["rbd-nbd"][name].mean_us)
            print(f"{queues:>2} {name:22} | {' | '.join(cells)} | {' '.join(ratios)} {lat}")
    print("\nCPU per I/O, us (the serving process's user and system time; krbd's is in the "
          "kernel, not counted; neither is the kernel's share of VDUSE or nbd)")  # fmt: skip
    for queues in report["queues"]:
        for name in names:
            cells = [f"{s} {report[f'{s}-q{queues}']['cpu_us_per_io'].get(name, 0.0):7.0f}"
                     for s in SYSTEMS if s != "krbd"]  # fmt: skip
            print(f"{queues:>2} {name:22} | {' | '.join(cells)}")
    for queues in report["queues"]:
        mine = report[f"ours-q{queues}"]["rss"]
        nbd = report[f"rbd-nbd-q{queues}"]["rss"]
        qsd_rss = report[f"qsd-q{queues}"]["rss"]
        print(f"peak RSS with {queues} queue(s): {our_rss(mine)}; "
              f"rbd-nbd {nbd['VmHWM']:.1f} MiB; qsd {qsd_rss['VmHWM']:.1f} MiB; "
              "krbd: in the kernel, no process")  # fmt: skip


def depth(name: str) -> str:
    """A job's queue depth as its name ends: ``QD32``."""
    return name.rsplit(maxsplit=1)[-1]


def iops_floors(name: str) -> list[tuple[str, float]]:
    """The issue's IOPS targets for job ``name``, as (other system, least ours/theirs):
    4k QD32 at least 0.8x krbd and 1.3x rbd-nbd; every QD16 and QD32 job 1.2x qsd."""
    floors = []
    if name.startswith("4k ") and depth(name) == "QD32":
        floors += [("krbd", 0.8), ("rbd-nbd", 1.3)]
    if depth(name) in ("QD16", "QD32"):
        floors.append(("qsd", 1.2))
    return floors


def judge(report: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """Each of the issue's targets, per queue count and job run: met or not, with numbers."""
    verdicts: list[dict[str, Any]] = []

    def verdict(target: str, met: bool, numbers: str) -> None:
        verdicts.append({"target": target, "met": met, "numbers": numbers})

    for queues in report["queues"]:
        rows = {system: report[f"{system}-q{queues}"]["results"] for system in SYSTEMS}
        where = f"{queues} queue(s)"
        for name in names:
            mine = rows["ours"][name]
            for other, floor in iops_floors(name):
                theirs = rows[other][name].iops
                times = mine.iops / theirs if theirs else math.inf
                verdict(f"IOPS ours/{other} >= {floor}, {name}, {where}", times >= floor,
                        f"{times:.2f} ({mine.iops:.0f} vs {theirs:.0f} IOPS)")  # fmt: skip
            if depth(name) == "QD1":
                theirs_us = rows["rbd-nbd"][name].mean_us
                verdict(f"mean latency ours <= rbd-nbd, {name}, {where}",
                        mine.mean_us <= theirs_us,
                        f"{mine.mean_us:.1f} vs {theirs_us:.1f} us")  # fmt: skip
        hwm = report[f"ours-q{queues}"]["rss"]["VmHWM"]
        nbd = report[f"rbd-nbd-q{queues}"]["rss"]["VmHWM"]
        verdict(f"dataplane peak RSS <= {RSS_TARGET_MIB:.0f} MiB, {where}",
                hwm <= RSS_TARGET_MIB, f"{hwm:.1f} MiB (rbd-nbd {nbd:.1f} MiB)")  # fmt: skip
    return verdicts


def print_targets(verdicts: list[dict[str, Any]]) -> None:
    print("\ntargets (each queue count and job judged apart):")
    for v in verdicts:
        print(f"  {'met   ' if v['met'] else 'MISSED'}  {v['target']}: {v['numbers']}")
    met = sum(v["met"] for v in verdicts)
    print(f"{met} of {len(verdicts)} met", flush=True)


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runtime", type=int, default=30, help="seconds per fio job")
    parser.add_argument("--queues", default="1,2", help="queue counts to run, e.g. 1,2")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated job names")
    parser.add_argument(
        "--size-mib", type=int, default=DEFAULT_SIZE_MIB,
        help="each system's image (four of them, in the test VM's memory)",
    )  # fmt: skip
    parser.add_argument(
        "--bounce-size", type=parse_size, default=DEFAULT_BOUNCE_SIZE,
        help="our device's bounce buffer (qsd keeps the kernel's 64M)",
    )  # fmt: skip
    args = parser.parse_args()
    names = [n.strip() for n in args.jobs.split(",")]
    unknown = [n for n in names if n not in JOBS]
    if unknown:
        parser.error(f"unknown jobs {unknown}; the jobs are {list(JOBS)}")
    queue_counts = [int(q) for q in args.queues.split(",")]
    if args.size_mib < 16:
        parser.error("--size-mib: at least 16")
    runs = len(queue_counts) * len(names) * len(SYSTEMS)
    print(f"rbd bench: {runs} fio runs of {args.runtime} s, about "
          f"{runs * (args.runtime + 3) / 60:.0f} min after set-up", flush=True)  # fmt: skip
    report: dict[str, Any] = {
        "runtime": args.runtime, "queues": [], "size_mib": args.size_mib,
        "bounce_size": args.bounce_size, "cache": CACHE,
    }  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(ceph_pool.pool())
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rbd-bench-")))
            images: dict[str, str] = {}
            for system in SYSTEMS:
                began = time.monotonic()
                images[system] = f"bench-{system}"
                ceph_pool.image(client, images[system], args.size_mib)
                print(f"image {client.image(images[system])}: {args.size_mib} MiB, prefilled "
                      f"in {time.monotonic() - began:.0f} s", flush=True)  # fmt: skip
            for queues in queue_counts:
                run_queues(
                    client, images, work, queues, seconds=args.runtime,
                    size=args.size_mib << 20, names=names, report=report,
                    bounce=args.bounce_size,
                )  # fmt: skip
                report["queues"].append(queues)
    finally:  # a failed pass still reports the passes before it
        if report["queues"]:
            print_table(report, names)
            report["targets"] = judge(report, names)
            print_targets(report["targets"])
            print("RBD-BENCH-JSON " + json.dumps(report, default=asdict), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
