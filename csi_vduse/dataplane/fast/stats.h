/* Per-queue request statistics in the shared stats file; dataplane/stats.py is the layout. */
#ifndef DATAPLANE_FAST_STATS_H
#define DATAPLANE_FAST_STATS_H
#include <stdint.h>
#include <time.h>

/* Word indices of a queue's block. */
#define DP_ST_READ 0
#define DP_ST_WRITE 1
#define DP_ST_FLUSH 2
#define DP_ST_DISCARD 3
#define DP_ST_WRITE_ZEROES 4
#define DP_ST_GET_ID 5
#define DP_ST_OTHER 6
#define DP_ST_BYTES_READ 7
#define DP_ST_BYTES_WRITTEN 8
#define DP_ST_IOERR 9
#define DP_ST_UNSUPP 10
#define DP_ST_LATENCY_NS 11
#define DP_ST_BUCKET0 12
#define DP_ST_BUCKETS 18 /* <= 16 us << k for k = 0..16, then +Inf */
#define DP_ST_DIRECT 30
#define DP_ST_WAITING_SINCE 31 /* CLOCK_MONOTONIC ns since which requests have waited with
                                * none finishing; 0 while none waits */
#define DP_ST_WORDS 32

/* What one finished request adds to the statistics. */
struct dp_outcome {
    int op; /* a DP_ST_* request counter */
    uint8_t status; /* the virtio-blk status byte it completed with */
    uint64_t bytes_read, bytes_written;
};

/* Single writer per block: relaxed stores keep each word whole for concurrent readers. */
static inline void dp_stat_add(uint64_t *word, uint64_t by)
{
    __atomic_store_n(word, *word + by, __ATOMIC_RELAXED);
}

/* A request taken at `t0` (CLOCK_MONOTONIC) goes to the backend; `waiting` is the queue's
 * count of such requests not yet accounted. Every call is matched by one dp_stats_account. */
void dp_stats_start(uint64_t *stats, uint32_t *waiting, const struct timespec *t0);
/* A request dp_stats_start counted no longer waits (the backend moved): for a replayed
 * request, which the counters already have from the predecessor that took it. */
void dp_stats_done(uint64_t *stats, uint32_t *waiting);
/* Count a request started at `t0` into the block `stats`: it no longer waits. */
void dp_stats_account(uint64_t *stats, uint32_t *waiting, const struct dp_outcome *o,
                      const struct timespec *t0);
#endif
