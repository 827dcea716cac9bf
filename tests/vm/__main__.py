"""``python -m tests.vm run [--timeout S] -- COMMAND...``: run a command in the test VM.

Exits with the command's status; 124 when the guest timed out or died first.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tests.vm.machine import GUEST_PATH, TestVm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="boot the VM and run COMMAND in the current directory")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds before the VM is killed")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="vm: %(message)s")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a COMMAND")
    env = {key: os.environ[key] for key in ("VIRTUAL_ENV", "PYTHONPATH") if key in os.environ}
    if "VIRTUAL_ENV" in env:
        env["PATH"] = f"{env['VIRTUAL_ENV']}/bin:{GUEST_PATH}"
    result = TestVm().run(
        command,
        cwd=Path.cwd(),
        env=env,
        timeout=args.timeout,
        echo=lambda line: print(line, flush=True),
    )
    print(f"vm: exit status {result.exit_status}, {result.seconds:.1f}s", file=sys.stderr)
    if result.exit_status is None:
        reason = "timed out" if result.timed_out else "stopped before the command finished"
        print(f"vm: the guest {reason}", file=sys.stderr)
        return 124
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
