/* The fast path's queue state, shared by ring.c and its cffi wrapper (see ring_build.py). */
#ifndef DATAPLANE_FAST_RING_H
#define DATAPLANE_FAST_RING_H
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include "aio.h"

#define DP_IDLE 0
#define DP_NEED_MAP 1
#define DP_BROKEN 2
#define DP_PAUSE 3
#define DP_ID_BYTES 20
#define DP_MAX_MAPS 64
#define DP_MAX_BAD 16
#define DP_MAX_QUEUE_SIZE 32768 /* the most a virtqueue may have (virtio 1.x) */

/* Word indices of a queue's block in the stats file; dataplane/stats.py is the layout. */
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

/*
 * One queue's block of the persistent in-flight log (dataplane/inflight_log.py maps the
 * file). It survives the process, so a successor knows where the avail ring was read up
 * to and which requests were taken but never completed (see recover() in ring.c).
 */
struct dp_vqlog {
    uint16_t last_avail; /* avail entries taken so far */
    uint16_t used_idx;   /* used entries published so far */
    uint16_t num;        /* the queue size the block was laid out for */
    uint16_t valid;      /* 1 once initialised for the running queue */
    uint32_t replayed;   /* requests replayed by successors, for the record */
    uint32_t reserved;
    uint8_t inflight[];  /* per descriptor head: 1 while the request is being served */
};

struct dp_map {
    uint64_t start, last;
    uint8_t *host;
    int writable;
};

/* A request handed to the queue's dp_aio, until it completes. */
struct dp_slot {
    struct iovec small[4], *big, *iov;
    uint32_t big_cap;
    uint32_t written; /* what the used element reports on success */
    uint8_t *status;
    int op, write;
    uint64_t bytes;
    struct timespec t0;
    int busy; /* on the aio: the head may not be taken again until it completes */
};

struct dp_queue {
    uint32_t index, num;
    uint64_t desc_iova, avail_iova, used_iova;
    int kickfd, ctlfd, devfd, irqfd, backfd;
    int directfd;       /* the backing with O_DIRECT, or -1: for reads and writes aligned to */
    uint32_t dio_align; /* this (offset, length and every buffer) */
    int readonly, can_flush, can_discard, event_idx, indirect;
    int packed; /* VIRTIO_F_RING_PACKED: last_avail and used_idx hold position | wrap << 15 */
    uint64_t capacity; /* bytes, a multiple of SECTOR */
    uint32_t max_discard_seg;
    uint8_t serial[DP_ID_BYTES];
    uint16_t last_avail, used_idx, signalled_used;
    int signalled_valid;
    volatile int pause_req;
    uint64_t miss_iova;
    uint64_t bad[DP_MAX_BAD]; /* IOVAs of this request the kernel would not map */
    int nbad;
    uint64_t served, interrupts, errors, replayed, direct;
    uint64_t *stats; /* this queue's block of the shared stats file, or NULL */
    struct dp_vqlog *log; /* NULL: no crash recovery */
    int recovering;       /* the log's state must be reconciled before serving */
    char error[160];
    int nmaps;
    struct dp_map maps[DP_MAX_MAPS];
    int rings_ok;
    uint8_t *desc, *avail, *used;
    struct iovec *iov; /* iov_cap readable entries, then iov_cap writable ones */
    uint32_t iov_cap;
    /* Asynchronous I/O (split rings): reads of at least async_min bytes and writes of at
     * least async_write_min are queued on aio and completed out of order (see SPREAD_MIN
     * in ring.c). NULL: all is served in order here. */
    struct dp_aio *aio;
    uint32_t async_min, async_write_min;
    struct dp_slot *slots; /* per descriptor head */
    uint32_t inflight;
};

/* Checks the queue's size, ring addresses and start positions (0, or -EINVAL with
 * q->error set) and allocates its iovecs (-ENOMEM). */
int dp_queue_init(struct dp_queue *q);
void dp_queue_free(struct dp_queue *q);
void *dp_mmap(int fd, uint64_t length, uint64_t offset, int writable);
int dp_munmap(void *host, uint64_t length);
void dp_mark_bad(struct dp_queue *q, uint64_t iova);
int dp_map_add(struct dp_queue *q, uint64_t start, uint64_t last, void *host, int writable);
int dp_map_invalidate(struct dp_queue *q, uint64_t start, uint64_t last);
int dp_aio_attach(struct dp_queue *q, struct dp_aio *aio);
/* `block` holds flags for `capacity` heads; with `resume`, the queue starts from it. */
int dp_log_attach(struct dp_queue *q, void *block, uint32_t capacity, int resume);
int dp_serve(struct dp_queue *q);
int dp_run(struct dp_queue *q);
#endif
