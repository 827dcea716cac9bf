/*
 * The fake librbd (fake_librbd.h): the librbd functions rbd.c calls, declared by the real
 * <rbd/librbd.h>, over an image kept in a file, completing on a helper thread in lockstep
 * with the queue's thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <rbd/librbd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_librbd.h"

enum kind { READ, WRITE, FLUSH, DISCARD, WRITE_ZEROES };
enum state { MADE, PENDING, DONE };

struct completion {
    struct fake_rbd_image *image;
    rbd_callback_t cb;
    void *arg;
    uint8_t decision; /* its script byte */
    enum state state;
    int released, in_callback, stopped;
    ssize_t rval;
    enum kind kind;
    const struct iovec *iov;
    int iovcnt;
    uint64_t off, len;
};

struct fake_rbd_image {
    int fd;
    uint64_t size;
    uint8_t script[FAKE_RBD_SCRIPT];
    unsigned at;
    struct completion **pending; /* started, not yet fired, oldest first */
    unsigned npending, pending_cap;
    unsigned live; /* completions made and not yet freed */
    const struct iovec **shorts; /* iovec arrays of reads that completed short */
    unsigned nshorts, shorts_cap;
};

static struct fake_rbd_image *open_image;
static int tracing; /* FAKE_RBD_TRACE set: each event on stderr, to read what an input does */
static const char *const kind_names[] = {"read", "write", "flush", "discard", "write zeroes"};

/* The helper thread, "librbd's threads": runs one completion at a time, while the queue's
 * thread waits in fire() or resume(). */
enum helper_state { IDLE, RUNNING, STOPPED };
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int started;
    struct completion *job;
    enum helper_state state;
} h = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, IDLE};
static __thread int on_helper;
static __thread struct completion *in_callback; /* on the helper: whose callback runs */

static void say(const char *fmt, va_list ap)
{
    fputs("fake librbd: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
    abort();
}

static void trace(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (tracing)
        say(fmt, ap);
    va_end(ap);
}

static void *grow(void *array, unsigned *cap, unsigned need, size_t size)
{
    if (need <= *cap)
        return array;
    unsigned cap2 = *cap ? 2 * *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *grown = realloc(array, cap2 * size);
    if (!grown)
        die("no memory");
    *cap = cap2;
    return grown;
}

static uint8_t next_byte(struct fake_rbd_image *im)
{
    return im->script[im->at++ % FAKE_RBD_SCRIPT];
}

/* ---- the I/O, on the helper thread ----------------------------------------------------- */

static void bounce_io(struct fake_rbd_image *im, struct completion *c, uint64_t len)
{
    uint8_t *bounce = malloc(len ? len : 1);
    if (!bounce)
        die("no memory");
    if (c->kind == WRITE) {
        uint64_t at = 0;
        for (int i = 0; i < c->iovcnt && at < len; i++) {
            uint64_t n = c->iov[i].iov_len < len - at ? c->iov[i].iov_len : len - at;
            memcpy(bounce + at, c->iov[i].iov_base, n);
            at += n;
        }
        if (pwrite(im->fd, bounce, len, (off_t)c->off) != (ssize_t)len)
            die("write the image: %s", strerror(errno));
    } else {
        if (pread(im->fd, bounce, len, (off_t)c->off) != (ssize_t)len)
            die("read the image: %s", strerror(errno));
        uint64_t at = 0;
        for (int i = 0; i < c->iovcnt && at < len; i++) {
            uint64_t n = c->iov[i].iov_len < len - at ? c->iov[i].iov_len : len - at;
            memcpy(c->iov[i].iov_base, bounce + at, n);
            at += n;
        }
    }
    free(bounce);
}

static ssize_t perform(struct completion *c)
{
    struct fake_rbd_image *im = c->image;
    int result = c->decision >> 6;
    if (result == 1)
        return -EIO;
    if (result == 2)
        return -ENOSPC;
    if (result == 3 && c->kind != READ)
        return -EROFS;
    if (c->kind == FLUSH)
        return 0;
    /* librbd clips every range at the image's size (librbd/io/Utils.cc clip_io). */
    if (c->off > im->size)
        return -EINVAL;
    uint64_t len = c->len < im->size - c->off ? c->len : im->size - c->off;
    if (result == 3 && c->len / 2 / 512 * 512 < len)
        len = c->len / 2 / 512 * 512;
    switch (c->kind) {
    case READ:
        bounce_io(im, c, len);
        if (len < c->len) {
            im->shorts = grow(im->shorts, &im->shorts_cap, im->nshorts + 1, sizeof *im->shorts);
            im->shorts[im->nshorts++] = c->iov;
        }
        return (ssize_t)len; /* object reads report their length, holes included */
    case WRITE:
        bounce_io(im, c, len);
        return 0; /* writes report 0, clipped or not */
    case DISCARD:
    case WRITE_ZEROES:
        if (len && fallocate(im->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)c->off,
                             (off_t)len))
            die("punch the image: %s", strerror(errno));
        return 0;
    case FLUSH:
        break;
    }
    return 0;
}

static void free_completion(struct completion *c)
{
    c->image->live--;
    free(c);
}

