/*
 * An open RBD image and the RADOS connection it came through (image.h): connecting with the
 * target's settings, opening, measuring, growing, locking. What serves I/O on the image is
 * the dataplane's (dataplane/rbd/rbd.c), given the librbd handle.
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

static int fail(char *err, size_t errlen, int rc, const char *fmt, const char *what)
{
    snprintf(err, errlen, fmt, what, strerror(-rc));
    return rc;
}

static int set(rados_t cluster, const char *option, const char *value, char *err, size_t errlen)
{
    int rc = rados_conf_set(cluster, option, value);
    if (rc < 0)
        return fail(err, errlen, rc, "cannot set Ceph option %s: %s", option);
    return 0;
}

/* The monitors we were told to reach, for messages. */
static void monitors(rados_t cluster, char *buf, size_t len)
{
    if (rados_conf_get(cluster, "mon_host", buf, len) < 0 || !buf[0])
        snprintf(buf, len, "(none configured)");
}

static int connect_cluster(rados_t cluster, const struct cv_image_target *t, char *err,
                           size_t errlen)
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%u", t->connect_timeout ? t->connect_timeout : 30);
    int rc;
    if (t->conf_path && t->conf_path[0] && (rc = rados_conf_read_file(cluster, t->conf_path)))
        return fail(err, errlen, rc, "cannot read the Ceph configuration %s: %s", t->conf_path);
    const char *fixed[][2] = {
        {"rbd_cache", "false"},    /* see rbd.h: acknowledged means on the OSDs */
        /* Dispatch each request on the caller's (the queue's) thread rather than hand it
         * to librbd's op thread: a thread hop less per request. It may then block the queue
         * for a while (librados's in-flight throttle), which is back-pressure, and may
         * complete a request before the call returns (rbd.c allows for both). */
        {"rbd_non_blocking_aio", "false"},
        {"admin_socket", ""},      /* no socket files: we may not create any */
        {"log_file", ""},
        {"log_to_stderr", "false"},
        {"err_to_stderr", "true"}, /* into the dataplane's log */
        {"client_mount_timeout", timeout},
        {"rados_mon_op_timeout", timeout},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if ((rc = set(cluster, fixed[i][0], fixed[i][1], err, errlen)))
            return rc;
    if (t->mon_host && t->mon_host[0] && (rc = set(cluster, "mon_host", t->mon_host, err, errlen)))
        return rc;
    if (t->key && t->key[0]) {
        /* The key alone: no keyring file is looked for. */
        if ((rc = rados_conf_set(cluster, "key", t->key))) {
            snprintf(err, errlen, "the Ceph key is not valid: %s", strerror(-rc));
            return rc;
        }
        if ((rc = set(cluster, "keyring", "", err, errlen)))
            return rc;
    }
    rc = rados_connect(cluster);
    if (rc < 0) {
        char mons[256];
        monitors(cluster, mons, sizeof mons);
        if (rc == -ETIMEDOUT)
            snprintf(err, errlen, "no Ceph monitor answered within %s s (mon_host %s)", timeout,
                     mons);
        else if (rc == -EACCES || rc == -EPERM)
            snprintf(err, errlen,
                     "the Ceph monitors (%s) refused client.%s: permission denied (wrong key?)",
                     mons, t->user && t->user[0] ? t->user : "admin");
        else
            snprintf(err, errlen, "cannot connect to the Ceph monitors (%s): %s", mons,
                     strerror(-rc));
    }
    return rc;
}

int cv_image_open(struct cv_image **out, const struct cv_image_target *t, char *err,
                size_t errlen)
{
    struct cv_image *img = calloc(1, sizeof *img);
    if (!img)
        return fail(err, errlen, -ENOMEM, "%s%s", "no memory: ");
    char name[128];
    snprintf(name, sizeof name, "client.%s", t->user && t->user[0] ? t->user : "admin");
    int rc = rados_create2(&img->cluster, "ceph", name, 0);
    if (rc < 0) {
        free(img);
        return fail(err, errlen, rc, "cannot make a RADOS client %s: %s", name);
    }
    if ((rc = connect_cluster(img->cluster, t, err, errlen)))
        goto out;
    if ((rc = rados_ioctx_create(img->cluster, t->pool, &img->io)) < 0) {
        if (rc == -ENOENT)
            snprintf(err, errlen, "Ceph pool %s does not exist", t->pool);
        else
            fail(err, errlen, rc, "cannot use Ceph pool %s: %s", t->pool);
        img->io = NULL;
        goto out;
    }
    if (t->pool_namespace)
        rados_ioctx_set_namespace(img->io, t->pool_namespace);
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
        if (lock_owner(img->image, owner, sizeof owner) < 0)
            snprintf(owner, sizeof owner, "an unknown client");
        snprintf(err, errlen,
                 "the RBD image is in use: client %s holds its exclusive lock (%s)", owner,
                 strerror(-rc));
        return rc;
    }
    return broke;
}
