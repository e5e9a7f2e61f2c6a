/*
 * seccomp_deny — run a command with some system calls refused by a seccomp filter.
 *
 *   seccomp_deny [-e ERRNO] [-u] [-l] [-r] [--] COMMAND [ARGS...]
 *
 *   -u  io_uring_setup(2), io_uring_enter(2) and io_uring_register(2) fail with ERRNO: as when
 *       /proc/sys/kernel/io_uring_disabled=2 or a container runtime's seccomp profile blocks
 *       io_uring (EPERM); -e 38 (ENOSYS) is a kernel without io_uring.
 *   -l  link(2) and linkat(2) fail with ERRNO: a filesystem without hard links (vfat and exFAT
 *       answer EPERM; FUSE filesystems without a link operation ENOSYS or EPERM).
 *   -r  renameat2(2) with any flag fails EINVAL: a filesystem without RENAME_NOREPLACE (FUSE
 *       servers on libfuse 2, exfat-fuse, fusefat).
 *   -e  the errno of -u and -l (default EPERM).
 *
 * Everything else is allowed; the filter is inherited by every child and survives execve.
 * Built by __test__/helpers/fixtures.ts (`seccompLauncher`) into target/test-helpers/.
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
#error "seccomp_deny: unsupported architecture"
#endif

#define MAX_INSNS 32

static void usage(void) {
    fprintf(stderr, "usage: seccomp_deny [-e ERRNO] [-u] [-l] [-r] [--] COMMAND [ARGS...]\n");
    exit(2);
}

static struct sock_filter prog_insns[MAX_INSNS];
static unsigned short prog_len;

static void emit(struct sock_filter insn) {
    if (prog_len >= MAX_INSNS) {
        fprintf(stderr, "seccomp_deny: filter too long\n");
        exit(2);
    }
    prog_insns[prog_len++] = insn;
}

/* Refuse syscall `nr` with `ret` (the syscall number is in the accumulator). */
static void deny(unsigned nr, unsigned ret) {
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ret));
}

int main(int argc, char **argv) {
    int err = EPERM;
    int no_uring = 0, no_link = 0, no_rename2 = 0;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-e") == 0) {
            if (i + 1 >= argc) usage();
            char *end = NULL;
            long v = strtol(argv[i + 1], &end, 10);
            if (!end || *end || v <= 0 || v > 4095) usage();
            err = (int)v;
            i++;
        } else if (strcmp(argv[i], "-u") == 0) {
            no_uring = 1;
        } else if (strcmp(argv[i], "-l") == 0) {
            no_link = 1;
        } else if (strcmp(argv[i], "-r") == 0) {
            no_rename2 = 1;
        } else {
            break;
        }
    }
    if (i < argc && strcmp(argv[i], "--") == 0) i++;
    if (i >= argc || !(no_uring || no_link || no_rename2)) usage();

    const unsigned ret_err = SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA);
    /* Foreign syscall ABI (e.g. 32-bit on a 64-bit kernel): allow, numbers differ. */
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_AUDIT_ARCH, 1, 0));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
    if (no_uring) {
        deny(__NR_io_uring_setup, ret_err);
        deny(__NR_io_uring_enter, ret_err);
        deny(__NR_io_uring_register, ret_err);
    }
    if (no_link) {
#ifdef __NR_link /* x86_64 only; the others have linkat alone */
        deny(__NR_link, ret_err);
#endif
        deny(__NR_linkat, ret_err);
    }
    if (no_rename2) {
        /* renameat2 with flags (its fifth argument; the low 32 bits, little-endian): EINVAL. */
        emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_renameat2, 0, 3));
        emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[4])));
        emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0));
        emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL));
    }
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    struct sock_fprog prog = { .len = prog_len, .filter = prog_insns };

    /* Required for unprivileged callers; harmless for root. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("seccomp_deny: prctl(PR_SET_NO_NEW_PRIVS)");
        return 126;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("seccomp_deny: prctl(PR_SET_SECCOMP)");
        return 126;
    }
    execvp(argv[i], &argv[i]);
    fprintf(stderr, "seccomp_deny: exec %s: %s\n", argv[i], strerror(errno));
    return 127;
}
