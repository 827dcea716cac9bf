"""The Python twin of the C dataplane: the oracle of the differential tests.

A split ring (``split_ring``), its IOTLB views (``iotlb``), virtio-blk requests
(``handler``) and a queue engine that serves them when asked (``engine``). The
driver never serves a device with it: the tests put the same chains to it and to the
C engine and require identical used rings, guest memory and backing files.
"""
