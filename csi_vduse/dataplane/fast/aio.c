/*
 * Asynchronous whole transfers on the backing, so one queue thread keeps many requests in
 * flight and completes them in whatever order they finish.
 *
 * io_uring: one ring per queue. Everything queued during a pass over the virtqueue goes to
 * the kernel in one io_uring_enter; completions are read from the shared CQ ring without a
 * syscall. A registered eventfd tells the queue's poll() that completions are waiting.
 * Requests the kernel can serve without blocking (page cache hits) complete inline in the
 * submit call; `spread` ones (large copies) go to io_uring's workers, so several run beside
 * the queue thread on other CPUs.
 *
 * Threads: where io_uring is missing or disabled (kernel.io_uring_disabled, container
 * seccomp profiles), a small pool runs preadv/pwritev and reports through the same eventfd.
 *
 * Short transfers are continued until complete here, so callers see all or an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <liburing.h>

#include "aio.h"
#include "iov.h"

#define MAX_THREADS 16

struct req {
    struct iovec *iov;
    uint32_t niov;
    int fd, write;
    uint64_t off, tag;
    int64_t done; /* bytes so far */
    int64_t res;  /* threads: the outcome */
    struct req *next;
};

struct dp_aio {
    int kind;
    int efd;
    unsigned depth;
    struct req *reqs, *free_list;
    unsigned inflight;
    /* io_uring */
    struct io_uring ring;
    unsigned unsubmitted;
    /* threads */
    pthread_t threads[MAX_THREADS];
    unsigned nthreads;
    pthread_mutex_t lock;
    pthread_cond_t work, finished;
    struct req *todo, **todo_tail, *done_list;
    int stopping;
};

int64_t dp_transfer(int fd, int write, struct iovec *iov, uint32_t n, uint64_t off)
{
    int64_t total = 0;
    while (n) {
        int batch = n < IOV_MAX ? (int)n : IOV_MAX;
        ssize_t done = write ? pwritev(fd, iov, batch, (off_t)(off + (uint64_t)total))
                             : preadv(fd, iov, batch, (off_t)(off + (uint64_t)total));
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (done == 0)
            return -EIO; /* the backing shrank under us */
        total += done;
        n = dp_iov_skip(iov, n, (uint64_t)done);
    }
    return total;
}

/* ---- io_uring ------------------------------------------------------------------------- */

static int uring_prep(struct dp_aio *a, struct req *r, int spread)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&a->ring);
    if (!sqe) {
        int rc = io_uring_submit(&a->ring);
        if (rc < 0)
            return rc;
        a->unsubmitted = 0;
        sqe = io_uring_get_sqe(&a->ring);
        if (!sqe)
            return -EBUSY;
    }
    unsigned n = r->niov < IOV_MAX ? r->niov : IOV_MAX;
    if (r->write)
        io_uring_prep_writev(sqe, r->fd, r->iov, n, r->off + (uint64_t)r->done);
    else
        io_uring_prep_readv(sqe, r->fd, r->iov, n, r->off + (uint64_t)r->done);
    if (spread)
        sqe->flags |= IOSQE_ASYNC;
    io_uring_sqe_set_data(sqe, r);
    a->unsubmitted++;
    return 0;
}

/* Submit what is prepared, if anything; it stays prepared (and counted) on failure. */
static int uring_submit(struct dp_aio *a)
{
    if (!a->unsubmitted)
        return 0;
    int rc = io_uring_submit(&a->ring);
    if (rc < 0)
        return rc;
    a->unsubmitted = 0;
    return 0;
}

