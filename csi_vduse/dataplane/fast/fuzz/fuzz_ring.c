/*
 * libFuzzer target for the fast path's request loop (every C file of fast/ but sandbox.c)
 * and the RBD backend (dataplane/rbd/rbd.c, on the fake librbd of fake_librbd.c): one input
 * is one queue's life, driven through the public API of queue.h, file.h, aio.h and rbd.h
 * the way engine.py drives it, with every byte the guest controls taken from the input.
 * Built by scripts/fuzz.sh; dataplane/fast/fuzz/make_seeds.py writes the seed corpus from
 * readable descriptions.
 *
 * Why the harness looks like this:
 *   - Guest memory is a memfd mapped per IOTLB region, as MapPool maps it, each mapping
 *     inside a PROT_NONE reservation (GUARD bytes either side), so a stray access past a
 *     region faults under ASan instead of landing in some other allocation. GUARD covers the
 *     furthest a 15-bit packed position can reach past a ring (16 * 0x7fff bytes).
 *   - Two regions of REGION bytes, adjacent in IOVA space, so buffers can straddle them.
 *   - An invalidated mapping is made PROT_NONE, not unmapped, until the input ends: a stale
 *     host pointer kept past dp_map_invalidate then faults, and the address cannot be
 *     reused by the next mapping (where a real stale access would go unnoticed).
 *   - The in-flight log block, the stats block and the QoS page end at a page boundary
 *     followed by a guard page, so an index past their size faults.
 *   - The QoS buckets run on a fake clock that only the input moves, so an input that holds
 *     requests back replays the same.
 *   - The aio engines are opened once per process (as AioSet does) and shared by inputs.
 *   - dp_serve is called in passes with a bounded number of DP_NEED_MAP round trips; a
 *     dp_serve call that never returns is a finding, reported by libFuzzer's -timeout.
 *   - Every backend is wrapped in a checker of backend.h's contract: a read or write
 *     reports all its bytes or an error, only operations in flight are reaped, and a read
 *     the fake librbd completed short is never reported whole.
 *   - After each pass only the requests the backend holds wait, and the stats block's stall
 *     mark (DP_ST_WAITING_SINCE) is set exactly while one does; when the queue is freed,
 *     every request has been accounted and the mark is back to 0.
 *
 * Input format (little-endian; a short input reads as if padded with zero bytes):
 *
 *   Header, 80 bytes:
 *     0   u8  features  bit 0 packed, 1 event_idx, 2 indirect, 3 readonly, 4 can_flush,
 *                       5 can_discard, 6 stats block attached, 7 region B read-only
 *     1   u8  shape     bits 0-3 queue size: 0..10 -> 1 << n; 11..15 -> the sizes a
 *                       VMM should never set: 2048, 32768, 3, 1000, 1025.
 *                       bits 4-5 engine: 0 none, 1 threads, 2 io_uring (threads if
 *                       io_uring is unavailable), 3 queue-all: a backend of the harness
 *                       that queues every operation offered (flush, discard and write
 *                       zeroes too, as an asynchronous backend such as librbd would) and
 *                       completes them last-in first-out when reaped.
 *                       bits 6-7 async thresholds: 0 what dp_file_use_aio chose, 1 all
 *                       reads and writes (as the unit tests run), 2 reads only, 3 writes only
 *     2   u8  log       bit 0 in-flight log attached, 1 resume from it (the log's header
 *                       and flags below), 2 log num taken raw (else the queue's size),
 *                       3 log valid taken raw (else 1)
 *     3   u8  layout    bit 0 region B at the top of the IOVA space instead of after A,
 *                       bit 1 RBD: the queue's backend is rbd.c on the fake librbd, over an
 *                       image of the 1 MiB backing file; the shape's engine bits then give
 *                       its depth (0 the queue's size, as engine.py asks; 1 one less, too
 *                       shallow to keep anything in flight; 2 twice it; 3 one), its
 *                       thresholds bits and the submit faults mean nothing, and the header
 *                       is followed by the fake's script (FAKE_RBD_SCRIPT bytes, see
 *                       fake_librbd.h: failures, short reads, the completions' order)
 *     4   u16 avail     split: last_avail = used_idx (as engine.py starts a split queue);
 *                       packed: last_avail, position | wrap << 15
 *     6   u16 used      packed: used_idx, position | wrap << 15
 *     8   u64 desc_iova   16 u64 avail_iova (driver area)   24 u64 used_iova (device area)
 *     32  u16 log last_avail   34 u16 log used_idx   36 u16 log num   38 u16 log valid
 *     40  u16 capacity in sectors (at most 4096: beyond the 1 MiB backing reads hit EOF)
 *     42  u32 submit faults: bit i set fails the input's i-th io_uring submission with
 *                       EAGAIN before it reaches the kernel (aio.c is built with
 *                       io_uring_submit renamed to fuzz_io_uring_submit, below)
 *     46  u8  qos       bit 0 a QoS page attached: the device's I/O limits (qos.c), on a
 *                       fake clock that starts at 1 s and moves only with CLOCK; bit 1 its
 *                       magic broken (the engine refuses the device)
 *     47  u8  limits    the page's limits, two bits each: 0-1 IOPS, 2-3 read bytes/s, 4-5
 *                       write bytes/s (0 none, 1, 1000, or 2^64 - 1: beyond qos.MAX_RATE),
 *                       6-7 burst ms (0, 1000, 3600000, or 2^64 - 1)
 *     48  32 bytes: in-flight flags of heads 0..255 for a resumed log, bit i of byte i / 8
 *
 *   With layout bit 1, FAKE_RBD_SCRIPT bytes: the fake librbd's script.
 *
 *   Then operations, until the input ends (at most MAX_OPS; a final SERVE always runs):
 *     op byte % 9:
 *     0 WRITE      u32 offset, u16 len, len bytes: the guest writes its memory (offset into
 *                  the regions' bytes, A then B, modulo their size; len clipped to fit)
 *     1 SERVE      one pass: dp_serve until it returns something other than DP_NEED_MAP,
 *                  mapping what it asks for (at most MAX_TRIPS round trips)
 *     2 STEP       one dp_serve call and at most one mapping: requests may stay in flight
 *                  while the guest's next WRITEs land
 *     3 INVALIDATE u32 iova, u32 len: pause, dp_map_invalidate [iova, iova + len - 1] and
 *                  unmap the regions it overlaps (len 0: the whole IOVA space)
 *     4 CAPACITY   u16 sectors: pause, change capacity
 *     5 FILL       u32 offset, u16 len, u8 byte: like WRITE, with one byte repeated
 *     6 DISK       u32 offset, u16 len, len bytes: what the backing file holds
 *     7 CLOCK      u32 us: the QoS clock moves on
 *     8 LIMITS     u8 limits (as byte 47), u8 bit 0 torn: qos.update writes the page in
 *                  place under its seqlock; torn stops half-way, the sequence left odd
 *   After DP_BROKEN the queue is never served again, as engine.py stops it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>

#include "../aio.h"
#include "../file.h"
#include "../inflight.h"
#include "../qos.h"
#include "../queue.h"
#include "../../rbd/rbd.h"
#include "fake_librbd.h"

/* Fault injection into aio.c's submissions: scripts/fuzz.sh compiles every source with
 * -Dio_uring_submit=fuzz_io_uring_submit; here the name means liburing's again. */
