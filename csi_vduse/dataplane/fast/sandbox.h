/* The dataplane's seccomp confinement; see sandbox.c. */
#ifndef DATAPLANE_FAST_SANDBOX_H
#define DATAPLANE_FAST_SANDBOX_H
/* No new privileges, not dumpable, and the syscall filter on every thread; 0 or -errno.
 * `network` adds what an RBD dataplane's librbd needs (see sandbox.c). */
int dp_sandbox(int network);
#endif
