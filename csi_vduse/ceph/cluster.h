/*
 * A RADOS connection made as every client of ours makes one: the driver measuring and
 * growing images, the controller managing a pool's images (pool.h), and a dataplane serving
 * one (image.h).
 *
 * librbd's cache is off: a write completes once the OSDs hold it, so a dataplane killed at
 * any moment loses nothing the guest was told is written (the guest's page cache believes
 * it; a successor could not know otherwise). librados reads no file but conf_path, makes no
 * admin socket and writes its errors to stderr.
 */
#ifndef CEPH_CLUSTER_H
#define CEPH_CLUSTER_H
#include <rados/librados.h>
#include <stddef.h>
#include <stdint.h>

/* Who we are and where the monitors are. NULL or "" leaves a setting to librados. */
struct cv_cluster_target {
    const char *conf_path;  /* a ceph.conf to read, or NULL */
    const char *mon_host;   /* overrides the conf's monitors, or NULL */
    const char *user;       /* the cephx id, without "client." (NULL: admin) */
    const char *key;        /* the cephx key (a secret: never logged or copied) */
    unsigned connect_timeout; /* seconds to reach the monitors and authenticate */
    unsigned op_timeout;      /* seconds an OSD request may take, 0: no limit */
};

/* Connected, into *out; 0, or -errno with a message in err (which never holds the key). */
int cv_cluster_connect(rados_t *out, const struct cv_cluster_target *t, char *err,
                       size_t errlen);
/* An I/O context on pool, or where pool is NULL on the pool with id pool_id (what stays
 * the same when a pool is renamed), and namespace (NULL or "" for none); 0 or -errno with
 * err. */
int cv_cluster_pool(rados_t cluster, const char *pool, int64_t pool_id,
                    const char *pool_namespace, rados_ioctx_t *out, char *err, size_t errlen);
/* err gets "<what>: <strerror(-rc)>"; returns rc. */
int cv_fail(char *err, size_t errlen, int rc, const char *what);
#endif
