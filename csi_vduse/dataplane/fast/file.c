/*
 * The file backend: reads and writes with preadv/pwritev, on the queue's thread or through
 * an asynchronous engine (aio.c: io_uring or a thread pool); O_DIRECT for transfers aligned
 * for it; flush as fdatasync; discard and write zeroes as fallocate, falling back to
 * writing zeroes where the filesystem has neither.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include "file.h"
#include "stats.h"

/*
 * Which reads and writes leave the queue thread. A backing that cannot be read without
 * blocking (RWF_NOWAIT: tmpfs, for one) makes io_uring hand every request to a worker
 * thread, which costs more than a small copy; reads up to INLINE_MAX are served on the
 * spot, as in the thread pool, larger ones run beside the queue thread. Buffered writes to
 * one file take its inode lock in turn wherever they run, so for such backings they stay
 * on the queue thread: a worker would only add a handoff.
 */
#define INLINE_MAX (64u << 10)
#define SPREAD_MIN (128u << 10)

static const uint8_t zeroes[65536];

static struct dp_file *file_of(struct dp_backend *b)
{
    return (struct dp_file *)b;
}

/* The fd for a transfer: the O_DIRECT one when everything in it is aligned for it. */
static int pick_fd(struct dp_file *f, const struct dp_io *io)
{
    uint64_t mask = f->dio_align - 1;
    if (f->directfd < 0 || (io->off | io->len) & mask)
        return f->fd;
    for (uint32_t i = 0; i < io->niov; i++)
        if (((uintptr_t)io->iov[i].iov_base | io->iov[i].iov_len) & mask)
            return f->fd;
    f->direct++;
    if (f->stats)
        dp_stat_add(&f->stats[DP_ST_DIRECT], 1);
    return f->directfd;
}

static int zero_range(int fd, uint64_t off, uint64_t len, int unmap)
{
    int mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                     : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    if (fallocate(fd, mode, (off_t)off, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != EINVAL)
        return -errno;
    if (!unmap &&
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0; /* a hole reads back as zeroes too */
    while (len) {
        size_t chunk = len < sizeof zeroes ? len : sizeof zeroes;
        ssize_t done = pwrite(fd, zeroes, chunk, (off_t)off);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (uint64_t)done;
        len -= (uint64_t)done;
    }
    return 0;
}

static int file_start(struct dp_backend *b, struct dp_io *io, int may_queue, int64_t *res)
{
    struct dp_file *f = file_of(b);
    switch (io->op) {
    case DP_IO_READ:
    case DP_IO_WRITE: {
        int write = io->op == DP_IO_WRITE;
        int fd = pick_fd(f, io);
        uint32_t queue_min = write ? f->async_write_min : f->async_min;
        if (may_queue && f->aio && io->len && io->len >= queue_min &&
            dp_aio_queue(f->aio, fd, write, io->iov, io->niov, io->off, io->tag,
                         io->len >= SPREAD_MIN) == 0)
            return DP_IO_QUEUED;
        *res = dp_transfer(fd, write, io->iov, io->niov, io->off);
        return 0;
    }
    case DP_IO_FLUSH:
        *res = fdatasync(f->fd) ? -errno : 0;
        return 0;
    case DP_IO_DISCARD:
        *res = zero_range(f->fd, io->off, io->len, 1);
        return 0;
    case DP_IO_WRITE_ZEROES:
        *res = zero_range(f->fd, io->off, io->len, io->unmap);
        return 0;
    }
    *res = -EOPNOTSUPP;
    return 0;
}

static void file_submit(struct dp_backend *b)
{
    if (file_of(b)->aio)
        dp_aio_submit(file_of(b)->aio);
}

static unsigned file_reap(struct dp_backend *b, struct dp_io_done *out, unsigned max, int wait)
{
    return file_of(b)->aio ? dp_aio_reap(file_of(b)->aio, out, max, wait) : 0;
}

static int file_fd(const struct dp_backend *b)
{
    const struct dp_file *f = (const struct dp_file *)b;
    return f->aio ? dp_aio_fd(f->aio) : -1;
}

static unsigned file_depth(const struct dp_backend *b)
{
    const struct dp_file *f = (const struct dp_file *)b;
    return f->aio ? dp_aio_depth(f->aio) : 0;
}

static const struct dp_backend_ops file_ops = {
    .start = file_start,
    .submit = file_submit,
    .reap = file_reap,
    .fd = file_fd,
    .depth = file_depth,
};

void dp_file_init(struct dp_file *f, int fd, int directfd, uint32_t dio_align)
{
    *f = (struct dp_file){.base = {&file_ops}, .fd = fd, .directfd = directfd,
                          .dio_align = dio_align};
}

int dp_file_use_aio(struct dp_file *f, struct dp_aio *aio)
{
    f->aio = aio;
    if (!aio)
        return DP_AIO_NONE;
    int kind = dp_aio_kind(aio);
    int inline_small =
        kind == DP_AIO_THREADS || !dp_aio_nowait(f->directfd >= 0 ? f->directfd : f->fd);
    f->async_min = inline_small ? INLINE_MAX + 1 : 0;
    f->async_write_min = inline_small ? UINT32_MAX : 0;
    return kind;
}

struct dp_backend *dp_file_backend(struct dp_file *f)
{
    return &f->base;
}
