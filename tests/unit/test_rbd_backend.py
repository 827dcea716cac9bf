"""The RBD backend (``dataplane/rbd/rbd.c``) keeps ``backend.h``'s contract on librbd.

rbd.c is compiled here against the fuzzer's fake librbd (``fast/fuzz/fake_librbd.c``: an
image in a memfd, completions on another thread in lockstep with the caller, failures and
short reads from a script), and its operations are called directly, as blk.c calls them:
what each reports is what a request's status is made of.
"""

from __future__ import annotations

import errno
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cffi import FFI

import csi_vduse

DATAPLANE = Path(csi_vduse.__file__).parent / "dataplane"
FAST = DATAPLANE / "fast"
IMAGE = 1 << 20
IOV_MAX = 1024
SCRIPT = 64  # fake_librbd.h FAKE_RBD_SCRIPT
READ, WRITE, FLUSH = 0, 1, 2  # enum dp_io_op
QUEUED = 1  # DP_IO_QUEUED
EIO_RESULT = 1 << 6  # a script byte: the operation completes with -EIO (fake_librbd.h)
ENOMEM_CALL = 6 << 3  # the aio call fails with -ENOMEM before queueing

CDEF = """
struct iovec { void *iov_base; size_t iov_len; };
enum dp_io_op { DP_IO_READ, DP_IO_WRITE, DP_IO_FLUSH, DP_IO_DISCARD, DP_IO_WRITE_ZEROES };
struct dp_io { enum dp_io_op op; struct iovec *iov; uint32_t niov; uint64_t off, len;
               int unmap; uint64_t tag; };
struct dp_io_done { uint64_t tag; int64_t res; };
struct dp_backend;
struct dp_rbd;
struct fake_rbd_image;
struct fake_rbd_image *fake_rbd_open(int fd, uint64_t size, const uint8_t script[64]);
void fake_rbd_close(struct fake_rbd_image *image);
struct dp_rbd *dp_rbd_backend_new(void *image, unsigned depth);
void dp_rbd_backend_free(struct dp_rbd *b);
struct dp_backend *dp_rbd_backend(struct dp_rbd *b);
int start(struct dp_backend *b, struct dp_io *io, int may_queue, int64_t *res);
unsigned reap(struct dp_backend *b, struct dp_io_done *out, unsigned max, int wait);
unsigned depth(struct dp_backend *b);
"""

SOURCE = """
#include "rbd.h"
#include "fake_librbd.h"
int start(struct dp_backend *b, struct dp_io *io, int may_queue, int64_t *res)
{ return b->ops->start(b, io, may_queue, res); }
unsigned reap(struct dp_backend *b, struct dp_io_done *out, unsigned max, int wait)
{ return b->ops->reap(b, out, max, wait); }
unsigned depth(struct dp_backend *b) { return b->ops->depth(b); }
"""


@pytest.fixture(scope="module")
def rbd(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """rbd.c on the fake librbd, as the fuzzer builds it (fuzz/rbd_fuzz.c)."""
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "_rbd_on_fake",
        SOURCE,
        sources=[str(FAST / "fuzz" / "rbd_fuzz.c"), str(FAST / "fuzz" / "fake_librbd.c")],
        include_dirs=[str(FAST), str(FAST / "fuzz"), str(DATAPLANE / "rbd")],
        extra_compile_args=["-O1", "-Wall", "-Wno-unused-parameter"],
    )
    built = ffi.compile(tmpdir=str(tmp_path_factory.mktemp("rbd-on-fake")))
    spec = importlib.util.spec_from_file_location("_rbd_on_fake", built)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Backend:
    """One queue's RBD backend on a fresh 1 MiB fake image."""

    rbd: ModuleType
    fd: int
    pointer: Any
    keep: list[Any]

    @property
    def ffi(self) -> Any:
        return self.rbd.ffi

    def io(self, op: int, off: int, buffers: list[int], tag: int = 0) -> Any:
        """A dp_io over fresh buffers of these sizes (their memory kept with the backend)."""
        iov = self.ffi.new("struct iovec[]", max(len(buffers), 1))
        for i, size in enumerate(buffers):
            data = self.ffi.new("uint8_t[]", max(size, 1))
            self.keep.append(data)
            iov[i].iov_base, iov[i].iov_len = data, size
        self.keep.append(iov)
        return self.ffi.new(
            "struct dp_io *",
            {"op": op, "iov": iov, "niov": len(buffers), "off": off, "len": sum(buffers),
             "tag": tag},
        )  # fmt: skip

    def start(self, io: Any, *, may_queue: bool) -> tuple[bool, int]:
        """(queued, result when done at once)."""
        res = self.ffi.new("int64_t *")
        queued = self.rbd.lib.start(self.pointer, io, int(may_queue), res)
        return queued == QUEUED, res[0]

    def reap(self, *, wait: bool) -> dict[int, int]:
        out = self.ffi.new("struct dp_io_done[]", 32)
        n = self.rbd.lib.reap(self.pointer, out, 32, int(wait))
        return {out[i].tag: out[i].res for i in range(n)}

    def data(self, io: Any) -> bytes:
        return b"".join(
            bytes(self.ffi.buffer(io.iov[i].iov_base, io.iov[i].iov_len)) for i in range(io.niov)
        )


