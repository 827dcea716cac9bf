"""An RBD image as a device's backing, without a cluster: the target a dataplane is handed
(its memfd, its checks, the key kept out of every message) and what the driver records."""

from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path

import pytest

from csi_vduse.ceph.target import CephAccess, RbdTarget, TargetError
from csi_vduse.dataplane.interface import DataplaneArgs
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.rbd_source import RbdSource
from csi_vduse.devices.spec import DeviceSpec
from csi_vduse.devices.state import DeviceRecord, StateStore

# A cephx secret as Ceph encodes one: type 1 (AES), a creation time, 16 bytes of key.
KEY = base64.b64encode(b"\x01\x00" + b"\x11" * 8 + (16).to_bytes(2, "little") + b"k" * 16).decode()
CONF = "[global]\nmon_host = v2:127.0.0.1:3300\n"


def test_a_target_travels_in_a_sealed_memfd_and_reads_back_equal() -> None:
    target = RbdTarget(pool="rbd", image="vol", key=KEY, conf=CONF, dead_owner="1.2.3.4:0/9")
    fd = target.to_fd()
    try:
        assert RbdTarget.read_fd(fd) == target
        with pytest.raises(PermissionError):  # sealed: nobody changes what was handed over
            os.pwrite(fd, b"x", 0)
    finally:
        os.close(fd)


def test_the_key_and_the_conf_stay_out_of_a_targets_repr() -> None:
    text = repr(RbdTarget(pool="rbd", image="vol", key=KEY, conf=CONF))
    assert KEY not in text and "mon_host" in text and CONF not in text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pool": "a/b"}, "RBD pool 'a/b' is not a plain name"),
        ({"image": ""}, "RBD image '' is not a plain name"),
        ({"image": "vol@snap"}, "is not a plain name"),
        ({"user": "client.admin"}, "must be an id without client."),
        ({"connect_timeout": 0}, "connect timeout 0 s is not 1-3600"),
        ({"pool": 7}, "field pool is not a string"),
        ({"user": 7}, "field user is not a string"),
        ({"connect_timeout": "30"}, "field connect_timeout is not an integer"),
    ],
)
def test_a_target_refuses_what_librbd_would_misread(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(TargetError, match=message):
        RbdTarget(**{"pool": "rbd", "image": "vol", **fields})  # type: ignore[arg-type]


def test_access_to_a_cluster_refuses_what_librados_would_misread() -> None:
    assert RbdTarget(pool="rbd", image="vol", key=KEY, user="u").access == CephAccess(
        user="u", key=KEY
    )
    with pytest.raises(TargetError, match="operation timeout -1 s is not 0-3600"):
        CephAccess(op_timeout=-1)
    with pytest.raises(TargetError, match=r"must be an id without client\."):
        CephAccess(user="")
    assert KEY not in repr(CephAccess(key=KEY, conf=CONF))


def test_a_malformed_key_is_refused_without_being_quoted() -> None:
    """librados prints a key it cannot decode; so it never gets one."""
    almost = KEY[:-4] + "AAA="
    for bad in ("not base64!", almost, base64.b64encode(b"short").decode()):
        with pytest.raises(TargetError) as caught:
            RbdTarget(pool="rbd", image="vol", key=bad)
        assert bad not in str(caught.value)


def test_an_unreadable_target_fd_is_a_target_error() -> None:
    fd = os.memfd_create("junk")
    try:
        for junk in (b"{", b"[]", json.dumps({"pool": "p", "image": "i", "extra": 1}).encode()):
            os.ftruncate(fd, 0)
            os.pwrite(fd, junk, 0)
            with pytest.raises(TargetError):
                RbdTarget.read_fd(fd)
    finally:
        os.close(fd)


def test_the_dataplane_reads_back_an_rbd_backing_from_its_argv() -> None:
    args = DataplaneArgs(name="vol", backing=Path("rbd:rbd/vol"), device_fd=5, rbd_fd=6)
    assert "--backing-fd" not in args.argv()
    assert DataplaneArgs.parse(args.argv()) == args
    with pytest.raises(ValueError, match="one backing fd"):
        DataplaneArgs(name="vol", backing=Path("x"), device_fd=5, backing_fd=4, rbd_fd=6).argv()


@pytest.mark.parametrize(
    ("spec", "where"),
    [("rbd/vol", ("rbd", "", "vol")), ("rbd/team-a/vol", ("rbd", "team-a", "vol"))],
)
def test_an_image_is_named_as_rbd_names_it(spec: str, where: tuple[str, str, str]) -> None:
    source = RbdSource.parse(spec)
    assert (source.pool, source.namespace, source.image) == where
    assert source.name == f"rbd:{spec}"


@pytest.mark.parametrize("spec", ["vol", "rbd/", "/vol", "a/b/c/d", "rbd/vol@snap"])
def test_an_image_name_rbd_would_not_take_is_invalid(spec: str) -> None:
    with pytest.raises(DeviceError) as caught:
        RbdSource.parse(spec)
    assert caught.value.errno == errno.EINVAL


def test_the_target_reads_the_conf_and_a_bare_key_file_at_each_start(tmp_path: Path) -> None:
    conf, keyfile = tmp_path / "ceph.conf", tmp_path / "key"
    conf.write_text(CONF)
    keyfile.write_text(KEY + "\n")
    source = RbdSource.parse("rbd/vol", conf=str(conf), keyfile=str(keyfile), user="csi")
    target = source.target(dead_owner="127.0.0.1:0/5")
    assert (target.conf, target.key, target.user, target.dead_owner) == (
        CONF, KEY, "csi", "127.0.0.1:0/5",
    )  # fmt: skip
    keyfile.write_text(f'[client.csi]\n\tkey = {KEY}\n\tcaps mon = "profile rbd"\n')
    assert source.target().key == KEY  # a keyring works as well


def test_a_key_file_that_holds_no_one_key_is_refused_without_quoting_it(tmp_path: Path) -> None:
    keyfile = tmp_path / "keyring"
    keyfile.write_text(f"[client.a]\nkey = {KEY}\n[client.b]\nkey = {KEY}\n")
    with pytest.raises(DeviceError) as caught:
        RbdSource.parse("rbd/vol", mon_host="127.0.0.1", keyfile=str(keyfile)).target()
    assert KEY not in str(caught.value) and "neither a key alone" in str(caught.value)


def test_a_missing_conf_or_key_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DeviceError, match=f"{missing}: No such file"):
        RbdSource.parse("rbd/vol", conf=str(missing)).target()
    with pytest.raises(DeviceError, match=f"{missing}: No such file"):
        RbdSource.parse("rbd/vol", mon_host="127.0.0.1", keyfile=str(missing)).target()


