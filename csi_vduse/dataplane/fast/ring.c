/*
 * The dataplane's per-request loop for one virtqueue (split or packed) of a virtio-blk
 * device: walk descriptor chains (direct and indirect), translate IOVAs through the queue's
 * table of mapped IOTLB regions, serve the request on the backing fd, publish the used
 * element, and raise one interrupt per batch (VIRTIO_RING_F_EVENT_IDX aware).
 *
 * On split rings, reads and writes go to the queue's dp_aio (io_uring or a thread pool,
 * aio.c): everything taken in one pass over the avail ring is submitted together, and each
 * request is completed when its transfer finishes, in any order. Other requests (flush,
 * discard, get id, errors) are served on the spot. Packed rings serve everything in order.
 *
 * The guest driver is untrusted: every index, length, address and flag is checked
 * before use. A queue whose size, ring areas (overlapping, misaligned) or start positions
 * are impossible is refused when it starts (dp_queue_init, dp_log_attach). A chain whose
 * buffers cannot all be translated gets IOERR when its status byte can be found, and is
 * handed back untouched when it cannot. A ring whose indices are impossible, or that
 * posts a head again while its request is in flight, stops the queue (DP_BROKEN); what
 * is in flight completes first, untouched.
 *
 * With an in-flight log attached (dp_log_attach), each request is marked in the log's
 * mapped file before it is served and unmarked once its used element is published, so a
 * process that takes over the queue after a crash serves again exactly the requests that
 * were taken and never completed (recover), and nothing twice.
 *
 * Mappings are owned by Python. An IOVA that is not in the table makes dp_serve
 * return DP_NEED_MAP before any side effect of the request, so the request is
 * simply parsed again once Python added the mapping (or declared it unmappable).
 * Python only changes the table while the thread that runs this code is paused, and a
 * queue pauses only once nothing is in flight, so no transfer outlives its mapping.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/vduse.h>

#include "ring.h"

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2
#define DESC_F_INDIRECT 4
#define AVAIL_F_NO_INTERRUPT 1

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define WZ_FLAG_UNMAP 1u
#define SECTOR 512u
#define MAX_RANGES 64
/* Interrupt before the batch ends once this much data completed: the driver can reap and
 * resubmit while large requests are still being copied, instead of waiting for all. */
#define NOTIFY_BYTES (256u << 10)
/*
 * Which reads and writes leave the queue thread (see dp_aio_attach). A backing that cannot
 * be read without blocking (RWF_NOWAIT: tmpfs, for one) makes io_uring hand every request
 * to a worker thread, which costs more than a small copy; reads up to INLINE_MAX are
 * served on the spot, as in the thread pool, larger ones run beside the queue thread.
 * Buffered writes to one file take its inode lock in turn wherever they run, so for such
 * backings they stay on the queue thread: a worker would only add a handoff.
 */
#define INLINE_MAX (64u << 10)
#define SPREAD_MIN (128u << 10)

struct vdesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
} __attribute__((packed));

/* How a chain was collected; see walk_table. */
struct chain {
    struct iovec *rd, *wr;
    uint32_t nrd, nwr;
    uint64_t rd_len, wr_len;
    int bad;        /* a buffer broke a rule: the request fails with IOERR */
    int status_ok;  /* the final descriptor is mapped, device-writable and non-empty */
    int need_map;   /* an IOVA is missing from the table: retry after mapping */
    /* What serve() did, for the stats. */
    int op;
    uint8_t st;
    uint64_t bytes_read, bytes_written;
};

static const uint8_t zeroes[65536];

/* Ring areas in IOVA space: where, how long, how aligned (virtio 1.x, 2.7 and 2.8). */
struct area {
    const char *name;
    uint64_t iova, len, align;
};

static void ring_areas(const struct dp_queue *q, struct area out[3])
{
    uint64_t num = q->num;
    out[0] = (struct area){"descriptor", q->desc_iova, 16 * num, 16};
    if (q->packed) {
        out[1] = (struct area){"driver event", q->avail_iova, 4, 4};
        out[2] = (struct area){"device event", q->used_iova, 4, 4};
    } else {
        out[1] = (struct area){"avail", q->avail_iova, 6 + 2 * num, 2};
        out[2] = (struct area){"used", q->used_iova, 6 + 8 * num, 4};
    }
}

static int refuse(struct dp_queue *q, const char *why)
{
    snprintf(q->error, sizeof q->error, "queue %u: %s", q->index, why);
    return -EINVAL;
}

static int packed_position_ok(const struct dp_queue *q, uint16_t at)
{
    return (at & 0x7fffu) < q->num;
}

/*
 * The driver (or a VMM through vhost-vdpa) chose every value checked here. Areas that
 * overlap would let a store to one ring move another's index under the loop (a used-ring
 * store bumping the avail index serves forever); misaligned ones break the atomicity the
 * ring protocol relies on; start positions outside the ring index past it.
 */
static int check_queue(struct dp_queue *q)
{
    char why[120];
    if (q->num == 0 || q->num > DP_MAX_QUEUE_SIZE || (!q->packed && (q->num & (q->num - 1)))) {
        snprintf(why, sizeof why, "size %u is not a valid queue size", q->num);
        return refuse(q, why);
    }
    struct area a[3];
    ring_areas(q, a);
    for (int i = 0; i < 3; i++) {
        if (a[i].iova & (a[i].align - 1)) {
            snprintf(why, sizeof why, "%s area at %#llx is not %llu-byte aligned", a[i].name,
                     (unsigned long long)a[i].iova, (unsigned long long)a[i].align);
            return refuse(q, why);
        }
        if (a[i].iova + a[i].len < a[i].iova) {
            snprintf(why, sizeof why, "%s area runs past the top of the IOVA space", a[i].name);
            return refuse(q, why);
        }
        for (int j = 0; j < i; j++) {
            if (a[i].iova < a[j].iova + a[j].len && a[j].iova < a[i].iova + a[i].len) {
                snprintf(why, sizeof why, "%s and %s areas overlap", a[j].name, a[i].name);
                return refuse(q, why);
            }
        }
    }
    if (q->packed && !(packed_position_ok(q, q->last_avail) && packed_position_ok(q, q->used_idx))) {
        snprintf(why, sizeof why, "packed start positions %#x, %#x lie outside a %u ring",
                 q->last_avail, q->used_idx, q->num);
        return refuse(q, why);
    }
    return 0;
}