#undef io_uring_submit
#include <liburing.h>

static uint32_t submit_faults; /* per input: bit 0 decides the next submission */

int fuzz_io_uring_submit(struct io_uring *ring);
int fuzz_io_uring_submit(struct io_uring *ring)
{
    int fail = submit_faults & 1;
    submit_faults >>= 1;
    return fail ? -EAGAIN : io_uring_submit(ring);
}

/* The harness hands ring.c bytes in the layouts the uAPI defines; check it agrees. */
_Static_assert(sizeof(struct vring_desc) == 16, "split descriptor");
_Static_assert(sizeof(struct vring_packed_desc) == 16, "packed descriptor");
_Static_assert(sizeof(struct vring_used_elem) == 8, "used element");

#define PAGE 4096u
#define REGION (128u << 10)
#define NREGIONS 2
#define GUARD (1u << 20)
#define BACKING (1u << 20)
#define MAX_QUEUE 1024 /* dataplane/blk/profile.py MAX_QUEUE_SIZE, which sizes a log block */
#define LOG_BLOCK (16 + MAX_QUEUE) /* inflight_log.py BLOCK_SIZE */
#define HEADER 80
#define MAX_OPS 64
#define MAX_PASSES 24
#define MAX_TRIPS 64
#define MAX_INVALIDATIONS 8
#define AIO_THREADS 4 /* engine.py POOL_THREADS */

