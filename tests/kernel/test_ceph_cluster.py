"""The test Ceph cluster: a user reaches its pool with its own key and no other, and the
kernel's two RBD clients, krbd and rbd-nbd, map its images. Those two are the peers the
RBD benchmark compares our dataplane with, so this proves they work here."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from tests.ceph import CephClient
from tests.kernel.conftest import sh

pytestmark = pytest.mark.vm

MIB = 1 << 20


def test_a_user_writes_and_reads_an_image_with_its_own_key(
    ceph_client: CephClient, tmp_path: Path
) -> None:
    data = os.urandom(4 * MIB)
    (tmp_path / "in").write_bytes(data)
    ceph_client.rbd("import", str(tmp_path / "in"), ceph_client.image("own-key"))
    ceph_client.rbd("export", ceph_client.image("own-key"), str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data


def test_a_wrong_key_is_refused(ceph_client: CephClient, tmp_path: Path) -> None:
    wrong, entity = tmp_path / "wrong.keyring", f"client.{ceph_client.user}"
    sh("ceph-authtool", "--create-keyring", str(wrong), "--gen-key", "-n", entity)
    done = ceph_client.rbd("ls", ceph_client.pool, keyring=wrong, check=False)
    assert done.returncode != 0
    assert "Permission denied" in done.stderr


# krbd reaches the monitor through its v1 address (the kernel's default protocol,
# ms_mode=legacy, speaks only v1); rbd-nbd through librbd, like any userspace client.
MAPPERS = {
    "krbd": (CephClient.map_krbd, CephClient.unmap_krbd),
    "rbd-nbd": (CephClient.map_nbd, CephClient.unmap_nbd),
}


@pytest.mark.parametrize("mapper", MAPPERS)
def test_a_kernel_client_maps_an_image(ceph_client: CephClient, mapper: str) -> None:
    map_image, unmap = MAPPERS[mapper]
    ceph_client.rbd("create", "--size", "64M", ceph_client.image(mapper))
    device = map_image(ceph_client, mapper)
    try:
        _round_trip(device)
    finally:
        unmap(ceph_client, device)


def _round_trip(device: Path) -> None:
    """Write a MiB past the device's start and read it back, both with O_DIRECT, so the data
    goes to the cluster and comes from it (page-aligned buffers, as O_DIRECT wants)."""
    written, read = mmap.mmap(-1, MIB), mmap.mmap(-1, MIB)
    written.write(os.urandom(MIB))
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [written], MIB) == MIB
        assert os.preadv(fd, [read], MIB) == MIB
    finally:
        os.close(fd)
    assert read[:] == written[:]
