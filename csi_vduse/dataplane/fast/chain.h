/* One request's descriptor chain as the ring walkers collect it, for the request handler. */
#ifndef DATAPLANE_FAST_CHAIN_H
#define DATAPLANE_FAST_CHAIN_H
#include <stdint.h>
#include <sys/uio.h>

#include "stats.h"

struct dp_queue;

struct dp_chain {
    struct iovec *rd, *wr; /* device-readable buffers, then device-writable ones */
    uint32_t nrd, nwr;
    uint64_t rd_len, wr_len;
    int bad;       /* a buffer broke a rule: the request fails with IOERR */
    int status_ok; /* the final descriptor is mapped, device-writable and non-empty */
    int need_map;  /* an IOVA is missing from the table: retry after mapping */
    /* The request handler's copy of its header, read once (and dropped from rd). */
    int has_header;
    uint32_t type;
    uint64_t sector;
    struct dp_outcome out; /* what the request handler did, for the stats */
};

/* A chain collecting into the queue's iovec arrays. */
void dp_chain_start(struct dp_queue *q, struct dp_chain *c);
/* Add one descriptor's buffer (VRING_DESC_F_WRITE in `flags` for device-writable);
 * returns 1 when it is mapped. */
int dp_chain_add(struct dp_queue *q, struct dp_chain *c, uint64_t addr, uint32_t len,
                 uint16_t flags);
#endif
