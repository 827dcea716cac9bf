/* Small operations on iovec lists, shared by the request parser and the backends. */
#ifndef DATAPLANE_FAST_IOV_H
#define DATAPLANE_FAST_IOV_H
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Drop the first `skip` bytes of an iovec list in place; returns the new count. */
uint32_t dp_iov_skip(struct iovec *iov, uint32_t n, uint64_t skip);
/* Drop the last byte of a non-empty iovec list in place; returns the new count. */
uint32_t dp_iov_drop_last_byte(struct iovec *iov, uint32_t n);
/* Copy the first `len` bytes of an iovec list out to `out`. */
void dp_iov_gather(const struct iovec *iov, uint32_t n, uint8_t *out, size_t len);
/* Copy `len` bytes from `in` into the start of an iovec list. */
void dp_iov_scatter(const struct iovec *iov, uint32_t n, const uint8_t *in, size_t len);
#endif
