/* Attaching and keeping a queue's in-flight log; see inflight.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "inflight.h"
#include "queue.h"
#include "ring.h"

void dp_log_taken(struct dp_queue *q, uint16_t head, uint16_t next_avail)
{
    if (q->log) {
        dp_log_store8(&q->log->inflight[head], 1);
        dp_log_store16(&q->log->last_avail, next_avail);
    }
}

void dp_log_completed(struct dp_queue *q, uint16_t head)
{
    if (q->log) {
        dp_log_store8(&q->log->inflight[head], 0);
        dp_log_store16(&q->log->used_idx, q->used_idx);
    }
}

int dp_log_attach(struct dp_queue *q, void *block, uint32_t capacity, int resume)
{
    struct dp_vqlog *log = block;
    char why[120];
    if (q->num > capacity) {
        snprintf(why, sizeof why, "size %u is more than the in-flight log holds (%u)", q->num,
                 capacity);
        return dp_refuse(q, why);
    }
    if (resume) {
        if (log->valid != 1 || log->num != q->num) {
            snprintf(why, sizeof why, "the in-flight log is %s", log->valid != 1
                     ? "not valid" : "laid out for another queue size");
            return dp_refuse(q, why);
        }
        uint16_t last_avail = log->last_avail, used_idx = log->used_idx;
        if (q->packed && !(dp_packed_position_ok(q, last_avail) &&
                           dp_packed_position_ok(q, used_idx))) {
            snprintf(why, sizeof why,
                     "the in-flight log's positions %#x, %#x lie outside a %u ring", last_avail,
                     used_idx, q->num);
            return dp_refuse(q, why);
        }
        q->last_avail = last_avail;
        q->used_idx = used_idx;
        q->recovering = 1;
    } else {
        dp_log_store16(&log->valid, 0);
        memset(log->inflight, 0, q->num);
        log->num = (uint16_t)q->num;
        log->last_avail = q->last_avail;
        log->used_idx = q->used_idx;
        log->replayed = 0;
        dp_log_store16(&log->valid, 1);
    }
    q->log = log;
    return 0;
}