int dp_queue_init(struct dp_queue *q)
{
    int rc = check_queue(q);
    if (rc)
        return rc;
    q->iov_cap = 2 * q->num + 8;
    q->iov = calloc(2 * (size_t)q->iov_cap, sizeof(struct iovec));
    return q->iov ? 0 : -ENOMEM;
}

static void drain(struct dp_queue *q);

/* The aio, if any, stays its owner's: it outlives the queue (see engine.py). */
void dp_queue_free(struct dp_queue *q)
{
    if (q->aio)
        drain(q);
    q->aio = NULL;
    if (q->slots)
        for (uint32_t i = 0; i < q->num; i++)
            free(q->slots[i].big);
    free(q->slots);
    q->slots = NULL;
    free(q->iov);
    q->iov = NULL;
}

/*
 * Serve this split queue's reads and writes through `aio` from now on. Returns its kind,
 * or DP_AIO_NONE when the queue serves them in order itself: packed rings (their
 * in-flight log needs in-order completion) and queues larger than the aio's depth.
 */
int dp_aio_attach(struct dp_queue *q, struct dp_aio *aio)
{
    if (!aio || q->packed || q->num > dp_aio_depth(aio))
        return DP_AIO_NONE;
    q->slots = calloc(q->num, sizeof *q->slots);
    if (!q->slots)
        return -ENOMEM;
    q->aio = aio;
    int kind = dp_aio_kind(aio);
    int inline_small =
        kind == DP_AIO_THREADS || !dp_aio_nowait(q->directfd >= 0 ? q->directfd : q->backfd);
    q->async_min = inline_small ? INLINE_MAX + 1 : 0;
    q->async_write_min = inline_small ? UINT32_MAX : 0;
    return kind;
}

void *dp_mmap(int fd, uint64_t length, uint64_t offset, int writable)
{
    void *p = mmap(NULL, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd,
                   (off_t)offset);
    return p == MAP_FAILED ? NULL : p;
}

int dp_munmap(void *host, uint64_t length)
{
    return munmap(host, length) ? -errno : 0;
}

/* Python could not map `iova` for the current request. */
void dp_mark_bad(struct dp_queue *q, uint64_t iova)
{
    if (q->nbad < DP_MAX_BAD)
        q->bad[q->nbad++] = iova;
}

int dp_map_add(struct dp_queue *q, uint64_t start, uint64_t last, void *host, int writable)
{
    if (q->nmaps == DP_MAX_MAPS || last < start)
        return -ENOSPC;
    q->maps[q->nmaps++] = (struct dp_map){start, last, host, writable};
    return 0;
}

/* Forget every mapping overlapping [start, last]; returns how many. */
int dp_map_invalidate(struct dp_queue *q, uint64_t start, uint64_t last)
{
    int kept = 0, dropped = 0;
    for (int i = 0; i < q->nmaps; i++) {
        if (q->maps[i].start <= last && q->maps[i].last >= start)
            dropped++;
        else
            q->maps[kept++] = q->maps[i];
    }
    q->nmaps = kept;
    q->rings_ok = 0;
    return dropped;
}

static struct dp_map *find(struct dp_queue *q, uint64_t iova)
{
    for (int i = 0; i < q->nmaps; i++)
        if (q->maps[i].start <= iova && iova <= q->maps[i].last)
            return &q->maps[i];
    return NULL;
}

/* 0 mapped, 1 missing (need_map set), -1 not allowed. */
static int miss(struct dp_queue *q, uint64_t iova)
{
    for (int i = 0; i < q->nbad; i++)
        if (q->bad[i] == iova)
            return -1;
    if (q->nbad == DP_MAX_BAD)
        return -1; /* that many holes in one request: no more round trips for it */
    q->miss_iova = iova;
    return 1;
}

/* A host pointer to [iova, iova+len) lying within one mapping (ring areas, tables). */
static int contiguous(struct dp_queue *q, uint64_t iova, uint64_t len, int writable,
                      uint8_t **host)
{
    struct dp_map *m = find(q, iova);
    if (!m)
        return miss(q, iova);
    if (len == 0 || len - 1 > m->last - iova || (writable && !m->writable))
        return -1;
    *host = m->host + (iova - m->start);
    return 0;
}

/* Append [iova, iova+len) to iov, split where mappings end. */
static int translate(struct dp_queue *q, uint64_t iova, uint64_t len, int writable,
                     struct iovec *iov, uint32_t *n)
{
    while (len) {
        struct dp_map *m = find(q, iova);
        if (!m)
            return miss(q, iova);
        if (writable && !m->writable)
            return -1;
        if (*n == q->iov_cap)
            return -1;
        uint64_t room = m->last - iova; /* bytes after the first, so no overflow */
        uint64_t chunk = len - 1 <= room ? len : room + 1;
        iov[*n].iov_base = m->host + (iova - m->start);
        iov[*n].iov_len = chunk;
        (*n)++;
        len -= chunk;
        iova += chunk;
        if (len && iova == 0)
            return -1; /* wrapped past the top of the IOVA space */
    }
    return 0;
}

/* One descriptor's buffer into the chain; returns 1 when mapped. */
static int take(struct dp_queue *q, struct chain *c, const struct vdesc *d)
{
    int rc;
    if (d->flags & DESC_F_WRITE) {
        rc = translate(q, d->addr, d->len, 1, c->wr, &c->nwr);
        if (rc == 0)
            c->wr_len += d->len;
    } else if (c->nwr || c->wr_len) {
        rc = -1; /* a device-readable buffer after a writable one */
    } else {
        rc = translate(q, d->addr, d->len, 0, c->rd, &c->nrd);
        if (rc == 0)
            c->rd_len += d->len;
    }
    if (rc > 0)
        c->need_map = 1;
    else if (rc < 0)
        c->bad = 1;
    return rc == 0;
}