static const uint32_t bad_sizes[] = {2048, 32768, 3, 1000, 1025};
static const uint64_t qos_rates[] = {0, 1, 1000, UINT64_MAX};
static const uint64_t qos_bursts[] = {0, 1000, 3600000, UINT64_MAX};

struct region {
    uint64_t start, last;
    int writable;
    uint8_t *host;    /* the current mapping, or NULL */
    uint8_t *reserve; /* its reservation, guards included */
};

/* Per process: opened once, reused by every input. */
static struct {
    int guestfd, backfd, irqfd;
    struct dp_aio *threads, *uring;
    uint8_t *log_page, *stats_page, *qos_page;
} g;

/*
 * Engine 3: queues every operation it is offered, does each on the file backend when
 * reaped, and reports the latest queued first, so completions arrive out of order and
 * every kind of request stays in flight. Its queued iovecs are the caller's (backend.h):
 * a transfer after they were released reads freed memory, which ASan reports.
 */
struct queue_all {
    struct dp_backend base;
    struct dp_file *file;
    struct dp_io queued[MAX_QUEUE];
    unsigned n;
};

static int queue_all_start(struct dp_backend *b, struct dp_io *io, int may_queue, int64_t *res)
{
    struct queue_all *qa = (struct queue_all *)b;
    struct dp_backend *file = dp_file_backend(qa->file);
    if (!may_queue || qa->n == MAX_QUEUE)
        return file->ops->start(file, io, 0, res);
    qa->queued[qa->n++] = *io;
    return DP_IO_QUEUED;
}

static void queue_all_submit(struct dp_backend *b)
{
}

static unsigned queue_all_reap(struct dp_backend *b, struct dp_io_done *out, unsigned max,
                               int wait)
{
    struct queue_all *qa = (struct queue_all *)b;
    struct dp_backend *file = dp_file_backend(qa->file);
    unsigned got = 0;
    while (got < max && qa->n) {
        struct dp_io *io = &qa->queued[--qa->n];
        out[got].tag = io->tag;
        file->ops->start(file, io, 0, &out[got].res);
        got++;
    }
    return got;
}

static int queue_all_fd(const struct dp_backend *b)
{
    return -1;
}

static unsigned queue_all_depth(const struct dp_backend *b)
{
    return MAX_QUEUE;
}

static const struct dp_backend_ops queue_all_ops = {
    .start = queue_all_start,
    .submit = queue_all_submit,
    .reap = queue_all_reap,
    .fd = queue_all_fd,
    .depth = queue_all_depth,
};

/*
 * The contract checker every queue's backend is wrapped in (backend.h): what a backend
 * reports for a read or write is all its bytes or an error, only an operation in flight is
 * reaped, and once, a reap that waits returns one at least while any is in flight; a read
 * the fake librbd completed short is never reported whole.
 */
