/*
 * The I/O backend interface: where a virtio-blk device's data lives. blk.c turns each
 * request into dp_io operations and hands them to its queue's backend; ring walking and
 * request parsing know nothing of files, io_uring or anything a backend does.
 *
 * Contract:
 *  - start() does an operation on the caller's thread, or, when the caller allows it and
 *    the backend chooses to, queues it and reports it later from reap() under io->tag.
 *    Reads and writes move all io->len bytes or fail: short transfers are the backend's
 *    to continue.
 *  - A queued operation's iovecs stay valid until it is reaped; the caller keeps them.
 *  - Any operation may be offered for queueing. A DISCARD or WRITE_ZEROES request of several
 *    ranges arrives as one operation per range, each with may_queue 0.
 *  - submit() starts everything queued since the last call (it may batch until then).
 *  - fd() is readable whenever reap() may have something; -1 if it never has.
 *  - One backend object serves one queue, from that queue's thread only.
 * A second backend implements these five functions and is attached with dp_queue_attach;
 * file.c is the first.
 */
#ifndef DATAPLANE_FAST_BACKEND_H
#define DATAPLANE_FAST_BACKEND_H
#include <stdint.h>
#include <sys/uio.h>

enum dp_io_op {
    DP_IO_READ,
    DP_IO_WRITE,
    DP_IO_FLUSH,
    DP_IO_DISCARD,      /* the range may read back as anything; best effort */
    DP_IO_WRITE_ZEROES, /* the range reads back as zeroes */
};

struct dp_io {
    enum dp_io_op op;
    struct iovec *iov; /* READ, WRITE: niov buffers holding len bytes */
    uint32_t niov;
    uint64_t off, len; /* bytes on the device */
    int unmap;         /* WRITE_ZEROES: the range may be deallocated too */
    uint64_t tag;      /* what reap() reports it under */
};

struct dp_io_done {
    uint64_t tag;
    int64_t res; /* bytes transferred, or -errno */
};

#define DP_IO_QUEUED 1

struct dp_backend;

struct dp_backend_ops {
    /* 0 with *res set (bytes, or -errno) when done here; DP_IO_QUEUED when queued, which
     * only `may_queue` allows. */
    int (*start)(struct dp_backend *b, struct dp_io *io, int may_queue, int64_t *res);
    void (*submit)(struct dp_backend *b);
    /* Up to `max` completions; with `wait`, blocks until there is one at least. */
    unsigned (*reap)(struct dp_backend *b, struct dp_io_done *out, unsigned max, int wait);
    int (*fd)(const struct dp_backend *b);
    /* How many operations it can hold queued at once: 0 when it never queues. */
    unsigned (*depth)(const struct dp_backend *b);
};

/* Implementations embed this first, and point it at their operations. */
struct dp_backend {
    const struct dp_backend_ops *ops;
};
#endif