static unsigned uring_reap(struct dp_aio *a, struct dp_io_done *out, unsigned max, int wait)
{
    unsigned got = 0;
    while (got < max) {
        struct io_uring_cqe *cqe;
        int rc;
        if (wait && got == 0) {
            /* A continuation prepared below may not have reached the kernel yet: nothing
             * completes that was never submitted. */
            rc = uring_submit(a);
            if (rc == 0)
                rc = io_uring_wait_cqe(&a->ring, &cqe);
        } else {
            rc = io_uring_peek_cqe(&a->ring, &cqe);
        }
        if (rc == -EINTR || (wait && got == 0 && (rc == -EAGAIN || rc == -EBUSY)))
            continue;
        if (rc < 0)
            break;
        struct req *r = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&a->ring, cqe);
        if (res == -EAGAIN || res == -EINTR || res > 0) {
            if (res > 0) {
                r->done += res;
                r->niov = dp_iov_skip(r->iov, r->niov, (uint64_t)res);
            }
            if (r->niov) {
                /* A short transfer, or a retry: continue where it stopped. Once prepared it
                 * is the kernel's, submitted now or with the next batch (uring_submit), so
                 * it is not reported done; only a continuation that could not be prepared
                 * fails the request. */
                if (uring_prep(a, r, 0) == 0) {
                    (void)uring_submit(a);
                    continue;
                }
                res = -EIO;
            }
        } else if (res == 0 && r->niov) {
            res = -EIO; /* end of file: the backing shrank under us */
        }
        out[got].tag = r->tag;
        out[got].res = res < 0 ? res : r->done;
        got++;
        r->next = a->free_list;
        a->free_list = r;
        a->inflight--;
    }
    return got;
}

/* ---- threads ---------------------------------------------------------------------------- */

static void *worker(void *arg)
{
    struct dp_aio *a = arg;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->todo && !a->stopping)
            pthread_cond_wait(&a->work, &a->lock);
        if (!a->todo)
            break;
        struct req *r = a->todo;
        a->todo = r->next;
        if (!a->todo)
            a->todo_tail = &a->todo;
        pthread_mutex_unlock(&a->lock);
        r->res = dp_transfer(r->fd, r->write, r->iov, r->niov, r->off);
        pthread_mutex_lock(&a->lock);
        r->next = a->done_list;
        a->done_list = r;
        pthread_cond_signal(&a->finished);
        uint64_t one = 1;
        (void)!write(a->efd, &one, sizeof one);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

static unsigned threads_reap(struct dp_aio *a, struct dp_io_done *out, unsigned max, int wait)
{
    unsigned got = 0;
    pthread_mutex_lock(&a->lock);
    while (wait && !a->done_list && a->inflight)
        pthread_cond_wait(&a->finished, &a->lock);
    while (a->done_list && got < max) {
        struct req *r = a->done_list;
        a->done_list = r->next;
        out[got].tag = r->tag;
        out[got].res = r->res;
        got++;
        r->next = a->free_list;
        a->free_list = r;
        a->inflight--;
    }
    pthread_mutex_unlock(&a->lock);
    return got;
}

/* ---- the interface ---------------------------------------------------------------------- */

struct dp_aio *dp_aio_open(int kind, unsigned depth, unsigned threads, int *err)
{
    struct dp_aio *a = calloc(1, sizeof *a);
    if (!a || !(a->reqs = calloc(depth, sizeof *a->reqs))) {
        free(a);
        *err = -ENOMEM;
        return NULL;
    }
    a->efd = -1;
    a->kind = kind;
    a->depth = depth;
    for (unsigned i = 0; i < depth; i++) {
        a->reqs[i].next = a->free_list;
        a->free_list = &a->reqs[i];
    }
    a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (a->efd < 0) {
        *err = -errno;
        goto fail;
    }
    if (kind == DP_AIO_URING) {
        int rc = io_uring_queue_init(depth, &a->ring, IORING_SETUP_R_DISABLED);
        if (rc) {
            *err = rc;
            goto fail;
        }
        struct io_uring_restriction only[3] = {
            {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_READV},
            {.opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_WRITEV},
            {.opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED, .sqe_flags = IOSQE_ASYNC},
        };
        if ((rc = io_uring_register_eventfd(&a->ring, a->efd)) != 0 ||
            (rc = io_uring_register_restrictions(&a->ring, only, 3)) != 0 ||
            (rc = io_uring_enable_rings(&a->ring)) != 0) {
            io_uring_queue_exit(&a->ring);
            *err = rc;
            goto fail;
        }
        return a;
    }
    if (kind != DP_AIO_THREADS) {
        *err = -EINVAL;
        goto fail;
    }
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->finished, NULL);
    a->todo_tail = &a->todo;
    if (threads < 1)
        threads = 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10); /* transfer() needs little */
    for (; a->nthreads < threads; a->nthreads++) {
        int rc = pthread_create(&a->threads[a->nthreads], &attr, worker, a);
        if (rc) {
            pthread_attr_destroy(&attr);
            *err = -rc;
            dp_aio_close(a);
            return NULL;
        }
    }
    pthread_attr_destroy(&attr);
    return a;
