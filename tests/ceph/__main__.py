"""``python -m tests.ceph up|down|env DIR``: a test cluster by hand, for development.

``up`` brings one up in DIR (as root), ``down`` takes it down and removes DIR, ``env``
prints the shell exports that point ``ceph`` and ``rbd`` at it::

    python -m tests.ceph up /tmp/ceph && eval "$(python -m tests.ceph env /tmp/ceph)"
    rbd pool init ... ; ceph osd dump ; python -m tests.ceph down /tmp/ceph
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from tests.ceph.cluster import CephCluster
from tests.ceph.errors import CephError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.ceph", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("action", choices=("up", "down", "env"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    cluster = CephCluster(args.directory)
    try:
        if args.action == "up":
            began = time.monotonic()
            cluster.up()
            print(f"up in {time.monotonic() - began:.1f}s; monitor at "
                  f"{' '.join(cluster.mon_addresses)}; config {cluster.conf_path}")  # fmt: skip
        elif args.action == "down":
            cluster.down()
        elif not cluster.is_up():
            print(f"ceph: no test cluster runs in {args.directory}", file=sys.stderr)
            return 1
        else:
            for key, value in cluster.env().items():
                print(f"export {key}={shlex.quote(value)}")
    except CephError as exc:
        print(f"ceph: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
