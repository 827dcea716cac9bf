"""The CSI gRPC services: the edge where requests are checked and errors get status codes."""

import os

# With gRPC's fork handlers on, a child forked by the serving driver gets gRPC threads
# back before it execs, racing its closing of descriptors (EBADF errors, aborts). The
# driver's children only exec; should one ever be forked rather than vforked (Popen's
# user=, preexec_fn), it must not carry any of gRPC. Read when grpc is first imported,
# and this package is imported before it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
