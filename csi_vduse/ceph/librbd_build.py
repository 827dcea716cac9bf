"""cffi builder for the Ceph layer's C against Debian's librbd and librados:
``csi_vduse.ceph._librbd``. ``cluster.c`` connects, ``image.c`` opens one image (for the
driver and a dataplane), ``pool.c`` manages a pool's images and ``lineage.c`` their
snapshots and clones, ``survey.c`` a cluster's pools and their space (for the
controller). Loaded only where Ceph is used."""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

CDEF = """
struct cv_cluster_target {
    const char *conf_path;
    const char *mon_host;
    const char *user;
    const char *key;
    unsigned connect_timeout;
    unsigned op_timeout;
};

struct cv_image;

struct cv_image_target {
    struct cv_cluster_target cluster;
    const char *pool, *pool_namespace, *image;
    int readonly;
};

int cv_image_open(struct cv_image **out, const struct cv_image_target *t, char *err,
                  size_t errlen);
void cv_image_close(struct cv_image *img);
void *cv_image_handle(struct cv_image *img);
int64_t cv_image_pool_id(struct cv_image *img);
int cv_image_size(struct cv_image *img, uint64_t *size);
int cv_image_resize(struct cv_image *img, uint64_t size);
int cv_image_watch_growth(struct cv_image *img);
int cv_image_client_address(struct cv_image *img, char *buf, size_t len);
int cv_image_lock(struct cv_image *img, const char *dead_owner, char *err, size_t errlen);

struct cv_pool;
int cv_pool_open(struct cv_pool **out, const struct cv_cluster_target *t, const char *pool,
                 int64_t pool_id, const char *pool_namespace, char *err, size_t errlen);
void cv_pool_close(struct cv_pool *p);
int64_t cv_pool_id(struct cv_pool *p);
int cv_pool_create(struct cv_pool *p, const char *name, uint64_t size, uint64_t features,
                   const char *data_pool, char *err, size_t errlen);
int cv_pool_remove(struct cv_pool *p, const char *name);
int cv_pool_stat(struct cv_pool *p, const char *name, uint64_t *size, uint64_t *features);
int cv_pool_data_pool(struct cv_pool *p, const char *name, char *out, size_t len);
int cv_pool_resize(struct cv_pool *p, const char *name, uint64_t size);
struct cv_image_facts {
    uint64_t size;
    uint64_t features;
    int64_t created;
};
int cv_pool_describe(struct cv_pool *p, const char *name, struct cv_image_facts *facts,
                     char *keys, size_t *keys_len, char *values, size_t *values_len);
int cv_pool_metadata_get(struct cv_pool *p, const char *name, const char *key, char *value,
                         size_t len);
int cv_pool_metadata_set(struct cv_pool *p, const char *name, const char *key,
                         const char *value);
int cv_pool_list(struct cv_pool *p, char *buf, size_t *len);
int cv_pool_watchers(struct cv_pool *p, const char *name, char *buf, size_t len);

struct cv_survey;
int cv_survey_open(struct cv_survey **out, const struct cv_cluster_target *t, char *err,
                   size_t errlen);
void cv_survey_close(struct cv_survey *s);
int cv_survey_pools(struct cv_survey *s, char *buf, size_t *len);
int cv_survey_mon_command(struct cv_survey *s, const char *command, char *out, size_t *len,
                          char *err, size_t errlen);

int cv_lineage_snap_create(struct cv_pool *p, const char *name, const char *snap);
int cv_lineage_snap_remove(struct cv_pool *p, const char *name, const char *snap);
int cv_lineage_snap_stat(struct cv_pool *p, const char *name, const char *snap,
                         uint64_t *size, int64_t *seconds, int32_t *nanos);
int cv_lineage_snap_names(struct cv_pool *p, const char *name, char *buf, size_t *len,
                          int *kept);
int cv_lineage_clone(struct cv_pool *p, const char *parent, const char *snap, const char *child,
                     uint64_t features, const char *data_pool, char *err, size_t errlen);
int cv_lineage_parent(struct cv_pool *p, const char *name, char *parent, size_t plen,
                      char *snap, size_t slen);
int cv_lineage_ancestors(struct cv_pool *p, const char *name);
int cv_lineage_flatten(struct cv_pool *p, const char *name);
int cv_lineage_trash(struct cv_pool *p, const char *name);
int cv_lineage_reap(struct cv_pool *p, const char *prefix, const char *owner_key);

#define RBD_FEATURE_LAYERING ...
#define RBD_FEATURE_EXCLUSIVE_LOCK ...
#define RBD_FEATURE_OBJECT_MAP ...
#define RBD_FEATURE_FAST_DIFF ...
#define RBD_FEATURE_DEEP_FLATTEN ...
#define RBD_FEATURE_JOURNALING ...

int mallopt(int param, int value);
#define M_ARENA_MAX ...
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "csi_vduse.ceph._librbd",
    '#include <malloc.h>\n#include "image.h"\n#include "lineage.h"\n#include "survey.h"',
    # setuptools wants paths relative to setup.py, which is where builds run from.
    sources=[
        os.path.relpath(HERE / name)
        for name in ("cluster.c", "image.c", "pool.c", "lineage.c", "survey.c")
    ],
    include_dirs=[os.path.relpath(HERE)],
    libraries=["rbd", "rados"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
