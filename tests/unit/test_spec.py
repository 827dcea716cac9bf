"""Validation of what users ask for: device names and sizes."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from csi_vduse.cli import build_parser, device_spec
from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.dataplane.qos import UNLIMITED, QosLimits
from csi_vduse.devices.errors import DeviceError
from csi_vduse.devices.spec import DEFAULT_MAX_QUEUES, DeviceSpec, parse_size, validate_name
from csi_vduse.errors import CsiVduseError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("512", 512),
        ("4K", 4 * KiB),
        ("256M", 256 * MiB),
        ("256MiB", 256 * MiB),
        ("256mb", 256 * MiB),
        ("256 M", 256 * MiB),
        ("1G", GiB),
        ("10g", 10 * GiB),
        ("2T", 2 * TiB),
    ],
)
def test_parse_size_uses_powers_of_1024(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1.5G", "-1", "0", "0M", "1000", "513", "1P", "G"])
def test_parse_size_rejects_invalid_sizes_in_the_validate_step(text: str) -> None:
    with pytest.raises(DeviceError) as caught:
        parse_size(text)
    assert caught.value.step == "validate"
    assert caught.value.errno == errno.EINVAL


def test_parse_size_names_the_sector_size_for_unaligned_sizes() -> None:
    with pytest.raises(DeviceError, match="multiple of 512"):
        parse_size("1000")


@pytest.mark.parametrize("name", ["vol-1", "a", "pvc-1234.x_y", "A9", "x" * 64])
def test_validate_name_accepts_and_returns_safe_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-x", ".hidden", "_x", "a/b", "a b", "x" * 65, "ü", "..", "a\0b"],
)
def test_validate_name_rejects_unsafe_names_in_the_validate_step(name: str) -> None:
    with pytest.raises(DeviceError) as caught:
        validate_name(name)
    assert caught.value.step == "validate"
    assert caught.value.errno == errno.EINVAL


def test_validate_name_rejects_a_trailing_newline() -> None:
    with pytest.raises(DeviceError):
        validate_name("vol\n")


def test_device_error_is_a_csi_vduse_error_with_step_in_message() -> None:
    with pytest.raises(CsiVduseError, match=r"^validate: invalid device name 'a/b'"):
        validate_name("a/b")


def test_device_spec_with_bad_name_raises_device_error() -> None:
    with pytest.raises(DeviceError) as caught:
        DeviceSpec(name="a/b", backing=Path("/tmp/x.img"))
    assert caught.value.step == "validate"


def test_device_spec_with_good_name_keeps_its_fields() -> None:
    spec = DeviceSpec(
        name="vol-1", backing=Path("/tmp/x.img"), size=MiB, profile=BlkProfile(readonly=True)
    )
    assert (spec.name, spec.backing, spec.size, spec.profile.readonly) == (
        "vol-1",
        Path("/tmp/x.img"),
        MiB,
        True,
    )


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"num_queues": 0}, "--num-queues 0"),
        ({"num_queues": 17}, "--num-queues 17"),
        ({"queue_size": 100}, "--queue-size 100"),
        ({"queue_size": 2048}, "--queue-size 2048"),
        ({"block_size": 1024}, "--block-size 1024"),
        ({"block_size": 4096, "size": 4096 + 512}, "not a multiple of the 4096-byte block"),
        ({"bounce_size": 512 << 10}, "--bounce-size 524288"),
        ({"bounce_size": (2 << 20) + 512}, "whole 4 KiB pages"),
        ({"bounce_size": 2 << 30}, "to 1024 MiB"),
        ({"max_iops": -5}, "iops must be from 0"),
        ({"burst_ms": 3_600_001}, "burst_ms must be from 0 to 3600000"),
    ],
)
def test_device_spec_rejects_bad_queue_and_block_settings(
    fields: dict[str, int], complaint: str
) -> None:
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in fields.items()]
    with pytest.raises(DeviceError) as caught:
        created(*flags)
    assert caught.value.errno == errno.EINVAL and complaint in str(caught.value)


def created(*flags: str) -> DeviceSpec:
    """The spec ``csi-vduse device create vol --backing /x FLAGS`` asks for."""
    return device_spec(
        build_parser().parse_args(["device", "create", "vol", "--backing=/x", *flags])
    )


def test_default_queue_count_follows_the_cpus_up_to_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert DeviceSpec(name="vol", backing=Path("/x")).profile.queues == DEFAULT_MAX_QUEUES
    assert created().profile.queues == DEFAULT_MAX_QUEUES
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert DeviceSpec(name="vol", backing=Path("/x")).profile.queues == 1
    assert created().profile.queues == 1
    assert created("--num-queues=3").profile.queues == 3


def test_device_create_takes_the_limits_its_flags_ask_for() -> None:
    assert created().limits == UNLIMITED
    spec = created("--max-iops=500", "--max-read-bps=50M", "--max-write-bps=1G", "--burst-ms=0")
    assert spec.limits == QosLimits(iops=500, read_bps=50 << 20, write_bps=1 << 30, burst_ms=0)
