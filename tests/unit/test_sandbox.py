"""The dataplane's confinement, tried for real in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import errno, fcntl, json, mmap, os, socket, threading, termios
    from dataplane.sandbox import confine

    pipe_r, pipe_w = os.pipe()
    assert confine()
    results = {}

    def attempt(name, fn):
        try:
            fn()
            results[name] = "ok"
        except OSError as exc:
            results[name] = errno.errorcode[exc.errno]

    attempt("open", lambda: os.open("/etc/hostname", os.O_RDONLY))
    attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    attempt("fork", os.fork)
    attempt("exec", lambda: os.execv("/bin/true", ["true"]))
    attempt("ioctl", lambda: fcntl.ioctl(pipe_r, termios.FIONREAD, b"0000"))
    attempt("eventfd", lambda: os.eventfd_write(os.eventfd(0), 1))
    attempt("pipe io", lambda: os.write(pipe_w, b"x") and os.read(pipe_r, 1))
    attempt("mmap", lambda: mmap.mmap(-1, 1 << 20).close())
    box = []
    thread = threading.Thread(target=lambda: box.append(os.getpid()))
    attempt("thread", lambda: (thread.start(), thread.join()))
    results["thread ran"] = "ok" if box else "no"
    print(json.dumps(results))
    """
)


def test_the_confined_dataplane_can_serve_but_not_open_exec_fork_or_connect() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results == {
        "open": "EPERM",
        "socket": "EPERM",
        "fork": "EPERM",
        "exec": "EPERM",
        "ioctl": "EPERM",
        "eventfd": "ok",
        "pipe io": "ok",
        "mmap": "ok",
        "thread": "ok",
        "thread ran": "ok",
    }
