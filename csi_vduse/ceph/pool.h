/*
 * The images of one pool (and namespace), as the controller manages them: create, measure,
 * label, grow, list, see who uses, remove. Each call opens what it needs and closes it: the
 * controller holds no image open between calls, so it never shows up as an image's user.
 *
 * Calls that reach the OSDs give up after the connect timeout (rados_osd_op_timeout), so a
 * controller call fails with -ETIMEDOUT rather than hang while the cluster is down.
 */
#ifndef CEPH_POOL_H
#define CEPH_POOL_H
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"

struct cv_pool;

/* Connected to the cluster, with pool open (or where pool is NULL, the pool with id
 * pool_id; see cv_cluster_pool) and pool_namespace (NULL or "" for none); 0 or -errno with
 * a message in err (which never holds the key). */
int cv_pool_open(struct cv_pool **out, const struct cv_cluster_target *t, const char *pool,
                 int64_t pool_id, const char *pool_namespace, char *err, size_t errlen);
void cv_pool_close(struct cv_pool *p);
/* The pool's id: what stays the same when the pool is renamed. */
int64_t cv_pool_id(struct cv_pool *p);
/* The pool's I/O context, for lineage.c: valid until cv_pool_close. */
rados_ioctx_t cv_pool_io(struct cv_pool *p);

/* A new image `name`: `size` bytes, `features` (RBD_FEATURE_* bits), its data in data_pool
 * (NULL or "": this pool). 0, or -errno (-EEXIST: the name is taken) with err. */
int cv_pool_create(struct cv_pool *p, const char *name, uint64_t size, uint64_t features,
                   const char *data_pool, char *err, size_t errlen);
/* Removes image `name` with its data: 0 or -errno (-ENOENT: none; -EBUSY: a client has it
 * open; -ENOTEMPTY: it has snapshots). */
int cv_pool_remove(struct cv_pool *p, const char *name);
/* The image's size and feature bits: 0 or -errno (-ENOENT: none). */
int cv_pool_stat(struct cv_pool *p, const char *name, uint64_t *size, uint64_t *features);
/* The name of the pool holding the image's data into out (len bytes): "" where it is this
 * pool, else its separate data pool's. 0 or -errno (-ENOENT: no such image; -ERANGE: out
 * is too small). */
int cv_pool_data_pool(struct cv_pool *p, const char *name, char *out, size_t len);
/* What the controller lists of an image, read in one open. */
struct cv_image_facts {
    uint64_t size;
    uint64_t features;
    int64_t created; /* nanoseconds since the epoch */
};
/* The image's facts and all its metadata: keys into keys (*keys_len bytes), values into
 * values (*values_len bytes), each NUL-terminated, in the same order. On return the lengths
 * are what they take. 0 or -errno (-ENOENT: no such image; -ERANGE: a buffer is too small;
 * call again with the lengths given). */
int cv_pool_describe(struct cv_pool *p, const char *name, struct cv_image_facts *facts,
                     char *keys, size_t *keys_len, char *values, size_t *values_len);
/* Grows (or shrinks) the image to `size` bytes. A client holding its exclusive lock does
 * it on our behalf (librbd forwards the request), so an image in use grows too. */
int cv_pool_resize(struct cv_pool *p, const char *name, uint64_t size);
/* The image's metadata `key`, NUL-terminated, into value (len bytes); 0 or -errno
 * (-ENOENT: no such image or key; -ERANGE: value is too small). */
int cv_pool_metadata_get(struct cv_pool *p, const char *name, const char *key, char *value,
                         size_t len);
int cv_pool_metadata_set(struct cv_pool *p, const char *name, const char *key,
                         const char *value);
/* The pool's image names, each NUL-terminated, into buf (*len bytes); on return *len is
 * what they take. 0 or -errno (-ERANGE: buf is too small; call again with *len bytes). */
int cv_pool_list(struct cv_pool *p, char *buf, size_t *len);
/* The addresses of the clients watching the image (those that have it open for writing),
 * each NUL-terminated, into buf (len bytes); how many there are, or -errno. */
int cv_pool_watchers(struct cv_pool *p, const char *name, char *buf, size_t len);
#endif
