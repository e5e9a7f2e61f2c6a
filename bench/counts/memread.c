// memread.c (twenty-first session): sequential O_DIRECT reads of a file through Linux AIO (raw
// syscalls, no library), QD in flight, into NBUF buffers of BS bytes used in turn, to see how the
// device's rate depends on the memory its reads go into, without Node or odirect in the way.
//
//   cc -O2 -o /tmp/memread bench/counts/memread.c
//   /tmp/memread FILE BS QD NBUF MEM [SECS] [TOUCH]
//
// MEM: thp (2 MiB-aligned anonymous mapping, MADV_HUGEPAGE), small (MADV_NOHUGEPAGE: 4 KiB pages),
// hugetlb (MAP_HUGETLB: needs /proc/sys/vm/nr_hugepages), fresh (every read into a new THP mapping,
// unmapped after it completes: memory the process never held before). Buffers are written once
// before the timed part (mapped). TOUCH=1: the CPU writes each buffer's first byte of every 4 KiB
// before its read is submitted (the guest's caches hold its lines). SECS: stop after that long
// (default 3), wrapping to the file's start. Prints MB/s, and the process's CPU (user, system ms).
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static size_t size_arg(const char *a) {
  char *e;
  size_t n = strtoull(a, &e, 0);
  return *e == 'M' ? n << 20 : *e == 'K' || *e == 'k' ? n << 10 : n;
}

static char *mapbuf(size_t len, const char *mem) {
  size_t huge = 2u << 20;
  if (!strcmp(mem, "hugetlb")) {
    void *p = mmap(NULL, (len + huge - 1) / huge * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (p == MAP_FAILED) { perror("mmap hugetlb"); exit(1); }
    return p;
  }
  size_t span = len + huge;
  char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) { perror("mmap"); exit(1); }
  char *a = (char *)(((uintptr_t)p + huge - 1) & ~(uintptr_t)(huge - 1));
  madvise(a, len, strcmp(mem, "small") ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  return a;
}

int main(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "usage: memread FILE BS QD NBUF thp|small|hugetlb|fresh [SECS] [TOUCH]\n"); return 2; }
  const char *file = argv[1], *mem = argv[5];
  size_t bs = size_arg(argv[2]);
  int qd = atoi(argv[3]), nbuf = atoi(argv[4]);
  double secs = argc > 6 ? atof(argv[6]) : 3;
  int touch = argc > 7 && atoi(argv[7]);
  int fresh = !strcmp(mem, "fresh");
  int fd = open(file, O_RDONLY | O_DIRECT);
  if (fd < 0) { perror("open"); return 1; }
  struct stat st;
  fstat(fd, &st);
  off_t size = st.st_size / bs * bs;
  char **bufs = calloc(nbuf, sizeof *bufs);
  if (!fresh)
    for (int i = 0; i < nbuf; i++) { bufs[i] = mapbuf(bs, mem); memset(bufs[i], 1, bs); }
  aio_context_t ctx = 0;
  if (syscall(SYS_io_setup, qd, &ctx)) { perror("io_setup"); return 1; }
  struct iocb *cbs = calloc(qd, sizeof *cbs);
  off_t pos = 0;
  long k = 0;
  unsigned long long bytes = 0;
  double t0 = now(), end = t0 + secs;
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  int inflight = 0;
  for (int i = 0; i < qd; i++) {
    struct iocb *cb = &cbs[i], *list[1] = { cb };
    char *b = fresh ? mapbuf(bs, "thp") : bufs[k++ % nbuf];
    if (touch) for (size_t o = 0; o < bs; o += 4096) b[o] = 2;
    memset(cb, 0, sizeof *cb);
    cb->aio_lio_opcode = IOCB_CMD_PREAD; cb->aio_fildes = fd; cb->aio_buf = (uintptr_t)b; cb->aio_nbytes = bs; cb->aio_offset = pos;
    cb->aio_data = i;
    pos = (pos + bs) % size;
    if (syscall(SYS_io_submit, ctx, 1, list) != 1) { perror("io_submit"); return 1; }
    inflight++;
  }
  while (inflight > 0) {
    struct io_event ev[64];
    long n = syscall(SYS_io_getevents, ctx, 1, 64, ev, NULL);
    if (n < 0) { perror("io_getevents"); return 1; }
    double t = now();
    for (long j = 0; j < n; j++) {
      struct iocb *cb = &cbs[ev[j].data];
      if (ev[j].res < 0) { fprintf(stderr, "read: %s\n", strerror(-ev[j].res)); return 1; }
      bytes += ev[j].res;
      if (fresh) munmap((void *)(uintptr_t)cb->aio_buf, bs);
      inflight--;
      if (t >= end) continue;
      char *b = fresh ? mapbuf(bs, "thp") : bufs[k++ % nbuf];
      if (touch) for (size_t o = 0; o < bs; o += 4096) b[o] = 2;
      cb->aio_buf = (uintptr_t)b; cb->aio_offset = pos;
      pos = (pos + bs) % size;
      struct iocb *list[1] = { cb };
      if (syscall(SYS_io_submit, ctx, 1, list) != 1) { perror("io_submit"); return 1; }
      inflight++;
    }
  }
  double s = now() - t0;
  getrusage(RUSAGE_SELF, &r1);
  double us = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1e3 + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e3;
  double sy = (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e3 + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e3;
  printf("%.0f MB/s user %.0f sys %.0f ms\n", bytes / s / 1e6, us, sy);
  return 0;
}
