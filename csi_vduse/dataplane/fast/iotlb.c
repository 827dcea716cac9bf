/* A queue's IOVA -> host table; see iotlb.h. Every guest address and length is checked
 * here: a range must lie inside mappings, writable where the device writes, and not wrap. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "iotlb.h"
#include "queue.h"

void *dp_mmap(int fd, uint64_t length, uint64_t offset, int writable)
{
    void *p = mmap(NULL, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd,
                   (off_t)offset);
    return p == MAP_FAILED ? NULL : p;
}

int dp_munmap(void *host, uint64_t length)
{
    return munmap(host, length) ? -errno : 0;
}

void dp_mark_bad(struct dp_queue *q, uint64_t iova)
{
    if (q->nbad < DP_MAX_BAD)
        q->bad[q->nbad++] = iova;
}

int dp_map_add(struct dp_queue *q, uint64_t start, uint64_t last, void *host, int writable)
{
    if (q->nmaps == DP_MAX_MAPS || last < start)
        return -ENOSPC;
    q->maps[q->nmaps++] = (struct dp_map){start, last, host, writable};
    return 0;
}

int dp_map_invalidate(struct dp_queue *q, uint64_t start, uint64_t last)
{
    int kept = 0, dropped = 0;
    for (int i = 0; i < q->nmaps; i++) {
        if (q->maps[i].start <= last && q->maps[i].last >= start)
            dropped++;
        else
            q->maps[kept++] = q->maps[i];
    }
    q->nmaps = kept;
    q->rings_ok = 0;
    return dropped;
}

static struct dp_map *find(struct dp_queue *q, uint64_t iova)
{
    for (int i = 0; i < q->nmaps; i++)
        if (q->maps[i].start <= iova && iova <= q->maps[i].last)
            return &q->maps[i];
    return NULL;
}

static int miss(struct dp_queue *q, uint64_t iova)
{
    for (int i = 0; i < q->nbad; i++)
        if (q->bad[i] == iova)
            return DP_REFUSED;
    if (q->nbad == DP_MAX_BAD)
        return DP_REFUSED; /* that many holes in one request: no more round trips for it */
    q->miss_iova = iova;
    return DP_MISSING;
}

int dp_iotlb_contiguous(struct dp_queue *q, uint64_t iova, uint64_t len, int writable,
                        uint8_t **host)
{
    struct dp_map *m = find(q, iova);
    if (!m)
        return miss(q, iova);
    if (len == 0 || len - 1 > m->last - iova || (writable && !m->writable))
        return DP_REFUSED;
    *host = m->host + (iova - m->start);
    return DP_MAPPED;
}

int dp_iotlb_translate(struct dp_queue *q, uint64_t iova, uint64_t len, int writable,
                       struct iovec *iov, uint32_t *n)
{
    while (len) {
        struct dp_map *m = find(q, iova);
        if (!m)
            return miss(q, iova);
        if (writable && !m->writable)
            return DP_REFUSED;
        if (*n == q->iov_cap)
            return DP_REFUSED;
        uint64_t room = m->last - iova; /* bytes after the first, so no overflow */
        uint64_t chunk = len - 1 <= room ? len : room + 1;
        iov[*n].iov_base = m->host + (iova - m->start);
        iov[*n].iov_len = chunk;
        (*n)++;
        len -= chunk;
        iova += chunk;
        if (len && iova == 0)
            return DP_REFUSED; /* wrapped past the top of the IOVA space */
    }
    return DP_MAPPED;
}
