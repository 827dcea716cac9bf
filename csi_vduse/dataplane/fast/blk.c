/*
 * virtio-blk requests (virtio 1.x, 5.2.6): a header {type, ioprio, sector} in the
 * device-readable buffers, data, and a status byte at the end of the device-writable ones.
 * Every request is checked against the device (sector range, read-only, supported
 * commands, range counts) before anything reaches the backend; before it is even taken off
 * its ring, dp_blk_admit weighs it against the device's I/O limits. Where the ring allows it
 * (`head` >= 0), a request may stay in flight on the backend if the backend queues it (the
 * file backend queues reads and writes); the rest complete here.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "blk.h"
#include "chain.h"
#include "iov.h"
#include "qos.h"
#include "queue.h"

#define SECTOR 512u
#define MAX_RANGES 64

static int in_range(const struct dp_blk *blk, uint64_t sector, uint64_t len)
{
    if (len % SECTOR)
        return 0;
    return sector <= blk->capacity / SECTOR && len <= blk->capacity - sector * SECTOR;
}

/* What a used element reports for `data` bytes written before the status byte: the used
 * length is 32 bits, so a transfer of 4 GiB or more reports the most it can. */
static uint32_t used_length(uint64_t data)
{
    return data >= UINT32_MAX ? UINT32_MAX : (uint32_t)data + 1;
}

/* Keep a copy of `io`'s iovecs in the head's slot, where they outlive the chain; 0 when
 * there is no room (the request is then served here). */
static int hold_iov(struct dp_slot *s, struct dp_io *io)
{
    uint32_t n = io->niov;
    if (n <= sizeof s->small / sizeof s->small[0]) {
        s->iov = s->small;
    } else {
        if (s->big_cap < n) {
            struct iovec *grown = realloc(s->big, n * sizeof *grown);
            if (!grown)
                return 0;
            s->big = grown;
            s->big_cap = n;
        }
        s->iov = s->big;
    }
    memcpy(s->iov, io->iov, n * sizeof *io->iov);
    io->iov = s->iov;
    return 1;
}

/* A discard is a hint: a backing that cannot deallocate has done its part. */
static int64_t settle(enum dp_io_op op, int64_t res)
{
    if (op == DP_IO_DISCARD && (res == -EOPNOTSUPP || res == -EINVAL))
        return 0;
    return res;
}

/*
 * Do `io` for the request whose status byte is `status`. With `head` >= 0 on a queue that
 * keeps requests in flight, the backend may queue it: then this returns 1 and
 * dp_blk_finish completes it, reporting `written` on success. Otherwise it is done here:
 * 0, with *res set.
 */
static int start(struct dp_queue *q, int head, struct dp_io *io, uint8_t *status, int op,
                 uint32_t written, int64_t *res)
{
    struct dp_backend *b = q->backend;
    struct dp_slot *s = head >= 0 && q->slots ? &q->slots[head] : NULL;
    if (s && io->niov && !hold_iov(s, io))
        s = NULL;
    io->tag = (uint64_t)head;
    if (b->ops->start(b, io, s != NULL, res) != DP_IO_QUEUED) {
        *res = settle(io->op, *res);
        return 0;
    }
    s->status = status;
    s->io_op = io->op;
    s->op = op;
    s->bytes = io->len;
    s->written = written;
    s->busy = 1;
    q->inflight++;
    return 1;
}

/*
 * DISCARD and WRITE_ZEROES: all ranges are checked before any is acted on. A request of
 * one range may be queued (returns 1); several are done here in turn. *st is the status.
 */
static int zero_ranges(struct dp_queue *q, struct dp_chain *c, uint32_t type, int head,
                       uint8_t *status, uint8_t *st)
{
    const struct dp_blk *blk = &q->blk;
    struct virtio_blk_discard_write_zeroes r[MAX_RANGES];
    *st = VIRTIO_BLK_S_UNSUPP;
    if (!blk->can_discard)
        return 0;
    *st = VIRTIO_BLK_S_IOERR;
    if (blk->readonly || c->rd_len == 0 || c->rd_len % sizeof *r ||
        c->rd_len / sizeof *r > blk->max_discard_seg || c->rd_len / sizeof *r > MAX_RANGES)
        return 0;
    uint32_t count = (uint32_t)(c->rd_len / sizeof *r), work = 0;
    dp_iov_gather(c->rd, c->nrd, (uint8_t *)r, c->rd_len);
    for (uint32_t i = 0; i < count; i++) {
        if (r[i].flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP ||
            (type == VIRTIO_BLK_T_DISCARD && r[i].flags)) {
            *st = VIRTIO_BLK_S_UNSUPP;
            return 0;
        }
        if (!in_range(blk, r[i].sector, (uint64_t)r[i].num_sectors * SECTOR))
            return 0;
        work += r[i].num_sectors != 0;
    }
    for (uint32_t i = 0; i < count; i++) {
        if (!r[i].num_sectors)
            continue;
        struct dp_io io = {
            .op = type == VIRTIO_BLK_T_DISCARD ? DP_IO_DISCARD : DP_IO_WRITE_ZEROES,
            .off = r[i].sector * SECTOR,
            .len = (uint64_t)r[i].num_sectors * SECTOR,
            .unmap = !!(r[i].flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP),
        };
        int64_t res;
        if (start(q, work == 1 ? head : -1, &io, status, c->out.op, 1, &res))
            return 1;
        if (res < 0)
            return 0;
    }
    *st = VIRTIO_BLK_S_OK;
    return 0;
}

