"""Crash-safe records: whole or absent, also when the disk fills up mid-write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from csi_vduse.durable import write_atomic

# Under RLIMIT_FSIZE the kernel takes only part of a write and then refuses (EFBIG), as a
# nearly full disk does; in a child process, so the limit stays there.
LIMITED_WRITE = """
import resource, signal, sys
from pathlib import Path
from csi_vduse.durable import write_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    write_atomic(Path(sys.argv[1]), "x" * 100)
except OSError as exc:
    print(exc.errno)
"""


def write_limited(path: Path, limit: int) -> str:
    argv = [sys.executable, "-c", LIMITED_WRITE, str(path), str(limit)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_a_write_cut_short_keeps_the_old_record_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.json"
    write_atomic(record, "old")
    assert write_limited(record, 10) == "27"  # EFBIG
    assert record.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
