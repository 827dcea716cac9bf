/*
 * An RBD image, open, and the RADOS connection it came through: shared by the driver (to
 * measure and grow images) and the dataplane (to serve one; its backend takes the librbd
 * handle from cv_image_handle).
 *
 * The connection is made as cluster.h says (librbd's cache off among its settings).
 */
#ifndef CEPH_IMAGE_H
#define CEPH_IMAGE_H
#include <rbd/librbd.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"

struct cv_image;

/* Where the image is and how to reach its cluster. */
struct cv_image_target {
    struct cv_cluster_target cluster;
    const char *pool, *pool_namespace, *image; /* pool_namespace: NULL or "" for none */
    int readonly;
};

/* 0, or -errno with a message in err (which never holds the key). */
int cv_image_open(struct cv_image **out, const struct cv_image_target *t, char *err,
                  size_t errlen);
/* Closes the image and the connection; nothing may be using the handle any more. */
void cv_image_close(struct cv_image *img);
rbd_image_t cv_image_handle(struct cv_image *img);
/* The id of the pool the image was opened in (by name: a renamed pool's id stays). */
int64_t cv_image_pool_id(struct cv_image *img);
/* The image's size now (it may have grown since it was opened); 0 or -errno. */
int cv_image_size(struct cv_image *img, uint64_t *size);
/* Grow the image to `size` bytes; 0 or -errno. */
int cv_image_resize(struct cv_image *img, uint64_t size);
/* From now on, the image growing (`rbd resize` from anywhere) raises SIGHUP in this
 * process, which is how a dataplane learns its backing grew; 0 or -errno. */
int cv_image_watch_growth(struct cv_image *img);
/* Our RADOS client's address (how a lock names its owner), into buf; 0 or -errno. */
int cv_image_client_address(struct cv_image *img, char *buf, size_t len);
/* Take the image's exclusive lock and keep it: librbd then refuses to hand it to another
 * client, whose writes fail, so two clients never both write. A lock held by `dead_owner`
 * (a client address, or NULL) is broken first, its client blocklisted. 1 if it broke that
 * lock, 0 if there was none to break, or -errno with a message in err. */
int cv_image_lock(struct cv_image *img, const char *dead_owner, char *err, size_t errlen);
#endif