def test_without_a_conf_or_monitors_the_default_conf_is_read() -> None:
    source = RbdSource.parse("rbd/vol")
    if Path("/etc/ceph/ceph.conf").exists():
        pytest.skip("this machine has a ceph.conf")
    with pytest.raises(DeviceError, match=r"/etc/ceph/ceph\.conf"):
        source.target()


def test_a_spec_has_a_file_or_an_image_never_both() -> None:
    source = RbdSource.parse("rbd/vol")
    assert DeviceSpec(name="vol", rbd=source).backing_name == "rbd:rbd/vol"
    for backing, rbd in ((None, None), (Path("/x"), source)):
        with pytest.raises(DeviceError, match="a backing file or an RBD image"):
            DeviceSpec(name="vol", backing=backing, rbd=rbd)


def test_a_record_keeps_where_the_image_is_and_never_its_key(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY)
    source = RbdSource.parse("rbd/vol", keyfile=str(keyfile), mon_host="127.0.0.1")
    store = StateStore(tmp_path / "state")
    profile = DeviceSpec(name="v", rbd=source).profile
    record = DeviceRecord(
        name="vol", backing=source.name, size=1 << 30, profile=profile, rbd=source.to_json(),
        rbd_client="127.0.0.1:0/77",
    )  # fmt: skip
    store.save(record)
    written = (tmp_path / "state" / "devices" / "vol.json").read_text()
    assert KEY not in written and str(keyfile) in written
    assert store.load("vol") == record
    assert RbdSource.from_json(json.loads(written)["rbd"]) == source


def test_a_file_devices_record_has_no_rbd_fields(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(DeviceRecord(name="vol", backing="/pool/vol.img", size=1 << 20,
                            profile=DeviceSpec(name="v", backing=Path("/x")).profile))  # fmt: skip
    written = json.loads((tmp_path / "devices" / "vol.json").read_text())
    assert "rbd" not in written and "rbd_client" not in written


def test_a_record_from_a_later_release_still_reads(tmp_path: Path) -> None:
    """A driver rolled back restarts the dataplanes of devices its successor recorded."""
    source = RbdSource(pool="rbd", image="vol", mon_host="10.0.0.1:6789")
    later = {**source.to_json(), "a_later_field": 7}
    assert RbdSource.from_json(later) == source
