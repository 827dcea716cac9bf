/*
 * virtio-blk requests (virtio 1.x, 5.2.6): a header {type, ioprio, sector} in the
 * device-readable buffers, data, and a status byte at the end of the device-writable ones.
 * Every request is checked against the device (sector range, read-only, supported
 * commands, range counts) before anything reaches the backend. Reads and writes may stay in
 * flight on the backend when the ring allows it (`head` >= 0); the rest complete here.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "blk.h"
#include "chain.h"
#include "iov.h"
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

/* Start a read or write: 1 when the backend queued it for `head`, else 0 with *res set. */
static int transfer(struct dp_queue *q, int head, struct dp_io *io, uint8_t *status, int op,
                    int64_t *res)
{
    struct dp_backend *b = q->backend;
    struct dp_slot *s = head >= 0 && q->slots && io->len ? &q->slots[head] : NULL;
    if (s && !hold_iov(s, io))
        s = NULL;
    io->tag = (uint64_t)head;
    if (b->ops->start(b, io, s != NULL, res) != DP_IO_QUEUED)
        return 0;
    s->status = status;
    s->write = io->op == DP_IO_WRITE;
    s->op = op;
    s->bytes = io->len;
    s->written = s->write ? 1 : used_length(io->len);
    s->busy = 1;
    q->inflight++;
    return 1;
}

static int64_t now(struct dp_queue *q, struct dp_io *io)
{
    int64_t res;
    q->backend->ops->start(q->backend, io, 0, &res);
    return res;
}

/* DISCARD and WRITE_ZEROES: all ranges are checked before any is acted on. */
static uint8_t zero_ranges(struct dp_queue *q, struct dp_chain *c, uint32_t type)
{
    const struct dp_blk *blk = &q->blk;
    struct virtio_blk_discard_write_zeroes r[MAX_RANGES];
    if (!blk->can_discard)
        return VIRTIO_BLK_S_UNSUPP;
    if (blk->readonly || c->rd_len == 0 || c->rd_len % sizeof *r ||
        c->rd_len / sizeof *r > blk->max_discard_seg || c->rd_len / sizeof *r > MAX_RANGES)
        return VIRTIO_BLK_S_IOERR;
    uint32_t count = (uint32_t)(c->rd_len / sizeof *r);
    dp_iov_gather(c->rd, c->nrd, (uint8_t *)r, c->rd_len);
    for (uint32_t i = 0; i < count; i++) {
        if (r[i].flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP ||
            (type == VIRTIO_BLK_T_DISCARD && r[i].flags))
            return VIRTIO_BLK_S_UNSUPP;
        if (!in_range(blk, r[i].sector, (uint64_t)r[i].num_sectors * SECTOR))
            return VIRTIO_BLK_S_IOERR;
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
        int64_t rc = now(q, &io);
        /* A discard is a hint: a backing that cannot deallocate has done its part. */
        if (rc < 0 && !(type == VIRTIO_BLK_T_DISCARD && (rc == -EOPNOTSUPP || rc == -EINVAL)))
            return VIRTIO_BLK_S_IOERR;
    }
    return VIRTIO_BLK_S_OK;
}

int dp_blk_serve(struct dp_queue *q, struct dp_chain *c, int head, uint32_t *used)
{
    const struct dp_blk *blk = &q->blk;
    struct iovec *last = &c->wr[c->nwr - 1];
    uint8_t *status = (uint8_t *)last->iov_base + last->iov_len - 1;
    c->out.op = DP_ST_OTHER;
    *used = 1;
    struct virtio_blk_outhdr header;
    if (c->bad || c->rd_len < sizeof header) {
        c->out.status = VIRTIO_BLK_S_IOERR;
        *status = VIRTIO_BLK_S_IOERR;
        q->errors++;
        return 0;
    }
    dp_iov_gather(c->rd, c->nrd, (uint8_t *)&header, sizeof header);
    uint32_t type = header.type;
    uint64_t sector = header.sector;
    c->nrd = dp_iov_skip(c->rd, c->nrd, sizeof header);
    c->rd_len -= sizeof header;
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
        if (transfer(q, head, &io, status, c->out.op, &res))
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
        if (transfer(q, head, &io, status, c->out.op, &res))
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
        if (!blk->can_flush)
            st = VIRTIO_BLK_S_UNSUPP;
        else if (now(q, &io) < 0)
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
        st = zero_ranges(q, c, type);
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
    uint8_t st = res < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
    *s->status = st;
    if (st == VIRTIO_BLK_S_IOERR)
        q->errors++;
    *o = (struct dp_outcome){.op = s->op, .status = st};
    if (st == VIRTIO_BLK_S_OK && s->write)
        o->bytes_written = s->bytes;
    else if (st == VIRTIO_BLK_S_OK)
        o->bytes_read = s->bytes;
    return st == VIRTIO_BLK_S_OK ? s->written : 1;
}
