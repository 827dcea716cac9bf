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

/* Count a request started at `t0` (CLOCK_MONOTONIC) into the block `stats`. */
void dp_stats_account(uint64_t *stats, const struct dp_outcome *o, const struct timespec *t0);
#endif
