"""``CephCluster``: one monitor and one BlueStore OSD on loopback, under one directory.

No manager unless a test asks for one (``start_mgr``): RBD I/O needs none, and it costs
300 MiB; only pools' space figures (``ceph df``) come from it. cephx on, pools of size 1.
The monitor listens on both protocols: librados speaks v2, the kernel client (krbd) v1.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.ceph import bootstrap, commands, conf, daemons, kernel_clients, loopdev, node
from tests.ceph.errors import CephError
from tests.ceph.layout import MGR_ID, MON_ID, Layout, State

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_OSD_SIZE = 4 << 30  # sparse: only what BlueStore writes takes space
DEFAULT_TIMEOUT = 300.0  # for up and start_osd: up takes 20-50 s in the TCG test VM
COMMAND_SECONDS = 120.0
CONNECT_SECONDS = 30
SOCKET_PATH_MAX = 107  # sun_path, less its terminating NUL
MON = f"mon.{MON_ID}"
MGR = f"mgr.{MGR_ID}"


class CephCluster:
    """A test cluster rooted at ``root``; one object per process, any number of processes.

    Everything the cluster is lives in ``root`` (``cluster.json`` records ports, fsid and
    the OSD's id), so ``down`` works from another process than ``up``'s.
    """

    def __init__(
        self, root: Path, *, osd_size: int = DEFAULT_OSD_SIZE, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.layout = Layout(root.absolute())
        self.osd_size = osd_size
        self.timeout = timeout

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def conf_path(self) -> Path:
        return self.layout.conf

    @property
    def admin_keyring(self) -> Path:
        return self.layout.keyring("admin")

    def keyring(self, user: str) -> Path:
        """Where ``create_client`` keeps ``client.<user>``'s keyring (the config's default)."""
        return self.layout.keyring(user)

    @property
    def mon_addresses(self) -> tuple[str, str]:
        """The monitor's v2 and v1 addresses, as ``v2:127.0.0.1:3300`` and ``v1:...``."""
        state = self._state()
        return f"v2:{state.host}:{state.v2_port}", f"v1:{state.host}:{state.v1_port}"

    @property
    def fsid(self) -> str:
        return self._state().fsid

    def env(self) -> dict[str, str]:
        """Environment for Ceph's tools to find this cluster (the config names the keyrings)."""
        return {"CEPH_CONF": str(self.conf_path)}

    def is_up(self) -> bool:
        """Whether the monitor and the OSD both run."""
        state = State.load(self.layout)
        return (
            state is not None
            and state.osd_id is not None
            and daemons.pid(self.layout, MON) is not None
            and daemons.pid(self.layout, f"osd.{state.osd_id}") is not None
        )

    def daemon_pids(self) -> list[int]:
        """The pids of the monitor and the OSD that run now."""
        names = [path.stem for path in self.layout.run_dir.glob("*.pid")]
        return [pid for name in names if (pid := daemons.pid(self.layout, name)) is not None]

    # -- up and down -----------------------------------------------------------------------

    def up(self) -> None:
        """Bring the cluster up; nothing to do where it runs already.

        An OSD stopped by ``stop_osd`` is started again, with its data; anything else an
        interrupted or failed earlier ``up`` left is taken down, and a new cluster made. On
        failure everything started is stopped again and CephError says why, with the
        daemons' logs.
        """
        if self.is_up():
            log.info("ceph: cluster in %s is up already", self.root)
            return
        state = State.load(self.layout)
        if state is not None and state.osd_id is not None and daemons.pid(self.layout, MON):
            self.start_osd()
            return
        self._refuse_foreign_directory()
        self.down()
        began = time.monotonic()
        try:
            self._create(began + self.timeout)
        except BaseException as exc:
            report = self._log_report()
            self.down()
            if isinstance(exc, Exception):
                message = f"the test cluster in {self.root} did not come up: {exc}\n{report}"
                raise CephError(message) from exc
            raise
        log.info("ceph: cluster in %s up in %.1fs", self.root, time.monotonic() - began)

    def down(self) -> None:
        """Unmap its kernel devices, stop its processes (OSD, then monitor), detach its loop
        device, remove the directory. Safe to repeat; touches nothing of a directory that
        holds no cluster."""
        state = State.load(self.layout)
        if state is None:
            return
        for device_id in kernel_clients.krbd_devices(state.fsid):
            kernel_clients.remove_krbd(device_id)
        known = set(self.daemon_pids())
        for client in set(daemons.members(self.layout)) - known:  # an rbd-nbd, say
            daemons.terminate(client)
        daemons.stop(self.layout, MGR)
        for pid_file in sorted(self.layout.run_dir.glob("osd.*.pid")):
            daemons.stop(self.layout, pid_file.stem)
        daemons.stop(self.layout, MON)
        for stray in daemons.members(self.layout):
            daemons.terminate(stray, signal.SIGKILL)
        detached = loopdev.detach_all(self.layout.osd_image)
        shutil.rmtree(self.root)
        log.info(
            "ceph: cluster in %s is down%s",
            self.root,
            f" ({', '.join(detached)} detached)" if detached else "",
        )

    # -- what tests use --------------------------------------------------------------------

    def ceph(
        self, *args: str, timeout: float = COMMAND_SECONDS, input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """``ceph ARGS`` as client.admin."""
        argv = ["ceph", "-c", str(self.conf_path), "--connect-timeout", str(CONNECT_SECONDS)]
        return commands.run([*argv, *args], timeout=timeout, input=input, check=check)

    def rbd(
        self, *args: str, user: str = "admin", keyring: Path | None = None,
        timeout: float = COMMAND_SECONDS, check: bool = True,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """``rbd ARGS`` as ``client.<user>`` (its keyring from the config, or ``keyring``)."""
        return commands.run(
            [*self.client_args("rbd", user, keyring), *args], timeout=timeout, check=check
        )

    def client_args(self, tool: str, user: str = "admin", keyring: Path | None = None) -> list[str]:
        """The start of a command line for ``tool`` (``rbd``, ``rbd-nbd``) as ``client.<user>``.

        It names the config, so ``down`` finds and stops a daemon it starts (an rbd-nbd)."""
        argv = [tool, "-c", str(self.conf_path), "--id", user]
        argv += ["--client_mount_timeout", str(CONNECT_SECONDS)]
        return [*argv, "--keyring", str(keyring)] if keyring is not None else argv

    def create_pool(self, name: str, pg_num: int = 8) -> None:
        """An RBD pool of size 1 (the config's default); nothing to do where it exists."""
        self.ceph("osd", "pool", "create", name, str(pg_num), str(pg_num), "replicated")
        self.rbd("pool", "init", name)

    def create_client(self, name: str, pool: str) -> str:
        """A cephx user ``client.<name>`` that may use RBD images in ``pool`` only; its key.

        Its keyring is written where the config points clients (``keyring(name)``)."""
        keyring = self.layout.keyring(name)
        caps = ["mon", "profile rbd", "osd", f"profile rbd pool={pool}"]
        self.ceph("auth", "get-or-create", f"client.{name}", *caps, "-o", str(keyring))
        return bootstrap.read_key(keyring)

    def stop_osd(self, *, kill: bool = False) -> None:
        """Stop the OSD: cleanly (it tells the monitor), or with SIGKILL as a crash would."""
        daemons.stop(self.layout, f"osd.{self._osd_id()}", kill=kill)

    def start_osd(self) -> None:
        """Start the OSD unless it runs; return once the monitor has it up."""
        self._start_osd(time.monotonic() + self.timeout)

    def start_mgr(self, *, pools: tuple[str, ...] = ()) -> None:
        """Start a manager unless one runs; return once ``ceph df`` has figures for
        ``pools`` (the manager gathers them from the OSD every few seconds)."""
        deadline = time.monotonic() + self.timeout
        if daemons.pid(self.layout, MGR) is None:
            self.layout.mgr_data.mkdir(parents=True, exist_ok=True)
            caps = ["mon", "allow profile mgr", "osd", "allow *", "mds", "allow *"]
            keyring = self.layout.mgr_data / "keyring"
            self.ceph("auth", "get-or-create", MGR, *caps, "-o", str(keyring))
            argv = ["ceph-mgr", "-f", "-c", str(self.conf_path), "-i", MGR_ID]
            daemons.start(self.layout, MGR, argv)
        self._wait(lambda: self._has_space_figures(pools), MGR, deadline)

    def _has_space_figures(self, pools: tuple[str, ...]) -> bool:
        done = self.ceph("df", "--format", "json", timeout=60, check=False)
        if done.returncode != 0:
            return False
        answer = json.loads(done.stdout)
        known = {pool.get("name") for pool in answer.get("pools", [])}
        return answer.get("stats", {}).get("total_bytes", 0) > 0 and set(pools) <= known

    # -- bringing it up --------------------------------------------------------------------

    def _refuse_foreign_directory(self) -> None:
        root = self.root
        if root.exists() and not self.layout.state.exists() and any(root.iterdir()):
            raise CephError(f"{root} is not empty and holds no test cluster: not using it")

    def _create(self, deadline: float) -> None:
        layout = self.layout
        asok = layout.run_dir / "osd.0.asok"
        if len(os.fsencode(asok)) > SOCKET_PATH_MAX:
            raise CephError(f"{self.root} is too long a path for the daemons' sockets ({asok})")
        node.prepare(HOST)
        v2_port, v1_port = node.monitor_ports(HOST)
        state = State(fsid=str(uuid.uuid4()), host=HOST, v2_port=v2_port, v1_port=v1_port)
        layout.root.mkdir(parents=True, exist_ok=True)
        state.save(layout)  # from here on, down() knows the directory for a cluster's
        for directory in (layout.run_dir, layout.log_dir, layout.mon_data, self.root / "osd"):
            directory.mkdir(parents=True, exist_ok=True)
        layout.conf.write_text(conf.render(layout, state, self.osd_size))
        bootstrap.make_monitor(layout, state)
        daemons.start(layout, MON, ["ceph-mon", "-f", "-c", str(layout.conf), "-i", MON_ID])
        for port in (state.v2_port, state.v1_port):
            self._wait(functools.partial(node.listening, HOST, port), MON, deadline)
        state.osd_id = bootstrap.make_osd(layout, self.ceph, self.osd_size, deadline)
        state.save(layout)
        self._start_osd(deadline)

    def _start_osd(self, deadline: float) -> None:
        osd_id = self._osd_id()
        name = f"osd.{osd_id}"
        if daemons.pid(self.layout, name) is None:
            argv = ["ceph-osd", "-f", "-c", str(self.conf_path), "-i", str(osd_id)]
            daemons.start(self.layout, name, argv)
        self._wait(lambda: self._osd_is_up(osd_id, daemons.pid(self.layout, name)), name, deadline)

    def _osd_is_up(self, osd_id: int, pid: int | None) -> bool:
        """Whether the monitor has this OSD process up. After a SIGKILL the monitor still has
        the dead one up for a while: an address's nonce (the daemon's pid) tells them apart."""
        done = self.ceph("osd", "dump", "--format", "json", timeout=60, check=False)
        if done.returncode != 0:
            return False
        for osd in json.loads(done.stdout).get("osds", []):
            if osd.get("osd") == osd_id and osd.get("up") == 1:
                addresses = osd.get("public_addrs", {}).get("addrvec", [])
                return any(address.get("nonce") == pid for address in addresses)
        return False

    def _wait(self, ready: Callable[[], bool], daemon: str, deadline: float) -> None:
        """Until ``ready``; CephError if ``daemon`` exits or the deadline passes first."""
        while not ready():
            if daemons.exited(self.layout, daemon):
                raise CephError(f"{daemon} exited")
            if time.monotonic() > deadline:
                raise CephError(f"{daemon} was not ready within {self.timeout:.0f}s")
            time.sleep(0.5)

    # -- reading state ---------------------------------------------------------------------

    def _state(self) -> State:
        state = State.load(self.layout)
        if state is None:
            raise CephError(f"no test cluster in {self.root}")
        return state

    def _osd_id(self) -> int:
        osd_id = self._state().osd_id
        if osd_id is None:
            raise CephError(f"the test cluster in {self.root} has no OSD")
        return osd_id

    def _log_report(self) -> str:
        """The tails of the daemons' output and logs, for the error of a failed ``up``."""
        layout, parts = self.layout, []
        for name in sorted({path.stem for path in layout.log_dir.glob("*.*")}):
            for path in (layout.output_file(name), layout.log_file(name)):
                if path.exists():
                    parts.append(f"--- tail of {path} ---\n{daemons.tail(path)}")
        return "\n".join(parts) or "(no daemon logs)"
