/*
 * One virtqueue of a virtio-blk device, served by the fast path: what Python sets up (see
 * engine.py and its cffi declarations in ring_build.py), the state the C loop keeps, and
 * the calls Python makes. The pieces behind it, one job per file:
 *   queue.c    set-up checks, the serving loop, requests in flight on the backend
 *   split.c    the split ring format      packed.c  the packed ring format
 *   chain.c    collecting a chain's buffers          iotlb.c   IOVA -> host translation
 *   inflight.c the crash-recovery log                stats.c   per-request statistics
 *   blk.c      virtio-blk requests                   backend.h where the data lives
 *   qos.c      the device's I/O limits (token buckets)
 *   file.c     the file backend, with aio.c (io_uring or a thread pool)
 */
#ifndef DATAPLANE_FAST_QUEUE_H
#define DATAPLANE_FAST_QUEUE_H
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include "backend.h"
#include "blk.h"
#include "stats.h"

/* What dp_serve and dp_run return. */
#define DP_IDLE 0
#define DP_NEED_MAP 1 /* q->miss_iova is not mapped: map it (or dp_mark_bad it) and call again */
#define DP_BROKEN 2   /* the ring broke a rule: q->error says which; nothing is left in flight */
#define DP_PAUSE 3
#define DP_MAX_MAPS 64
#define DP_MAX_BAD 16
#define DP_MAX_QUEUE_SIZE 32768 /* the most a virtqueue may have (virtio 1.x) */

struct dp_map {
    uint64_t start, last;
    uint8_t *host;
    int writable;
};

/* A request queued on the backend, per descriptor head, until it completes. */
struct dp_slot {
    struct iovec small[4], *big, *iov; /* its buffers, kept for the backend */
    uint32_t big_cap;
    uint32_t written; /* what the used element reports on success */
    uint8_t *status;
    int op;    /* its DP_ST_* counter */
    enum dp_io_op io_op;
    uint64_t bytes;
    struct timespec t0;
    int busy; /* the head may not be taken again until it completes */
};

struct dp_vqlog;
struct dp_qos;

struct dp_queue {
    /* Set by Python before dp_queue_init. */
    uint32_t index, num;
    uint64_t desc_iova, avail_iova, used_iova;
    int kickfd, ctlfd, devfd, irqfd;
    int event_idx, indirect;
    int packed; /* VIRTIO_F_RING_PACKED: last_avail and used_idx hold position | wrap << 15 */
    uint16_t last_avail, used_idx;
    uint64_t *stats;    /* this queue's block of the shared stats file, or NULL */
    struct dp_blk blk;  /* the device its requests address */
    struct dp_qos *qos; /* the device's I/O limits, shared by its queues; NULL: none */
    /* Control and reporting. */
    volatile int pause_req;
    uint64_t miss_iova;
    uint64_t served, interrupts, errors, replayed;
    uint64_t throttled;   /* times a request was left in the ring by the I/O limits */
    uint64_t throttle_ns; /* 0, or the last pass stopped at a request the limits hold back
                           * this long at least */
    char error[160];
    int nmaps;
    uint32_t inflight; /* requests queued on the backend */
    /* The loop's own. */
    uint32_t waiting; /* requests dp_stats_start counted and dp_stats_account not yet */
    struct dp_backend *backend;
    struct dp_slot *slots; /* per descriptor head, when requests may be queued */
    uint16_t signalled_used;
    int signalled_valid;
    uint64_t bad[DP_MAX_BAD]; /* IOVAs of this request the kernel would not map */
    int nbad;
    struct dp_vqlog *log; /* NULL: no crash recovery */
    int recovering;       /* the log's state must be reconciled before serving */
    struct dp_map maps[DP_MAX_MAPS];
    int rings_ok;
    uint8_t *desc, *avail, *used;
    struct iovec *iov; /* iov_cap readable entries, then iov_cap writable ones */
    uint32_t iov_cap;
};

/* Checks the queue's size, ring addresses and start positions (0, or -EINVAL with
 * q->error set) and allocates its iovecs (-ENOMEM). */
int dp_queue_init(struct dp_queue *q);
/* Completes what is in flight, then frees what dp_queue_init and dp_queue_attach made. */
void dp_queue_free(struct dp_queue *q);
/* Serve requests through `backend` (which outlives the queue); required before the queue
 * is served. Returns 1 when requests may stay in flight on it, 0 when the queue serves
 * everything in order (packed rings, whose in-flight log needs in-order completion; a
 * backend that never queues, or not deep enough for the queue), -ENOMEM. */
int dp_queue_attach(struct dp_queue *q, struct dp_backend *backend);
void *dp_mmap(int fd, uint64_t length, uint64_t offset, int writable);
int dp_munmap(void *host, uint64_t length);
/* Python could not map `iova` for the current request. */
void dp_mark_bad(struct dp_queue *q, uint64_t iova);
int dp_map_add(struct dp_queue *q, uint64_t start, uint64_t last, void *host, int writable);
/* Forget every mapping overlapping [start, last]; returns how many. */
int dp_map_invalidate(struct dp_queue *q, uint64_t start, uint64_t last);
/* `block` holds flags for `capacity` heads; with `resume`, the queue starts from it. */
int dp_log_attach(struct dp_queue *q, void *block, uint32_t capacity, int resume);
/* Serve everything the driver posted, up to a request the I/O limits hold back (then
 * q->throttle_ns is set), and complete it; one interrupt for the batch. */
int dp_serve(struct dp_queue *q);
/* Serve until paused or until Python is needed (see queue.c). */
int dp_run(struct dp_queue *q);
#endif
