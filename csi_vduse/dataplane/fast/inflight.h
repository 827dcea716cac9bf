/*
 * The persistent in-flight log of one queue. Each request is marked in the log's mapped file
 * before it is served and unmarked once its used element is published, so a process that
 * takes over the queue after a crash serves again exactly the requests that were taken and
 * never completed (see the ring formats' recover functions), and nothing twice.
 */
#ifndef DATAPLANE_FAST_INFLIGHT_H
#define DATAPLANE_FAST_INFLIGHT_H
#include <stdint.h>

struct dp_queue;

/* One queue's block of the log file; dataplane/inflight_log.py maps the file. */
struct dp_vqlog {
    uint16_t last_avail; /* avail entries taken so far */
    uint16_t used_idx;   /* used entries published so far */
    uint16_t num;        /* the queue size the block was laid out for */
    uint16_t valid;      /* 1 once initialised for the running queue */
    uint32_t replayed;   /* requests replayed by successors, for the record */
    uint32_t reserved;
    uint8_t inflight[];  /* per descriptor head: 1 while the request is being served */
};

/* The log lives in a shared file read by our successor: its stores stay in order. */
static inline void dp_log_store8(uint8_t *p, uint8_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void dp_log_store16(uint16_t *p, uint16_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* `head` was taken; the avail position moves to `next_avail`. */
void dp_log_taken(struct dp_queue *q, uint16_t head, uint16_t next_avail);
/* `head`'s used element is published (q->used_idx counts it). */
void dp_log_completed(struct dp_queue *q, uint16_t head);
#endif
