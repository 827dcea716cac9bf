"""The real driver as tests see it: ``csi-vduse serve`` on a unix socket, with gRPC stubs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from csi_vduse.csi.proto import pb, stub

START_TIMEOUT = 90.0

__all__ = ["Driver", "block_capability", "mount_capability", "pb"]


def mount_capability(
    fs_type: str = "", mode: int = 1, flags: tuple[str, ...] = ()
) -> pb.VolumeCapability:
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
    )


def block_capability(mode: int = 1) -> pb.VolumeCapability:
    return pb.VolumeCapability(
        block=pb.VolumeCapability.BlockVolume(),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode),  # type: ignore[arg-type]
    )


@dataclass
class Driver:
    """One ``csi-vduse serve`` process; ``start`` again after ``stop`` restarts it."""

    root: Path
    node_id: str = "test-node"
    controller: bool = True
    node: bool = True
    process: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None
    extra: list[str] = field(default_factory=list)
    pool: Path | None = None  # the pool directory when not <root>/pool (e.g. its own filesystem)

    @property
    def socket(self) -> Path:
        return self.root / "csi.sock"

    @property
    def pool_dir(self) -> Path:
        return self.pool or self.root / "pool"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def log_path(self) -> Path:
        return self.root / "driver.log"

    def start(self) -> Driver:
        argv = [
            sys.executable, "-m", "csi_vduse", "serve",
            "--endpoint", f"unix://{self.socket}",
            "--node-id", self.node_id,
            "--state-dir", str(self.state_dir),
            "--log-level", "debug",
            *(["--pool-dir", str(self.pool_dir)] if self.node else []),
            *(["--controller"] if self.controller else []),
            *self.extra,
        ]  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        stale = self._socket_inode()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log)
        # Wait for the socket before dialling: a channel that fails to connect backs off
        # for seconds, far longer than a slow start (the test VM emulates its CPU).
        deadline = time.monotonic() + START_TIMEOUT
        while not self._fresh_socket(stale) and self.process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if self.process.poll() is not None:
            self.stop()
            raise AssertionError(f"the driver exited at start:\n{self.log()}")
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        try:
            grpc.channel_ready_future(self.channel).result(
                timeout=max(1.0, deadline - time.monotonic())
            )
        except grpc.FutureTimeoutError:
            self.stop()
            raise AssertionError(f"the driver did not start:\n{self.log()}") from None
        return self

    def _socket_inode(self) -> tuple[int, int] | None:
        try:
            info = self.socket.stat()
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_ctime_ns  # an inode number alone may be reused

    def _fresh_socket(self, stale: tuple[int, int] | None) -> bool:
        """The server's own socket is there (not one a killed predecessor left)."""
        inode = self._socket_inode()
        return inode is not None and inode != stale

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def _require_channel(self) -> grpc.Channel:
        assert self.channel is not None, "the driver is not running"
        return self.channel

    @property
    def identity(self) -> Any:
        return stub(self._require_channel(), "Identity")

    @property
    def controller_stub(self) -> Any:
        return stub(self._require_channel(), "Controller")

    @property
    def node_stub(self) -> Any:
        return stub(self._require_channel(), "Node")
