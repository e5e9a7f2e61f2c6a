/*
 * nolink — run a command as if every filesystem were vfat or exFAT: no hard links.
 *
 *   nolink [-e ERRNO] [-r] COMMAND [ARGS...]
 *
 * A seccomp BPF filter makes link(2) and linkat(2) fail with ERRNO (default EPERM: what the VFS
 * answers for a filesystem without a link operation, vfat and exFAT; FUSE filesystems without one
 * answer ENOSYS or EPERM). With -r, renameat2(2) with any flag fails EINVAL too (a filesystem
 * without RENAME_NOREPLACE: FUSE servers on libfuse 2, exfat-fuse, fusefat). Everything else is
 * allowed; the filter is inherited by every child and survives execve.
 *
 * Built by __test__/adversary-s19.spec.ts with `cc -O2 -o target/test-helpers/s19-nolink`.
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

#if defined(__x86_64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define THIS_AUDIT_ARCH AUDIT_ARCH_RISCV64
#else
#error "nolink: unsupported architecture"
#endif

/* link(2) exists on x86_64 only; the others have linkat alone. */
#ifdef __NR_link
#define NR_LINK __NR_link
#else
#define NR_LINK __NR_linkat
#endif

static void usage(void) {
    fprintf(stderr, "usage: nolink [-e ERRNO] [-r] COMMAND [ARGS...]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int err = EPERM;
    int no_rename2 = 0;
    int i = 1;
    for (;;) {
        if (i < argc && strcmp(argv[i], "-e") == 0) {
            if (i + 1 >= argc) usage();
            char *end = NULL;
            long v = strtol(argv[i + 1], &end, 10);
            if (!end || *end || v <= 0 || v > 4095) usage();
            err = (int)v;
            i += 2;
        } else if (i < argc && strcmp(argv[i], "-r") == 0) {
            no_rename2 = 1;
            i++;
        } else break;
    }
    if (i < argc && strcmp(argv[i], "--") == 0) i++;
    if (i >= argc) usage();

    /* renameat2's flags: its fifth argument; the low 32 bits (little-endian) hold them. */
    const unsigned flags_lo = offsetof(struct seccomp_data, args[4]);
    struct sock_filter filter[] = {
        /* Foreign syscall ABI (e.g. 32-bit on a 64-bit kernel): allow, numbers differ. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NR_LINK, 7, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_linkat, 6, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_renameat2, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        /* renameat2: refused (EINVAL) with -r and any flag, else allowed. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, flags_lo),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, no_rename2 ? (SECCOMP_RET_ERRNO | EINVAL) : SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
        .filter = filter,
    };

    /* Required for unprivileged callers; harmless for root. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("nolink: prctl(PR_SET_NO_NEW_PRIVS)");
        return 126;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("nolink: prctl(PR_SET_SECCOMP)");
        return 126;
    }
    execvp(argv[i], &argv[i]);
    fprintf(stderr, "nolink: exec %s: %s\n", argv[i], strerror(errno));
    return 127;
}