static void run(struct completion *c)
{
    c->rval = perform(c);
    trace("%p %s of %llu at %llu completes: %zd", (void *)c, kind_names[c->kind],
          (unsigned long long)c->len, (unsigned long long)c->off, c->rval);
    c->state = DONE;
    if (c->cb) {
        c->in_callback = 1;
        in_callback = c;
        c->cb(c, c->arg);
        in_callback = NULL;
        c->in_callback = 0;
    }
    if (c->released)
        free_completion(c);
}

static void *helper_main(void *unused)
{
    on_helper = 1;
    pthread_mutex_lock(&h.lock);
    for (;;) {
        while (h.state != RUNNING || !h.job)
            pthread_cond_wait(&h.cond, &h.lock);
        struct completion *c = h.job;
        pthread_mutex_unlock(&h.lock);
        run(c);
        pthread_mutex_lock(&h.lock);
        h.job = NULL;
        h.state = IDLE;
        pthread_cond_broadcast(&h.cond);
    }
    return NULL;
}

/* ---- fire points, on the queue's thread ------------------------------------------------ */

static void wait_helper(void)
{
    while (h.state == RUNNING)
        pthread_cond_wait(&h.cond, &h.lock);
}

/* Let a callback stopped after publishing finish. */
static void resume(void)
{
    pthread_mutex_lock(&h.lock);
    if (h.state == STOPPED) {
        trace("the stopped callback resumes");
        h.state = RUNNING;
        pthread_cond_broadcast(&h.cond);
        wait_helper();
    }
    pthread_mutex_unlock(&h.lock);
}

static void fire(struct completion *c)
{
    resume();
    pthread_mutex_lock(&h.lock);
    h.job = c;
    h.state = RUNNING;
    pthread_cond_broadcast(&h.cond);
    wait_helper();
    pthread_mutex_unlock(&h.lock);
}

/* The pending completion the script picks, off the list. */
static struct completion *take_pending(struct fake_rbd_image *im)
{
    unsigned i = next_byte(im) % im->npending;
    struct completion *c = im->pending[i];
    memmove(&im->pending[i], &im->pending[i + 1], (im->npending - i - 1) * sizeof *im->pending);
    im->npending--;
    trace("%p fires (%u more pending)", (void *)c, im->npending);
    return c;
}

static void fire_some(struct fake_rbd_image *im, unsigned n)
{
    for (unsigned i = 0; i < n && im->npending; i++)
        fire(take_pending(im));
}

int fake_rbd_mutex_lock(pthread_mutex_t *m)
{
    if (!on_helper && open_image) {
        resume();
        fire_some(open_image, next_byte(open_image) & 3);
    }
    return pthread_mutex_lock(m);
}

int fake_rbd_mutex_unlock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_unlock(m);
    struct completion *c = in_callback;
    if (on_helper && c && (c->decision & 4) && !c->stopped) {
        c->stopped = 1;
        trace("%p stops after its callback's unlock", (void *)c);
        pthread_mutex_lock(&h.lock);
        h.state = STOPPED;
        pthread_cond_broadcast(&h.cond);
        while (h.state == STOPPED)
            pthread_cond_wait(&h.cond, &h.lock);
        pthread_mutex_unlock(&h.lock);
    }
    return rc;
}

int fake_rbd_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    struct fake_rbd_image *im = open_image;
    if (on_helper || !im)
        return poll(fds, n, timeout);
    for (;;) {
        int ready = poll(fds, n, 0);
        if (ready != 0 || timeout == 0)
            return ready;
        pthread_mutex_lock(&h.lock);
        int stopped = h.state == STOPPED;
        pthread_mutex_unlock(&h.lock);
        if (stopped)
            resume();
        else if (im->npending)
            fire(take_pending(im));
        else
            die("rbd.c waits on its eventfd, and nothing left in librbd will wake it");
    }
}

/* ---- librbd.h ----------------------------------------------------------------------- */

int rbd_aio_create_completion(void *cb_arg, rbd_callback_t complete_cb, rbd_completion_t *c)
{
    struct fake_rbd_image *im = open_image;
    if (!im || on_helper)
        die("a completion made with no image open, or from a callback");
    uint8_t decision = next_byte(im);
    resume();
    fire_some(im, decision & 3);
    trace("completion made with byte %#x", decision);
    if ((decision >> 3 & 7) == 5)
        return -ENOMEM;
    struct completion *made = calloc(1, sizeof *made);
    if (!made)
        die("no memory");
    *made = (struct completion){.image = im, .cb = complete_cb, .arg = cb_arg,
                                .decision = decision, .state = MADE};
    im->live++;
    *c = made;
    return 0;
}

