"""cffi builder for the fast path: compiles the C files here (see queue.h for what each
does) into ``csi_vduse.dataplane.fast._ring``.

The structs are declared partially so the compiler decides its layout; Python
touches only the named fields. cffi releases the GIL around every call, so one
Python thread per queue runs ``dp_run`` in parallel with the others.
"""

import os
import sysconfig
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
LIBURING = f"/usr/lib/{sysconfig.get_config_var('MULTIARCH')}/liburing.a"  # Debian's liburing-dev

CDEF = """
#define DP_IDLE ...
#define DP_NEED_MAP ...
#define DP_BROKEN ...
#define DP_PAUSE ...
#define DP_MAX_MAPS ...
#define DP_MAX_QUEUE_SIZE ...
#define DP_AIO_NONE ...
#define DP_AIO_URING ...
#define DP_AIO_THREADS ...

struct dp_blk {
    uint64_t capacity;
    int readonly, can_flush, can_discard;
    uint32_t max_discard_seg;
    uint8_t serial[20];
};

struct dp_queue {
    uint32_t index, num;
    uint64_t desc_iova, avail_iova, used_iova;
    int kickfd, ctlfd, devfd, irqfd;
    int event_idx, indirect, packed;
    uint16_t last_avail, used_idx;
    uint64_t *stats;
    struct dp_blk blk;
    struct dp_qos *qos;
    volatile int pause_req;
    uint64_t miss_iova;
    uint64_t served, interrupts, errors, replayed;
    uint64_t throttled, throttle_ns;
    char error[160];
    int nmaps;
    uint32_t inflight;
    ...;
};

struct dp_qos {
    uint64_t fake_now_ns;
    ...;
};

struct dp_backend;
struct dp_aio;

struct dp_file {
    int fd, directfd;
    uint32_t dio_align;
    uint32_t async_min, async_write_min;
    uint64_t direct;
    uint64_t *stats;
    ...;
};

int dp_queue_init(struct dp_queue *q);
void dp_queue_free(struct dp_queue *q);
int dp_queue_attach(struct dp_queue *q, struct dp_backend *backend);
void *dp_mmap(int fd, uint64_t length, uint64_t offset, int writable);
int dp_munmap(void *host, uint64_t length);
void dp_mark_bad(struct dp_queue *q, uint64_t iova);
int dp_map_add(struct dp_queue *q, uint64_t start, uint64_t last, void *host, int writable);
int dp_map_invalidate(struct dp_queue *q, uint64_t start, uint64_t last);
int dp_log_attach(struct dp_queue *q, void *block, uint32_t capacity, int resume);
int dp_serve(struct dp_queue *q);
int dp_run(struct dp_queue *q);

enum dp_io_op { DP_IO_READ, DP_IO_WRITE, DP_IO_FLUSH, DP_IO_DISCARD, DP_IO_WRITE_ZEROES };
int dp_qos_init(struct dp_qos *qos, const void *page);
void dp_qos_free(struct dp_qos *qos);
int dp_qos_admit(struct dp_qos *qos, enum dp_io_op op, uint64_t bytes, uint64_t *wait_ns);

void dp_file_init(struct dp_file *f, int fd, int directfd, uint32_t dio_align);
int dp_file_use_aio(struct dp_file *f, struct dp_aio *aio);
struct dp_backend *dp_file_backend(struct dp_file *f);

struct dp_aio *dp_aio_open(int kind, unsigned depth, unsigned threads, int *err);
void dp_aio_close(struct dp_aio *a);
int dp_aio_nowait(int fd);

int dp_sandbox(int network);
"""

# The fast path is every C file here; _ring.c is cffi's output.
SOURCES = sorted(path for path in HERE.glob("[a-z]*.c"))

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "csi_vduse.dataplane.fast._ring",
    '#include "queue.h"\n#include "file.h"\n#include "qos.h"\n#include "sandbox.h"',
    # setuptools wants paths relative to setup.py, which is where builds run from.
    sources=[os.path.relpath(path) for path in SOURCES],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    # Linked in, so neither the image nor the node needs liburing at run time.
    extra_objects=[LIBURING],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