fail:
    if (a->efd >= 0)
        close(a->efd);
    free(a->reqs);
    free(a);
    return NULL;
}

void dp_aio_close(struct dp_aio *a)
{
    struct dp_io_done done[64];
    while (a->inflight)
        dp_aio_reap(a, done, 64, 1);
    if (a->kind == DP_AIO_URING) {
        io_uring_queue_exit(&a->ring);
    } else {
        pthread_mutex_lock(&a->lock);
        a->stopping = 1;
        pthread_cond_broadcast(&a->work);
        pthread_mutex_unlock(&a->lock);
        for (unsigned i = 0; i < a->nthreads; i++)
            pthread_join(a->threads[i], NULL);
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->work);
        pthread_cond_destroy(&a->finished);
    }
    close(a->efd);
    free(a->reqs);
    free(a);
}

int dp_aio_kind(const struct dp_aio *a)
{
    return a->kind;
}

unsigned dp_aio_depth(const struct dp_aio *a)
{
    return a->depth;
}

int dp_aio_nowait(int fd)
{
    /* Aligned for O_DIRECT; EINVAL (an alignment the device wants larger) still means the
     * kernel got past its RWF_NOWAIT check, which answers EOPNOTSUPP. */
    static char block[4096] __attribute__((aligned(4096)));
    struct iovec one = {.iov_base = block, .iov_len = sizeof block};
    return preadv2(fd, &one, 1, 0, RWF_NOWAIT) >= 0 || errno == EAGAIN || errno == EINVAL;
}

int dp_aio_fd(const struct dp_aio *a)
{
    return a->efd;
}

int dp_aio_queue(struct dp_aio *a, int fd, int write, struct iovec *iov, uint32_t niov,
                 uint64_t off, uint64_t tag, int spread)
{
    struct req *r = a->free_list;
    if (!r)
        return -EBUSY;
    struct req *rest = r->next;
    *r = (struct req){.iov = iov, .niov = niov, .fd = fd, .write = write, .off = off, .tag = tag};
    if (a->kind == DP_AIO_URING) {
        int rc = uring_prep(a, r, spread);
        if (rc) {
            r->next = rest;
            return rc;
        }
        a->free_list = rest;
        a->inflight++;
        return 0;
    }
    a->free_list = rest;
    pthread_mutex_lock(&a->lock);
    a->inflight++;
    *a->todo_tail = r;
    a->todo_tail = &r->next;
    pthread_mutex_unlock(&a->lock);
    a->unsubmitted++;
    return 0;
}

int dp_aio_submit(struct dp_aio *a)
{
    if (a->kind == DP_AIO_URING)
        return uring_submit(a);
    if (!a->unsubmitted)
        return 0;
    pthread_mutex_lock(&a->lock);
    if (a->unsubmitted >= a->nthreads)
        pthread_cond_broadcast(&a->work);
    else
        for (unsigned i = 0; i < a->unsubmitted; i++)
            pthread_cond_signal(&a->work);
    pthread_mutex_unlock(&a->lock);
    a->unsubmitted = 0;
    return 0;
}

unsigned dp_aio_reap(struct dp_aio *a, struct dp_io_done *out, unsigned max, int wait)
{
    if (!a->inflight)
        return 0;
    if (wait)
        dp_aio_submit(a); /* nothing completes that was never started */
    return a->kind == DP_AIO_URING ? uring_reap(a, out, max, wait)
                                   : threads_reap(a, out, max, wait);
}
