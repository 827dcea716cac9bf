/*
 * The packed ring format (VIRTIO_F_RING_PACKED, virtio 1.x 2.8). One ring of descriptors
 * {addr, len, id, flags} that both sides write: the driver makes a chain available by
 * flipping AVAIL/USED in its descriptors' flags to match its wrap counter (first
 * descriptor last); the device reads chains in ring order and, serving in order, writes one
 * used descriptor {id of the chain's last descriptor, bytes written} over the first
 * descriptor of each chain. Positions are kept as position | wrap counter << 15.
 */
#include <stdio.h>
#include <string.h>
#include <linux/virtio_ring.h>

#include "blk.h"
#include "chain.h"
#include "inflight.h"
#include "iotlb.h"
#include "queue.h"
#include "ring.h"

#define F_AVAIL (1u << VRING_PACKED_DESC_F_AVAIL)
#define F_USED (1u << VRING_PACKED_DESC_F_USED)
#define WRAP (1u << VRING_PACKED_EVENT_F_WRAP_CTR)

static inline uint16_t pos_of(uint16_t at)
{
    return at & (WRAP - 1);
}

static inline int wrap_of(uint16_t at)
{
    return at >> VRING_PACKED_EVENT_F_WRAP_CTR;
}

int dp_packed_position_ok(const struct dp_queue *q, uint16_t at)
{
    return pos_of(at) < q->num;
}

static inline uint16_t advance(const struct dp_queue *q, uint16_t at, uint32_t count)
{
    uint32_t pos = pos_of(at) + count;
    int wrap = wrap_of(at);
    if (pos >= q->num) {
        pos -= q->num;
        wrap ^= 1;
    }
    return (uint16_t)(pos | (uint32_t)wrap << VRING_PACKED_EVENT_F_WRAP_CTR);
}

static inline struct vring_packed_desc *desc_at(const struct dp_queue *q, uint16_t pos)
{
    return (struct vring_packed_desc *)(q->desc + sizeof(struct vring_packed_desc) * (size_t)pos);
}

static inline uint16_t desc_flags(const struct dp_queue *q, uint16_t pos)
{
    return __atomic_load_n(&desc_at(q, pos)->flags, __ATOMIC_ACQUIRE);
}

/* Has the driver made the descriptor at `at` available (for `at`'s wrap counter)? */
static int is_available(const struct dp_queue *q, uint16_t at)
{
    uint16_t flags = desc_flags(q, pos_of(at));
    int wrap = wrap_of(at);
    return !!(flags & F_AVAIL) == wrap && !!(flags & F_USED) != wrap;
}

/*
 * Collect the chain that starts at `at`: its buffers into `c`, its buffer id and how many
 * ring descriptors it spans. Returns -1 when the ring itself is broken (a chain longer
 * than the ring), 0 otherwise; a bad buffer only marks the request.
 */
static int walk_packed(struct dp_queue *q, struct dp_chain *c, uint16_t at, uint16_t *id,
                       uint32_t *count)
{
    dp_chain_start(q, c);
    uint32_t n = 0;
    for (;;) {
        if (n == q->num)
            return -1;
        struct vring_packed_desc d;
        memcpy(&d, desc_at(q, pos_of(advance(q, at, n))), sizeof d);
        *id = d.id;
        n++;
        int mapped = 0;
        if (d.flags & VRING_DESC_F_INDIRECT) {
            uint8_t *table;
            int rc = (n != 1 || (d.flags & VRING_DESC_F_NEXT) || !q->indirect ||
                      d.len % sizeof d || d.len == 0 || d.len / sizeof d > q->num)
                         ? DP_REFUSED
                         : dp_iotlb_contiguous(q, d.addr, d.len, 0, &table);
            if (rc == DP_MISSING) {
                c->need_map = 1;
            } else if (rc == DP_REFUSED) {
                c->bad = 1;
            } else {
                /* Only WRITE counts in a table; its entries follow each other. */
                uint32_t entries = d.len / sizeof d;
                for (uint32_t i = 0; i < entries; i++) {
                    struct vring_packed_desc e;
                    memcpy(&e, table + sizeof e * (size_t)i, sizeof e);
                    uint16_t write = e.flags & VRING_DESC_F_WRITE;
                    mapped = dp_chain_add(q, c, e.addr, e.len, write);
                    if (i == entries - 1)
                        c->status_ok = mapped && write && e.len > 0;
                }
            }
            if (!(d.flags & VRING_DESC_F_NEXT))
                break;
            continue;
        }
        mapped = dp_chain_add(q, c, d.addr, d.len, d.flags & VRING_DESC_F_WRITE);
        if (!(d.flags & VRING_DESC_F_NEXT)) {
            c->status_ok = mapped && (d.flags & VRING_DESC_F_WRITE) && d.len > 0;
            break;
        }
    }
    *count = n;
    return 0;
}

