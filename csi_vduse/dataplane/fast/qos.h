/*
 * A device's I/O limits: token buckets whose rates come live from the page the driver writes
 * (dataplane/qos.py: its layout and the semantics), shared by all the device's queues.
 */
#ifndef DATAPLANE_FAST_QOS_H
#define DATAPLANE_FAST_QOS_H
#include <pthread.h>
#include <stdint.h>

#include "backend.h"

#define DP_QOS_PAGE_SIZE 64
#define DP_QOS_MAX_RATE (1ull << 50)  /* qos.MAX_RATE: a larger value counts as this */
#define DP_QOS_MAX_BURST_MS 3600000u  /* qos.MAX_BURST_MS */
#define DP_QOS_MAX_WAIT_NS 100000000u /* a throttled queue looks at the page again this often */

#define DP_QOS_LIMITED UINT64_MAX

enum { DP_QOS_IOPS, DP_QOS_READ, DP_QOS_WRITE, DP_QOS_BUCKETS };

struct dp_qos_bucket {
    uint64_t rate; /* per second; 0: no limit */
    /* In billionths, so that a rate times nanoseconds adds up exactly; below zero while a
     * request larger than what was left is paid for. */
    __int128 tokens, capacity;
};

struct dp_qos {
    const uint8_t *page;  /* mapped read-only; NULL: no limits */
    uint64_t fake_now_ns; /* tests and the fuzzer: when nonzero, the clock */
    pthread_mutex_t lock; /* the queues' threads admit requests concurrently */
    uint32_t sequence;    /* the page's sequence the limits below were read at */
    /* That sequence while it set no limit at all (requests then pass without the lock);
     * DP_QOS_LIMITED otherwise. */
    uint64_t unlimited_at;
    int have_limits;      /* they were read once at least */
    uint64_t last_ns;     /* the buckets were refilled up to this time */
    struct dp_qos_bucket buckets[DP_QOS_BUCKETS];
};

/* No limits until the first request reads `page` (or ever, with NULL); -EINVAL when it is
 * not a version 1 page. `page` (DP_QOS_PAGE_SIZE bytes) outlives `qos`. */
int dp_qos_init(struct dp_qos *qos, const void *page);
void dp_qos_free(struct dp_qos *qos);
/*
 * May a request go now? Every request takes an IOPS token, a READ takes `bytes` read
 * tokens and a WRITE `bytes` write tokens (any other op: the IOPS token only). 1: admitted,
 * its tokens taken; 0: not before *wait_ns (at most DP_QOS_MAX_WAIT_NS), nothing taken.
 */
int dp_qos_admit(struct dp_qos *qos, enum dp_io_op op, uint64_t bytes, uint64_t *wait_ns);
#endif
