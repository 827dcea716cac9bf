"""The dataplane's confinement, tried for real in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from csi_vduse.dataplane import control

# What a probe calls to try something under the filter: "ok", or the errno's name.
ATTEMPT = textwrap.dedent(
    """
    import errno
    results = {}

    def attempt(name, fn):
        try:
            fn()
            results[name] = "ok"
        except OSError as exc:
            results[name] = errno.errorcode[exc.errno]
    """
)

PROBE = ATTEMPT + textwrap.dedent(
    """
    import errno, fcntl, json, mmap, os, socket, threading, termios
    from csi_vduse.dataplane.sandbox import confine

    pipe_r, pipe_w = os.pipe()
    assert confine()

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


NETWORK_PROBE = ATTEMPT + textwrap.dedent(
    """
    import ctypes, errno, json, os, socket
    from csi_vduse.dataplane.sandbox import confine

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert confine(network=True)
    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(option, arg):
        if libc.prctl(option, arg, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")

    def talk():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(("127.0.0.1", port))
            client.sendall(b"ping")

    attempt("open", lambda: os.open("/etc/hostname", os.O_RDONLY))
    attempt("fork", os.fork)
    attempt("exec", lambda: os.execv("/bin/true", ["true"]))
    attempt("unix socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    attempt("netlink socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
    attempt("connect and send", talk)
    attempt("ipv6 socket", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close())
    attempt("bind", lambda: socket.socket().bind(("127.0.0.1", 0)))
    attempt("listen", lambda: socket.socket().listen())
    attempt("name a thread", lambda: prctl(15, ctypes.c_char_p(b"msgr-worker")))  # PR_SET_NAME
    attempt("make dumpable", lambda: prctl(4, 1))  # PR_SET_DUMPABLE
    attempt("uname", os.uname)
    print(json.dumps(results))
    """
)


def test_an_rbd_dataplane_may_also_talk_to_ceph_over_ip_and_nothing_more() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NETWORK_PROBE], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "open": "EPERM",
        "fork": "EPERM",
        "exec": "EPERM",
        "unix socket": "EPERM",
        "netlink socket": "EPERM",
        "connect and send": "ok",
        "ipv6 socket": "ok",
        "bind": "EPERM",
        "listen": "EPERM",
        "name a thread": "ok",
        "make dumpable": "EPERM",
        "uname": "ok",
    }


EXIT_WITH_A_THREAD = textwrap.dedent(
    """
    import threading, time
    from csi_vduse.dataplane.sandbox import confine

    def busy():
        while True:
            time.sleep(0.001)  # wakes, and wants the GIL, while the interpreter exits

    threading.Thread(target=busy, daemon=True).start()
    assert confine()
    time.sleep(0.05)
    """
)


def test_a_confined_process_with_a_running_thread_exits_cleanly() -> None:
    """Its daemon thread ends in pthread_exit at interpreter exit, which needs libgcc_s:
    the filter would have glibc abort the process if it were not loaded before."""
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_WITH_A_THREAD],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (done.returncode, "libgcc_s" in done.stderr) == (0, False), done.stderr


SERVE_THE_CONTROL_SOCKET = textwrap.dedent(
    """
    import errno, json, select, socket, sys
    from csi_vduse.dataplane.pause_channel import PauseChannel
    from csi_vduse.dataplane.sandbox import confine

    class Engine:
        calls = []
        def hold(self, timeout=None):
            self.calls.append("hold")
            return True
        def release(self):
            self.calls.append("release")

    channel = PauseChannel.inherit(int(sys.argv[1]), Engine())
    assert confine()
    connected = False
    while not (connected and not channel._connections):  # until the driver hangs up
        if not select.select([channel.fileno()], [], [], 60)[0]:
            sys.exit("nothing came")
        channel.handle()
        connected = connected or bool(channel._connections)
    results = {"calls": Engine.calls}
    for name, call in [
        ("socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)),
        ("getsockname", channel.listener.getsockname),
    ]:
        try:
            call()
            results[name] = "ok"
        except OSError as exc:
            results[name] = errno.errorcode[exc.errno]
    print(json.dumps(results))
    """
)


def test_the_confined_dataplane_accepts_on_its_control_socket_and_nothing_more(
    tmp_path: Path,
) -> None:
    """The filter's one socket call: accept4 on the listening socket the driver passed;
    messages go by read and write. It still cannot make a socket, nor ask one its name."""
    listener = control.listen(tmp_path / "vol.ctl")
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", SERVE_THE_CONTROL_SOCKET, str(listener.fileno())],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            pass_fds=(listener.fileno(),),
        )  # fmt: skip
    finally:
        listener.close()
    with control.connect(tmp_path / "vol.ctl", timeout=60) as driver:
        driver.send(control.encode(control.Pause(timeout_ms=60_000)))
        assert control.parse_reply(driver.recv(control.MAX_MESSAGE)) == control.Paused(drain_ms=0)
        driver.send(control.encode(control.Resume()))
        assert isinstance(control.parse_reply(driver.recv(control.MAX_MESSAGE)), control.Resumed)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert json.loads(out) == {
        "calls": ["hold", "release"],
        "socket": "EPERM",
        "getsockname": "EPERM",
    }