/* Write the used descriptor for a chain over its first descriptor, then move past it. */
static void push_used(struct dp_queue *q, uint16_t id, uint32_t written, uint32_t count)
{
    struct vring_packed_desc *d = desc_at(q, pos_of(q->used_idx));
    memcpy(&d->len, &written, sizeof written);
    memcpy(&d->id, &id, sizeof id);
    uint16_t flags = wrap_of(q->used_idx) ? (F_AVAIL | F_USED) : 0;
    __atomic_store_n(&d->flags, flags, __ATOMIC_RELEASE);
    q->used_idx = advance(q, q->used_idx, count);
}

static void notify(struct dp_queue *q)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* used descriptors visible before reading */
    struct vring_packed_desc_event *driver = (struct vring_packed_desc_event *)q->avail;
    uint16_t off_wrap = __atomic_load_n(&driver->off_wrap, __ATOMIC_ACQUIRE);
    uint16_t mode = __atomic_load_n(&driver->flags, __ATOMIC_ACQUIRE) & 3;
    uint16_t new_pos = pos_of(q->used_idx), old = q->signalled_used;
    int valid = q->signalled_valid;
    q->signalled_used = new_pos;
    q->signalled_valid = 1;
    int need;
    if (mode == VRING_PACKED_EVENT_FLAG_DISABLE) {
        need = 0;
    } else if (mode == VRING_PACKED_EVENT_FLAG_DESC && q->event_idx && valid) {
        int off = pos_of(off_wrap);
        if (wrap_of(off_wrap) != wrap_of(q->used_idx))
            off -= (int)q->num;
        need = (uint16_t)(new_pos - off - 1) < (uint16_t)(new_pos - old);
    } else {
        need = 1;
    }
    if (need)
        dp_raise_interrupt(q);
}

#define HELD (-1) /* serve_one: the I/O limits leave the chain in the ring for now */

/* Serve one chain at `at` and publish it; returns what dp_serve should (DP_IDLE: done), or
 * HELD. Only a `fresh` chain is subject to the limits: a replayed one was admitted by our predecessor. */
static int serve_one(struct dp_queue *q, uint16_t at, int fresh, uint64_t *done_bytes)
{
    struct timespec t0;
    if (q->stats)
        clock_gettime(CLOCK_MONOTONIC, &t0);
    struct dp_chain c;
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
    if (fresh && !dp_blk_admit(q, &c))
        return HELD;
    if (fresh) {
        dp_log_taken(q, id, advance(q, at, count));
        q->last_avail = advance(q, at, count);
    }
    uint32_t written = 0;
    if (c.status_ok) {
        if (q->stats)
            dp_stats_start(q->stats, &q->waiting, &t0);
        dp_blk_serve(q, &c, -1, &written);
        if (q->stats && fresh)
            dp_stats_account(q->stats, &q->waiting, &c.out, &t0);
        else if (q->stats) /* replayed: counted by the predecessor that took it */
            dp_stats_done(q->stats, &q->waiting);
    }
    q->nbad = 0;
    q->served++;
    push_used(q, id, written, count);
    dp_log_completed(q, id);
    *done_bytes += c.rd_len + c.wr_len;
    return DP_IDLE;
}

int dp_packed_serve(struct dp_queue *q, int unsignalled)
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
        result = serve_one(q, q->last_avail, 1, &done_bytes);
        if (result == HELD) {
            result = DP_IDLE;
            break;
        }
        if (result != DP_IDLE)
            break;
        unsignalled = 1;
        if (done_bytes >= NOTIFY_BYTES) {
            notify(q);
            unsignalled = 0;
            done_bytes = 0;
        }
    }
    if (unsignalled)
        notify(q);
    return result;
}

/*
 * Packed takeover. Serving in order, at most one chain is between used_idx and last_avail
 * (taken, not completed). Its used descriptor may have been written before the log heard
 * of it; or it may have been flagged before last_avail moved past it.
 */
int dp_packed_recover(struct dp_queue *q)
{
    struct dp_vqlog *log = q->log;
    if (q->used_idx != q->last_avail) {
        uint16_t flags = desc_flags(q, pos_of(q->used_idx));
        int wrap = wrap_of(q->used_idx);
        if (!!(flags & F_USED) == wrap && !!(flags & F_AVAIL) == wrap) {
            uint16_t id;
            memcpy(&id, &desc_at(q, pos_of(q->used_idx))->id, sizeof id);
            if (id < q->num)
                dp_log_store8(&log->inflight[id], 0);
            q->used_idx = q->last_avail;
            dp_log_store16(&log->used_idx, q->used_idx);
        }
    } else if (is_available(q, q->last_avail)) {
        struct dp_chain c;
        uint16_t id;
        uint32_t count;
        if (walk_packed(q, &c, q->last_avail, &id, &count) == 0 && !c.need_map &&
            id < q->num && log->inflight[id]) {
            q->last_avail = advance(q, q->last_avail, count);
            dp_log_store16(&log->last_avail, q->last_avail);
        } else if (c.need_map) {
            return DP_NEED_MAP;
        }
        q->nbad = 0;
    }
    if (q->used_idx != q->last_avail) {
        uint64_t ignored = 0;
        int rc = serve_one(q, q->used_idx, 0, &ignored);
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
