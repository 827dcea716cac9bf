"""A dataplane whose starter dies before reading its readiness report serves on."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

import csi_vduse.dataplane.__main__ as entry
from csi_vduse.dataplane.interface import PROTOCOL_VERSION, report_ready


def closed_pipe() -> int:
    """The write end of a pipe nobody reads any more, like a dead driver's."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def test_a_ready_report_nobody_reads_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fd = closed_pipe()
    with caplog.at_level(logging.WARNING):
        report_ready(fd)
    assert "started this dataplane is gone" in caplog.text
    with pytest.raises(OSError):
        os.fstat(fd)  # closed all the same


class FakeNode:
    def __init__(self, name: str, nonblocking: bool, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        pass


class FakeSession:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def resume(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FakeServer:
    served = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.on_hangup: object = None

    def install_signal_handlers(self) -> None:
        pass

    def run(self) -> None:
        FakeServer.served = True

    def close(self) -> None:
        pass


def test_the_dataplane_serves_although_its_starter_died_before_readiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(1 << 20))
    for name, fake in (("DeviceNode", FakeNode), ("VduseSession", FakeSession),
                       ("Server", FakeServer)):  # fmt: skip
        monkeypatch.setattr(entry, name, fake)
    monkeypatch.setattr(entry, "limit_memory", lambda _limit: None)
    monkeypatch.setattr(entry, "confine", lambda **_: False)
    backing_fd = os.open(backing, os.O_RDWR)
    device_fd = os.open(os.devnull, os.O_RDWR)
    try:
        status = entry.main([
            "--protocol", str(PROTOCOL_VERSION), "--name", "vol-orphaned",
            "--backing", str(backing), "--backing-fd", str(backing_fd),
            "--device-fd", str(device_fd),
            "--ready-fd", str(closed_pipe()),
        ])  # fmt: skip
    finally:
        os.close(device_fd)
    assert status == 0
    assert FakeServer.served