struct checked {
    struct dp_backend base;
    struct dp_backend *inner;
    uint32_t num;
    struct dp_io *queued; /* per tag (a head), while in flight */
    uint8_t *busy;
    uint32_t nbusy;
};

static void check_result(const struct dp_io *io, int64_t res)
{
    int transfer = io->op == DP_IO_READ || io->op == DP_IO_WRITE;
    if (transfer && res >= 0 && (uint64_t)res != io->len) {
        fprintf(stderr, "backend: a %s of %llu bytes reported %lld\n",
                io->op == DP_IO_READ ? "read" : "write", (unsigned long long)io->len,
                (long long)res);
        abort();
    }
    if (fake_rbd_took_short(io->iov, io->niov) && io->op == DP_IO_READ && res >= 0) {
        fprintf(stderr, "backend: a read librbd completed short reported whole (%lld bytes)\n",
                (long long)res);
        abort();
    }
}

static int checked_start(struct dp_backend *b, struct dp_io *io, int may_queue, int64_t *res)
{
    struct checked *c = (struct checked *)b;
    int rc = c->inner->ops->start(c->inner, io, may_queue, res);
    if (rc != DP_IO_QUEUED) {
        check_result(io, *res);
        return rc;
    }
    if (!may_queue || io->tag >= c->num || c->busy[io->tag]) {
        fprintf(stderr, "backend: queued tag %llu (may_queue %d)\n", (unsigned long long)io->tag,
                may_queue);
        abort();
    }
    c->queued[io->tag] = *io;
    c->busy[io->tag] = 1;
    c->nbusy++;
    return rc;
}

static void checked_submit(struct dp_backend *b)
{
    struct checked *c = (struct checked *)b;
    c->inner->ops->submit(c->inner);
}

static unsigned checked_reap(struct dp_backend *b, struct dp_io_done *out, unsigned max, int wait)
{
    struct checked *c = (struct checked *)b;
    unsigned n = c->inner->ops->reap(c->inner, out, max, wait);
    if (n > max || (wait && n == 0 && c->nbusy)) {
        fprintf(stderr, "backend: reaped %u of at most %u (wait %d, %u in flight)\n", n, max, wait,
                c->nbusy);
        abort();
    }
    for (unsigned i = 0; i < n; i++) {
        if (out[i].tag >= c->num || !c->busy[out[i].tag]) {
            fprintf(stderr, "backend: reaped tag %llu, not in flight\n",
                    (unsigned long long)out[i].tag);
            abort();
        }
        c->busy[out[i].tag] = 0;
        c->nbusy--;
        check_result(&c->queued[out[i].tag], out[i].res);
    }
    return n;
}

static int checked_fd(const struct dp_backend *b)
{
    const struct checked *c = (const struct checked *)b;
    return c->inner->ops->fd(c->inner);
}

static unsigned checked_depth(const struct dp_backend *b)
{
    const struct checked *c = (const struct checked *)b;
    return c->inner->ops->depth(c->inner);
}

static const struct dp_backend_ops checked_ops = {
    .start = checked_start,
    .submit = checked_submit,
    .reap = checked_reap,
    .fd = checked_fd,
    .depth = checked_depth,
};

/* Per input. */
struct run {
    const uint8_t *data;
    size_t size, at;
    struct dp_queue *q;
    struct dp_qos *qos; /* NULL: no page */
    uint8_t *qos_page;
    struct region regions[NREGIONS];
    uint8_t *retired[NREGIONS * (MAX_INVALIDATIONS + 1)];
    int nretired, broken;
};

static void die(const char *what)
{
    perror(what);
    abort();
}

/* [guard page][page][guard page]; returns the page. */
static uint8_t *guarded_page(void)
{
    uint8_t *p = mmap(NULL, 3 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + PAGE, PAGE, PROT_READ | PROT_WRITE))
        die("guarded page");
    return p + PAGE;
}

