"""cffi builder for the RBD backend: compiles ``rbd.c`` against Debian's librbd into
``csi_vduse.dataplane.rbd._rbd``.

A module of its own, so a dataplane serving a file never loads librbd, and the fast path's
fuzzer (``fast/``) builds without Ceph. Its backends plug into the fast path's queues
through ``fast/backend.h``, and take the librbd handle of an image ``csi_vduse.ceph``
opened; both cross between the cffi modules as addresses (see ``queues.py``).
"""

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
FAST = HERE.parent / "fast"

CDEF = """
struct dp_rbd;
struct dp_backend;
struct dp_rbd *dp_rbd_backend_new(void *image, unsigned depth);
void dp_rbd_backend_free(struct dp_rbd *b);
struct dp_backend *dp_rbd_backend(struct dp_rbd *b);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "csi_vduse.dataplane.rbd._rbd",
    '#include "rbd.h"',
    # setuptools wants paths relative to setup.py, which is where builds run from.
    sources=[os.path.relpath(HERE / "rbd.c")],
    include_dirs=[os.path.relpath(HERE), os.path.relpath(FAST)],
    libraries=["rbd"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