/* Read the request's header into `c`, once; 0 when it has none (a bad or short chain). */
static int take_header(struct dp_chain *c)
{
    struct virtio_blk_outhdr header;
    if (c->has_header)
        return 1;
    if (c->bad || c->rd_len < sizeof header)
        return 0;
    dp_iov_gather(c->rd, c->nrd, (uint8_t *)&header, sizeof header);
    c->type = header.type;
    c->sector = header.sector;
    c->nrd = dp_iov_skip(c->rd, c->nrd, sizeof header);
    c->rd_len -= sizeof header;
    c->has_header = 1;
    return 1;
}

/* Every chain taken costs an IOPS token, whatever it asks; reads and writes their data too. */
int dp_blk_admit(struct dp_queue *q, struct dp_chain *c)
{
    if (!q->qos)
        return 1;
    enum dp_io_op op = DP_IO_FLUSH;
    uint64_t bytes = 0;
    if (c->status_ok && take_header(c)) {
        if (c->type == VIRTIO_BLK_T_IN) {
            op = DP_IO_READ;
            bytes = c->wr_len - 1; /* the status byte is not data */
        } else if (c->type == VIRTIO_BLK_T_OUT) {
            op = DP_IO_WRITE;
            bytes = c->rd_len;
        }
    }
    if (dp_qos_admit(q->qos, op, bytes, &q->throttle_ns))
        return 1;
    q->throttled++;
    return 0;
}

int dp_blk_serve(struct dp_queue *q, struct dp_chain *c, int head, uint32_t *used)
{
    const struct dp_blk *blk = &q->blk;
    struct iovec *last = &c->wr[c->nwr - 1];
    uint8_t *status = (uint8_t *)last->iov_base + last->iov_len - 1;
    c->out.op = DP_ST_OTHER;
    *used = 1;
    if (!take_header(c)) {
        c->out.status = VIRTIO_BLK_S_IOERR;
        *status = VIRTIO_BLK_S_IOERR;
        q->errors++;
        return 0;
    }
    uint32_t type = c->type;
    uint64_t sector = c->sector;
    uint64_t in_len = c->wr_len - 1;
    c->nwr = dp_iov_drop_last_byte(c->wr, c->nwr);
    uint64_t written = 0;
    int64_t res;
    uint8_t st = VIRTIO_BLK_S_OK;
    switch (type) {
    case VIRTIO_BLK_T_IN: {
        c->out.op = DP_ST_READ;
        if (!in_range(blk, sector, in_len)) {
            st = VIRTIO_BLK_S_IOERR;
            break;
        }
        struct dp_io io = {.op = DP_IO_READ, .iov = c->wr, .niov = c->nwr,
                           .off = sector * SECTOR, .len = in_len};
        if (start(q, head, &io, status, c->out.op, used_length(in_len), &res))
            return 1;
        if (res < 0) {
            st = VIRTIO_BLK_S_IOERR;
        } else {
            written = in_len;
            c->out.bytes_read = in_len;
        }
        break;
    }
    case VIRTIO_BLK_T_OUT: {
        c->out.op = DP_ST_WRITE;
        if (blk->readonly || !in_range(blk, sector, c->rd_len)) {
            st = VIRTIO_BLK_S_IOERR;
            break;
        }
        struct dp_io io = {.op = DP_IO_WRITE, .iov = c->rd, .niov = c->nrd,
                           .off = sector * SECTOR, .len = c->rd_len};
        if (start(q, head, &io, status, c->out.op, 1, &res))
            return 1;
        if (res < 0)
            st = VIRTIO_BLK_S_IOERR;
        else
            c->out.bytes_written = c->rd_len;
        break;
    }
    case VIRTIO_BLK_T_FLUSH: {
        c->out.op = DP_ST_FLUSH;
        struct dp_io io = {.op = DP_IO_FLUSH};
        if (!blk->can_flush) {
            st = VIRTIO_BLK_S_UNSUPP;
            break;
        }
        if (start(q, head, &io, status, c->out.op, 1, &res))
            return 1;
        if (res < 0)
            st = VIRTIO_BLK_S_IOERR;
        break;
    }
    case VIRTIO_BLK_T_GET_ID: {
        c->out.op = DP_ST_GET_ID;
        uint64_t n = in_len < sizeof blk->serial ? in_len : sizeof blk->serial;
        dp_iov_scatter(c->wr, c->nwr, blk->serial, n);
        written = n;
        break;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        c->out.op = type == VIRTIO_BLK_T_DISCARD ? DP_ST_DISCARD : DP_ST_WRITE_ZEROES;
        if (zero_ranges(q, c, type, head, status, &st))
            return 1;
        break;
    default:
        st = VIRTIO_BLK_S_UNSUPP;
    }
    if (st == VIRTIO_BLK_S_IOERR)
        q->errors++;
    c->out.status = st;
    *status = st;
    *used = used_length(written);
    return 0;
}

uint32_t dp_blk_finish(struct dp_queue *q, struct dp_slot *s, int64_t res, struct dp_outcome *o)
{
    uint8_t st = settle(s->io_op, res) < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
    *s->status = st;
    if (st == VIRTIO_BLK_S_IOERR)
        q->errors++;
    *o = (struct dp_outcome){.op = s->op, .status = st};
    if (st == VIRTIO_BLK_S_OK && s->io_op == DP_IO_READ)
        o->bytes_read = s->bytes;
    else if (st == VIRTIO_BLK_S_OK && s->io_op == DP_IO_WRITE)
        o->bytes_written = s->bytes;
    return st == VIRTIO_BLK_S_OK ? s->written : 1;
}
