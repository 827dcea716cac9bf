/*
 * An open RBD image and the RADOS connection it came through (image.h): opening, measuring,
 * growing, locking. What serves I/O on the image is the dataplane's (dataplane/rbd/rbd.c),
 * given the librbd handle.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cluster.h"
#include "image.h"

struct cv_image {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;
    uint64_t watch, size_seen; /* the header watch, and the size it last saw */
    int watching;
};

rbd_image_t cv_image_handle(struct cv_image *img)
{
    return img->image;
}

int64_t cv_image_pool_id(struct cv_image *img)
{
    return rados_ioctx_get_id(img->io);
}

int cv_image_open(struct cv_image **out, const struct cv_image_target *t, char *err,
                  size_t errlen)
{
    struct cv_image *img = calloc(1, sizeof *img);
    if (!img)
        return cv_fail(err, errlen, -ENOMEM, "no memory");
    int rc = cv_cluster_connect(&img->cluster, &t->cluster, err, errlen);
    if (rc) {
        free(img);
        return rc;
    }
    if ((rc = cv_cluster_pool(img->cluster, t->pool, -1, t->pool_namespace, &img->io, err,
                              errlen))) {
        img->io = NULL;
        goto out;
    }
    rc = t->readonly ? rbd_open_read_only(img->io, t->image, &img->image, NULL)
                     : rbd_open(img->io, t->image, &img->image, NULL);
    if (rc < 0) {
        if (rc == -ENOENT)
            snprintf(err, errlen, "RBD image %s/%s does not exist", t->pool, t->image);
        else
            snprintf(err, errlen, "cannot open RBD image %s/%s: %s", t->pool, t->image,
                     strerror(-rc));
        img->image = NULL;
        goto out;
    }
    *out = img;
    return 0;
out:
    cv_image_close(img);
    return rc;
}

void cv_image_close(struct cv_image *img)
{
    if (!img)
        return;
    if (img->watching)
        rbd_update_unwatch(img->image, img->watch);
    if (img->image)
        rbd_close(img->image);
    if (img->io)
        rados_ioctx_destroy(img->io);
    rados_shutdown(img->cluster);
    free(img);
}

int cv_image_size(struct cv_image *img, uint64_t *size)
{
    return rbd_get_size(img->image, size);
}

int cv_image_resize(struct cv_image *img, uint64_t size)
{
    return rbd_resize(img->image, size);
}

/* On librbd's thread, after any change to the image's header: a larger image is what a
 * SIGHUP tells the dataplane, so that is what it gets (tgkill: its filter allows no kill). */
static void on_header_update(void *arg)
{
    struct cv_image *img = arg;
    uint64_t size;
    if (rbd_get_size(img->image, &size) < 0 || size <= img->size_seen)
        return;
    img->size_seen = size;
    syscall(SYS_tgkill, getpid(), getpid(), SIGHUP);
}

int cv_image_watch_growth(struct cv_image *img)
{
    int rc = rbd_get_size(img->image, &img->size_seen);
    if (rc < 0)
        return rc;
    rc = rbd_update_watch(img->image, &img->watch, on_header_update, img);
    img->watching = rc == 0;
    return rc;
}

int cv_image_client_address(struct cv_image *img, char *buf, size_t len)
{
    char *addrs = NULL;
    int rc = rados_getaddrs(img->cluster, &addrs);
    if (rc < 0)
        return rc;
    snprintf(buf, len, "%s", addrs);
    rados_buffer_free(addrs);
    return 0;
}

/* The address of the client holding the image's exclusive lock, into buf; 0, or -errno
 * (-ENOENT: nobody holds it). */
static int lock_owner(rbd_image_t image, char *buf, size_t len)
{
    rbd_lock_mode_t mode;
    char *owners[4];
    size_t n = 4;
    int rc = rbd_lock_get_owners(image, &mode, owners, &n);
    if (rc < 0)
        return rc;
    if (n == 0)
        return -ENOENT;
    snprintf(buf, len, "%s", owners[0]);
    rbd_lock_get_owners_cleanup(owners, n);
    return 0;
}

int cv_image_lock(struct cv_image *img, const char *dead_owner, char *err, size_t errlen)
{
    char owner[128] = "";
    uint64_t features = 0;
    int broke = 0;
    if (rbd_get_features(img->image, &features) == 0 && !(features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
        snprintf(err, errlen, "the RBD image lacks the exclusive-lock feature, without which "
                              "nothing stops a second client writing to it");
        return -EINVAL;
    }
    int rc = lock_owner(img->image, owner, sizeof owner);
    if (rc == 0 && dead_owner && dead_owner[0] && strcmp(owner, dead_owner) == 0) {
        /* Our predecessor's lock: it is dead, but its watch may linger until the OSDs time
         * it out, and librbd would wait for it. Breaking blocklists it first
         * (rbd_blocklist_on_break_lock), so no write of its can land after ours. */
        rc = rbd_lock_break(img->image, RBD_LOCK_MODE_EXCLUSIVE, owner);
        if (rc < 0 && rc != -ENOENT) {
            snprintf(err, errlen, "cannot break the lock of dead client %s: %s", owner,
                     strerror(-rc));
            return rc;
        }
        broke = rc == 0;
    }
    rc = rbd_lock_acquire(img->image, RBD_LOCK_MODE_EXCLUSIVE);
    if (rc < 0) {
        /* A live holder refuses to hand the lock over (-EROFS from librbd): that is the
         * image being busy, whatever librbd's code for it. */
        int held = lock_owner(img->image, owner, sizeof owner) == 0;
        if (!held)
            snprintf(owner, sizeof owner, "an unknown client");
        snprintf(err, errlen,
                 "the RBD image is in use: client %s holds its exclusive lock (%s)", owner,
                 strerror(-rc));
        return held && (rc == -EROFS || rc == -EBUSY) ? -EBUSY : rc;
    }
    return broke;
}
