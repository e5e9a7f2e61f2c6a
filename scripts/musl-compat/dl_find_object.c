// _dl_find_object() for musl builds of the addon (scripts/build-native.cjs, *-linux-musl targets).
//
// The musl builds link GCC's unwinder statically (libgcc_eh.a, in place of the libgcc_s.so.1 that
// Rust's musl std asks for when linked dynamically: no musl libgcc_s exists on a Debian builder,
// and a static unwinder keeps the addon free of a libgcc dependency on Alpine). Debian's GCC 12 was
// built against glibc 2.36, so its libgcc_eh.a finds unwind tables with glibc 2.35's
// _dl_find_object(), which musl does not have. This is that function, for the addon only (hidden),
// built on dl_iterate_phdr() (which musl has): it finds the loaded object whose PT_LOAD segments
// hold `pc` and returns its PT_GNU_EH_FRAME (.eh_frame_hdr), which is all libgcc reads from it.
#define _GNU_SOURCE
#include <link.h>
#include <stddef.h>
#include <stdint.h>

// glibc's struct dl_find_object on x86_64 and aarch64 (no dlfo_eh_dbase, no dlfo_eh_count there).
struct odirect_dl_find_object {
  unsigned long long dlfo_flags;
  void *dlfo_map_start;
  void *dlfo_map_end;
  void *dlfo_link_map;
  void *dlfo_eh_frame;
  unsigned long long dlfo_reserved[7];
};

struct odirect_search {
  uintptr_t pc;
  struct odirect_dl_find_object *out;
};

static int odirect_find_cb(struct dl_phdr_info *info, size_t size, void *data) {
  struct odirect_search *s = data;
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  const ElfW(Phdr) *eh = NULL;
  int inside = 0;
  (void)size;
  for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *p = &info->dlpi_phdr[i];
    if (p->p_type == PT_LOAD) {
      uintptr_t start = info->dlpi_addr + p->p_vaddr;
      uintptr_t end = start + p->p_memsz;
      if (start < lo) lo = start;
      if (end > hi) hi = end;
      if (s->pc >= start && s->pc < end) inside = 1;
    } else if (p->p_type == PT_GNU_EH_FRAME) {
      eh = p;
    }
  }
  if (!inside) return 0;
  s->out->dlfo_flags = 0;
  s->out->dlfo_map_start = (void *)lo;
  s->out->dlfo_map_end = (void *)hi;
  s->out->dlfo_link_map = NULL;
  s->out->dlfo_eh_frame = eh ? (void *)(info->dlpi_addr + eh->p_vaddr) : NULL;
  return 1;
}

__attribute__((visibility("hidden"))) int _dl_find_object(void *pc, struct odirect_dl_find_object *result) {
  struct odirect_search s = {(uintptr_t)pc, result};
  return dl_iterate_phdr(odirect_find_cb, &s) ? 0 : -1;
}