static void setup(void)
{
    g.guestfd = memfd_create("fuzz-guest", MFD_CLOEXEC);
    g.backfd = memfd_create("fuzz-backing", MFD_CLOEXEC);
    g.irqfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g.guestfd < 0 || g.backfd < 0 || g.irqfd < 0)
        die("setup fds");
    int err = 0;
    g.threads = dp_aio_open(DP_AIO_THREADS, MAX_QUEUE, AIO_THREADS, &err);
    g.uring = dp_aio_open(DP_AIO_URING, MAX_QUEUE, 0, &err);
    if (!g.uring)
        fprintf(stderr, "fuzz_ring: no io_uring (%s): its inputs use threads\n", strerror(-err));
    g.log_page = guarded_page();
    g.stats_page = guarded_page();
    g.qos_page = guarded_page();
    /* Let the pool's new threads reach their wait: one still starting would pick up a
     * request queued before dp_aio_submit, and an input's result would depend on timing. */
    usleep(50 * 1000);
}

/* Bytes from the input, zeroes past its end. */
static void take(struct run *r, void *out, size_t n)
{
    size_t have = r->at < r->size ? r->size - r->at : 0;
    size_t got = have < n ? have : n;
    memcpy(out, r->data + r->at, got);
    memset((uint8_t *)out + got, 0, n - got);
    r->at += n;
}

static uint64_t take_le(struct run *r, size_t n)
{
    uint8_t b[8];
    take(r, b, n);
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | b[i];
    return v;
}

/* A pointer to up to `n` input bytes (fewer at its end), for WRITE and DISK. */
static const uint8_t *take_bytes(struct run *r, size_t *n)
{
    size_t have = r->at < r->size ? r->size - r->at : 0;
    if (*n > have)
        *n = have;
    const uint8_t *p = r->data + r->at;
    r->at += *n;
    return p;
}

