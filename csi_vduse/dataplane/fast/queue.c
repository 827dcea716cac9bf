/*
 * A queue's life: its set-up checks, the loop that serves it, and the requests it keeps in
 * flight on its backend.
 *
 * The guest driver is untrusted: every index, length, address and flag is checked before
 * use. A queue whose size, ring areas (overlapping, misaligned) or start positions are
 * impossible is refused when it starts (dp_queue_init, dp_log_attach). A chain whose
 * buffers cannot all be translated gets IOERR when its status byte can be found, and is
 * handed back untouched when it cannot. A ring whose indices are impossible, or that posts
 * a head again while its request is in flight, stops the queue (DP_BROKEN); what is in
 * flight completes first, untouched.
 *
 * On split rings, requests may stay in flight on the backend (the file backend queues reads
 * and writes): everything taken in one pass over the avail ring is submitted together, and
 * each request is completed when the backend reports it, in any order. Packed rings serve
 * everything in order.
 *
 * Mappings are owned by Python. An IOVA that is not in the table makes dp_serve return
 * DP_NEED_MAP before any side effect of the request, so the request is simply parsed again
 * once Python added the mapping (or declared it unmappable). Python only changes the table
 * while the thread that runs this code is paused, and a queue pauses only once nothing is in
 * flight, so no transfer outlives its mapping.
 *
 * The device's I/O limits (qos.c) hold a request back at that same point, so it stays in the
 * ring as if not yet seen: the pass ends there with q->throttle_ns set, and dp_run sleeps that
 * long (woken early by a kick, a completion or control) before it looks again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/vduse.h>
#include <linux/virtio_ring.h>

#include "blk.h"
#include "inflight.h"
#include "iotlb.h"
#include "queue.h"
#include "ring.h"

/* Ring areas in IOVA space: where, how long, how aligned, whether the device writes them
 * (virtio 1.x, 2.7 and 2.8). */
struct area {
    const char *name;
    uint64_t iova, len, align;
    int writable;
    uint8_t **host;
};

static void ring_areas(struct dp_queue *q, struct area out[3])
{
    uint64_t num = q->num;
    out[0] = (struct area){"descriptor", q->desc_iova, sizeof(struct vring_desc) * num,
                           VRING_DESC_ALIGN_SIZE, q->packed, &q->desc};
    if (q->packed) {
        /* The device writes used descriptors over the ring; two event suppression areas. */
        uint64_t event = sizeof(struct vring_packed_desc_event);
        out[1] = (struct area){"driver event", q->avail_iova, event, event, 0, &q->avail};
        out[2] = (struct area){"device event", q->used_iova, event, event, 1, &q->used};
    } else {
        /* Each ends with an event index (VIRTIO_RING_F_EVENT_IDX). */
        uint64_t avail = offsetof(struct vring_avail, ring) + sizeof(__virtio16) * (num + 1);
        uint64_t used = offsetof(struct vring_used, ring) + sizeof(struct vring_used_elem) * num +
                        sizeof(__virtio16);
        out[1] = (struct area){"avail", q->avail_iova, avail, VRING_AVAIL_ALIGN_SIZE, 0, &q->avail};
        out[2] = (struct area){"used", q->used_iova, used, VRING_USED_ALIGN_SIZE, 1, &q->used};
    }
}

