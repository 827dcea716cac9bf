/*
 * Snapshots, clones and their chains in one pool, for the controller (lineage.c): what CSI
 * snapshots, restores and volume clones are made of.
 *
 * Clones are format 2 ("clone v2"): the parent snapshot needs no protection, and removing a
 * snapshot that still has clones moves it to the image's trash namespace, whence librbd
 * removes it with its last clone. An image that must go while clones of its snapshots live
 * is moved to the pool's trash instead, and reaped (cv_lineage_reap) once nothing needs it.
 *
 * Like pool.h, every call opens what it needs and closes it again.
 */
#ifndef CEPH_LINEAGE_H
#define CEPH_LINEAGE_H
#include <stddef.h>
#include <stdint.h>

#include "pool.h"

#define CV_MAX_ANCESTORS 16 /* cv_lineage_ancestors looks no further up */
#define CV_MAX_SNAPS 512    /* snapshots an image may have for calls here to see them all */

/* Snapshot `snap` of image `name`: 0 or -errno (-EEXIST: there is one; -ENOENT: no image). */
int cv_lineage_snap_create(struct cv_pool *p, const char *name, const char *snap);
/* Removes snapshot `snap` of image `name` (to the trash namespace if clones of it live):
 * 0 or -errno (-ENOENT: no such image or snapshot). */
int cv_lineage_snap_remove(struct cv_pool *p, const char *name, const char *snap);
/* Snapshot `snap` of image `name`: its size in bytes and creation time; 0 or -errno
 * (-ENOENT: no such image or snapshot). */
int cv_lineage_snap_stat(struct cv_pool *p, const char *name, const char *snap,
                         uint64_t *size, int64_t *seconds, int32_t *nanos);
/* The names of image `name`'s snapshots but those in the trash namespace (ours and
 * anybody's: user, group, mirror), each NUL-terminated, into buf (*len bytes); on return
 * *len is what they take and *kept how many wait in the trash namespace (removed, kept for
 * their clones). 0 or -errno (-ERANGE: buf is too small; call again with *len bytes). */
int cv_lineage_snap_names(struct cv_pool *p, const char *name, char *buf, size_t *len,
                          int *kept);

/* A format-2 clone `child` of `parent`@`snap`, with `features` (RBD_FEATURE_* bits, which
 * must hold layering) and its data in data_pool (NULL or "": this pool). 0, or -errno
 * (-EEXIST: `child` exists; -ENOENT: no parent or snapshot) with err. */
int cv_lineage_clone(struct cv_pool *p, const char *parent, const char *snap, const char *child,
                     uint64_t features, const char *data_pool, char *err, size_t errlen);
/* Image `name`'s parent image and snapshot names, NUL-terminated, into parent (plen bytes)
 * and snap (slen bytes); 0, or -errno (-ENOENT: no such image, or it has no parent; -EXDEV:
 * the parent is in another pool or namespace; -ERANGE: a buffer is too small). */
int cv_lineage_parent(struct cv_pool *p, const char *name, char *parent, size_t plen,
                      char *snap, size_t slen);
/* How many images are above image `name` in its chain (0: it has no parent), at most
 * CV_MAX_ANCESTORS; or -errno. Parents in the trash count. */
int cv_lineage_ancestors(struct cv_pool *p, const char *name);
/* Copies into image `name` what it still reads from its parents, and unlinks it: 0 or
 * -errno (-EINVAL: it has no parent). */
int cv_lineage_flatten(struct cv_pool *p, const char *name);

/* Moves image `name` to the pool's trash, to be reaped: 0 or -errno (-ENOENT: none). */
int cv_lineage_trash(struct cv_pool *p, const char *name);
/* Removes every image in the pool's trash that a user put there to be removed at once (us,
 * or `rbd trash mv` without a deferment), whose name starts with `prefix`, whose metadata
 * key `owner_key` holds its own name (ours, then) and which nothing needs any more (no
 * snapshots left); how many it removed, or -errno. */
int cv_lineage_reap(struct cv_pool *p, const char *prefix, const char *owner_key);
#endif