@contextmanager
def open_backend(rbd: ModuleType, *, depth: int = 8, script: bytes = b"") -> Iterator[Backend]:
    fd = os.memfd_create("fake-image")
    os.ftruncate(fd, IMAGE)
    os.pwrite(fd, bytes(range(256)) * (IMAGE // 256), 0)
    image = rbd.lib.fake_rbd_open(fd, IMAGE, script.ljust(SCRIPT, b"\0"))
    backend = rbd.lib.dp_rbd_backend_new(image, depth)
    assert backend != rbd.ffi.NULL
    try:
        yield Backend(rbd, fd, rbd.lib.dp_rbd_backend(backend), [])
    finally:
        rbd.lib.dp_rbd_backend_free(backend)  # waits for what is still in flight
        rbd.lib.fake_rbd_close(image)  # aborts if anything is left in librbd
        os.close(fd)


@pytest.fixture
def backend(rbd: ModuleType) -> Iterator[Backend]:
    with open_backend(rbd) as opened:
        yield opened


@pytest.mark.parametrize("op", [READ, WRITE])
@pytest.mark.parametrize("may_queue", [False, True])
def test_a_transfer_of_no_data_succeeds_at_once(
    backend: Backend, op: int, *, may_queue: bool
) -> None:
    """librbd refuses an empty iovec array with -EINVAL; a request with a header and a status
    byte only is answered OK, as the file backend answers it."""
    assert backend.start(backend.io(op, 4096, []), may_queue=may_queue) == (False, 0)


@pytest.mark.parametrize("may_queue", [False, True])
def test_a_read_in_more_buffers_than_librbd_takes_is_done_in_slices(
    backend: Backend, *, may_queue: bool
) -> None:
    """seg_max allows 1022 buffers on a queue of 1024, and IOTLB splits add more: a read
    of 1100 is read whole, in IOV_MAX buffers at a time, where librbd would refuse it."""
    io = backend.io(READ, 512, [512] * (IOV_MAX + 76))
    assert backend.start(io, may_queue=may_queue) == (False, io.len)
    assert backend.data(io) == os.pread(backend.fd, io.len, 512)


def test_a_write_in_more_buffers_than_librbd_takes_lands_whole(backend: Backend) -> None:
    io = backend.io(WRITE, 0, [512] * (IOV_MAX + 1))
    for i in range(io.niov):
        backend.ffi.memmove(io.iov[i].iov_base, bytes([i % 251]) * 512, 512)
    assert backend.start(io, may_queue=True) == (False, io.len)
    assert os.pread(backend.fd, io.len, 0) == backend.data(io)


def test_a_read_librbd_clips_at_the_image_end_fails(backend: Backend) -> None:
    """The image shrank under the device: librbd reads what is left and says so; the request
    fails rather than hand the guest its buffer's old bytes as data."""
    across = backend.io(READ, IMAGE - 4096, [8192])
    assert backend.start(across, may_queue=False) == (False, -errno.EIO)
    queued = backend.io(READ, IMAGE - 4096, [8192], tag=3)
    assert backend.start(queued, may_queue=True) == (True, 0)
    assert backend.reap(wait=True) == {3: -errno.EIO}
    whole = backend.io(READ, IMAGE - 4096, [4096], tag=4)
    assert backend.start(whole, may_queue=True) == (True, 0)
    assert backend.reap(wait=True) == {4: 4096}


def test_a_call_refused_before_queueing_gives_its_record_back(rbd: ModuleType) -> None:
    """An aio call that fails at once is answered at once, and the operation record it had
    taken is free again: all `depth` can still be in flight together."""
    refusals = bytes([ENOMEM_CALL]) * 3
    with open_backend(rbd, depth=4, script=refusals) as backend:
        for tag in range(3):
            io = backend.io(FLUSH, 0, [], tag=tag)
            assert backend.start(io, may_queue=True) == (False, -errno.ENOMEM)
        for tag in range(4):
            assert backend.start(backend.io(FLUSH, 0, [], tag=tag), may_queue=True)[0]
        done: dict[int, int] = {}
        while len(done) < 4:
            done |= backend.reap(wait=True)
        assert done == dict.fromkeys(range(4), 0)


def test_a_failed_operation_reports_its_error(rbd: ModuleType) -> None:
    with open_backend(rbd, script=bytes([EIO_RESULT])) as backend:
        io = backend.io(WRITE, 0, [4096], tag=5)
        assert backend.start(io, may_queue=True) == (True, 0)
        assert backend.reap(wait=True) == {5: -errno.EIO}


def test_freeing_waits_for_the_operations_in_flight(rbd: ModuleType) -> None:
    """dp_rbd_backend_free with operations still in librbd waits for their callbacks (the
    fake aborts the process if any is left when its image closes)."""
    with open_backend(rbd, depth=8) as backend:
        for tag in range(8):
            io = backend.io(READ, 4096 * tag, [4096], tag=tag)
            assert backend.start(io, may_queue=True) == (True, 0)
