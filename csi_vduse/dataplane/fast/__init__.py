"""The dataplane's fast path: the per-request loop in C (ring.c), driven from Python."""
