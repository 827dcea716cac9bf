"""The device lifecycle against the real VDUSE, vDPA and virtio_blk kernel modules."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from csi_vduse.dataplane.blk.profile import BlkProfile
from csi_vduse.vduse.control import DeviceConfig, VduseControl
from csi_vduse.virtio.spec import VIRTIO_ID_BLOCK, VIRTIO_VENDOR_ID
from tests.kernel.conftest import Cli, dataplane_pid, leftovers, sh

pytestmark = pytest.mark.vm

MiB = 1 << 20


def fio(*args: str) -> None:
    sh("fio", "--output-format=terse", "--ioengine=libaio", "--direct=1", *args)


def test_256mib_written_and_read_back_verified_then_nothing_left(cli: Cli, tmp_path: Path) -> None:
    backing = tmp_path / "vol.img"
    dev = cli.create("fio0", backing, "--size", "256M")
    assert dev.is_block_device()
    assert int(Path(f"/sys/block/{dev.name}/size").read_text()) * 512 == 256 * MiB
    job = ["--name=fill", f"--filename={dev}", "--rw=write", "--bs=64k", "--iodepth=16",
           "--size=256M", "--verify=crc32c", "--verify_fatal=1"]  # fmt: skip
    fio(*job, "--do_verify=0")
    fio(*job, "--verify_only=1")

    cli.delete("fio0")

    assert leftovers("fio0") == []
    assert cli.list() == []
    # The data went to the right offsets of the backing file, not just through the device.
    sh("fio", "--name=fill", f"--filename={backing}", "--rw=write", "--bs=64k", "--size=256M",
       "--verify=crc32c", "--verify_fatal=1", "--verify_only=1")  # fmt: skip


def test_random_writes_at_depth_32_verify(cli: Cli, tmp_path: Path) -> None:
    dev = cli.create("rand0", tmp_path / "rand.img", "--size", "64M")
    fio("--name=rand", f"--filename={dev}", "--rw=randwrite", "--bs=4k", "--iodepth=32",
        "--size=64M", "--verify=crc32c", "--verify_fatal=1")  # fmt: skip
    cli.delete("rand0")
    assert leftovers("rand0") == []


def test_two_devices_at_once_keep_their_data_apart(cli: Cli, tmp_path: Path) -> None:
    patterns = {name: os.urandom(4 * MiB) for name in ("twin-a", "twin-b")}
    devices = {
        name: cli.create(name, tmp_path / f"{name}.img", "--size", "16M") for name in patterns
    }
    assert len(set(devices.values())) == 2
    for name, data in patterns.items():
        with open(devices[name], "r+b", buffering=0) as disk:
            disk.seek(MiB)
            disk.write(data)
            os.fsync(disk.fileno())
    listed = {d["name"]: d for d in cli.list()}
    assert {n: listed[n]["state"] for n in patterns} == {n: "running" for n in patterns}
    for name, data in patterns.items():
        sh("sh", "-c", "echo 3 > /proc/sys/vm/drop_caches")
        with open(devices[name], "rb") as disk:
            disk.seek(MiB)
            assert disk.read(len(data)) == data
        assert Path(f"/sys/block/{devices[name].name}/serial").read_text() == name
    for name in patterns:
        cli.delete(name)
    for name, data in patterns.items():
        assert leftovers(name) == []
        with open(tmp_path / f"{name}.img", "rb") as image:
            image.seek(MiB)
            assert image.read(len(data)) == data


def test_taken_name_fails_at_create_and_leaves_nothing(cli: Cli, tmp_path: Path) -> None:
    profile = BlkProfile()
    foreign = DeviceConfig(
        name="taken0", device_id=VIRTIO_ID_BLOCK, vendor_id=VIRTIO_VENDOR_ID,
        features=profile.features, vq_num=1, vq_align=4096,
        config=profile.config(16 * MiB).pack(),
    )  # fmt: skip
    with VduseControl() as control:
        control.create_device(foreign)
    try:
        backing = tmp_path / "new.img"
        done = cli.run("device", "create", "taken0", "--backing", str(backing), "--size", "16M",
                       check=False)  # fmt: skip
        assert done.returncode == 1
        assert "create VDUSE device" in done.stderr
        assert "already exists" in done.stderr
        assert not backing.exists(), "the backing file this create made must be removed"
        assert cli.list() == []
        assert Path("/sys/class/vduse/taken0").exists(), "someone else's device is left alone"
    finally:
        with VduseControl() as control:
            control.destroy_device("taken0")


def reload_module(name: str, attempts: int = 3) -> None:
    """Load ``name`` again, trying more than once: a modprobe that dies (it did, in a
    busy VM) must fail this test, not leave the module out for every later one."""
    for _ in range(attempts):
        if sh("modprobe", name, check=False).returncode == 0:
            return
        time.sleep(1)
    sh("modprobe", name)  # fails this test, with modprobe's output


def test_failure_after_attach_unwinds_every_step(cli: Cli, tmp_path: Path) -> None:
    """With virtio_blk unloaded no disk appears: attach, dataplane and device are all undone."""
    sh("rmmod", "virtio_blk")
    try:
        backing = tmp_path / "late.img"
        done = cli.run("device", "create", "late0", "--backing", str(backing), "--size", "16M",
                       check=False, CSI_VDUSE_BLOCK_DEVICE_TIMEOUT="2")  # fmt: skip
    finally:
        reload_module("virtio_blk")
    assert done.returncode == 1
    assert "wait for block device" in done.stderr
    assert leftovers("late0") == []
    assert not backing.exists()
    assert cli.list() == []


def test_delete_is_idempotent(cli: Cli, tmp_path: Path) -> None:
    cli.delete("never-made")
    cli.create("idem0", tmp_path / "idem.img", "--size", "8M")
    cli.delete("idem0")
    cli.delete("idem0")
    assert leftovers("idem0") == []


def test_create_again_with_same_settings_returns_the_same_device(cli: Cli, tmp_path: Path) -> None:
    backing = tmp_path / "same.img"
    first = cli.create("same0", backing, "--size", "8M")
    assert cli.create("same0", backing, "--size", "8M") == first
    other = cli.run("device", "create", "same0", "--backing", str(backing), "--size", "16M",
                    check=False)  # fmt: skip
    assert other.returncode == 1
    assert "other settings" in other.stderr


def test_delete_after_the_dataplane_was_killed_is_prompt_and_complete(
    cli: Cli, tmp_path: Path
) -> None:
    cli.create("crash0", tmp_path / "crash.img", "--size", "8M")
    # A long message timeout makes "waited it out" unmistakable even on a slow, loaded VM.
    Path("/sys/class/vduse/crash0/msg_timeout").write_text("180")
    os.kill(dataplane_pid("crash0"), signal.SIGKILL)
    time.sleep(0.2)
    assert {d["name"]: d["state"] for d in cli.list()} == {"crash0": "dataplane-dead"}
    started = time.monotonic()
    cli.delete("crash0")
    assert time.monotonic() - started < 90, "teardown must not wait out the message timeout"
    assert leftovers("crash0") == []


def test_readonly_device_refuses_writes(cli: Cli, tmp_path: Path) -> None:
    backing = tmp_path / "ro.img"
    backing.write_bytes(b"\xab" * MiB)
    dev = cli.create("ro0", backing, "--readonly")
    assert sh("blockdev", "--getro", str(dev)).stdout.strip() == "1"
    with open(dev, "rb") as disk:
        assert disk.read(4096) == b"\xab" * 4096
    assert sh("dd", "if=/dev/zero", f"of={dev}", "bs=4k", "count=1", "oflag=direct",
              check=False).returncode != 0  # fmt: skip
    cli.delete("ro0")
    assert backing.read_bytes() == b"\xab" * MiB


def test_ext4_filesystem_on_the_device(cli: Cli, tmp_path: Path) -> None:
    dev = cli.create("fs0", tmp_path / "fs.img", "--size", "64M")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh("mkfs.ext4", "-q", str(dev))
    sh("mount", str(dev), str(mnt))
    try:
        (mnt / "hello.txt").write_text("hello from a VDUSE disk\n")
    finally:
        sh("umount", str(mnt))
    sh("fsck.ext4", "-n", str(dev))
    sh("mount", "-o", "ro", str(dev), str(mnt))
    try:
        assert (mnt / "hello.txt").read_text() == "hello from a VDUSE disk\n"
    finally:
        sh("umount", str(mnt))
    cli.delete("fs0")
    assert leftovers("fs0") == []


def test_the_dataplane_runs_unprivileged_confined_and_holds_only_its_files(
    cli: Cli, tmp_path: Path
) -> None:
    backing = tmp_path / "priv.img"
    dev = cli.create("priv0", backing, "--size", "16M")
    fio(f"--filename={dev}", "--name=io", "--rw=randwrite", "--bs=4k", "--size=4M",
        "--verify=crc32c", "--verify_fatal=1")  # fmt: skip
    pid = dataplane_pid("priv0")
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Gid"].split() == ["65534"] * 4
    assert status["Groups"].strip() == ""
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, caps
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # filter mode
    limits = Path(f"/proc/{pid}/limits").read_text()
    [data] = [line.split()[3:5] for line in limits.splitlines() if line.startswith("Max data size")]
    assert data == [str(256 << 20)] * 2
    targets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    files = {t for t in targets if t.startswith("/")}
    own = [
        str(cli.state_dir / "devices" / f"priv0.{kind}")
        for kind in ("log", "stats", "inflight", "qos")
    ]
    assert files <= {"/dev/null", "/dev/vduse/priv0", str(backing), *own}, files
    kinds = [t.split(":", 1)[0] for t in targets - files]
    assert set(kinds) <= {"anon_inode", "pipe", "socket"}, targets
    assert kinds.count("socket") <= 1, targets  # the control socket, listening
    cli.delete("priv0")
    assert leftovers("priv0") == []