static int start(rbd_image_t image, rbd_completion_t comp, enum kind kind, const struct iovec *iov,
                 int iovcnt, uint64_t off, uint64_t len)
{
    struct fake_rbd_image *im = image;
    struct completion *c = comp;
    if (im != open_image || c->image != im)
        die("an operation on an image that is not open");
    if (c->state != MADE || c->released)
        die("a completion started twice, or after its release");
    int call = c->decision >> 3 & 7;
    trace("%p: %s of %llu at %llu in %d buffers%s", (void *)c, kind_names[kind],
          (unsigned long long)len, (unsigned long long)off, iovcnt,
          call == 6 ? " refused: -ENOMEM" : call == 7 ? " refused: -EINVAL" : "");
    if (call == 6)
        return -ENOMEM;
    if (call == 7)
        return -EINVAL;
    c->kind = kind;
    c->iov = iov;
    c->iovcnt = iovcnt;
    c->off = off;
    c->len = len;
    c->state = PENDING;
    if (call == 4) {
        /* Done before the call returns, its callback on the caller's thread: librbd may do
         * that when it dispatches on the caller's thread (rbd_non_blocking_aio false). */
        trace("%p completes inline", (void *)c);
        run(c);
        return 0;
    }
    im->pending = grow(im->pending, &im->pending_cap, im->npending + 1, sizeof *im->pending);
    im->pending[im->npending++] = c;
    return 0;
}

/* librbd.cc get_iovec_length: refused before the completion is used. */
static int iovec_length(const struct iovec *iov, int iovcnt, uint64_t *len)
{
    if (iovcnt <= 0 || iovcnt > IOV_MAX)
        return -EINVAL;
    *len = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > SSIZE_MAX - *len)
            return -EINVAL;
        *len += iov[i].iov_len;
    }
    return 0;
}

int rbd_aio_readv(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off,
                  rbd_completion_t c)
{
    uint64_t len;
    int rc = iovec_length(iov, iovcnt, &len);
    return rc ? rc : start(image, c, READ, iov, iovcnt, off, len);
}

int rbd_aio_writev(rbd_image_t image, const struct iovec *iov, int iovcnt, uint64_t off,
                   rbd_completion_t c)
{
    uint64_t len;
    int rc = iovec_length(iov, iovcnt, &len);
    return rc ? rc : start(image, c, WRITE, iov, iovcnt, off, len);
}

int rbd_aio_flush(rbd_image_t image, rbd_completion_t c)
{
    return start(image, c, FLUSH, NULL, 0, 0, 0);
}

int rbd_aio_discard(rbd_image_t image, uint64_t off, uint64_t len, rbd_completion_t c)
{
    return start(image, c, DISCARD, NULL, 0, off, len);
}

int rbd_aio_write_zeroes(rbd_image_t image, uint64_t off, size_t len, rbd_completion_t c,
                         int zero_flags, int op_flags)
{
    if (zero_flags & ~RBD_WRITE_ZEROES_FLAG_THICK_PROVISION)
        return -EINVAL;
    return start(image, c, WRITE_ZEROES, NULL, 0, off, len);
}

int rbd_aio_wait_for_complete(rbd_completion_t comp)
{
    struct completion *c = comp;
    if (on_helper)
        die("a wait from a callback");
    while (c->state != DONE) {
        if (c->state != PENDING)
            die("a wait for an operation never started");
        fire(take_pending(c->image));
    }
    return 0;
}

ssize_t rbd_aio_get_return_value(rbd_completion_t comp)
{
    struct completion *c = comp;
    if (c->state != DONE)
        die("the return value of an operation not complete");
    return c->rval;
}

void rbd_aio_release(rbd_completion_t comp)
{
    struct completion *c = comp;
    if (c->released)
        die("a completion released twice");
    c->released = 1;
    /* librbd holds its own reference until the callback has returned. */
    if (c->state != PENDING && !c->in_callback)
        free_completion(c);
}

/* ---- the harness's side --------------------------------------------------------------- */

struct fake_rbd_image *fake_rbd_open(int fd, uint64_t size, const uint8_t script[FAKE_RBD_SCRIPT])
{
    if (open_image)
        die("two images open");
    if (!h.started) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, helper_main, NULL))
            die("no helper thread");
        pthread_detach(thread);
        h.started = 1;
    }
    struct fake_rbd_image *im = calloc(1, sizeof *im);
    if (!im)
        die("no memory");
    tracing = getenv("FAKE_RBD_TRACE") != NULL;
    im->fd = fd;
    im->size = size;
    memcpy(im->script, script, FAKE_RBD_SCRIPT);
    open_image = im;
    return im;
}

void fake_rbd_close(struct fake_rbd_image *im)
{
    if (!im)
        return;
    resume();
    if (im->npending)
        die("%u operations still in librbd when the image closes", im->npending);
    if (im->live)
        die("%u completions never released", im->live);
    free(im->pending);
    free(im->shorts);
    free(im);
    open_image = NULL;
}

int fake_rbd_took_short(const struct iovec *iov, uint32_t n)
{
    struct fake_rbd_image *im = open_image;
    if (!im || n == 0)
        return 0;
    int found = 0;
    unsigned kept = 0;
    uintptr_t first = (uintptr_t)iov, end = (uintptr_t)(iov + n);
    for (unsigned i = 0; i < im->nshorts; i++) {
        uintptr_t at = (uintptr_t)im->shorts[i];
        if (at >= first && at < end)
            found = 1;
        else
            im->shorts[kept++] = im->shorts[i];
    }
    im->nshorts = kept;
    return found;
}
