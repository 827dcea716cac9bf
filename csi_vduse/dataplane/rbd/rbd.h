/*
 * The RBD backend: a queue's requests served by librbd's asynchronous C API on an image
 * opened elsewhere (csi_vduse/ceph/image.h).
 *
 * Each queue of a device gets a backend of its own (backend.h's contract) on the device's
 * one librbd handle. Requests go to librbd at once and complete on librbd's threads, in any
 * order: the completion callback only records the result and wakes the queue through an
 * eventfd, and the queue's thread reaps it.
 */
#ifndef DATAPLANE_RBD_RBD_H
#define DATAPLANE_RBD_RBD_H
#include "backend.h"

struct dp_rbd;

/* A backend on `image` (an rbd_image_t) for one queue that keeps up to `depth` operations
 * in flight; NULL: no memory. */
struct dp_rbd *dp_rbd_backend_new(void *image, unsigned depth);
/* Waits for the operations still in flight, then frees. */
void dp_rbd_backend_free(struct dp_rbd *b);
struct dp_backend *dp_rbd_backend(struct dp_rbd *b);
#endif
