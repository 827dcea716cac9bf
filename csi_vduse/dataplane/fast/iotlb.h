/*
 * A queue's table of the IOTLB regions Python mapped (IOVA -> host address), and the
 * translation of guest addresses through it. Python owns the mappings and changes the
 * table only while the queue's thread is paused (see engine.py).
 */
#ifndef DATAPLANE_FAST_IOTLB_H
#define DATAPLANE_FAST_IOTLB_H
#include <stdint.h>
#include <sys/uio.h>

struct dp_queue;

/* The three answers below: mapped, missing (q->miss_iova set: ask Python), not allowed. */
#define DP_MAPPED 0
#define DP_MISSING 1
#define DP_REFUSED (-1)

/* A host pointer to [iova, iova + len) lying within one mapping (ring areas, tables). */
int dp_iotlb_contiguous(struct dp_queue *q, uint64_t iova, uint64_t len, int writable,
                        uint8_t **host);
/* Append [iova, iova + len) to iov (at most q->iov_cap entries), split where mappings end. */
int dp_iotlb_translate(struct dp_queue *q, uint64_t iova, uint64_t len, int writable,
                       struct iovec *iov, uint32_t *n);
#endif
