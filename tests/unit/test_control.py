"""The control socket's contract: its messages, and paths longer than a socket address."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from csi_vduse.dataplane import control
from csi_vduse.dataplane.control import (
    ControlError,
    Pause,
    Paused,
    Refused,
    Resume,
    Resumed,
)

SUN_PATH_MAX = 108  # bytes in sockaddr_un.sun_path


def test_a_socket_deeper_than_an_address_allows_is_bound_and_reached(tmp_path: Path) -> None:
    where = tmp_path / ("state-" + "d" * 60) / ("devices-" + "e" * 60)
    where.mkdir(parents=True)
    path = where / "vol-1.ctl"
    assert len(os.fsencode(path)) > SUN_PATH_MAX
    with control.listen(path) as listener, control.connect(path, timeout=30) as driver:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == control.MODE
        connection, _ = listener.accept()
        with connection:
            driver.send(b"ping")
            assert connection.recv(16) == b"ping"


def test_listening_again_replaces_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "vol.ctl"
    control.listen(path).close()  # a dataplane that died left its socket file
    with pytest.raises(ConnectionRefusedError):
        control.connect(path, timeout=30)
    with control.listen(path) as listener, control.connect(path, timeout=30):
        connection, _ = listener.accept()
        connection.close()


def test_connecting_where_nothing_was_made_fails_plainly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        control.connect(tmp_path / "vol.ctl", timeout=30)
    with pytest.raises(FileNotFoundError):
        control.connect(tmp_path / "gone" / "vol.ctl", timeout=30)


def test_requests_travel_as_the_protocol_spells_them() -> None:
    assert json.loads(control.encode(Pause(timeout_ms=250))) == {"pause": {"timeout_ms": 250}}
    assert json.loads(control.encode(Resume())) == {"resume": True}
    for request in (Pause(timeout_ms=1), Pause(timeout_ms=control.MAX_PAUSE_MS), Resume()):
        assert control.parse_request(control.encode(request)) == request


def test_replies_travel_as_the_protocol_spells_them() -> None:
    spelled: dict[control.Reply, dict[str, object]] = {
        Paused(drain_ms=3): {"paused": True, "drain_ms": 3},
        Resumed(paused_ms=40, expired=True): {"resumed": True, "paused_ms": 40, "expired": True},
        Refused(error="busy", to="paused"): {"paused": False, "error": "busy"},
        Refused(error="no", to="resumed"): {"resumed": False, "error": "no"},
        Refused(error="what?"): {"error": "what?"},
    }
    for reply, body in spelled.items():
        assert json.loads(control.encode(reply)) == body
        assert control.parse_reply(control.encode(reply)) == reply


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"pause",
        b"[]",
        b'"resume"',
        b"{}",
        b'{"resume": false}',
        b'{"resume": 1}',
        b'{"resume": true, "pause": {"timeout_ms": 5}}',
        b'{"pause": 5}',
        b'{"pause": {}}',
        b'{"pause": {"timeout_ms": 5, "now": true}}',
        b'{"pause": {"timeout_ms": 0}}',
        b'{"pause": {"timeout_ms": -1}}',
        b'{"pause": {"timeout_ms": 60001}}',
        b'{"pause": {"timeout_ms": 1.5}}',
        b'{"pause": {"timeout_ms": "5"}}',
        b'{"pause": {"timeout_ms": true}}',
        b'{"freeze": true}',
        b'{"resume": true, "pad": "' + b"x" * control.MAX_MESSAGE + b'"}',
    ],
)
def test_anything_but_a_well_formed_request_is_refused(data: bytes) -> None:
    with pytest.raises(ControlError):
        control.parse_request(data)


@pytest.mark.parametrize(
    "data", [b"", b"[]", b"{}", b'{"paused": true}', b'{"resumed": true, "paused_ms": 1}']
)
def test_a_malformed_reply_is_refused(data: bytes) -> None:
    with pytest.raises(ControlError):
        control.parse_reply(data)


def test_a_pause_out_of_range_cannot_even_be_made() -> None:
    with pytest.raises(ControlError, match="from 1 to 60000"):
        Pause(timeout_ms=control.MAX_PAUSE_MS + 1)
