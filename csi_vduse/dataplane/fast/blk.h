/*
 * The virtio-blk request handler: what a request chain asks for (its header, the sectors,
 * the status byte), checked against the device and done by the queue's backend. It knows
 * nothing of how chains are found on a ring (split.c, packed.c) nor of where the data lives
 * (backend.h).
 */
#ifndef DATAPLANE_FAST_BLK_H
#define DATAPLANE_FAST_BLK_H
#include <stdint.h>
#include <linux/virtio_blk.h>

#include "stats.h"

/* The device as its requests see it; Python sets it, and changes capacity while paused. */
struct dp_blk {
    uint64_t capacity; /* bytes, a multiple of 512 */
    int readonly, can_flush, can_discard;
    uint32_t max_discard_seg; /* ranges per DISCARD / WRITE_ZEROES request */
    uint8_t serial[VIRTIO_BLK_ID_BYTES];
};

struct dp_queue;
struct dp_chain;
struct dp_slot;

/*
 * May the request collected in `c` be taken now, under the device's I/O limits (q->qos)?
 * 1: yes, its tokens are taken; 0: it stays in the ring, not seen, for q->throttle_ns at
 * least. Its header is read here once: admitted and served as the same request, however the
 * guest rewrites its buffers meanwhile.
 */
int dp_blk_admit(struct dp_queue *q, struct dp_chain *c);
/*
 * Serve the request collected in `c`, whose status byte was found (c->status_ok: the
 * ring walkers call this for no other chain). It completes here, with *used set to what its used
 * element reports (the bytes written into it, status included), and returns 0; or, with
 * `head` >= 0 on a queue that keeps requests in flight, it may be queued on the backend:
 * then it returns 1, and dp_blk_finish completes it.
 */
int dp_blk_serve(struct dp_queue *q, struct dp_chain *c, int head, uint32_t *used);
/* A queued request's result (bytes, or -errno): sets its status byte and fills `o`;
 * returns what its used element reports. */
uint32_t dp_blk_finish(struct dp_queue *q, struct dp_slot *s, int64_t res, struct dp_outcome *o);
#endif