static void map_region(struct region *m, int index)
{
    uint8_t *res = mmap(NULL, GUARD + REGION + GUARD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (res == MAP_FAILED)
        die("reserve region");
    int prot = PROT_READ | (m->writable ? PROT_WRITE : 0);
    if (mmap(res + GUARD, REGION, prot, MAP_SHARED | MAP_FIXED, g.guestfd,
             (off_t)index * REGION) == MAP_FAILED)
        die("map region");
    m->reserve = res;
    m->host = res + GUARD;
}

/* MapPool.invalidate: the mapping goes; its addresses stay reserved until the input ends. */
static void unmap_region(struct run *r, struct region *m)
{
    if (mprotect(m->host, REGION, PROT_NONE))
        die("retire region");
    r->retired[r->nretired++] = m->reserve;
    m->host = m->reserve = NULL;
}

/* FastQueue._map: map the region holding miss_iova and add it, or mark the IOVA bad. */
static void round_trip(struct run *r)
{
    uint64_t iova = r->q->miss_iova;
    for (int i = 0; i < NREGIONS; i++) {
        struct region *m = &r->regions[i];
        if (iova < m->start || iova > m->last)
            continue;
        if (!m->host)
            map_region(m, i);
        if (dp_map_add(r->q, m->start, m->last, m->host, m->writable) == 0)
            return;
        break;
    }
    dp_mark_bad(r->q, iova);
}

/* Serve with at most `trips` mappings in between; DP_BROKEN stops the queue for good. */
/* Between passes nothing is being served: only what the backend holds waits, and the stall
 * mark is set exactly while something does. */
static void check_stall_mark(const struct dp_queue *q)
{
    if (q->stats && (q->waiting != q->inflight || !q->stats[DP_ST_WAITING_SINCE] != !q->waiting))
        __builtin_trap();
}

static void serve(struct run *r, int trips)
{
    for (int i = 0; i < trips && !r->broken; i++) {
        int rc = dp_serve(r->q);
        check_stall_mark(r->q);
        if (rc == DP_BROKEN)
            r->broken = 1;
        if (rc != DP_NEED_MAP)
            return;
        round_trip(r);
    }
}

/* FastQueue.pause: dp_run sees pause_req before serving, finishes what is in flight and
 * returns, which is what engine.py waits for before it changes mappings or capacity. */
static void pause_queue(struct run *r)
{
    r->q->pause_req = 1;
    (void)dp_run(r->q);
    r->q->pause_req = 0;
}

static void write_guest(uint64_t offset, const uint8_t *bytes, size_t n, int fill)
{
    uint64_t total = (uint64_t)NREGIONS * REGION;
    offset %= total;
    if (n > total - offset)
        n = (size_t)(total - offset);
    uint8_t buf[1 << 16];
    if (fill)
        memset(buf, *bytes, n);
    if (pwrite(g.guestfd, fill ? buf : bytes, n, (off_t)offset) != (ssize_t)n)
        die("write guest memory");
}

/* qos.update: the limits coded in `code` (header byte 47), written under the seqlock; `torn`
 * leaves the sequence odd, as a writer stopped half-way would. */
static void write_limits(uint8_t *page, uint8_t code, int torn)
{
    uint64_t limits[4] = {qos_rates[code & 3], qos_rates[code >> 2 & 3],
                          qos_rates[code >> 4 & 3], qos_bursts[code >> 6 & 3]};
    uint32_t sequence;
    memcpy(&sequence, page + 12, sizeof sequence);
    sequence |= 1;
    memcpy(page + 12, &sequence, sizeof sequence);
    memcpy(page + 16, limits, sizeof limits);
    sequence += !torn;
    memcpy(page + 12, &sequence, sizeof sequence);
}

static void op(struct run *r, uint8_t kind, int *passes, int *invalidations)
{
    switch (kind % 9) {
    case 0:
    case 5: {
        uint64_t offset = take_le(r, 4);
        size_t n = (size_t)take_le(r, 2);
        if (kind % 9 == 5) {
            uint8_t byte = (uint8_t)take_le(r, 1);
            write_guest(offset, &byte, n, 1);
        } else {
            const uint8_t *bytes = take_bytes(r, &n);
            write_guest(offset, bytes, n, 0);
        }
        break;
    }
    case 1:
    case 2:
        if ((*passes)++ < MAX_PASSES)
            serve(r, kind % 9 == 1 ? MAX_TRIPS : 1);
        break;
    case 3: {
        uint64_t start = take_le(r, 4), len = take_le(r, 4);
        uint64_t last = len ? start + len - 1 : UINT64_MAX;
        if (len == 0)
            start = 0;
        if ((*invalidations)++ >= MAX_INVALIDATIONS)
            break;
        pause_queue(r);
        dp_map_invalidate(r->q, start, last);
        for (int i = 0; i < NREGIONS; i++) {
            struct region *m = &r->regions[i];
            if (m->host && m->start <= last && m->last >= start)
                unmap_region(r, m);
        }
        break;
    }
    case 4: {
        uint64_t sectors = take_le(r, 2);
        pause_queue(r);
        r->q->blk.capacity = (sectors > 4096 ? 4096 : sectors) * 512;
        break;
    }
    case 6: {
        uint64_t offset = take_le(r, 4) % BACKING;
        size_t n = (size_t)take_le(r, 2);
        const uint8_t *bytes = take_bytes(r, &n);
        if (n > BACKING - offset)
            n = (size_t)(BACKING - offset);
        if (pwrite(g.backfd, bytes, n, (off_t)offset) != (ssize_t)n)
            die("write backing");
        break;
    }
    case 7: {
        uint64_t us = take_le(r, 4);
        if (r->qos)
            r->qos->fake_now_ns += us * 1000;
        break;
    }
    case 8: {
        uint8_t code = (uint8_t)take_le(r, 1), torn = (uint8_t)take_le(r, 1) & 1;
        if (r->qos)
            write_limits(r->qos_page, code, torn);
        break;
    }
    }
}

/* Both files start each input zeroed at their size. */
static void reset_files(void)
{
    if (ftruncate(g.guestfd, 0) || ftruncate(g.guestfd, (off_t)NREGIONS * REGION) ||
        ftruncate(g.backfd, 0) || ftruncate(g.backfd, BACKING))
        die("reset files");
    memset(g.log_page, 0, PAGE);
    memset(g.stats_page, 0, PAGE);
    memset(g.qos_page, 0, PAGE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g.log_page)
        setup();
    reset_files();
    struct run r = {.data = data, .size = size};
    uint8_t features = (uint8_t)take_le(&r, 1), shape = (uint8_t)take_le(&r, 1);
    uint8_t logbits = (uint8_t)take_le(&r, 1), layout = (uint8_t)take_le(&r, 1);
    uint16_t avail = (uint16_t)take_le(&r, 2), used = (uint16_t)take_le(&r, 2);
    uint64_t desc_iova = take_le(&r, 8), avail_iova = take_le(&r, 8), used_iova = take_le(&r, 8);
    uint16_t log_avail = (uint16_t)take_le(&r, 2), log_used = (uint16_t)take_le(&r, 2);
    uint16_t log_num = (uint16_t)take_le(&r, 2), log_valid = (uint16_t)take_le(&r, 2);
    uint64_t sectors = take_le(&r, 2);
    submit_faults = (uint32_t)take_le(&r, 4);
    uint8_t qosbits = (uint8_t)take_le(&r, 1), limits = (uint8_t)take_le(&r, 1);
    uint8_t flags[32];
    take(&r, flags, sizeof flags);
    int rbd = layout & 2;
    uint8_t script[FAKE_RBD_SCRIPT];
    if (rbd)
        take(&r, script, sizeof script);

    uint32_t code = shape & 15;
    uint32_t num = code <= 10 ? 1u << code : bad_sizes[code - 11];
    int engine = shape >> 4 & 3, thresholds = shape >> 6 & 3;
    r.regions[0] = (struct region){0, REGION - 1, 1, NULL, NULL};
    uint64_t b_start = layout & 1 ? 0 - (uint64_t)REGION : REGION;
    r.regions[1] = (struct region){b_start, b_start + REGION - 1, !(features & 128), NULL, NULL};

    /* FastEngine.__init__: the page at the end of its guarded page, so reading past it faults. */
    struct dp_qos qos;
    if (qosbits & 1) {
        r.qos_page = g.qos_page + PAGE - DP_QOS_PAGE_SIZE;
        memcpy(r.qos_page, qosbits & 2 ? "CSIVDQX" : "CSIVDQS", 8);
        r.qos_page[8] = 1; /* version */
        write_limits(r.qos_page, limits, 0);
        if (dp_qos_init(&qos, r.qos_page))
            return 0; /* refused */
        qos.fake_now_ns = 1000000000;
        r.qos = &qos;
    }

    /* FastQueue.__init__ */
    struct dp_queue *q = calloc(1, sizeof *q);
    if (!q)
        goto free_qos;
    r.q = q;
    q->num = num;
    q->desc_iova = desc_iova;
    q->avail_iova = avail_iova;
    q->used_iova = used_iova;
    q->kickfd = q->ctlfd = q->devfd = -1;
    q->irqfd = g.irqfd;
    q->packed = features & 1;
    q->event_idx = !!(features & 2);
    q->indirect = !!(features & 4);
    q->blk.readonly = !!(features & 8);
    q->blk.can_flush = !!(features & 16);
    q->blk.can_discard = !!(features & 32);
    q->blk.max_discard_seg = 16; /* dataplane/blk/profile.py MAX_ZERO_RANGES */
    q->blk.capacity = (sectors > 4096 ? 4096 : sectors) * 512;
    memcpy(q->blk.serial, "fuzz-serial-00000001", sizeof q->blk.serial);
    q->last_avail = avail;
    q->used_idx = q->packed ? used : avail;
    q->stats = features & 64 ? (uint64_t *)(g.stats_page + PAGE - 8 * DP_ST_WORDS) : NULL;
    q->qos = r.qos;
    if (dp_queue_init(q)) {
        free(q);
        goto free_qos;
    }
    struct dp_aio *aio = NULL;
    if (!rbd && (engine == 1 || (engine == 2 && !g.uring)))
        aio = g.threads;
    else if (!rbd && engine == 2)
        aio = g.uring;
    struct dp_file file;
    dp_file_init(&file, g.backfd, -1, 4096);
    file.stats = q->stats;
    dp_file_use_aio(&file, aio);
    struct queue_all *qa = NULL;
    struct fake_rbd_image *image = NULL;
    struct dp_rbd *rb = NULL;
    struct dp_backend *backend = dp_file_backend(&file);
    struct checked checker = {.base = {&checked_ops}, .num = num};
    if (rbd) {
        /* RbdQueues.queue_backend(info.num), or deeper or shallower than the queue. */
        uint32_t depths[4] = {num, num - 1, 2 * num, 1};
        image = fake_rbd_open(g.backfd, BACKING, script);
        rb = dp_rbd_backend_new(image, depths[engine]);
        if (!rb)
            goto out;
        backend = dp_rbd_backend(rb);
    } else if (engine == 3) {
        qa = calloc(1, sizeof *qa);
        if (!qa)
            goto out;
        *qa = (struct queue_all){.base = {&queue_all_ops}, .file = &file};
        backend = &qa->base;
    }
    checker.inner = backend;
    checker.queued = calloc(num, sizeof *checker.queued);
    checker.busy = calloc(num, 1);
    if (!checker.queued || !checker.busy)
        goto out;
    int queued = dp_queue_attach(q, &checker.base);
    if (queued < 0)
        goto out;
    if (!rbd && queued && thresholds) {
        file.async_min = thresholds == 3 ? UINT32_MAX : 0;
        file.async_write_min = thresholds == 2 ? UINT32_MAX : 0;
    }

    /* FastEngine.start_queue: a resumed log holds what its predecessor left. */
    if (logbits & 1) {
        struct dp_vqlog *log = (struct dp_vqlog *)(g.log_page + PAGE - LOG_BLOCK);
        if (logbits & 2) {
            log->last_avail = log_avail;
            log->used_idx = log_used;
            log->num = logbits & 4 ? log_num : (uint16_t)num;
            log->valid = logbits & 8 ? log_valid : 1;
            for (uint32_t i = 0; i < 8 * sizeof flags; i++)
                log->inflight[i] = flags[i / 8] >> (i % 8) & 1;
        }
        if (dp_log_attach(q, log, MAX_QUEUE, logbits >> 1 & 1))
            goto out; /* engine.py refuses the queue */
    }

    int passes = 0, invalidations = 0;
    for (int i = 0; i < MAX_OPS && r.at < r.size; i++)
        op(&r, (uint8_t)take_le(&r, 1), &passes, &invalidations);
    serve(&r, MAX_TRIPS);
out:
    dp_queue_free(q); /* completes what is still in flight first */
    /* Every request that went to the backend was accounted: no stall is left marked. */
    if (q->waiting || (q->stats && q->stats[DP_ST_WAITING_SINCE]))
        __builtin_trap();
    dp_rbd_backend_free(rb);
    fake_rbd_close(image); /* a callback stopped after publishing finishes now */
    free(checker.queued);
    free(checker.busy);
    free(qa);
    free(q);
    for (int i = 0; i < NREGIONS; i++)
        if (r.regions[i].reserve)
            munmap(r.regions[i].reserve, GUARD + REGION + GUARD);
    for (int i = 0; i < r.nretired; i++)
        munmap(r.retired[i], GUARD + REGION + GUARD);
free_qos:
    if (r.qos)
        dp_qos_free(r.qos);
    return 0;
}
