/*
 * A fake librbd for the fuzzer: the aio calls rbd.c makes (librbd.h's own declarations, so
 * the signatures are checked), over an image held in a file, with completions that land out
 * of order on another thread, failures, and reads that come back short, as the input says.
 *
 * Deterministic per input: completions run on one helper thread, but only while the queue's
 * thread waits for them at a fire point, so the same input interleaves the same way:
 *   - rbd_aio_create_completion (before the completion is made),
 *   - rbd.c's pthread_mutex_lock on the queue's thread (reap taking its done list),
 *   - rbd.c's poll (reap waiting): one at a time until its eventfd is readable; a poll
 *     with nothing left in librbd to wake it aborts, as it would wait for ever,
 *   - rbd_aio_wait_for_complete: until the awaited completion is done,
 *   - fake_rbd_close.
 * A completion's callback may be stopped right after its first pthread_mutex_unlock (when
 * rbd.c has published it), until the next fire point: as if librbd's thread were preempted
 * there, so whatever rbd.c does after publishing races with the queue's thread.
 *
 * An operation does its I/O when it completes (a read sees the writes that completed
 * before it), through a bounce buffer so a stale host pointer faults under ASan; the image
 * is clipped at its size as librbd clips it: a read or write running past the end moves
 * only what lies inside (a read then reports fewer bytes, a write still 0), one starting
 * past it fails with -EINVAL. Queued iovec arrays are used when the operation completes
 * (librbd copies a write's data at the call; the fake holds rbd.c to backend.h's contract).
 *
 * The script, FAKE_RBD_SCRIPT bytes read in turn and again from the start:
 *   each rbd_aio_create_completion takes one byte for its operation:
 *     bits 0-1  completions fired first (0-3)
 *     bit  2    its callback stops after its first unlock until the next fire point
 *     bits 3-5  0-3 the operation goes ahead; 4 it completes inline, its callback run
 *               on the caller's thread before the aio call returns (as librbd may when it
 *               dispatches there); 5 rbd_aio_create_completion fails with -ENOMEM; 6, 7
 *               the aio call fails before queueing with -ENOMEM, -EINVAL
 *     bits 6-7  its result: 0 done as asked; 1 -EIO; 2 -ENOSPC; 3 a read moves half its
 *               bytes (rounded down to 512) and reports that, anything else -EROFS
 *   each completion fired takes one byte: which pending one (modulo their number, oldest
 *   first); each of rbd.c's locks on the queue's thread takes one: bits 0-1 fired first.
 * FAKE_RBD_TRACE=1 in the environment prints each event, to read what an input does.
 */
#ifndef DATAPLANE_FAST_FUZZ_FAKE_LIBRBD_H
#define DATAPLANE_FAST_FUZZ_FAKE_LIBRBD_H
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/uio.h>

#define FAKE_RBD_SCRIPT 64

struct fake_rbd_image;

/* An image of `size` bytes kept in `fd` from offset 0, following `script`; the handle is
 * rbd.c's rbd_image_t. One at a time. */
struct fake_rbd_image *fake_rbd_open(int fd, uint64_t size, const uint8_t script[FAKE_RBD_SCRIPT]);
/* Lets a stopped callback finish, then aborts if an operation is still in librbd or a
 * completion was never released (rbd.c's backend must be freed first); frees the image. */
void fake_rbd_close(struct fake_rbd_image *image);
/* Whether a read into (a slice of) the iovec array [iov, iov + n) completed short since it
 * was last asked; forgets those reads. */
int fake_rbd_took_short(const struct iovec *iov, uint32_t n);

/* What rbd.c calls instead of pthread_mutex_lock, pthread_mutex_unlock and poll in the
 * fuzzer's build (rbd_fuzz.c). */
int fake_rbd_mutex_lock(pthread_mutex_t *m);
int fake_rbd_mutex_unlock(pthread_mutex_t *m);
int fake_rbd_poll(struct pollfd *fds, nfds_t n, int timeout);
#endif
