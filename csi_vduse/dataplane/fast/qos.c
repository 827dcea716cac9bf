/*
 * The token buckets of a device's I/O limits; see qos.h. The page is the driver's and may
 * change at any moment: it is read with its seqlock (an odd sequence, or one that moved while
 * we read, keeps the limits read before) and every value is clamped to what the arithmetic
 * here holds, so no page can overflow it or divide by zero.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "qos.h"

#define MAGIC "CSIVDQS" /* with its NUL, 8 bytes */
#define VERSION 1
#define VERSION_OFFSET 8
#define SEQUENCE_OFFSET 12
#define LIMITS_OFFSET 16 /* u64 IOPS, read bytes/s, write bytes/s, burst in ms */
#define MIN_BURST_MS 100 /* a bucket holds a tenth of a second's worth at least */
#define NS 1000000000ull

int dp_qos_init(struct dp_qos *qos, const void *page)
{
    const uint8_t *p = page;
    if (p) {
        uint32_t version;
        memcpy(&version, p + VERSION_OFFSET, sizeof version);
        if ((uintptr_t)p % sizeof(uint64_t) || memcmp(p, MAGIC, sizeof MAGIC) ||
            le32toh(version) != VERSION)
            return -EINVAL;
    }
    *qos = (struct dp_qos){.page = p, .unlimited_at = DP_QOS_LIMITED};
    return -pthread_mutex_init(&qos->lock, NULL);
}

void dp_qos_free(struct dp_qos *qos)
{
    pthread_mutex_destroy(&qos->lock);
    qos->page = NULL;
}

static uint32_t sequence(const struct dp_qos *qos)
{
    const uint32_t *word = (const uint32_t *)(qos->page + SEQUENCE_OFFSET);
    return le32toh(__atomic_load_n(word, __ATOMIC_ACQUIRE));
}

/* The limits {IOPS, read, write, burst}, unless the driver is writing them: then 0. */
static int read_limits(const struct dp_qos *qos, uint32_t *seq, uint64_t limits[4])
{
    const uint64_t *words = (const uint64_t *)(qos->page + LIMITS_OFFSET);
    uint32_t before = sequence(qos);
    if (before & 1)
        return 0;
    for (int i = 0; i < 4; i++)
        limits[i] = le64toh(__atomic_load_n(&words[i], __ATOMIC_RELAXED));
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (sequence(qos) != before)
        return 0;
    *seq = before;
    return 1;
}

static uint64_t at_most(uint64_t value, uint64_t max)
{
    return value < max ? value : max;
}

/* New rates from now on: a bucket keeps its tokens up to its new capacity, and one whose limit
 * is new starts full. */
static void apply(struct dp_qos *qos, const uint64_t limits[4])
{
    uint64_t burst_ms = at_most(limits[3], DP_QOS_MAX_BURST_MS);
    if (burst_ms < MIN_BURST_MS)
        burst_ms = MIN_BURST_MS;
    for (int i = 0; i < DP_QOS_BUCKETS; i++) {
        struct dp_qos_bucket *b = &qos->buckets[i];
        uint64_t rate = at_most(limits[i], DP_QOS_MAX_RATE);
        b->capacity = (__int128)rate * burst_ms * (NS / 1000); /* below 2^92 */
        if (rate && !b->rate)
            b->tokens = b->capacity;
        else if (b->tokens > b->capacity)
            b->tokens = b->capacity;
        b->rate = rate;
    }
}

static void refresh(struct dp_qos *qos)
{
    uint64_t limits[4];
    uint32_t seq;
    if (qos->have_limits && sequence(qos) == qos->sequence)
        return;
    if (!read_limits(qos, &seq, limits))
        return;
    apply(qos, limits);
    qos->sequence = seq;
    qos->have_limits = 1;
    int limited = 0;
    for (int i = 0; i < DP_QOS_BUCKETS; i++)
        limited |= qos->buckets[i].rate != 0;
    __atomic_store_n(&qos->unlimited_at, limited ? DP_QOS_LIMITED : seq, __ATOMIC_RELEASE);
}

static uint64_t now_ns(const struct dp_qos *qos)
{
    uint64_t fake = __atomic_load_n(&qos->fake_now_ns, __ATOMIC_RELAXED);
    if (fake)
        return fake;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * NS + (uint64_t)t.tv_nsec;
}

/* At the rates in force until `now`; a clock set back (a test's) refills nothing. */
static void refill(struct dp_qos *qos, uint64_t now)
{
    if (now <= qos->last_ns)
        return;
    uint64_t elapsed = now - qos->last_ns;
    qos->last_ns = now;
    for (int i = 0; i < DP_QOS_BUCKETS; i++) {
        struct dp_qos_bucket *b = &qos->buckets[i];
        if (!b->rate)
            continue;
        b->tokens += (__int128)b->rate * elapsed; /* below 2^50 * 2^64 */
        if (b->tokens > b->capacity)
            b->tokens = b->capacity;
    }
}

static int draws_on(enum dp_io_op op, int bucket)
{
    return bucket == DP_QOS_IOPS || (bucket == DP_QOS_READ && op == DP_IO_READ) ||
           (bucket == DP_QOS_WRITE && op == DP_IO_WRITE);
}

int dp_qos_admit(struct dp_qos *qos, enum dp_io_op op, uint64_t bytes, uint64_t *wait_ns)
{
    if (!qos->page)
        return 1;
    /* A page without limits, unchanged since it was read: no bucket to count in, so the
     * device's queues need not take turns at the lock for every request. */
    if (__atomic_load_n(&qos->unlimited_at, __ATOMIC_ACQUIRE) == sequence(qos))
        return 1;
    pthread_mutex_lock(&qos->lock);
    refill(qos, now_ns(qos));
    refresh(qos);
    __int128 wait = 0;
    for (int i = 0; i < DP_QOS_BUCKETS; i++) {
        const struct dp_qos_bucket *b = &qos->buckets[i];
        if (!b->rate || !draws_on(op, i) || b->tokens > 0)
            continue;
        /* Until it holds a billionth of a token: (1 - tokens) / rate ns, rounded up. */
        __int128 ns = (1 - b->tokens + b->rate - 1) / b->rate;
        if (ns > wait)
            wait = ns;
    }
    for (int i = 0; i < DP_QOS_BUCKETS && !wait; i++) {
        struct dp_qos_bucket *b = &qos->buckets[i];
        if (b->rate && draws_on(op, i))
            b->tokens -= (__int128)(i == DP_QOS_IOPS ? 1 : bytes) * NS; /* below 2^94 */
    }
    pthread_mutex_unlock(&qos->lock);
    if (!wait)
        return 1;
    *wait_ns = wait > DP_QOS_MAX_WAIT_NS ? DP_QOS_MAX_WAIT_NS : (uint64_t)wait;
    return 0;
}
