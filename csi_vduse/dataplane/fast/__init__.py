"""The dataplane's fast path: the per-request loop in C (queue.h lists its files), driven
from Python."""
