/*
 * The dataplane's seccomp filter: once it holds its descriptors, all it does is I/O on
 * them, memory mapping, polling, threads and signals. Everything else fails with EPERM
 * (never a kill, so an unexpected path in the interpreter degrades instead of dying):
 * no open, exec, fork, socket, ptrace or /proc access. ioctl is limited to the VDUSE
 * ioctl type, clone to new threads. clone3 answers ENOSYS, so glibc falls back to clone,
 * whose flags a filter can check. io_uring_enter serves the queues' rings, made before the
 * filter and restricted to readv/writev (aio.c); io_uring_setup is refused, so no new,
 * unrestricted ring can be made. accept4 takes the driver's connections on the control
 * socket it passed listening (dataplane/control.py); read and write carry their messages.
 * No socket can be made, bound or connected, and no other socket call is allowed.
 *
 * A dataplane serving an RBD image (dp_sandbox(1)) talks to Ceph from librbd's threads, and
 * they open connections to OSDs as they need them. It may also make IPv4 and IPv6 sockets
 * (no other family), connect them, send and receive on them, set and read their options
 * and addresses and shut them down; make pipes and timerfds (the messenger's wake-ups and
 * timers); name its threads (prctl PR_SET_NAME, no other prctl); and read uname (its
 * hostname goes into its Ceph client metadata). Still no open, exec, fork, bind or listen.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif

#define VDUSE_IOCTL_TYPE 0x81 /* VDUSE_BASE in linux/vduse.h */
#define MAX_PROGRAM 320

static const int allowed[] = {
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_preadv,
    SYS_pwritev, SYS_preadv2, SYS_pwritev2, SYS_close, SYS_fstat, SYS_newfstatat, SYS_lseek,
    SYS_fallocate, SYS_fdatasync, SYS_fsync, SYS_fcntl, SYS_dup3,
    SYS_mmap, SYS_munmap, SYS_mprotect, SYS_madvise, SYS_mremap, SYS_brk,
    SYS_ppoll, SYS_pselect6, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_eventfd2,
    SYS_futex, SYS_set_robust_list, SYS_rseq, SYS_sched_yield, SYS_sched_getaffinity,
    SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep, SYS_gettimeofday,
    SYS_getpid, SYS_gettid, SYS_getppid, SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid,
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack, SYS_tgkill,
    SYS_restart_syscall, SYS_getrandom, SYS_membarrier, SYS_prlimit64, SYS_exit, SYS_exit_group,
    SYS_io_uring_enter, /* on the rings made before confinement; io_uring_setup is denied */
    SYS_accept4,        /* on the inherited control socket; socket, bind, connect are denied */
#ifdef SYS_statx
    SYS_statx,
#endif
#ifdef SYS_epoll_pwait2
    SYS_epoll_pwait2,
#endif
#ifdef SYS_poll
    SYS_poll, SYS_select, SYS_epoll_wait, SYS_dup2,
#endif
};

/* For librbd's messenger, with dp_sandbox(1) only. */
static const int networked[] = {
    SYS_connect, SYS_sendmsg, SYS_recvmsg, SYS_sendto, SYS_recvfrom, SYS_setsockopt,
    SYS_getsockopt, SYS_getsockname, SYS_getpeername, SYS_shutdown, SYS_pipe2,
    SYS_timerfd_create, SYS_timerfd_settime, SYS_timerfd_gettime, SYS_uname,
#ifdef SYS_epoll_create
    SYS_epoll_create,
#endif
};

#define STMT(code, k) ((struct sock_filter)BPF_STMT(code, k))
#define JUMP(code, k, jt, jf) ((struct sock_filter)BPF_JUMP(code, k, jt, jf))
#define RET(value) STMT(BPF_RET | BPF_K, value)
#define ARG_LOW(n) (offsetof(struct seccomp_data, args) + 8 * (n)) /* little-endian */

int dp_sandbox(int network)
{
#ifndef ARCH
    return -ENOSYS;
#else
    struct sock_filter p[MAX_PROGRAM];
    unsigned n = 0;
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0);
    p[n++] = RET(SECCOMP_RET_KILL_PROCESS);
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef __x86_64__
    p[n++] = JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1); /* the x32 ABI */
    p[n++] = RET(SECCOMP_RET_ERRNO | EPERM);
#endif
    for (unsigned i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)allowed[i], 0, 1);
        p[n++] = RET(SECCOMP_RET_ALLOW);
    }
    if (network) {
        for (unsigned i = 0; i < sizeof networked / sizeof networked[0]; i++) {
            p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)networked[i], 0, 1);
            p[n++] = RET(SECCOMP_RET_ALLOW);
        }
        /* socket: IPv4 and IPv6 only. */
        p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 5);
        p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(0));
        p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET, 2, 0);
        p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 1, 0);
        p[n++] = RET(SECCOMP_RET_ERRNO | EPERM);
        p[n++] = RET(SECCOMP_RET_ALLOW);
        /* prctl: naming threads only. */
        p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_prctl, 0, 4);
        p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(0));
        p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_NAME, 0, 1);
        p[n++] = RET(SECCOMP_RET_ALLOW);
        p[n++] = RET(SECCOMP_RET_ERRNO | EPERM);
    }
    /* ioctl: the VDUSE type only. */
    p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_ioctl, 0, 5);
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(1));
    p[n++] = STMT(BPF_ALU | BPF_AND | BPF_K, 0xff00);
    p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, VDUSE_IOCTL_TYPE << 8, 0, 1);
    p[n++] = RET(SECCOMP_RET_ALLOW);
    p[n++] = RET(SECCOMP_RET_ERRNO | EPERM);
    /* clone: threads only, never a new process. */
    p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4);
    p[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(0));
    p[n++] = JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1);
    p[n++] = RET(SECCOMP_RET_ALLOW);
    p[n++] = RET(SECCOMP_RET_ERRNO | EPERM);
    p[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1);
    p[n++] = RET(SECCOMP_RET_ERRNO | ENOSYS);
    p[n++] = RET(SECCOMP_RET_ERRNO | EPERM);

    struct sock_fprog prog = {.len = (unsigned short)n, .filter = p};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return -errno;
    /* Not dumpable: no ptrace and no /proc/PID/mem from other processes of our user. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
        return -errno;
    /* TSYNC: every thread the interpreter has started gets the filter too. */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog))
        return -errno;
    return 0;
#endif
}
