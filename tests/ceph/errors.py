"""The one exception of the test Ceph cluster."""

from __future__ import annotations


class CephError(RuntimeError):
    """The cluster could not be brought up, or a command against it failed.

    The message names the step and carries what explains it (the command's stderr, the
    tail of a daemon's log); never a key.
    """
