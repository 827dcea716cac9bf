"""Ceph RBD images, below both the driver and the dataplane: which image and how to reach it
(``target``), and the image opened through librbd (``image``, C in ``image.c``)."""
