/* Small operations on iovec lists; see iov.h. */
#include <string.h>

#include "iov.h"

uint32_t dp_iov_skip(struct iovec *iov, uint32_t n, uint64_t skip)
{
    uint32_t i = 0;
    while (i < n && skip >= iov[i].iov_len)
        skip -= iov[i++].iov_len;
    if (i < n && skip) {
        iov[i].iov_base = (uint8_t *)iov[i].iov_base + skip;
        iov[i].iov_len -= skip;
    }
    memmove(iov, iov + i, (n - i) * sizeof *iov);
    return n - i;
}

uint32_t dp_iov_drop_last_byte(struct iovec *iov, uint32_t n)
{
    if (--iov[n - 1].iov_len == 0)
        n--;
    return n;
}

void dp_iov_gather(const struct iovec *iov, uint32_t n, uint8_t *out, size_t len)
{
    for (uint32_t i = 0; i < n && len; i++) {
        size_t piece = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(out, iov[i].iov_base, piece);
        out += piece;
        len -= piece;
    }
}

void dp_iov_scatter(const struct iovec *iov, uint32_t n, const uint8_t *in, size_t len)
{
    for (uint32_t i = 0; i < n && len; i++) {
        size_t piece = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(iov[i].iov_base, in, piece);
        in += piece;
        len -= piece;
    }
}
