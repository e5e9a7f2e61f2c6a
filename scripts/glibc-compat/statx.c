/*
 * statx(2) for a binary linked against glibc 2.17, whose libc has no statx wrapper (glibc 2.28
 * added it). Linked into the release addon by scripts/build-native.cjs: crates/core calls
 * libc::statx, and without this the addon would carry an unversioned reference to `statx` that
 * fails at load time (BIND_NOW) on any glibc older than 2.28. Hidden: not exported from the addon.
 * On a kernel without statx (< 4.11) this returns -1 with ENOSYS, which odirect already treats as
 * "no STATX_DIOALIGN" and falls back to the ioctl/sysfs/st_blksize alignment sources.
 * The musl builds link it too: musl has a statx() wrapper only from 1.2.5 on (Alpine 3.20), and musl
 * resolves every symbol at load time, so without it the addon would not load on musl 1.2.3/1.2.4.
 * Not needed (and harmless) once crates/core calls syscall(SYS_statx) itself.
 */
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_statx
#if defined(__x86_64__)
#define SYS_statx 332
#elif defined(__aarch64__)
#define SYS_statx 291
#else
#error "SYS_statx: add this architecture's number"
#endif
#endif

struct statx;

__attribute__((visibility("hidden"))) int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
  return (int)syscall(SYS_statx, dirfd, path, flags, mask, buf);
}