/*
 * Follow a table of `count` descriptors from `first`. A bad buffer is noted and skipped so
 * the final descriptor can still be found; a link out of the table or a loop ends the walk
 * with no status byte. `nested` is set inside an indirect table.
 */
static void walk_table(struct dp_queue *q, struct chain *c, const uint8_t *table,
                       uint32_t count, uint32_t first, int nested)
{
    uint32_t i = first;
    for (uint32_t steps = 0; steps < count; steps++) {
        struct vdesc d;
        memcpy(&d, table + 16 * (size_t)i, sizeof d);
        int mapped = 0;
        if (d.flags & DESC_F_INDIRECT) {
            if (nested || !q->indirect || (d.flags & DESC_F_NEXT) || d.len % 16 ||
                d.len / 16 > q->num || d.len == 0) {
                c->bad = 1;
            } else {
                uint8_t *inner;
                int rc = contiguous(q, d.addr, d.len, 0, &inner);
                if (rc > 0) {
                    c->need_map = 1;
                } else if (rc < 0) {
                    c->bad = 1;
                } else {
                    walk_table(q, c, inner, d.len / 16, 0, 1);
                    return;
                }
            }
        } else {
            mapped = take(q, c, &d);
        }
        if (!(d.flags & DESC_F_NEXT)) {
            c->status_ok = mapped && (d.flags & DESC_F_WRITE) && d.len > 0;
            return;
        }
        if (d.next >= count)
            return; /* links beyond the table */
        i = d.next;
    }
    /* loops */
}

static int resolve_rings(struct dp_queue *q)
{
    uint64_t num = q->num;
    /* Packed: a writable descriptor ring and two 4-byte event suppression areas. */
    int rc = contiguous(q, q->desc_iova, 16 * num, q->packed, &q->desc);
    if (rc == 0)
        rc = contiguous(q, q->avail_iova, q->packed ? 4 : 6 + 2 * num, 0, &q->avail);
    if (rc == 0)
        rc = contiguous(q, q->used_iova, q->packed ? 4 : 6 + 8 * num, 1, &q->used);
    if (rc < 0)
        snprintf(q->error, sizeof q->error, "queue %u: ring areas are not mapped as needed",
                 q->index);
    q->rings_ok = rc == 0;
    return rc;
}

/* The first `len` bytes of an iovec list, gathered. */
static void gather(const struct iovec *iov, uint32_t n, uint8_t *out, size_t len)
{
    for (uint32_t i = 0; i < n && len; i++) {
        size_t take_len = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(out, iov[i].iov_base, take_len);
        out += take_len;
        len -= take_len;
    }
}

/* Drop the last byte of an iovec list (the status byte); returns the new count. */
static uint32_t drop_last_byte(struct iovec *iov, uint32_t n)
{
    if (--iov[n - 1].iov_len == 0)
        n--;
    return n;
}

/* Single writer per block: relaxed stores keep each word whole for concurrent readers. */
static inline void bump(uint64_t *word, uint64_t by)
{
    __atomic_store_n(word, *word + by, __ATOMIC_RELAXED);
}

/* The fd for a transfer: the O_DIRECT one when everything in it is aligned for it. */
static int pick_fd(struct dp_queue *q, const struct iovec *iov, uint32_t n, uint64_t off,
                   uint64_t len)
{
    uint64_t mask = q->dio_align - 1;
    if (q->directfd < 0 || (off | len) & mask)
        return q->backfd;
    for (uint32_t i = 0; i < n; i++)
        if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & mask)
            return q->backfd;
    q->direct++;
    if (q->stats)
        bump(&q->stats[DP_ST_DIRECT], 1);
    return q->directfd;
}

static int in_range(struct dp_queue *q, uint64_t sector, uint64_t len)
{
    if (len % SECTOR)
        return 0;
    return sector <= q->capacity / SECTOR && len <= q->capacity - sector * SECTOR;
}

