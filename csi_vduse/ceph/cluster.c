/*
 * A RADOS connection with our fixed settings (cluster.h), and the messages that say why one
 * could not be made.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cluster.h"

int cv_fail(char *err, size_t errlen, int rc, const char *what)
{
    snprintf(err, errlen, "%s: %s", what, strerror(-rc));
    return rc;
}

static int set(rados_t cluster, const char *option, const char *value, char *err, size_t errlen)
{
    int rc = rados_conf_set(cluster, option, value);
    if (rc < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot set Ceph option %s", option);
        return cv_fail(err, errlen, rc, what);
    }
    return 0;
}

/* The monitors we were told to reach, for messages. */
static void monitors(rados_t cluster, char *buf, size_t len)
{
    if (rados_conf_get(cluster, "mon_host", buf, len) < 0 || !buf[0])
        snprintf(buf, len, "(none configured)");
}

static int configure(rados_t cluster, const struct cv_cluster_target *t, const char *timeout,
                     char *err, size_t errlen)
{
    int rc;
    if (t->conf_path && t->conf_path[0] && (rc = rados_conf_read_file(cluster, t->conf_path))) {
        snprintf(err, errlen, "cannot read the Ceph configuration %s: %s", t->conf_path,
                 strerror(-rc));
        return rc;
    }
    const char *fixed[][2] = {
        {"rbd_cache", "false"},    /* see cluster.h: acknowledged means on the OSDs */
        /* Dispatch each request on the caller's (the queue's) thread rather than hand it
         * to librbd's op thread: a thread hop less per request. It may then block the queue
         * for a while (librados's in-flight throttle), which is back-pressure, and may
         * complete a request before the call returns (rbd.c allows for both). */
        {"rbd_non_blocking_aio", "false"},
        /* Send writes from the caller's buffers rather than a copy: half the memory and a
         * copy less per write. librbd's default copies, lest a caller change a buffer while
         * it is being sent (a CRC mismatch). A dataplane's are the device's bounce pages,
         * which the kernel filled before the request was posted and does not touch until it
         * has completed; librbd holds the completion back until it has let go of them. */
        {"rbd_disable_zero_copy_writes", "false"},
        {"admin_socket", ""},      /* no socket files: a dataplane may not create any */
        {"log_file", ""},
        {"log_to_stderr", "false"},
        {"err_to_stderr", "true"}, /* into the process's log */
        {"client_mount_timeout", timeout},
        {"rados_mon_op_timeout", timeout},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if ((rc = set(cluster, fixed[i][0], fixed[i][1], err, errlen)))
            return rc;
    if (t->op_timeout) {
        char seconds[16];
        snprintf(seconds, sizeof seconds, "%u", t->op_timeout);
        if ((rc = set(cluster, "rados_osd_op_timeout", seconds, err, errlen)))
            return rc;
    }
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
    return 0;
}

static void say_unreachable(rados_t cluster, const struct cv_cluster_target *t,
                            const char *timeout, int rc, char *err, size_t errlen)
{
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

int cv_cluster_connect(rados_t *out, const struct cv_cluster_target *t, char *err,
                       size_t errlen)
{
    char name[128], timeout[16];
    snprintf(name, sizeof name, "client.%s", t->user && t->user[0] ? t->user : "admin");
    snprintf(timeout, sizeof timeout, "%u", t->connect_timeout ? t->connect_timeout : 30);
    rados_t cluster;
    int rc = rados_create2(&cluster, "ceph", name, 0);
    if (rc < 0) {
        snprintf(err, errlen, "cannot make a RADOS client %s: %s", name, strerror(-rc));
        return rc;
    }
    if (!(rc = configure(cluster, t, timeout, err, errlen)) && (rc = rados_connect(cluster)) < 0)
        say_unreachable(cluster, t, timeout, rc, err, errlen);
    if (rc) {
        rados_shutdown(cluster);
        return rc;
    }
    *out = cluster;
    return 0;
}

int cv_cluster_pool(rados_t cluster, const char *pool, int64_t pool_id,
                    const char *pool_namespace, rados_ioctx_t *out, char *err, size_t errlen)
{
    char name[256];
    if (pool)
        snprintf(name, sizeof name, "%s", pool);
    else
        snprintf(name, sizeof name, "%lld", (long long)pool_id);
    int rc = pool ? rados_ioctx_create(cluster, pool, out)
                  : rados_ioctx_create2(cluster, pool_id, out);
    if (rc < 0) {
        if (rc == -ENOENT)
            snprintf(err, errlen, "Ceph pool %s does not exist", name);
        else
            snprintf(err, errlen, "cannot use Ceph pool %s: %s", name, strerror(-rc));
        return rc;
    }
    if (pool_namespace && pool_namespace[0])
        rados_ioctx_set_namespace(*out, pool_namespace);
    return 0;
}
