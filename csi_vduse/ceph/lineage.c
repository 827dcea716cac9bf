/*
 * Snapshots, clones and their chains in one pool (lineage.h).
 */
#include <errno.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lineage.h"

static int open_rw(struct cv_pool *p, const char *name, rbd_image_t *image)
{
    return rbd_open(cv_pool_io(p), name, image, NULL);
}

static int open_ro(struct cv_pool *p, const char *name, rbd_image_t *image)
{
    return rbd_open_read_only(cv_pool_io(p), name, image, NULL);
}

int cv_lineage_snap_create(struct cv_pool *p, const char *name, const char *snap)
{
    rbd_image_t image;
    int rc = open_rw(p, name, &image);
    if (rc < 0)
        return rc;
    rc = rbd_snap_create(image, snap);
    rbd_close(image);
    return rc;
}

int cv_lineage_snap_remove(struct cv_pool *p, const char *name, const char *snap)
{
    rbd_image_t image;
    int rc = open_rw(p, name, &image);
    if (rc < 0)
        return rc;
    rc = rbd_snap_remove(image, snap);
    rbd_close(image);
    return rc;
}

/* The image's snapshots, of every namespace, into snaps; how many, or -errno.
 * rbd_snap_list_end frees them. */
static int list_snaps(rbd_image_t image, rbd_snap_info_t *snaps, int max)
{
    int n = max;
    int rc = rbd_snap_list(image, snaps, &n);
    return rc == -ERANGE ? -E2BIG : rc;
}

int cv_lineage_snap_stat(struct cv_pool *p, const char *name, const char *snap,
                         uint64_t *size, int64_t *seconds, int32_t *nanos)
{
    rbd_image_t image;
    int rc = open_ro(p, name, &image);
    if (rc < 0)
        return rc;
    uint64_t id;
    struct timespec when;
    if ((rc = rbd_snap_get_id(image, snap, &id)) == 0 &&
        (rc = rbd_snap_get_timestamp(image, id, &when)) == 0) {
        rbd_snap_info_t *snaps = calloc(CV_MAX_SNAPS, sizeof *snaps);
        int n = snaps ? list_snaps(image, snaps, CV_MAX_SNAPS) : -ENOMEM;
        rc = n < 0 ? n : -ENOENT;
        for (int i = 0; i < n; i++) {
            if (snaps[i].id == id) {
                *size = snaps[i].size;
                rc = 0;
            }
        }
        if (n > 0)
            rbd_snap_list_end(snaps);
        free(snaps);
        *seconds = when.tv_sec;
        *nanos = (int32_t)when.tv_nsec;
    }
    rbd_close(image);
    return rc;
}

int cv_lineage_snap_names(struct cv_pool *p, const char *name, char *buf, size_t *len,
                          int *kept)
{
    rbd_image_t image;
    int rc = open_ro(p, name, &image);
    if (rc < 0)
        return rc;
    rbd_snap_info_t *snaps = calloc(CV_MAX_SNAPS, sizeof *snaps);
    int n = snaps ? list_snaps(image, snaps, CV_MAX_SNAPS) : -ENOMEM;
    size_t need = 0;
    *kept = 0;
    for (int i = 0; i < n; i++) { /* every namespace's, as `rbd snap ls --all` shows */
        rbd_snap_namespace_type_t type;
        if (rbd_snap_get_namespace_type(image, snaps[i].id, &type) < 0)
            continue; /* removed meanwhile */
        if (type == RBD_SNAP_NAMESPACE_TYPE_TRASH) {
            (*kept)++;
            continue;
        }
        size_t size = strlen(snaps[i].name) + 1;
        if (need + size <= *len)
            memcpy(buf + need, snaps[i].name, size);
        need += size;
    }
    if (n > 0)
        rbd_snap_list_end(snaps);
    free(snaps);
    rbd_close(image);
    if (n < 0)
        return n;
    rc = need <= *len ? 0 : -ERANGE;
    *len = need;
    return rc;
}

int cv_lineage_clone(struct cv_pool *p, const char *parent, const char *snap, const char *child,
                     uint64_t features, const char *data_pool, char *err, size_t errlen)
{
    rbd_image_options_t opts;
    rbd_image_options_create(&opts);
    int rc = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_FEATURES, features);
    if (!rc)
        rc = rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_CLONE_FORMAT, 2);
    if (!rc && data_pool && data_pool[0])
        rc = rbd_image_options_set_string(opts, RBD_IMAGE_OPTION_DATA_POOL, data_pool);
    if (!rc)
        rc = rbd_clone3(cv_pool_io(p), parent, snap, cv_pool_io(p), child, opts);
    rbd_image_options_destroy(opts);
    if (rc == -EEXIST)
        snprintf(err, errlen, "an RBD image %s exists already", child);
    else if (rc == -ENOENT)
        snprintf(err, errlen, "RBD image %s or its snapshot %s does not exist (or the data "
                              "pool %s)", parent, snap, data_pool && data_pool[0] ? data_pool : "-");
    else if (rc < 0)
        snprintf(err, errlen, "cannot clone RBD image %s@%s into %s: %s", parent, snap, child,
                 strerror(-rc));
    return rc;
}

/* Whether a linked image spec names an image in p's pool and namespace. */
static int in_pool(struct cv_pool *p, const rbd_linked_image_spec_t *spec)
{
    char ns[256] = "";
    int len = rados_ioctx_get_namespace(cv_pool_io(p), ns, sizeof ns);
    return len >= 0 && spec->pool_id == rados_ioctx_get_id(cv_pool_io(p)) &&
           strcmp(spec->pool_namespace, ns) == 0;
}