static int zero_range(struct dp_queue *q, uint64_t off, uint64_t len, int unmap)
{
    int mode = unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                     : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    if (fallocate(q->backfd, mode, (off_t)off, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != EINVAL)
        return -errno;
    if (!unmap && fallocate(q->backfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                            (off_t)len) == 0)
        return 0; /* a hole reads back as zeroes too */
    while (len) {
        size_t chunk = len < sizeof zeroes ? len : sizeof zeroes;
        ssize_t done = pwrite(q->backfd, zeroes, chunk, (off_t)off);
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

/* DISCARD and WRITE_ZEROES: data_out holds {sector u64, num_sectors u32, flags u32} ranges;
 * all are checked before any is acted on. */
struct zrange {
    uint64_t sector;
    uint32_t sectors, flags;
};

static uint8_t zero_ranges(struct dp_queue *q, struct chain *c, uint32_t type)
{
    struct zrange r[MAX_RANGES];
    if (!q->can_discard)
        return S_UNSUPP;
    if (q->readonly || c->rd_len == 0 || c->rd_len % 16 || c->rd_len / 16 > q->max_discard_seg ||
        c->rd_len / 16 > MAX_RANGES)
        return S_IOERR;
    uint32_t count = (uint32_t)(c->rd_len / 16);
    gather(c->rd, c->nrd, (uint8_t *)r, c->rd_len);
    for (uint32_t i = 0; i < count; i++) {
        if (r[i].flags & ~WZ_FLAG_UNMAP || (type == T_DISCARD && r[i].flags))
            return S_UNSUPP;
        if (!in_range(q, r[i].sector, (uint64_t)r[i].sectors * SECTOR))
            return S_IOERR;
    }
    for (uint32_t i = 0; i < count; i++) {
        if (!r[i].sectors)
            continue;
        int unmap = type == T_DISCARD || (r[i].flags & WZ_FLAG_UNMAP);
        int rc = zero_range(q, r[i].sector * SECTOR, (uint64_t)r[i].sectors * SECTOR, unmap);
        if (rc && !(type == T_DISCARD && (rc == -EOPNOTSUPP || rc == -EINVAL)))
            return S_IOERR;
    }
    return S_OK;
}

/* What a used element reports for `data` bytes written before the status byte: the used
 * length is 32 bits, so a transfer of 4 GiB or more reports the most it can. */
static uint32_t used_length(uint64_t data)
{
    return data >= UINT32_MAX ? UINT32_MAX : (uint32_t)data + 1;
}

/* Queue a read or write on the aio for `head`; 0 when it must be served here instead. */
static int defer(struct dp_queue *q, int head, int fd, const struct iovec *iov, uint32_t n,
                 uint64_t off, int write, uint64_t len, uint8_t *status, int op)
{
    if (head < 0 || !q->aio || len < (write ? q->async_write_min : q->async_min) || len == 0)
        return 0;
    struct dp_slot *s = &q->slots[head];
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
    memcpy(s->iov, iov, n * sizeof *iov);
    if (dp_aio_queue(q->aio, fd, write, s->iov, n, off, (uint64_t)head,
                     len >= SPREAD_MIN))
        return 0;
    s->status = status;
    s->write = write;
    s->op = op;
    s->bytes = len;
    s->written = write ? 1 : used_length(len);
    s->busy = 1;
    q->inflight++;
    return 1;
}

/*
 * Serve one collected chain; *used is what its used element reports (the bytes written
 * into it, status included). With `head` >= 0 a read or write may be handed to the aio
 * instead: then it returns 1, and complete() finishes it.
 */
static int serve(struct dp_queue *q, struct chain *c, int head, uint32_t *used)
{
    uint8_t *status;
    struct iovec *last = &c->wr[c->nwr - 1];
    status = (uint8_t *)last->iov_base + last->iov_len - 1;
    c->op = DP_ST_OTHER;
    *used = 1;
    if (c->bad || c->rd_len < 16) {
        c->st = S_IOERR;
        *status = S_IOERR;
        q->errors++;
        return 0;
    }
    uint8_t header[16];
    gather(c->rd, c->nrd, header, 16);
    uint32_t type;
    uint64_t sector;
    memcpy(&type, header, 4);
    memcpy(&sector, header + 8, 8);
    c->nrd = dp_iov_skip(c->rd, c->nrd, 16);
    c->rd_len -= 16;
    uint64_t in_len = c->wr_len - 1;
    c->nwr = drop_last_byte(c->wr, c->nwr);
    uint64_t written = 0;
    int fd;
    uint8_t st = S_OK;
    switch (type) {
    case T_IN:
        c->op = DP_ST_READ;
        if (!in_range(q, sector, in_len)) {
            st = S_IOERR;
            break;
        }
        fd = pick_fd(q, c->wr, c->nwr, sector * SECTOR, in_len);
        if (defer(q, head, fd, c->wr, c->nwr, sector * SECTOR, 0, in_len, status, c->op))
            return 1;
        if (dp_transfer(fd, 0, c->wr, c->nwr, sector * SECTOR) < 0) {
            st = S_IOERR;
        } else {
            written = in_len;
            c->bytes_read = in_len;
        }
        break;
    case T_OUT:
        c->op = DP_ST_WRITE;
        if (q->readonly || !in_range(q, sector, c->rd_len)) {
            st = S_IOERR;
            break;
        }
        fd = pick_fd(q, c->rd, c->nrd, sector * SECTOR, c->rd_len);
        if (defer(q, head, fd, c->rd, c->nrd, sector * SECTOR, 1, c->rd_len, status, c->op))
            return 1;
        if (dp_transfer(fd, 1, c->rd, c->nrd, sector * SECTOR) < 0)
            st = S_IOERR;
        else
            c->bytes_written = c->rd_len;
        break;
    case T_FLUSH:
        c->op = DP_ST_FLUSH;
        if (!q->can_flush)
            st = S_UNSUPP;
        else if (fdatasync(q->backfd))
            st = S_IOERR;
        break;
    case T_GET_ID: {
        c->op = DP_ST_GET_ID;
        uint64_t n = in_len < DP_ID_BYTES ? in_len : DP_ID_BYTES;
        const uint8_t *src = q->serial;
        uint64_t left = n;
        for (uint32_t i = 0; i < c->nwr && left; i++) {
            size_t piece = c->wr[i].iov_len < left ? c->wr[i].iov_len : left;
            memcpy(c->wr[i].iov_base, src, piece);
            src += piece;
            left -= piece;
        }
        written = n;
        break;
    }
    case T_DISCARD:
    case T_WRITE_ZEROES:
        c->op = type == T_DISCARD ? DP_ST_DISCARD : DP_ST_WRITE_ZEROES;
        st = zero_ranges(q, c, type);
        break;
    default:
        st = S_UNSUPP;
    }
    if (st == S_IOERR)
        q->errors++;
    c->st = st;
    *status = st;
    *used = used_length(written);
    return 0;
}

static void account(struct dp_queue *q, const struct chain *c, const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t elapsed = (int64_t)(t1.tv_sec - t0->tv_sec) * 1000000000 + (t1.tv_nsec - t0->tv_nsec);
    uint64_t ns = elapsed > 0 ? (uint64_t)elapsed : 0;
    /* The smallest k with ns <= 16 us << k, from ceil(ns / 16 us). */
    uint64_t units = (ns + 15999) / 16000;
    int bucket = units <= 1 ? 0 : 64 - __builtin_clzll(units - 1);
    if (bucket > DP_ST_BUCKETS - 1)
        bucket = DP_ST_BUCKETS - 1;
    uint64_t *s = q->stats;
    bump(&s[c->op], 1);
    if (c->bytes_read)
        bump(&s[DP_ST_BYTES_READ], c->bytes_read);
    if (c->bytes_written)
        bump(&s[DP_ST_BYTES_WRITTEN], c->bytes_written);
    if (c->st == S_IOERR)
        bump(&s[DP_ST_IOERR], 1);
    else if (c->st == S_UNSUPP)
        bump(&s[DP_ST_UNSUPP], 1);
    bump(&s[DP_ST_LATENCY_NS], ns);
    bump(&s[DP_ST_BUCKET0 + bucket], 1);
}

static void push_used(struct dp_queue *q, uint16_t head, uint32_t written)
{
    uint8_t *elem = q->used + 4 + 8 * (size_t)(q->used_idx % q->num);
    uint32_t id = head;
    memcpy(elem, &id, 4);
    memcpy(elem + 4, &written, 4);
    q->used_idx++;
    __atomic_store_n((uint16_t *)(q->used + 2), q->used_idx, __ATOMIC_RELEASE);
}

/* The log lives in a shared file read by our successor: keep these stores in order. */
static inline void log_store8(uint8_t *p, uint8_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void log_store16(uint16_t *p, uint16_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static void log_taken(struct dp_queue *q, uint16_t head, uint16_t next_avail)
{
    if (q->log) {
        log_store8(&q->log->inflight[head], 1);
        log_store16(&q->log->last_avail, next_avail);
    }
}

static void log_completed(struct dp_queue *q, uint16_t head)
{
    if (q->log) {
        log_store8(&q->log->inflight[head], 0);
        log_store16(&q->log->used_idx, q->used_idx);
    }
}

int dp_log_attach(struct dp_queue *q, void *block, uint32_t capacity, int resume)
{
    struct dp_vqlog *log = block;
    char why[120];
    if (q->num > capacity) {
        snprintf(why, sizeof why, "size %u is more than the in-flight log holds (%u)", q->num,
                 capacity);
        return refuse(q, why);
    }
    if (resume) {
        if (log->valid != 1 || log->num != q->num) {
            snprintf(why, sizeof why, "the in-flight log is %s", log->valid != 1
                     ? "not valid" : "laid out for another queue size");
            return refuse(q, why);
        }
        uint16_t last_avail = log->last_avail, used_idx = log->used_idx;
        if (q->packed && !(packed_position_ok(q, last_avail) && packed_position_ok(q, used_idx))) {
            snprintf(why, sizeof why, "the in-flight log's positions %#x, %#x lie outside a %u ring",
                     last_avail, used_idx, q->num);
            return refuse(q, why);
        }
        q->last_avail = last_avail;
        q->used_idx = used_idx;
        q->recovering = 1;
    } else {
        log_store16(&log->valid, 0);
        memset(log->inflight, 0, q->num);
        log->num = (uint16_t)q->num;
        log->last_avail = q->last_avail;
        log->used_idx = q->used_idx;
        log->replayed = 0;
        log_store16(&log->valid, 1);
    }
    q->log = log;
    return 0;
}

/*
 * Take over from a process that died serving this queue. The log can trail the rings by
 * at most one step of each protocol above: a used element published but not logged, or a
 * head marked in flight before last_avail moved past it. Both are settled from the rings,
 * then every request still marked is served again and completed. Rewriting the same data
 * is harmless: the driver was never told the first attempt finished. Returns DP_IDLE
 * when done, or DP_NEED_MAP / DP_BROKEN (in which case it runs again on the next call).
 */
static int recover_packed(struct dp_queue *q);

static int recover(struct dp_queue *q)
{
    if (q->packed)
        return recover_packed(q);
    struct dp_vqlog *log = q->log;
    if ((uint16_t)(q->last_avail - q->used_idx) > q->num) {
        snprintf(q->error, sizeof q->error,
                 "queue %u: the log's used index %u is not within a ring of its avail index %u",
                 q->index, q->used_idx, q->last_avail);
        return DP_BROKEN;
    }
    uint16_t ring_used = __atomic_load_n((uint16_t *)(q->used + 2), __ATOMIC_ACQUIRE);
    uint16_t ahead = ring_used - q->used_idx;
    if (ahead > 1 || (ahead == 1 && q->used_idx == q->last_avail)) {
        snprintf(q->error, sizeof q->error, "queue %u: used idx %u runs %u ahead of the log",
                 q->index, ring_used, ahead);
        return DP_BROKEN;
    }
    if (ahead == 1) {
        uint32_t id;
        memcpy(&id, q->used + 4 + 8 * (size_t)((uint16_t)(ring_used - 1) % q->num), 4);
        if (id < q->num)
            log_store8(&log->inflight[id], 0);
        q->used_idx = ring_used;
        log_store16(&log->used_idx, ring_used);
    }
    uint16_t avail_idx = __atomic_load_n((uint16_t *)(q->avail + 2), __ATOMIC_ACQUIRE);
    uint32_t flagged = 0;
    for (uint32_t head = 0; head < q->num; head++)
        flagged += log->inflight[head] != 0;
    if (avail_idx != q->last_avail && flagged == (uint16_t)(q->last_avail - q->used_idx) + 1u) {
        uint16_t head;
        memcpy(&head, q->avail + 4 + 2 * (size_t)(q->last_avail % q->num), 2);
        /* A head in flight cannot have been posted again, so this one was taken. */
        if (head < q->num && log->inflight[head]) {
            q->last_avail++;
            log_store16(&log->last_avail, q->last_avail);
        }
    }
    /* Settled, every request taken and not completed is flagged, and nothing else. */
    if (flagged != (uint16_t)(q->last_avail - q->used_idx)) {
        snprintf(q->error, sizeof q->error,
                 "queue %u: the log flags %u requests in flight, its indices say %u", q->index,
                 flagged, (uint16_t)(q->last_avail - q->used_idx));
        return DP_BROKEN;
    }
    for (uint32_t head = 0; head < q->num; head++) {
        if (!log->inflight[head])
            continue;
        struct chain c = {.rd = q->iov, .wr = q->iov + q->iov_cap};
        walk_table(q, &c, q->desc, q->num, head, 0);
        if (c.need_map)
            return DP_NEED_MAP;
        uint32_t written = 0;
        if (c.status_ok)
            serve(q, &c, -1, &written);
        q->nbad = 0;
        push_used(q, (uint16_t)head, written);
        log_completed(q, (uint16_t)head);
        q->replayed++;
        log->replayed++;
    }
    q->recovering = 0;
    return DP_IDLE;
}

static void raise_interrupt(struct dp_queue *q)
{
    q->interrupts++;
    if (q->irqfd >= 0) {
        uint64_t one = 1;
        (void)!write(q->irqfd, &one, sizeof one);
    } else {
        uint32_t index = q->index;
        /* EINVAL while a reset races with the batch is harmless. */
        (void)ioctl(q->devfd, VDUSE_VQ_INJECT_IRQ, &index);
    }
}

static void notify(struct dp_queue *q)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* used idx visible before reading the driver's wish */
    int need;
    if (q->event_idx) {
        uint16_t event = __atomic_load_n((uint16_t *)(q->avail + 4 + 2 * (size_t)q->num),
                                         __ATOMIC_ACQUIRE);
        uint16_t new_idx = q->used_idx, old = q->signalled_used;
        need = !q->signalled_valid ||
               (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
    } else {
        need = !(__atomic_load_n((uint16_t *)q->avail, __ATOMIC_ACQUIRE) & AVAIL_F_NO_INTERRUPT);
    }
    q->signalled_used = q->used_idx;
    q->signalled_valid = 1;
    if (need)
        raise_interrupt(q);
}

/* Finish a request the aio completed: status, stats, used element, log. */
static void complete(struct dp_queue *q, const struct dp_aio_done *done)
{
    uint16_t head = (uint16_t)done->tag;
    struct dp_slot *s = &q->slots[head];
    uint8_t st = done->res < 0 ? S_IOERR : S_OK;
    *s->status = st;
    if (st == S_IOERR)
        q->errors++;
    if (q->stats) {
        struct chain c = {.op = s->op, .st = st};
        if (st == S_OK && s->write)
            c.bytes_written = s->bytes;
        else if (st == S_OK)
            c.bytes_read = s->bytes;
        account(q, &c, &s->t0);
    }
    q->inflight--;
    s->busy = 0;
    push_used(q, head, st == S_OK ? s->written : 1);
    log_completed(q, head);
}

/* Finish what the aio completed, waiting for one completion at least with `wait`. */
static unsigned reap(struct dp_queue *q, int wait)
{
    struct dp_aio_done done[32];
    unsigned total = 0, n;
    do {
        n = dp_aio_reap(q->aio, done, 32, wait && total == 0);
        for (unsigned i = 0; i < n; i++)
            complete(q, &done[i]);
        total += n;
    } while (n == 32);
    return total;
}

/* Complete everything in flight (before pausing, stopping or reporting a broken ring). */
static void drain(struct dp_queue *q)
{
    unsigned finished = 0;
    while (q->inflight)
        finished += reap(q, 1);
    if (finished)
        notify(q);
}

/* Serve everything the driver posted on a split ring; one interrupt for the batch. An
 * interrupt is owed already when `unsignalled` is set. Reads and writes may be left in
 * flight on the aio; the next pass completes them. */
static int serve_split(struct dp_queue *q, int unsignalled)
{
    uint64_t done_bytes = 0;
    int result = DP_IDLE;
    for (;;) {
        if (q->inflight && reap(q, 0))
            unsignalled = 1;
        if (q->pause_req) {
            result = DP_PAUSE;
            break;
        }
        uint16_t avail_idx = __atomic_load_n((uint16_t *)(q->avail + 2), __ATOMIC_ACQUIRE);
        uint16_t pending = avail_idx - q->last_avail;
        if (pending > q->num) {
            snprintf(q->error, sizeof q->error, "queue %u: avail idx ran %u ahead of a %u ring",
                     q->index, pending, q->num);
            result = DP_BROKEN;
            break;
        }
        if (pending == 0) {
            if (q->event_idx) {
                __atomic_store_n((uint16_t *)(q->used + 4 + 8 * (size_t)q->num), q->last_avail,
                                 __ATOMIC_RELEASE);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                if (__atomic_load_n((uint16_t *)(q->avail + 2), __ATOMIC_ACQUIRE) !=
                    q->last_avail)
                    continue;
            }
            break;
        }
        while (pending--) {
            if (q->pause_req) {
                result = DP_PAUSE;
                goto done;
            }
            uint16_t head;
            memcpy(&head, q->avail + 4 + 2 * (size_t)(q->last_avail % q->num), 2);
            if (head >= q->num) {
                snprintf(q->error, sizeof q->error, "queue %u: head %u out of range", q->index,
                         head);
                result = DP_BROKEN;
                goto done;
            }
            if (q->slots && q->slots[head].busy) {
                /* Its buffers and slot belong to the request in flight: touch neither. */
                snprintf(q->error, sizeof q->error,
                         "queue %u: head %u posted again while in flight", q->index, head);
                result = DP_BROKEN;
                goto done;
            }
            struct timespec t0;
            if (q->stats)
                clock_gettime(CLOCK_MONOTONIC, &t0);
            struct chain c = {.rd = q->iov, .wr = q->iov + q->iov_cap};
            walk_table(q, &c, q->desc, q->num, head, 0);
            if (c.need_map) {
                result = DP_NEED_MAP;
                goto done;
            }
            log_taken(q, head, (uint16_t)(q->last_avail + 1));
            uint32_t written = 0;
            if (c.status_ok) {
                if (serve(q, &c, head, &written)) {
                    if (q->stats)
                        q->slots[head].t0 = t0;
                    q->nbad = 0;
                    q->last_avail++;
                    q->served++;
                    continue;
                }
                if (q->stats)
                    account(q, &c, &t0);
            }
            q->nbad = 0;
            q->last_avail++;
            q->served++;
            push_used(q, head, written);
            log_completed(q, head);
            unsignalled = 1;
            done_bytes += c.rd_len + c.wr_len;
            if (done_bytes >= NOTIFY_BYTES) {
                notify(q);
                unsignalled = 0;
                done_bytes = 0;
            }
        }
        if (q->aio)
            dp_aio_submit(q->aio);
    }
done:
    if (q->aio)
        dp_aio_submit(q->aio);
    if (unsignalled)
        notify(q);
    return result;
}

static int serve_ring(struct dp_queue *q);

/*
 * Serve until paused or until Python is needed: waits on the kick and control eventfds
 * and on the aio's completions. Nothing is left in flight when it returns, except for
 * DP_NEED_MAP (mapping more only adds to what the requests in flight may use).
 */
int dp_run(struct dp_queue *q)
{
    struct pollfd fds[3] = {{.fd = q->kickfd, .events = POLLIN},
                            {.fd = q->ctlfd, .events = POLLIN},
                            {.fd = q->aio ? dp_aio_fd(q->aio) : -1, .events = POLLIN}};
    uint64_t value;
    for (;;) {
        int rc = q->pause_req ? DP_PAUSE : serve_ring(q);
        if (rc == DP_NEED_MAP)
            return rc;
        if (rc != DP_IDLE) {
            drain(q);
            return rc;
        }
        if (poll(fds, 3, -1) < 0 && errno != EINTR) {
            drain(q);
            return DP_BROKEN;
        }
        if (fds[1].revents) {
            (void)!read(q->ctlfd, &value, sizeof value);
            drain(q);
            return DP_PAUSE;
        }
        if (fds[0].revents)
            (void)!read(q->kickfd, &value, sizeof value);
        if (fds[2].revents)
            (void)!read(fds[2].fd, &value, sizeof value);
    }
}

/* ---- Packed virtqueues (VIRTIO_F_RING_PACKED) ----------------------------------------
 *
 * One ring of 16-byte descriptors {addr, len, id, flags} that both sides write: the driver
 * makes a chain available by flipping AVAIL/USED in its descriptors' flags to match its wrap
 * counter (first descriptor last); the device reads chains in ring order and, serving in
 * order, writes one used descriptor {id of the chain's last descriptor, bytes written} over
 * the first descriptor of each chain. Positions are kept as position | wrap counter << 15.
 */
#define PF_AVAIL (1u << 7)
#define PF_USED (1u << 15)
#define EVENT_ENABLE 0
#define EVENT_DISABLE 1
#define EVENT_DESC 2

static inline uint16_t pos_of(uint16_t at)
{
    return at & 0x7fff;
}

static inline int wrap_of(uint16_t at)
{
    return at >> 15;
}

static inline uint16_t advance(const struct dp_queue *q, uint16_t at, uint32_t count)
{
    uint32_t pos = pos_of(at) + count;
    int wrap = wrap_of(at);
    if (pos >= q->num) {
        pos -= q->num;
        wrap ^= 1;
    }
    return (uint16_t)(pos | (uint32_t)wrap << 15);
}

static inline uint16_t desc_flags(const struct dp_queue *q, uint16_t pos)
{
    return __atomic_load_n((uint16_t *)(q->desc + 16 * (size_t)pos + 14), __ATOMIC_ACQUIRE);
}

/* Has the driver made the descriptor at `at` available (for `at`'s wrap counter)? */
static int is_available(const struct dp_queue *q, uint16_t at)
{
    uint16_t flags = desc_flags(q, pos_of(at));
    int wrap = wrap_of(at);
    return !!(flags & PF_AVAIL) == wrap && !!(flags & PF_USED) != wrap;
}

/*
 * Collect the chain that starts at `at`: its buffers into `c`, its buffer id and how many
 * ring descriptors it spans. Returns -1 when the ring itself is broken (a chain longer
 * than the ring), 0 otherwise; a bad buffer only marks the request.
 */
static int walk_packed(struct dp_queue *q, struct chain *c, uint16_t at, uint16_t *id,
                       uint32_t *count)
{
    uint32_t n = 0;
    for (;;) {
        if (n == q->num)
            return -1;
        uint8_t *raw = q->desc + 16 * (size_t)pos_of(advance(q, at, n));
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        memcpy(&addr, raw, 8);
        memcpy(&len, raw + 8, 4);
        memcpy(id, raw + 12, 2);
        memcpy(&flags, raw + 14, 2);
        n++;
        int mapped = 0;
        if (flags & DESC_F_INDIRECT) {
            uint8_t *table;
            int rc = (n != 1 || (flags & DESC_F_NEXT) || !q->indirect || len % 16 || len == 0 ||
                      len / 16 > q->num)
                         ? -1
                         : contiguous(q, addr, len, 0, &table);
            if (rc > 0) {
                c->need_map = 1;
            } else if (rc < 0) {
                c->bad = 1;
            } else {
                /* Only WRITE counts in a table; its entries follow each other. */
                for (uint32_t i = 0; i < len / 16; i++) {
                    struct vdesc d = {0};
                    uint16_t entry_flags;
                    memcpy(&d.addr, table + 16 * (size_t)i, 8);
                    memcpy(&d.len, table + 16 * (size_t)i + 8, 4);
                    memcpy(&entry_flags, table + 16 * (size_t)i + 14, 2);
                    d.flags = entry_flags & DESC_F_WRITE;
                    mapped = take(q, c, &d);
                    if (i == len / 16 - 1)
                        c->status_ok = mapped && (d.flags & DESC_F_WRITE) && d.len > 0;
                }
            }
            if (!(flags & DESC_F_NEXT))
                break;
            continue;
        }
        struct vdesc d = {.addr = addr, .len = len, .flags = flags & DESC_F_WRITE};
        mapped = take(q, c, &d);
        if (!(flags & DESC_F_NEXT)) {
            c->status_ok = mapped && (flags & DESC_F_WRITE) && len > 0;
            break;
        }
    }
    *count = n;
    return 0;
}

/* Write the used descriptor for a chain over its first descriptor, then move past it. */
static void push_used_packed(struct dp_queue *q, uint16_t id, uint32_t written, uint32_t count)
{
    uint8_t *raw = q->desc + 16 * (size_t)pos_of(q->used_idx);
    memcpy(raw + 8, &written, 4);
    memcpy(raw + 12, &id, 2);
    uint16_t flags = wrap_of(q->used_idx) ? (PF_AVAIL | PF_USED) : 0;
    __atomic_store_n((uint16_t *)(raw + 14), flags, __ATOMIC_RELEASE);
    q->used_idx = advance(q, q->used_idx, count);
}

static void notify_packed(struct dp_queue *q)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* used descriptors visible before reading */
    uint16_t off_wrap = __atomic_load_n((uint16_t *)q->avail, __ATOMIC_ACQUIRE);
    uint16_t mode = __atomic_load_n((uint16_t *)(q->avail + 2), __ATOMIC_ACQUIRE) & 3;
    uint16_t new_pos = pos_of(q->used_idx), old = q->signalled_used;
    int valid = q->signalled_valid;
    q->signalled_used = new_pos;
    q->signalled_valid = 1;
    int need;
    if (mode == EVENT_DISABLE) {
        need = 0;
    } else if (mode == EVENT_DESC && q->event_idx && valid) {
        int off = off_wrap & 0x7fff;
        if ((off_wrap >> 15) != wrap_of(q->used_idx))
            off -= (int)q->num;
        need = (uint16_t)(new_pos - off - 1) < (uint16_t)(new_pos - old);
    } else {
        need = 1;
    }
    if (need)
        raise_interrupt(q);
}

/* Serve one chain at `at` and publish it; returns what dp_serve should (DP_IDLE: done). */
static int serve_one_packed(struct dp_queue *q, uint16_t at, int fresh, uint64_t *done_bytes)
{
    struct timespec t0;
    if (q->stats)
        clock_gettime(CLOCK_MONOTONIC, &t0);
    struct chain c = {.rd = q->iov, .wr = q->iov + q->iov_cap};
    uint16_t id;
    uint32_t count;
    if (walk_packed(q, &c, at, &id, &count)) {
        snprintf(q->error, sizeof q->error, "queue %u: a chain runs around the whole ring",
                 q->index);
        return DP_BROKEN;
    }
    if (c.need_map)
        return DP_NEED_MAP;
    if (id >= q->num) {
        snprintf(q->error, sizeof q->error, "queue %u: buffer id %u out of range", q->index, id);
        return DP_BROKEN;
    }
    if (fresh) {
        log_taken(q, id, advance(q, at, count));
        q->last_avail = advance(q, at, count);
    }
    uint32_t written = 0;
    if (c.status_ok) {
        serve(q, &c, -1, &written);
        if (q->stats && fresh)
            account(q, &c, &t0);
    }
    q->nbad = 0;
    q->served++;
    push_used_packed(q, id, written, count);
    log_completed(q, id);
    *done_bytes += c.rd_len + c.wr_len;
    return DP_IDLE;
}

static int serve_packed(struct dp_queue *q, int unsignalled)
{
    uint64_t done_bytes = 0;
    int result = DP_IDLE;
    while (is_available(q, q->last_avail)) {
        if (q->pause_req) {
            result = DP_PAUSE;
            break;
        }
        if (q->last_avail != q->used_idx) {
            /* Serving in order, nothing is left between the two. */
            snprintf(q->error, sizeof q->error, "queue %u: used position lags", q->index);
            result = DP_BROKEN;
            break;
        }
        result = serve_one_packed(q, q->last_avail, 1, &done_bytes);
        if (result != DP_IDLE)
            break;
        unsignalled = 1;
        if (done_bytes >= NOTIFY_BYTES) {
            notify_packed(q);
            unsignalled = 0;
            done_bytes = 0;
        }
    }
    if (unsignalled)
        notify_packed(q);
    return result;
}

/*
 * Packed takeover. Serving in order, at most one chain is between used_idx and last_avail
 * (taken, not completed). Its used descriptor may have been written before the log heard
 * of it; or it may have been flagged before last_avail moved past it.
 */
static int recover_packed(struct dp_queue *q)
{
    struct dp_vqlog *log = q->log;
    if (q->used_idx != q->last_avail) {
        uint16_t flags = desc_flags(q, pos_of(q->used_idx));
        int wrap = wrap_of(q->used_idx);
        if (!!(flags & PF_USED) == wrap && !!(flags & PF_AVAIL) == wrap) {
            uint16_t id;
            memcpy(&id, q->desc + 16 * (size_t)pos_of(q->used_idx) + 12, 2);
            if (id < q->num)
                log_store8(&log->inflight[id], 0);
            q->used_idx = q->last_avail;
            log_store16(&log->used_idx, q->used_idx);
        }
    } else if (is_available(q, q->last_avail)) {
        struct chain c = {.rd = q->iov, .wr = q->iov + q->iov_cap};
        uint16_t id;
        uint32_t count;
        if (walk_packed(q, &c, q->last_avail, &id, &count) == 0 && !c.need_map &&
            id < q->num && log->inflight[id]) {
            q->last_avail = advance(q, q->last_avail, count);
            log_store16(&log->last_avail, q->last_avail);
        } else if (c.need_map) {
            return DP_NEED_MAP;
        }
        q->nbad = 0;
    }
    if (q->used_idx != q->last_avail) {
        uint64_t ignored = 0;
        int rc = serve_one_packed(q, q->used_idx, 0, &ignored);
        if (rc != DP_IDLE)
            return rc;
        if (q->used_idx != q->last_avail) {
            snprintf(q->error, sizeof q->error, "queue %u: the log's chain does not match",
                     q->index);
            return DP_BROKEN;
        }
        q->replayed++;
        log->replayed++;
    }
    memset(log->inflight, 0, q->num);
    q->recovering = 0;
    return DP_IDLE;
}

static int serve_ring(struct dp_queue *q)
{
    if (!q->rings_ok) {
        int rc = resolve_rings(q);
        if (rc)
            return rc > 0 ? DP_NEED_MAP : DP_BROKEN;
    }
    int recovered = 0;
    if (q->recovering) {
        int rc = recover(q);
        if (rc != DP_IDLE)
            return rc;
        /* Our predecessor may have died between publishing and interrupting. */
        recovered = 1;
    }
    return q->packed ? serve_packed(q, recovered) : serve_split(q, recovered);
}

/* Serve everything the driver posted and complete it; one interrupt for the batch. */
int dp_serve(struct dp_queue *q)
{
    int rc = serve_ring(q);
    if (rc != DP_NEED_MAP)
        drain(q);
    return rc;
}
