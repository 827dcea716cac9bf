/*
 * rbd.c as the fuzzer builds it: its locks and its poll go through the fake librbd
 * (fake_librbd.h), which fires completions there and may stop a callback right after it
 * published its operation. Nothing else of rbd.c changes.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>

#include "fake_librbd.h"

#define pthread_mutex_lock fake_rbd_mutex_lock
#define pthread_mutex_unlock fake_rbd_mutex_unlock
#define poll fake_rbd_poll
#include "../../rbd/rbd.c"
