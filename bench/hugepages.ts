// Huge pages for fio's I/O buffers (its "fio io_uring, huge pages" rows). fio's default buffers
// are malloc'ed 4 KiB pages: a 1 MiB O_DIRECT transfer is then 256 segments, which a virtio disk
// with max_segments 254 splits in two requests; in 2 MiB huge pages it is one. On this project's
// machine that doubled fio's 1 MiB sequential figures (read 1.2-1.7 -> 3.1 GB/s, write 2.5 -> 5.2),
// so fio's peak configuration for large blocks uses them: `--mem=mmaphuge:FILE` on a hugetlbfs.
//
// reserveHugePages() adds the pages a run needs to the kernel's pool (/proc/sys/vm/nr_hugepages)
// and mounts a private hugetlbfs that reserves them for fio (min_size), in a temporary directory;
// release() unmounts it, removes the directory and gives the pages back, leaving nr_hugepages and
// the mount table as they were found. It runs at the latest when the process exits; the bench
// calls it on SIGINT/SIGTERM and in its `finally` too.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages'

export interface HugePages {
  /** The private hugetlbfs mount (a temporary directory). */
  dir: string
  /** Bytes of one huge page (the kernel's default size, /proc/meminfo Hugepagesize). */
  pageSize: number
  /** Pages added to the pool for the run (and reserved by the mount). */
  pages: number
  /** nr_hugepages before the run and while it runs. */
  before: number
  during: number
  /** fio's memory options: its buffers in a file on the mount (fio removes the file when done). */
  fioArgs(): string[]
  /** Unmounts, removes the directory, restores nr_hugepages. Safe to call more than once. */
  release(): void
}

/** A field of /proc/meminfo in bytes (values given in kB), or undefined. */
function meminfo(key: string): number | undefined {
  try {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s*kB`, 'm').exec(fs.readFileSync('/proc/meminfo', 'utf8'))
    return m ? Number(m[1]) * 1024 : undefined
  } catch {
    return undefined
  }
}

/** The default huge page size in bytes, or undefined (no huge pages: not Linux, or a kernel without them). */
export const hugePageSize = (): number | undefined => meminfo('Hugepagesize')

/**
 * Huge pages one fio job needs for its buffers: fio allocates iodepth x bs, plus a page of
 * alignment for O_DIRECT, rounded up to whole huge pages (one file per job; a second job of the
 * same run maps the same file).
 */
export function fioHugePages(qd: number, bs: number, pageSize: number): number {
  return Math.ceil((qd * bs + 4096) / pageSize)
}

/** The mount points of hugetlbfs mounts, from /proc/self/mountinfo (to show they were all removed). */
export function hugetlbfsMounts(): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => {
      const f = l.split(' ')
      return f[f.indexOf('-') + 1] === 'hugetlbfs'
    })
    .map((l) => l.split(' ')[4])
}

export const readNrHugePages = (): number => Number(fs.readFileSync(NR_HUGEPAGES, 'utf8').trim())

/**
 * Adds `pages` huge pages (+ 1 of slack) to the pool and mounts a private hugetlbfs holding them
 * for this process; or says why not (not root, no hugetlbfs, the kernel could not find the
 * memory). Everything it changed is undone before it returns a reason.
 */
export function reserveHugePages(pages: number, log: (m: string) => void = () => {}): HugePages | string {
  if (os.platform() !== 'linux') return `huge pages: not Linux (${os.platform()})`
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return `reserving huge pages needs root (it writes ${NR_HUGEPAGES} and mounts a hugetlbfs)`
  const pageSize = hugePageSize()
  if (pageSize === undefined) return 'this kernel has no huge pages (no Hugepagesize in /proc/meminfo)'
  try {
    if (!/\thugetlbfs$/m.test(fs.readFileSync('/proc/filesystems', 'utf8'))) return 'this kernel has no hugetlbfs'
  } catch (e) {
    return `cannot read /proc/filesystems: ${(e as Error).message}`
  }
  const want = pages + 1
  let before: number
  try {
    before = readNrHugePages()
    fs.writeFileSync(NR_HUGEPAGES, String(before + want))
  } catch (e) {
    return `cannot raise ${NR_HUGEPAGES}: ${(e as Error).message}`
  }
  const during = readNrHugePages()
  // Gives back what this call added: the value found when the pool is as we left it, else (another
  // process resized it meanwhile) the current size less our pages.
  const restore = (): void => {
    const now = readNrHugePages()
    fs.writeFileSync(NR_HUGEPAGES, String(now === during ? before : Math.max(0, now - (during - before))))
  }
  if (during < before + want) {
    restore()
    return `the kernel found ${during - before} of ${want} free ${pageSize >> 20} MiB huge pages (memory too fragmented or too little free: ${Math.round((meminfo('MemFree') ?? 0) / 2 ** 20)} MiB)`
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-bench-huge-'))
  const bytes = want * pageSize
  const r = spawnSync('mount', ['-t', 'hugetlbfs', '-o', `pagesize=${pageSize},size=${bytes},min_size=${bytes},mode=0700`, 'odirect-bench-huge', dir], { encoding: 'utf8' })
  if (r.status !== 0 || r.error) {
    fs.rmSync(dir, { recursive: true, force: true })
    restore()
    return `mounting a hugetlbfs failed: ${(r.error?.message ?? r.stderr ?? '').trim() || `exit ${r.status}`}`
  }
  let released = false
  const release = (): void => {
    if (released) return
    released = true
    process.removeListener('exit', release)
    const u = spawnSync('umount', [dir], { encoding: 'utf8' })
    if (u.status !== 0 || u.error) {
      // Busy (a fio still running?): detach it now, the kernel frees it when the last user goes.
      log(`note: umount ${dir} failed (${(u.error?.message ?? u.stderr ?? '').trim()}); detaching it (umount -l)`)
      spawnSync('umount', ['-l', dir])
    }
    fs.rmSync(dir, { recursive: true, force: true })
    restore()
  }
  process.once('exit', release)
  const file = path.join(dir, `fio-${process.pid}`)
  return {
    dir,
    pageSize,
    pages: want,
    before,
    during,
    // fio creates the file and removes it when done (one it finds, e.g. after a crash, it reuses
    // and keeps: the unmount removes it).
    fioArgs: () => [`--mem=mmaphuge:${file}`, `--hugepage-size=${pageSize}`],
    release,
  }
}
