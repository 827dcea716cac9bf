/*
 * The RBD backend (rbd.h): requests to librbd's aio calls, completions back to the queue.
 *
 * Each backend has `depth` operation records. The queue's thread takes a free one, starts
 * the librbd call with it as the completion's argument and returns DP_IO_QUEUED; librbd's
 * callback (on its own thread) stores the result, appends the record to the done list and
 * bumps the eventfd, both under the backend's lock; reap() hands the done ones back and
 * puts the records on the free list again. Only the done list is shared between threads.
 * Once the callback unlocks, the queue's thread may reap the operation and free the
 * backend, so the callback touches nothing of it after that.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "rbd.h"

struct op {
    struct dp_rbd *b;
    uint64_t tag, len;
    enum dp_io_op kind;
    int64_t res;
};

struct dp_rbd {
    struct dp_backend base;
    rbd_image_t image;
    int efd;
    unsigned depth;
    struct op *ops;
    unsigned *free_list, nfree; /* the queue's thread only */
    pthread_mutex_t lock;       /* guards done and ndone */
    unsigned *done, ndone;
    unsigned inflight;
};

/* What a finished librbd call means for the request: reads and writes move all their bytes
 * or fail (backend.h). A read reports the bytes it read, holes included as zeroes; fewer
 * than asked means librbd clipped it at the image's end (the image shrank under the
 * device) and left the rest of the buffers as they were: an error, as file.c answers a
 * backing that shrank. A write reports 0, clipped or not. */
static int64_t result_of(enum dp_io_op kind, uint64_t len, ssize_t r)
{
    if (r < 0)
        return r;
    if (kind == DP_IO_READ)
        return (uint64_t)r == len ? (int64_t)len : -EIO;
    return kind == DP_IO_WRITE ? (int64_t)len : 0;
}

static void on_complete(rbd_completion_t c, void *arg)
{
    struct op *o = arg;
    struct dp_rbd *b = o->b;
    o->res = result_of(o->kind, o->len, rbd_aio_get_return_value(c));
    rbd_aio_release(c);
    uint64_t one = 1;
    pthread_mutex_lock(&b->lock);
    b->done[b->ndone++] = (unsigned)(o - b->ops);
    /* Bumped after the append, so a reap that found nothing still wakes for it; and before
     * the unlock, after which b may be gone (dp_rbd_backend_free). */
    (void)!write(b->efd, &one, sizeof one);
    pthread_mutex_unlock(&b->lock);
}

/* librbd refuses a transfer in no buffers or in more than IOV_MAX (librbd.cc,
 * get_iovec_length). A driver may send either: a read or write of no data, or as many
 * buffers as seg_max (the queue's size less two) allows, which IOTLB splits can take past
 * IOV_MAX for a queue of 1024. Such transfers are done here, in slices. */
static int needs_slices(const struct dp_io *io)
{
    int transfer = io->op == DP_IO_READ || io->op == DP_IO_WRITE;
    return transfer && (io->niov == 0 || io->niov > IOV_MAX);
}

/* Start `io` on librbd with completion `c`; 0 or -errno (then c is not used). */
static int issue(rbd_image_t image, const struct dp_io *io, rbd_completion_t c)
{
    switch (io->op) {
    case DP_IO_READ:
    case DP_IO_WRITE:
        if (io->op == DP_IO_READ)
            return rbd_aio_readv(image, io->iov, (int)io->niov, io->off, c);
        return rbd_aio_writev(image, io->iov, (int)io->niov, io->off, c);
    case DP_IO_FLUSH:
        return rbd_aio_flush(image, c);
    case DP_IO_DISCARD:
        return rbd_aio_discard(image, io->off, io->len, c);
    case DP_IO_WRITE_ZEROES:
        /* librbd deallocates whole objects of a zeroed range itself. */
        return rbd_aio_write_zeroes(image, io->off, io->len, c, 0, 0);
    }
    return -EOPNOTSUPP;
}

/* On the caller's thread: start one librbd call, then wait for it. */
static int64_t wait_for(rbd_image_t image, const struct dp_io *io)
{
    rbd_completion_t c;
    int rc = rbd_aio_create_completion(NULL, NULL, &c);
    if (rc < 0)
        return rc;
    rc = issue(image, io, c);
    if (rc < 0) {
        rbd_aio_release(c);
        return rc;
    }
    rbd_aio_wait_for_complete(c);
    int64_t res = result_of(io->op, io->len, rbd_aio_get_return_value(c));
    rbd_aio_release(c);
    return res;
}

