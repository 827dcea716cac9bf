"""cffi builder for ``image.c`` (an open RBD image, see image.h) against Debian's librbd
and librados: ``csi_vduse.ceph._librbd``. Loaded only where an RBD image is used."""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

CDEF = """
struct cv_image;

struct cv_image_target {
    const char *conf_path;
    const char *mon_host;
    const char *user;
    const char *key;
    const char *pool, *pool_namespace, *image;
    unsigned connect_timeout;
    int readonly;
};

int cv_image_open(struct cv_image **out, const struct cv_image_target *t, char *err,
                  size_t errlen);
void cv_image_close(struct cv_image *img);
void *cv_image_handle(struct cv_image *img);
int cv_image_size(struct cv_image *img, uint64_t *size);
int cv_image_resize(struct cv_image *img, uint64_t size);
int cv_image_watch_growth(struct cv_image *img);
int cv_image_client_address(struct cv_image *img, char *buf, size_t len);
int cv_image_lock(struct cv_image *img, const char *dead_owner, char *err, size_t errlen);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "csi_vduse.ceph._librbd",
    '#include "image.h"',
    # setuptools wants paths relative to setup.py, which is where builds run from.
    sources=[os.path.relpath(HERE / "image.c")],
    include_dirs=[os.path.relpath(HERE)],
    libraries=["rbd", "rados"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
