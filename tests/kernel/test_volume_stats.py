"""A real device's dataplane counts the guest's I/O in its stats file."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from csi_vduse.dataplane import stats
from csi_vduse.metrics import VolumeStatsCollector
from tests.kernel.conftest import Cli, sh

pytestmark = pytest.mark.vm

MiB = 1 << 20


def test_dd_io_is_counted_and_the_stats_file_goes_with_the_device(cli: Cli, tmp_path: Path) -> None:
    dev = cli.create("stats0", tmp_path / "vol.img", "--size", "16M")
    path = cli.state_dir / "devices" / "stats0.stats"
    before = stats.read(path)  # the kernel's partition scan has read already

    sh("dd", "if=/dev/urandom", f"of={dev}", "bs=64k", "count=32", "oflag=direct", "conv=fsync")
    sh("dd", f"if={dev}", "of=/dev/null", "bs=64k", "count=16", "iflag=direct")

    after = stats.read(path)
    assert after.bytes_written - before.bytes_written == 2 * MiB
    assert after.bytes_read - before.bytes_read >= MiB
    assert after.requests["write"] - before.requests["write"] >= 32
    assert after.requests["read"] - before.requests["read"] >= 16
    assert after.requests["flush"] > before.requests["flush"]
    assert (after.ioerr, after.unsupp) == (0, 0)
    assert sum(after.buckets) - sum(before.buckets) >= 32 + 16
    assert after.latency_ns > 0

    registry = CollectorRegistry()
    registry.register(VolumeStatsCollector(cli.state_dir / "devices"))
    written = registry.get_sample_value(
        "csi_vduse_volume_bytes_total", {"volume": "stats0", "direction": "write"}
    )
    assert written == after.bytes_written

    cli.delete("stats0")
    assert not path.exists()
