"""Serving an RBD image: each queue's librbd backend (``queues``, C in ``rbd.c``) on the
image ``csi_vduse.ceph`` opened."""