int cv_lineage_parent(struct cv_pool *p, const char *name, char *parent, size_t plen,
                      char *snap, size_t slen)
{
    rbd_image_t image;
    int rc = open_ro(p, name, &image);
    if (rc < 0)
        return rc;
    rbd_linked_image_spec_t spec;
    rbd_snap_spec_t snap_spec;
    rc = rbd_get_parent(image, &spec, &snap_spec);
    rbd_close(image);
    if (rc < 0)
        return rc;
    if (!in_pool(p, &spec))
        rc = -EXDEV;
    else if ((size_t)snprintf(parent, plen, "%s", spec.image_name) >= plen ||
             (size_t)snprintf(snap, slen, "%s", snap_spec.name) >= slen)
        rc = -ERANGE;
    rbd_linked_image_spec_cleanup(&spec);
    rbd_snap_spec_cleanup(&snap_spec);
    return rc;
}

/* Opens, read-only, the image a linked spec names (by id: it may be in the trash), in
 * whichever pool and namespace it is; *io is the context to destroy after closing it. */
static int open_linked(struct cv_pool *p, const rbd_linked_image_spec_t *spec,
                       rados_ioctx_t *io, rbd_image_t *image)
{
    rados_t cluster = rados_ioctx_get_cluster(cv_pool_io(p));
    int rc = rados_ioctx_create2(cluster, spec->pool_id, io);
    if (rc < 0)
        return rc;
    rados_ioctx_set_namespace(*io, spec->pool_namespace);
    rc = rbd_open_by_id_read_only(*io, spec->image_id, image, NULL);
    if (rc < 0)
        rados_ioctx_destroy(*io);
    return rc;
}

int cv_lineage_ancestors(struct cv_pool *p, const char *name)
{
    rbd_image_t image;
    rados_ioctx_t io = NULL; /* the context image was opened through, if not p's */
    int rc = open_ro(p, name, &image);
    if (rc < 0)
        return rc;
    int depth = 0;
    while (depth < CV_MAX_ANCESTORS) {
        rbd_linked_image_spec_t spec;
        rbd_snap_spec_t snap_spec;
        rc = rbd_get_parent(image, &spec, &snap_spec);
        if (rc < 0)
            break;
        depth++;
        rbd_close(image);
        if (io)
            rados_ioctx_destroy(io);
        io = NULL;
        rc = open_linked(p, &spec, &io, &image);
        rbd_linked_image_spec_cleanup(&spec);
        rbd_snap_spec_cleanup(&snap_spec);
        if (rc < 0) {
            image = NULL;
            io = NULL;
            break;
        }
    }
    if (image)
        rbd_close(image);
    if (io)
        rados_ioctx_destroy(io);
    return rc == -ENOENT || rc == 0 ? depth : rc;
}

int cv_lineage_flatten(struct cv_pool *p, const char *name)
{
    rbd_image_t image;
    int rc = open_rw(p, name, &image);
    if (rc < 0)
        return rc;
    rc = rbd_flatten(image);
    rbd_close(image);
    return rc;
}

int cv_lineage_trash(struct cv_pool *p, const char *name)
{
    return rbd_trash_move(cv_pool_io(p), name, 0);
}

/* Whether trashed image `id` says, in its metadata key `owner_key`, that it is `name`:
 * labelled by us, not merely named like our images. */
static int labelled_as(struct cv_pool *p, const char *id, const char *owner_key,
                       const char *name)
{
    rbd_image_t image;
    if (rbd_open_by_id_read_only(cv_pool_io(p), id, &image, NULL) < 0)
        return 0;
    char value[256] = ""; /* librbd sets the length only when the value does not fit */
    size_t len = sizeof value;
    int rc = rbd_metadata_get(image, owner_key, value, &len);
    rbd_close(image);
    return rc == 0 && memchr(value, '\0', sizeof value) && strcmp(value, name) == 0;
}

int cv_lineage_reap(struct cv_pool *p, const char *prefix, const char *owner_key)
{
    size_t max = 64;
    rbd_trash_image_info_t *entries = NULL;
    int rc;
    for (;;) {
        rbd_trash_image_info_t *more = realloc(entries, max * sizeof *entries);
        if (!more) {
            free(entries);
            return -ENOMEM;
        }
        entries = more;
        size_t n = max;
        rc = rbd_trash_list(cv_pool_io(p), entries, &n);
        if (rc != -ERANGE) {
            max = n;
            break;
        }
        max = n > max ? n : 2 * max;
    }
    if (rc < 0) {
        free(entries);
        return rc;
    }
    int removed = 0;
    size_t skip = strlen(prefix);
    for (size_t i = 0; i < max; i++) {
        if (entries[i].source != RBD_TRASH_IMAGE_SOURCE_USER &&
            entries[i].source != RBD_TRASH_IMAGE_SOURCE_USER_PARENT)
            continue;
        if (strncmp(entries[i].name, prefix, skip) != 0)
            continue;
        /* One put there to be kept a while (`rbd trash mv --expires-at`) is left alone,
         * and so is one that is not ours, whatever its name (ceph-csi's look alike). */
        if (entries[i].deferment_end_time > entries[i].deletion_time ||
            !labelled_as(p, entries[i].id, owner_key, entries[i].name))
            continue;
        /* Refused (-ENOTEMPTY, -EBUSY) while snapshots that clones need are left. Forced,
         * or librbd would refuse one trashed in this same second as not yet expired. */
        if (rbd_trash_remove(cv_pool_io(p), entries[i].id, true) == 0)
            removed++;
    }
    rbd_trash_list_cleanup(entries, max);
    free(entries);
    return removed;
}
