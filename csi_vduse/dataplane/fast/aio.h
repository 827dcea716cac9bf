/* Asynchronous reads and writes on the backing for one queue: io_uring, or a thread pool. */
#ifndef DATAPLANE_FAST_AIO_H
#define DATAPLANE_FAST_AIO_H
#include <stdint.h>
#include <sys/uio.h>

#include "backend.h"

#define DP_AIO_NONE 0    /* requests are served on the queue's thread */
#define DP_AIO_URING 1   /* io_uring, submissions batched per pass over the ring */
#define DP_AIO_THREADS 2 /* a pool of threads doing preadv/pwritev */

struct dp_aio;

/* `depth` bounds the requests in flight. Returns NULL with *err = -errno when the kind is
 * unavailable (io_uring disabled by sysctl or seccomp, no memory). An io_uring only ever
 * accepts readv and writev: its restrictions are set before it is enabled. */
struct dp_aio *dp_aio_open(int kind, unsigned depth, unsigned threads, int *err);
/* Waits for everything still in flight, then frees. */
void dp_aio_close(struct dp_aio *a);
int dp_aio_kind(const struct dp_aio *a);
unsigned dp_aio_depth(const struct dp_aio *a);
/* Whether `fd` can be read without blocking where the data is at hand (RWF_NOWAIT). */
int dp_aio_nowait(int fd);
/* Readable (an eventfd) whenever completions may be waiting. */
int dp_aio_fd(const struct dp_aio *a);
/* Queue a whole transfer; `iov` must stay valid until it completes. `spread` asks for it to
 * run beside the caller (large copies), not inline. 0, or -errno if it cannot be queued. */
int dp_aio_queue(struct dp_aio *a, int fd, int write, struct iovec *iov, uint32_t niov,
                 uint64_t off, uint64_t tag, int spread);
/* Start everything queued since the last call. */
int dp_aio_submit(struct dp_aio *a);
/* Read (or write) all of `iov` at `off` on this thread, consuming `iov`; returns the bytes
 * moved, or -errno. */
int64_t dp_transfer(int fd, int write, struct iovec *iov, uint32_t n, uint64_t off);
/* Up to `max` completions; with `wait`, blocks until there is at least one. */
unsigned dp_aio_reap(struct dp_aio *a, struct dp_io_done *out, unsigned max, int wait);
#endif
