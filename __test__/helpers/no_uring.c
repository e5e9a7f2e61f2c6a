/*
 * no_uring — run a command with io_uring refused by a seccomp filter.
 *
 *   no_uring [-e ERRNO] COMMAND [ARGS...]
 *
 * Installs a seccomp BPF filter that makes io_uring_setup(2), io_uring_enter(2) and
 * io_uring_register(2) fail with ERRNO (default EPERM, as when
 * /proc/sys/kernel/io_uring_disabled=2 or a container runtime's seccomp profile blocks
 * io_uring; use -e 38 for ENOSYS, i.e. a kernel without io_uring), then execs COMMAND.
 * The filter is inherited by every child and survives execve. Everything else is allowed.
 *
 * Built by __test__/helpers/fixtures.ts with `cc -O2 -o target/test-helpers/no_uring`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

#if defined(__x86_64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__i386__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_I386
#elif defined(__riscv) && __riscv_xlen == 64
#define THIS_AUDIT_ARCH AUDIT_ARCH_RISCV64
#else
#error "no_uring: unsupported architecture"
#endif

static void usage(void) {
    fprintf(stderr, "usage: no_uring [-e ERRNO] COMMAND [ARGS...]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int err = EPERM;
    int i = 1;
    if (i < argc && strcmp(argv[i], "-e") == 0) {
        if (i + 1 >= argc) usage();
        char *end = NULL;
        long v = strtol(argv[i + 1], &end, 10);
        if (!end || *end || v <= 0 || v > 4095) usage();
        err = (int)v;
        i += 2;
    }
    if (i < argc && strcmp(argv[i], "--") == 0) i++;
    if (i >= argc) usage();

    struct sock_filter filter[] = {
        /* Foreign syscall ABI (e.g. 32-bit on a 64-bit kernel): allow, numbers differ. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
        .filter = filter,
    };

    /* Required for unprivileged callers; harmless for root. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("no_uring: prctl(PR_SET_NO_NEW_PRIVS)");
        return 126;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("no_uring: prctl(PR_SET_SECCOMP)");
        return 126;
    }
    execvp(argv[i], &argv[i]);
    fprintf(stderr, "no_uring: exec %s: %s\n", argv[i], strerror(errno));
    return 127;
}
