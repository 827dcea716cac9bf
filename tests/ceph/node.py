"""What a node needs before Ceph daemons can run on it: loopback, a hostname, modules, ports.

The test VM boots with loopback down (the monitor then finds no address in 127.0.0.0/8)
and may have no hostname (the OSD then fails to set its CRUSH location). Each step here
changes nothing where it is already so, as on a developer's host.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
from pathlib import Path

from tests.ceph.errors import CephError

log = logging.getLogger(__name__)

IFF_UP = 0x1
FALLBACK_HOSTNAME = "ceph-test"
DEFAULT_PORTS = (3300, 6789)  # the monitor's v2 and v1 ports, where they are free


def prepare(host: str) -> None:
    """Loopback up and a hostname set, so daemons can bind ``host`` and name themselves."""
    if host.startswith("127."):
        _loopback_up()
    name = socket.gethostname()
    if name in ("", "(none)"):
        _run(["hostname", FALLBACK_HOSTNAME], "set a hostname")
        log.info("ceph: hostname was unset, now %s", FALLBACK_HOSTNAME)


def load_module(name: str) -> bool:
    """Load kernel module ``name`` unless loaded (or built in); False if it cannot be."""
    if Path(f"/sys/module/{name}").is_dir():
        return True
    done = subprocess.run(
        ["modprobe", name], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        log.info("ceph: modprobe %s failed: %s", name, done.stderr.strip())
    return Path(f"/sys/module/{name}").is_dir()


def require_module(name: str) -> None:
    """Load ``name`` or raise: for the kernel clients (``rbd``, ``nbd``) a test maps with."""
    if not load_module(name):
        raise CephError(f"kernel module {name} is not loaded and modprobe {name} failed")


def monitor_ports(host: str) -> tuple[int, int]:
    """Ceph's usual monitor ports if both are free on ``host``, else two free ones.

    A developer's host may run another cluster already; a test cluster must not fail
    for it, and the kernel client takes any port from the config.
    """
    if all(_bindable(host, port) for port in DEFAULT_PORTS):
        return DEFAULT_PORTS
    ports = _free_ports(host, 2)
    log.info("ceph: ports %s are taken on %s, using %s", DEFAULT_PORTS, host, ports)
    return ports[0], ports[1]


def listening(host: str, port: int) -> bool:
    """Whether something accepts connections at ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def _loopback_up() -> None:
    flags = Path("/sys/class/net/lo/flags")
    if flags.exists() and int(flags.read_text(), 16) & IFF_UP:
        return
    _run(["ip", "link", "set", "lo", "up"], "bring loopback up")
    log.info("ceph: loopback was down, brought it up")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the monitor binds: a connection of an earlier cluster in TIME_WAIT is no obstacle.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_ports(host: str, count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _run(argv: list[str], step: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise CephError(f"could not {step}: {done.stderr.strip()}")
