/*
 * The images of one pool, for the controller (pool.h).
 */
#include <errno.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool.h"

struct cv_pool {
    rados_t cluster;
    rados_ioctx_t io;
};

int cv_pool_open(struct cv_pool **out, const struct cv_cluster_target *t, const char *pool,
                 int64_t pool_id, const char *pool_namespace, char *err, size_t errlen)
{
    struct cv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return cv_fail(err, errlen, -ENOMEM, "no memory");
    int rc = cv_cluster_connect(&p->cluster, t, err, errlen);
    if (rc) {
        free(p);
        return rc;
    }
    if ((rc = cv_cluster_pool(p->cluster, pool, pool_id, pool_namespace, &p->io, err, errlen))) {
        rados_shutdown(p->cluster);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void cv_pool_close(struct cv_pool *p)
{
    if (!p)
        return;
    rados_ioctx_destroy(p->io);
    rados_shutdown(p->cluster);
    free(p);
}

int64_t cv_pool_id(struct cv_pool *p)
{
    return rados_ioctx_get_id(p->io);
}

rados_ioctx_t cv_pool_io(struct cv_pool *p)
{
    return p->io;
}

int cv_pool_create(struct cv_pool *p, const char *name, uint64_t size, uint64_t features,
                   const char *data_pool, char *err, size_t errlen)
{
    rbd_image_options_t opts;
    rbd_image_options_create(&opts);
    int rc = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES, features);
    if (!rc && data_pool && data_pool[0])
        rc = rbd_image_options_set_string(opts, RBD_IMAGE_OPTION_DATA_POOL, data_pool);
    if (!rc)
        rc = rbd_create4(p->io, name, size, opts);
    rbd_image_options_destroy(opts);
    if (rc == -EEXIST)
        snprintf(err, errlen, "an RBD image %s exists already", name);
    else if (rc == -ENOENT && data_pool && data_pool[0])
        snprintf(err, errlen, "the data pool %s does not exist", data_pool);
    else if (rc == -EINVAL)
        snprintf(err, errlen, "Ceph refused image %s: its size or features are invalid (%s)",
                 name, strerror(-rc));
    else if (rc < 0)
        snprintf(err, errlen, "cannot create RBD image %s: %s", name, strerror(-rc));
    return rc;
}

int cv_pool_remove(struct cv_pool *p, const char *name)
{
    return rbd_remove(p->io, name);
}

int cv_pool_stat(struct cv_pool *p, const char *name, uint64_t *size, uint64_t *features)
{
    rbd_image_t image;
    int rc = rbd_open_read_only(p->io, name, &image, NULL);
    if (rc < 0)
        return rc;
    if (!(rc = rbd_get_size(image, size)))
        rc = rbd_get_features(image, features);
    rbd_close(image);
    return rc;
}

int cv_pool_data_pool(struct cv_pool *p, const char *name, char *out, size_t len)
{
    if (len == 0)
        return -ERANGE;
    rbd_image_t image;
    int rc = rbd_open_read_only(p->io, name, &image, NULL);
    if (rc < 0)
        return rc;
    int64_t id = rbd_get_data_pool_id(image);
    rbd_close(image);
    if (id < 0)
        return (int)id;
    out[0] = '\0';
    if (id == rados_ioctx_get_id(p->io))
        return 0;
    rc = rados_pool_reverse_lookup(rados_ioctx_get_cluster(p->io), id, out, len);
    if (rc < 0)
        return rc;
    return 0; /* librados checked that the name and its NUL fit */
}

int cv_pool_describe(struct cv_pool *p, const char *name, struct cv_image_facts *facts,
                     char *keys, size_t *keys_len, char *values, size_t *values_len)
{
    rbd_image_t image;
    int rc = rbd_open_read_only(p->io, name, &image, NULL);
    if (rc < 0)
        return rc;
    struct timespec created = {0};
    if (!(rc = rbd_get_size(image, &facts->size)) &&
        !(rc = rbd_get_features(image, &facts->features)) &&
        !(rc = rbd_get_create_timestamp(image, &created)))
        rc = rbd_metadata_list(image, "", 0, keys, keys_len, values, values_len);
    rbd_close(image);
    facts->created = (int64_t)created.tv_sec * 1000000000 + created.tv_nsec;
    return rc < 0 ? rc : 0;
}

int cv_pool_resize(struct cv_pool *p, const char *name, uint64_t size)
{
    rbd_image_t image;
    int rc = rbd_open(p->io, name, &image, NULL);
    if (rc < 0)
        return rc;
    rc = rbd_resize(image, size);
    rbd_close(image);
    return rc;
}

int cv_pool_metadata_get(struct cv_pool *p, const char *name, const char *key, char *value,
                         size_t len)
{
    rbd_image_t image;
    int rc = rbd_open_read_only(p->io, name, &image, NULL);
    if (rc < 0)
        return rc;
    size_t got = len;
    rc = rbd_metadata_get(image, key, value, &got);
    rbd_close(image);
    if (rc == 0 && (got == 0 || got > len || value[got - 1] != '\0'))
        rc = -ERANGE; /* librbd counts the terminating NUL, and writes it */
    return rc;
}

int cv_pool_metadata_set(struct cv_pool *p, const char *name, const char *key,
                         const char *value)
{
    rbd_image_t image;
    int rc = rbd_open(p->io, name, &image, NULL);
    if (rc < 0)
        return rc;
    rc = rbd_metadata_set(image, key, value);
    rbd_close(image);
    return rc;
}

int cv_pool_list(struct cv_pool *p, char *buf, size_t *len)
{
    size_t max = 64;
    rbd_image_spec_t *images = NULL;
    int rc;
    for (;;) {
        rbd_image_spec_t *more = realloc(images, max * sizeof *images);
        if (!more) {
            free(images);
            return -ENOMEM;
        }
        images = more;
        size_t n = max;
        rc = rbd_list2(p->io, images, &n);
        if (rc != -ERANGE) {
            max = n;
            break;
        }
        max = n > max ? n : 2 * max; /* librbd said how many there are */
    }
    if (rc < 0) {
        free(images);
        return rc;
    }
    size_t need = 0;
    for (size_t i = 0; i < max; i++)
        need += strlen(images[i].name) + 1;
    if (need <= *len) {
        char *at = buf;
        for (size_t i = 0; i < max; i++)
            at = stpcpy(at, images[i].name) + 1;
    } else {
        rc = -ERANGE;
    }
    *len = need;
    rbd_image_spec_list_cleanup(images, max);
    free(images);
    return rc;
}

int cv_pool_watchers(struct cv_pool *p, const char *name, char *buf, size_t len)
{
    rbd_image_t image;
    int rc = rbd_open_read_only(p->io, name, &image, NULL); /* read-only: no watch of ours */
    if (rc < 0)
        return rc;
    rbd_image_watcher_t watchers[16];
    size_t n = sizeof watchers / sizeof watchers[0];
    rc = rbd_watchers_list(image, watchers, &n);
    rbd_close(image);
    if (rc < 0)
        return rc;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        int wrote = snprintf(buf + used, len - used, "%s", watchers[i].addr);
        if (wrote < 0 || (size_t)wrote >= len - used) {
            rc = -ERANGE;
            break;
        }
        used += (size_t)wrote + 1;
    }
    rbd_watchers_list_cleanup(watchers, n);
    return rc < 0 ? rc : (int)n;
}