int dp_refuse(struct dp_queue *q, const char *why)
{
    snprintf(q->error, sizeof q->error, "queue %u: %s", q->index, why);
    return -EINVAL;
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
        return dp_refuse(q, why);
    }
    struct area a[3];
    ring_areas(q, a);
    for (int i = 0; i < 3; i++) {
        if (a[i].iova & (a[i].align - 1)) {
            snprintf(why, sizeof why, "%s area at %#llx is not %llu-byte aligned", a[i].name,
                     (unsigned long long)a[i].iova, (unsigned long long)a[i].align);
            return dp_refuse(q, why);
        }
        if (a[i].iova + a[i].len < a[i].iova) {
            snprintf(why, sizeof why, "%s area runs past the top of the IOVA space", a[i].name);
            return dp_refuse(q, why);
        }
        for (int j = 0; j < i; j++) {
            if (a[i].iova < a[j].iova + a[j].len && a[j].iova < a[i].iova + a[i].len) {
                snprintf(why, sizeof why, "%s and %s areas overlap", a[j].name, a[i].name);
                return dp_refuse(q, why);
            }
        }
    }
    if (q->packed && !(dp_packed_position_ok(q, q->last_avail) &&
                       dp_packed_position_ok(q, q->used_idx))) {
        snprintf(why, sizeof why, "packed start positions %#x, %#x lie outside a %u ring",
                 q->last_avail, q->used_idx, q->num);
        return dp_refuse(q, why);
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

void dp_queue_free(struct dp_queue *q)
{
    if (q->slots) {
        drain(q);
        for (uint32_t i = 0; i < q->num; i++)
            free(q->slots[i].big);
    }
    free(q->slots);
    q->slots = NULL;
    q->backend = NULL;
    free(q->iov);
    q->iov = NULL;
}

int dp_queue_attach(struct dp_queue *q, struct dp_backend *backend)
{
    q->backend = backend;
    if (q->packed || backend->ops->depth(backend) < q->num)
        return 0;
    q->slots = calloc(q->num, sizeof *q->slots);
    return q->slots ? 1 : -ENOMEM;
}

/* The ring areas' host addresses, once mapped as the device needs them. */
static int resolve_rings(struct dp_queue *q)
{
    struct area a[3];
    ring_areas(q, a);
    int rc = DP_MAPPED;
    for (int i = 0; i < 3 && rc == DP_MAPPED; i++)
        rc = dp_iotlb_contiguous(q, a[i].iova, a[i].len, a[i].writable, a[i].host);
    if (rc == DP_REFUSED)
        dp_refuse(q, "ring areas are not mapped as needed");
    q->rings_ok = rc == DP_MAPPED;
    return rc;
}

void dp_raise_interrupt(struct dp_queue *q)
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

/* Finish a request the backend completed: status, stats, used element, log. Only split
 * rings keep requests in flight. */
static void complete(struct dp_queue *q, const struct dp_io_done *done)
{
    if (done->tag >= q->num || !q->slots[done->tag].busy) {
        /* A backend's bug, never the guest's: no request is touched for it. */
        snprintf(q->error, sizeof q->error, "queue %u: the backend completed %llu, not in flight",
                 q->index, (unsigned long long)done->tag);
        return;
    }
    uint16_t head = (uint16_t)done->tag;
    struct dp_slot *s = &q->slots[head];
    struct dp_outcome outcome;
    uint32_t written = dp_blk_finish(q, s, done->res, &outcome);
    if (q->stats)
        dp_stats_account(q->stats, &q->waiting, &outcome, &s->t0);
    q->inflight--;
    s->busy = 0;
    dp_split_push_used(q, head, written);
    dp_log_completed(q, head);
}

unsigned dp_queue_reap(struct dp_queue *q, int wait)
{
    struct dp_io_done done[32];
    unsigned total = 0, n;
    do {
        n = q->backend->ops->reap(q->backend, done, 32, wait && total == 0);
        for (unsigned i = 0; i < n; i++)
            complete(q, &done[i]);
        total += n;
    } while (n == 32);
    return total;
}

void dp_queue_submit(struct dp_queue *q)
{
    if (q->slots)
        q->backend->ops->submit(q->backend);
}

/* Complete everything in flight (before pausing, stopping or reporting a broken ring). */
static void drain(struct dp_queue *q)
{
    unsigned finished = 0;
    while (q->inflight)
        finished += dp_queue_reap(q, 1);
    if (finished)
        dp_split_notify(q);
}

static int serve_ring(struct dp_queue *q)
{
    q->throttle_ns = 0;
    if (!q->backend) {
        dp_refuse(q, "no backend attached");
        return DP_BROKEN;
    }
    if (!q->rings_ok) {
        int rc = resolve_rings(q);
        if (rc)
            return rc == DP_MISSING ? DP_NEED_MAP : DP_BROKEN;
    }
    int recovered = 0;
    if (q->recovering) {
        int rc = q->packed ? dp_packed_recover(q) : dp_split_recover(q);
        if (rc != DP_IDLE)
            return rc;
        /* Our predecessor may have died between publishing and interrupting. */
        recovered = 1;
    }
    return q->packed ? dp_packed_serve(q, recovered) : dp_split_serve(q, recovered);
}

/*
 * Serve until paused or until Python is needed: waits on the kick and control eventfds
 * and on the backend's completions. Nothing is left in flight when it returns, except for
 * DP_NEED_MAP (mapping more only adds to what the requests in flight may use).
 */
int dp_run(struct dp_queue *q)
{
    struct pollfd fds[3] = {{.fd = q->kickfd, .events = POLLIN},
                            {.fd = q->ctlfd, .events = POLLIN},
                            {.fd = q->slots ? q->backend->ops->fd(q->backend) : -1,
                             .events = POLLIN}};
    uint64_t value;
    for (;;) {
        int rc = q->pause_req ? DP_PAUSE : serve_ring(q);
        if (rc == DP_NEED_MAP)
            return rc;
        if (rc != DP_IDLE) {
            drain(q);
            return rc;
        }
        /* Held back: look again once the limits let more in (whole ms, rounded up). */
        int timeout = q->throttle_ns ? (int)((q->throttle_ns + 999999) / 1000000) : -1;
        if (poll(fds, 3, timeout) < 0 && errno != EINTR) {
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

int dp_serve(struct dp_queue *q)
{
    int rc = serve_ring(q);
    if (rc != DP_NEED_MAP)
        drain(q);
    return rc;
}