/* On the caller's thread; a transfer in IOV_MAX buffers at a time (none: done at once). */
static int64_t do_here(rbd_image_t image, const struct dp_io *io)
{
    if (!needs_slices(io))
        return wait_for(image, io);
    struct dp_io slice = *io;
    uint64_t done = 0;
    for (uint32_t at = 0; at < io->niov; at += slice.niov) {
        slice.iov = io->iov + at;
        slice.niov = io->niov - at < IOV_MAX ? io->niov - at : IOV_MAX;
        slice.off = io->off + done;
        slice.len = 0;
        for (uint32_t i = 0; i < slice.niov; i++)
            slice.len += slice.iov[i].iov_len;
        int64_t res = wait_for(image, &slice);
        if (res < 0)
            return res;
        done += slice.len;
    }
    return (int64_t)done;
}

static int rbd_start(struct dp_backend *base, struct dp_io *io, int may_queue, int64_t *res)
{
    struct dp_rbd *b = (struct dp_rbd *)base;
    if (!may_queue || b->nfree == 0 || needs_slices(io)) {
        *res = do_here(b->image, io);
        return 0;
    }
    unsigned i = b->free_list[b->nfree - 1];
    struct op *o = &b->ops[i];
    *o = (struct op){.b = b, .tag = io->tag, .len = io->len, .kind = io->op};
    rbd_completion_t c;
    int rc = rbd_aio_create_completion(o, on_complete, &c);
    if (rc == 0) {
        rc = issue(b->image, io, c);
        if (rc < 0)
            rbd_aio_release(c);
    }
    if (rc < 0) {
        *res = rc;
        return 0;
    }
    b->nfree--;
    b->inflight++;
    return DP_IO_QUEUED;
}

static void rbd_submit(struct dp_backend *base)
{
    /* librbd starts each call as it is made. */
}

static unsigned rbd_reap(struct dp_backend *base, struct dp_io_done *out, unsigned max, int wait)
{
    struct dp_rbd *b = (struct dp_rbd *)base;
    for (;;) {
        unsigned n = 0;
        pthread_mutex_lock(&b->lock);
        while (n < max && b->ndone) {
            unsigned i = b->done[--b->ndone];
            out[n].tag = b->ops[i].tag;
            out[n].res = b->ops[i].res;
            b->free_list[b->nfree++] = i;
            n++;
        }
        pthread_mutex_unlock(&b->lock);
        b->inflight -= n;
        if (n || !wait || !b->inflight)
            return n;
        struct pollfd p = {.fd = b->efd, .events = POLLIN};
        if (poll(&p, 1, -1) > 0) {
            uint64_t value;
            (void)!read(b->efd, &value, sizeof value);
        }
    }
}

static int rbd_fd(const struct dp_backend *base)
{
    return ((const struct dp_rbd *)base)->efd;
}

static unsigned rbd_depth(const struct dp_backend *base)
{
    return ((const struct dp_rbd *)base)->depth;
}

static const struct dp_backend_ops rbd_ops = {
    .start = rbd_start,
    .submit = rbd_submit,
    .reap = rbd_reap,
    .fd = rbd_fd,
    .depth = rbd_depth,
};

struct dp_rbd *dp_rbd_backend_new(void *image, unsigned depth)
{
    struct dp_rbd *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->base.ops = &rbd_ops;
    b->image = image;
    b->depth = depth;
    b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    b->ops = calloc(depth, sizeof *b->ops);
    b->free_list = calloc(depth, sizeof *b->free_list);
    b->done = calloc(depth, sizeof *b->done);
    if (b->efd < 0 || !b->ops || !b->free_list || !b->done) {
        if (b->efd >= 0)
            close(b->efd);
        free(b->ops);
        free(b->free_list);
        free(b->done);
        free(b);
        return NULL;
    }
    pthread_mutex_init(&b->lock, NULL);
    for (unsigned i = 0; i < depth; i++)
        b->free_list[i] = depth - 1 - i;
    b->nfree = depth;
    return b;
}

void dp_rbd_backend_free(struct dp_rbd *b)
{
    if (!b)
        return;
    struct dp_io_done sink[32];
    while (b->inflight)
        rbd_reap(&b->base, sink, 32, 1);
    pthread_mutex_destroy(&b->lock);
    close(b->efd);
    free(b->ops);
    free(b->free_list);
    free(b->done);
    free(b);
}

struct dp_backend *dp_rbd_backend(struct dp_rbd *b)
{
    return &b->base;
}
