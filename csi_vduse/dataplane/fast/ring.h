/* What the ring formats (split.c, packed.c) and the queue (queue.c) share, inside the loop. */
#ifndef DATAPLANE_FAST_RING_H
#define DATAPLANE_FAST_RING_H
#include <stdint.h>

struct dp_queue;

/* Interrupt before the batch ends once this much data completed: the driver can reap and
 * resubmit while large requests are still being copied, instead of waiting for all. */
#define NOTIFY_BYTES (256u << 10)

/* Set q->error to "queue N: why"; returns -EINVAL. */
int dp_refuse(struct dp_queue *q, const char *why);
void dp_raise_interrupt(struct dp_queue *q);
/* Finish what the backend completed, waiting for one completion at least with `wait`;
 * returns how many. */
unsigned dp_queue_reap(struct dp_queue *q, int wait);
void dp_queue_submit(struct dp_queue *q);

/* Split rings (split.c). Serve: everything posted (up to a request the I/O limits hold
 * back: q->throttle_ns), one interrupt owed already when `unsignalled`; returns DP_IDLE,
 * DP_NEED_MAP, DP_BROKEN or DP_PAUSE. */
int dp_split_serve(struct dp_queue *q, int unsignalled);
int dp_split_recover(struct dp_queue *q);
void dp_split_push_used(struct dp_queue *q, uint16_t head, uint32_t written);
void dp_split_notify(struct dp_queue *q);

/* Packed rings (packed.c); positions are position | wrap counter << 15. */
int dp_packed_position_ok(const struct dp_queue *q, uint16_t at);
int dp_packed_serve(struct dp_queue *q, int unsignalled);
int dp_packed_recover(struct dp_queue *q);
#endif
