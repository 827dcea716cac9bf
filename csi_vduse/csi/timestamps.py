"""CSI's times (protobuf Timestamps) from our nanoseconds since the epoch."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(ns: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp
