/* The file backend: a volume's data in a file (or block device) on this node. */
#ifndef DATAPLANE_FAST_FILE_H
#define DATAPLANE_FAST_FILE_H
#include <stdint.h>

#include "aio.h"
#include "backend.h"

struct dp_file {
    struct dp_backend base;
    int fd;             /* the backing, opened for buffered I/O */
    int directfd;       /* the backing with O_DIRECT, or -1: for reads and writes aligned to */
    uint32_t dio_align; /* this (offset, length and every buffer) */
    struct dp_aio *aio; /* NULL: everything is done on the queue's thread */
    /* Reads of at least async_min bytes and writes of at least async_write_min are queued on
     * aio; the rest are done on the spot (see dp_file_use_aio). */
    uint32_t async_min, async_write_min;
    uint64_t direct; /* transfers done with O_DIRECT */
    uint64_t *stats; /* the queue's block of the stats file, or NULL */
};

void dp_file_init(struct dp_file *f, int fd, int directfd, uint32_t dio_align);
/* Queue reads and writes on `aio` (owned by the caller, outliving `f`); returns its kind. */
int dp_file_use_aio(struct dp_file *f, struct dp_aio *aio);
struct dp_backend *dp_file_backend(struct dp_file *f);
#endif
