/* Per-request counters, the latency histogram and the stall mark of a queue's block in the
 * stats file. The mark lets a reader tell a backend that stopped answering (an unreachable
 * Ceph, a hung disk) from an idle one without asking the dataplane. */
#include <linux/virtio_blk.h>

#include "stats.h"

/* A timestamp as the mark holds it: never 0, which means "none waits". */
static uint64_t mark_of(const struct timespec *t)
{
    uint64_t ns = (uint64_t)t->tv_sec * 1000000000 + (uint64_t)t->tv_nsec;
    return ns ? ns : 1;
}

void dp_stats_start(uint64_t *s, uint32_t *waiting, const struct timespec *t0)
{
    if ((*waiting)++ == 0)
        __atomic_store_n(&s[DP_ST_WAITING_SINCE], mark_of(t0), __ATOMIC_RELAXED);
}

/* A request finished at `t1`: the backend moves. Those still waiting wait from now on. */
static void finished(uint64_t *s, uint32_t *waiting, const struct timespec *t1)
{
    if (*waiting)
        --*waiting;
    __atomic_store_n(&s[DP_ST_WAITING_SINCE], *waiting ? mark_of(t1) : 0, __ATOMIC_RELAXED);
}

void dp_stats_done(uint64_t *s, uint32_t *waiting)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    finished(s, waiting, &t1);
}

void dp_stats_account(uint64_t *s, uint32_t *waiting, const struct dp_outcome *o,
                      const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    finished(s, waiting, &t1);
    int64_t elapsed = (int64_t)(t1.tv_sec - t0->tv_sec) * 1000000000 + (t1.tv_nsec - t0->tv_nsec);
    uint64_t ns = elapsed > 0 ? (uint64_t)elapsed : 0;
    /* The smallest k with ns <= 16 us << k, from ceil(ns / 16 us). */
    uint64_t units = (ns + 15999) / 16000;
    int bucket = units <= 1 ? 0 : 64 - __builtin_clzll(units - 1);
    if (bucket > DP_ST_BUCKETS - 1)
        bucket = DP_ST_BUCKETS - 1;
    dp_stat_add(&s[o->op], 1);
    if (o->bytes_read)
        dp_stat_add(&s[DP_ST_BYTES_READ], o->bytes_read);
    if (o->bytes_written)
        dp_stat_add(&s[DP_ST_BYTES_WRITTEN], o->bytes_written);
    if (o->status == VIRTIO_BLK_S_IOERR)
        dp_stat_add(&s[DP_ST_IOERR], 1);
    else if (o->status == VIRTIO_BLK_S_UNSUPP)
        dp_stat_add(&s[DP_ST_UNSUPP], 1);
    dp_stat_add(&s[DP_ST_LATENCY_NS], ns);
    dp_stat_add(&s[DP_ST_BUCKET0 + bucket], 1);
}
