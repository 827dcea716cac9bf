"""``CephClient``: a pool, the cephx user a test reaches it as, and its kernel mappings."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.ceph import commands, node
from tests.ceph.cluster import COMMAND_SECONDS, CephCluster

MAP_SECONDS = 180.0  # a map that cannot reach the cluster would wait forever


@dataclass(frozen=True)
class CephClient:
    """``client.<user>``, allowed RBD images in ``pool`` only (``CephCluster.create_client``)."""

    cluster: CephCluster
    pool: str
    user: str

    @property
    def keyring(self) -> Path:
        return self.cluster.keyring(self.user)

    def image(self, name: str) -> str:
        """The image spec ``pool/name``."""
        return f"{self.pool}/{name}"

    def rbd(
        self, *args: str, keyring: Path | None = None, timeout: float = COMMAND_SECONDS,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """``rbd ARGS`` as this user (with its own keyring, or ``keyring``)."""
        return self.cluster.rbd(
            *args, user=self.user, keyring=keyring, timeout=timeout, check=check
        )

    def map_krbd(self, name: str) -> Path:
        """Map image ``name`` through the kernel's RBD client (krbd); its ``/dev/rbdN``.

        ``noudev``: by default ``rbd`` waits for udev to announce the device, and where no
        udev runs (the test VM) it waits forever, the device long there.
        """
        node.require_module("rbd")
        done = self.rbd("device", "map", "--options", "noudev", self.image(name),
                        timeout=MAP_SECONDS)  # fmt: skip
        return Path(done.stdout.strip())

    def unmap_krbd(self, device: Path) -> None:
        self.rbd("device", "unmap", "--options", "noudev", str(device), timeout=MAP_SECONDS)

    def map_nbd(self, name: str, *options: str) -> Path:
        """Map image ``name`` through an ``rbd-nbd`` daemon; its ``/dev/nbdN``. ``options``
        go before ``map``: Ceph settings (``--rbd_cache=false``) or rbd-nbd's own.

        The daemon's command line names the cluster's config, so ``down`` stops it."""
        node.require_module("nbd")
        argv = [*self.cluster.client_args("rbd-nbd", self.user), *options, "map", self.image(name)]
        return Path(commands.run(argv, timeout=MAP_SECONDS).stdout.strip())

    def unmap_nbd(self, device: Path) -> None:
        commands.run(["rbd-nbd", "unmap", str(device)], timeout=MAP_SECONDS)
