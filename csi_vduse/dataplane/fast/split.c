/*
 * The split ring format (virtio 1.x, 2.7): walk the descriptor chains the driver posts on
 * the avail ring (direct and indirect), hand each to the request handler, publish used
 * elements, and raise one interrupt per batch (VIRTIO_RING_F_EVENT_IDX aware). Requests the
 * backend queued complete out of order (queue.c). A successor takes over from the in-flight
 * log (dp_split_recover).
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <linux/virtio_ring.h>

#include "blk.h"
#include "chain.h"
#include "inflight.h"
#include "iotlb.h"
#include "queue.h"
#include "ring.h"

#define AVAIL_IDX offsetof(struct vring_avail, idx)
#define AVAIL_RING offsetof(struct vring_avail, ring)
#define USED_IDX offsetof(struct vring_used, idx)
#define USED_RING offsetof(struct vring_used, ring)

static inline uint16_t *avail_word(const struct dp_queue *q, size_t offset)
{
    return (uint16_t *)(q->avail + offset);
}

/* The avail ring's entry `at` (a ring position, taken modulo the size). */
static uint16_t avail_head(const struct dp_queue *q, uint16_t at)
{
    uint16_t head;
    memcpy(&head, q->avail + AVAIL_RING + sizeof head * (size_t)(at % q->num), sizeof head);
    return head;
}

static uint8_t *used_elem(const struct dp_queue *q, uint16_t at)
{
    return q->used + USED_RING + sizeof(struct vring_used_elem) * (size_t)(at % q->num);
}

/*
 * Follow a table of `count` descriptors from `first`. A bad buffer is noted and skipped so
 * the final descriptor can still be found; a link out of the table or a loop ends the walk
 * with no status byte. `nested` is set inside an indirect table.
 */
static void walk_table(struct dp_queue *q, struct dp_chain *c, const uint8_t *table,
                       uint32_t count, uint32_t first, int nested)
{
    uint32_t i = first;
    for (uint32_t steps = 0; steps < count; steps++) {
        struct vring_desc d;
        memcpy(&d, table + sizeof d * (size_t)i, sizeof d);
        int mapped = 0;
        if (d.flags & VRING_DESC_F_INDIRECT) {
            if (nested || !q->indirect || (d.flags & VRING_DESC_F_NEXT) || d.len % sizeof d ||
                d.len / sizeof d > q->num || d.len == 0) {
                c->bad = 1;
            } else {
                uint8_t *inner;
                int rc = dp_iotlb_contiguous(q, d.addr, d.len, 0, &inner);
                if (rc == DP_MISSING) {
                    c->need_map = 1;
                } else if (rc == DP_REFUSED) {
                    c->bad = 1;
                } else {
                    walk_table(q, c, inner, d.len / sizeof d, 0, 1);
                    return;
                }
            }
        } else {
            mapped = dp_chain_add(q, c, d.addr, d.len, d.flags);
        }
        if (!(d.flags & VRING_DESC_F_NEXT)) {
            c->status_ok = mapped && (d.flags & VRING_DESC_F_WRITE) && d.len > 0;
            return;
        }
        if (d.next >= count)
            return; /* links beyond the table */
        i = d.next;
    }
    /* loops */
}

static void walk(struct dp_queue *q, struct dp_chain *c, uint16_t head)
{
    dp_chain_start(q, c);
    walk_table(q, c, q->desc, q->num, head, 0);
}

void dp_split_push_used(struct dp_queue *q, uint16_t head, uint32_t written)
{
    struct vring_used_elem elem = {.id = head, .len = written};
    memcpy(used_elem(q, q->used_idx), &elem, sizeof elem);
    q->used_idx++;
    __atomic_store_n((uint16_t *)(q->used + USED_IDX), q->used_idx, __ATOMIC_RELEASE);
}

void dp_split_notify(struct dp_queue *q)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* used idx visible before reading the driver's wish */
    int need;
    if (q->event_idx) {
        /* used_event: the entry after the avail ring. */
        uint16_t event = __atomic_load_n(avail_word(q, AVAIL_RING + sizeof(__virtio16) * q->num),
                                         __ATOMIC_ACQUIRE);
        need = !q->signalled_valid || vring_need_event(event, q->used_idx, q->signalled_used);
    } else {
        need = !(__atomic_load_n(avail_word(q, 0), __ATOMIC_ACQUIRE) & VRING_AVAIL_F_NO_INTERRUPT);
    }
    q->signalled_used = q->used_idx;
    q->signalled_valid = 1;
    if (need)
        dp_raise_interrupt(q);
}

/*
 * Take over from a process that died serving this queue. The log can trail the rings by
 * at most one step of each protocol: a used element published but not logged, or a head
 * marked in flight before last_avail moved past it. Both are settled from the rings, then
 * every request still marked is served again and completed. Rewriting the same data is
 * harmless: the driver was never told the first attempt finished. Returns DP_IDLE when
 * done, or DP_NEED_MAP / DP_BROKEN (in which case it runs again on the next call).
 */
