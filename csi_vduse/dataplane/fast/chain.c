/* Collecting a request's buffers: the rules every ring format shares (virtio 1.x, 2.7.4:
 * device-readable buffers come before device-writable ones). */
#include <linux/virtio_ring.h>

#include "chain.h"
#include "iotlb.h"
#include "queue.h"

void dp_chain_start(struct dp_queue *q, struct dp_chain *c)
{
    *c = (struct dp_chain){.rd = q->iov, .wr = q->iov + q->iov_cap};
}

int dp_chain_add(struct dp_queue *q, struct dp_chain *c, uint64_t addr, uint32_t len,
                 uint16_t flags)
{
    int rc;
    if (flags & VRING_DESC_F_WRITE) {
        rc = dp_iotlb_translate(q, addr, len, 1, c->wr, &c->nwr);
        if (rc == 0)
            c->wr_len += len;
    } else if (c->nwr || c->wr_len) {
        rc = -1; /* a device-readable buffer after a writable one */
    } else {
        rc = dp_iotlb_translate(q, addr, len, 0, c->rd, &c->nrd);
        if (rc == 0)
            c->rd_len += len;
    }
    if (rc > 0)
        c->need_map = 1;
    else if (rc < 0)
        c->bad = 1;
    return rc == 0;
}