int dp_split_recover(struct dp_queue *q)
{
    struct dp_vqlog *log = q->log;
    if ((uint16_t)(q->last_avail - q->used_idx) > q->num) {
        snprintf(q->error, sizeof q->error,
                 "queue %u: the log's used index %u is not within a ring of its avail index %u",
                 q->index, q->used_idx, q->last_avail);
        return DP_BROKEN;
    }
    uint16_t ring_used = __atomic_load_n((uint16_t *)(q->used + USED_IDX), __ATOMIC_ACQUIRE);
    uint16_t ahead = ring_used - q->used_idx;
    if (ahead > 1 || (ahead == 1 && q->used_idx == q->last_avail)) {
        snprintf(q->error, sizeof q->error, "queue %u: used idx %u runs %u ahead of the log",
                 q->index, ring_used, ahead);
        return DP_BROKEN;
    }
    if (ahead == 1) {
        struct vring_used_elem elem;
        memcpy(&elem, used_elem(q, (uint16_t)(ring_used - 1)), sizeof elem);
        if (elem.id < q->num)
            dp_log_store8(&log->inflight[elem.id], 0);
        q->used_idx = ring_used;
        dp_log_store16(&log->used_idx, ring_used);
    }
    uint16_t avail_idx = __atomic_load_n(avail_word(q, AVAIL_IDX), __ATOMIC_ACQUIRE);
    uint32_t flagged = 0;
    for (uint32_t head = 0; head < q->num; head++)
        flagged += log->inflight[head] != 0;
    if (avail_idx != q->last_avail && flagged == (uint16_t)(q->last_avail - q->used_idx) + 1u) {
        uint16_t head = avail_head(q, q->last_avail);
        /* A head in flight cannot have been posted again, so this one was taken. */
        if (head < q->num && log->inflight[head]) {
            q->last_avail++;
            dp_log_store16(&log->last_avail, q->last_avail);
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
        struct dp_chain c;
        walk(q, &c, (uint16_t)head);
        if (c.need_map)
            return DP_NEED_MAP;
        uint32_t written = 0;
        if (c.status_ok) {
            /* Replayed on a backend that may not answer (Ceph down at the takeover): marked
             * as waiting, not counted again. */
            struct timespec t0;
            if (q->stats) {
                clock_gettime(CLOCK_MONOTONIC, &t0);
                dp_stats_start(q->stats, &q->waiting, &t0);
            }
            dp_blk_serve(q, &c, -1, &written);
            if (q->stats)
                dp_stats_done(q->stats, &q->waiting);
        }
        q->nbad = 0;
        dp_split_push_used(q, (uint16_t)head, written);
        dp_log_completed(q, (uint16_t)head);
        q->replayed++;
        log->replayed++;
    }
    q->recovering = 0;
    return DP_IDLE;
}

/* Serve everything the driver posted, up to a request the I/O limits hold back; one
 * interrupt for the batch. An interrupt is owed already when `unsignalled` is set. Reads and
 * writes may be left in flight on the backend; the next pass completes them. */
int dp_split_serve(struct dp_queue *q, int unsignalled)
{
    uint64_t done_bytes = 0;
    int result = DP_IDLE;
    for (;;) {
        if (q->inflight && dp_queue_reap(q, 0))
            unsignalled = 1;
        if (q->pause_req) {
            result = DP_PAUSE;
            break;
        }
        uint16_t avail_idx = __atomic_load_n(avail_word(q, AVAIL_IDX), __ATOMIC_ACQUIRE);
        uint16_t pending = avail_idx - q->last_avail;
        if (pending > q->num) {
            snprintf(q->error, sizeof q->error, "queue %u: avail idx ran %u ahead of a %u ring",
                     q->index, pending, q->num);
            result = DP_BROKEN;
            break;
        }
        if (pending == 0) {
            if (q->event_idx) {
                /* avail_event: the entry after the used ring. */
                uint16_t *avail_event = (uint16_t *)(q->used + USED_RING +
                                                     sizeof(struct vring_used_elem) * q->num);
                __atomic_store_n(avail_event, q->last_avail, __ATOMIC_RELEASE);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                if (__atomic_load_n(avail_word(q, AVAIL_IDX), __ATOMIC_ACQUIRE) != q->last_avail)
                    continue;
            }
            break;
        }
        while (pending--) {
            if (q->pause_req) {
                result = DP_PAUSE;
                goto done;
            }
            uint16_t head = avail_head(q, q->last_avail);
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
            struct dp_chain c;
            walk(q, &c, head);
            if (c.need_map) {
                result = DP_NEED_MAP;
                goto done;
            }
            if (!dp_blk_admit(q, &c))
                goto done; /* it stays in the ring, untouched, until the limits allow it */
            dp_log_taken(q, head, (uint16_t)(q->last_avail + 1));
            uint32_t written = 0;
            if (c.status_ok) {
                if (q->stats)
                    dp_stats_start(q->stats, &q->waiting, &t0);
                if (dp_blk_serve(q, &c, head, &written)) {
                    if (q->stats)
                        q->slots[head].t0 = t0;
                    q->nbad = 0;
                    q->last_avail++;
                    q->served++;
                    continue;
                }
                if (q->stats)
                    dp_stats_account(q->stats, &q->waiting, &c.out, &t0);
            }
            q->nbad = 0;
            q->last_avail++;
            q->served++;
            dp_split_push_used(q, head, written);
            dp_log_completed(q, head);
            unsignalled = 1;
            done_bytes += c.rd_len + c.wr_len;
            if (done_bytes >= NOTIFY_BYTES) {
                dp_split_notify(q);
                unsignalled = 0;
                done_bytes = 0;
            }
        }
        dp_queue_submit(q);
    }
done:
    dp_queue_submit(q);
    if (unsignalled)
        dp_split_notify(q);
    return result;
}
