// A slow swap device and a tmpfs whose files' pages can be pushed out to it, for tests of what
// odirect does when a tmpfs page must come back from swap (the lone-op in-kernel wait times
// out, fixed-buffer ops and batches still move the right bytes).
//
// The swap device is a loop device over faultfs's data file, whose read replies are sent
// `delayMs` late: every swap-in takes at least that long, whatever the machine's load (so a
// test can count on "slower than the wait's timeout" without timing anything). Pages are
// pushed out by reclaiming a memory cgroup of this fixture's own: the file is written by a
// child process placed in it (the pages are charged there), then the cgroup is emptied
// (cgroup v1 memory.force_empty, v2 memory.reclaim) until fincore sees none of the file's
// pages resident and the cgroup's memory.stat counts no shmem and no swap cache.
//
// `fastSwap` is the same over a plain loop device, for tests that need pages out in swap but
// no slow swap-in.
//
// Swap is machine-wide: the device gets the highest priority while it exists, but nothing
// else is reclaimed into it (no memory pressure is made: only this cgroup is emptied).
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { faultFs, isSkip, loopDevice, type Requirement, residentPages, type Skip, sh, skipReason, sleepSync, tmpfsDir } from './fixtures.js'

export interface SlowSwap {
  /** A tmpfs mount for the test's files. */
  dir: string
  /** The swap loop device (/dev/loopN). */
  device: string
  /** The fixture's memory cgroup (a process that writes its pid to `<cgroup>/cgroup.procs` has its memory charged there). */
  cgroup: string
  /** Pushes every page charged to the cgroup out to swap (as `swapOut`, for no file in particular). */
  swapOutAll(): void
  /** Writes `data` to `file` (on `dir`) from a process in the fixture's cgroup. */
  write(file: string, data: Uint8Array): void
  /** Pushes every page of `file` (written by `write`) out to swap; throws if some stay. */
  swapOut(file: string): void
  /** Read requests the swap device has completed so far (/sys/block/loopN/stat). */
  swapReads(): number
  cleanup(): void
}

const V1 = '/sys/fs/cgroup/memory'
const V2 = '/sys/fs/cgroup'

function cgroupRoot(): { dir: string; v: 1 | 2 } | undefined {
  if (fs.existsSync(path.join(V1, 'memory.force_empty'))) return { dir: V1, v: 1 }
  try {
    if (fs.readFileSync(path.join(V2, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('memory')) return { dir: V2, v: 2 }
  } catch {
    // no cgroup v2 root
  }
  return undefined
}

/** Why a swap fixture needing `needs` (besides swap and a memory cgroup) cannot be set up here, or undefined. */
function swapReason(needs: Requirement[]): string | undefined {
  const r = skipReason(['root', 'loop', ...needs, 'cmd:mkswap', 'cmd:swapon', 'cmd:swapoff', 'cmd:fincore', 'cmd:umount', 'fs:tmpfs'])
  if (r) return r
  if (!fs.existsSync('/proc/swaps')) return 'kernel without swap (no /proc/swaps)'
  if (cgroupRoot() === undefined) return 'no memory cgroup to reclaim (cgroup v1 memory or v2 with the memory controller)'
  return undefined
}

/** Why a slow swap cannot be set up here, or undefined. */
export const slowSwapReason = (): string | undefined => swapReason(['fuse', 'cargo'])
/** Why a fast swap (`fastSwap`) cannot be set up here, or undefined. */
export const fastSwapReason = (): string | undefined => swapReason(['cmd:blockdev'])

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Takes down what a process that died before its cleanup (a test run killed at its timeout)
 * left: its swap devices (a loop device over faultfs's file `odirect-swap-<pid>`) and its
 * cgroups (`odirect-swap-<pid>-*`). A slow swap left active would serve any later reclaim on
 * the machine at the speed of a held FUSE server.
 */
function sweepStaleSwaps(root: string): void {
  for (const line of fs.readFileSync('/proc/swaps', 'utf8').split('\n').slice(1)) {
    const dev = line.split(/\s+/)[0]
    if (dev === undefined || !/^\/dev\/loop\d+$/.test(dev)) continue
    let back = ''
    try {
      back = sh('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE', dev]).trim()
    } catch {
      continue
    }
    const pid = Number(/odirect-swap-(\d+)$/.exec(back)?.[1] ?? 0)
    if (pid === 0 || pidAlive(pid)) continue
    try {
      sh('swapoff', [dev], 300_000)
      sh('losetup', ['-d', dev])
    } catch (e) {
      console.warn(`slowSwap: could not take down the stale swap ${dev}: ${(e as Error).message}`)
    }
  }
  for (const d of fs.readdirSync(root)) {
    const pid = Number(/^odirect-swap-(\d+)-/.exec(d)?.[1] ?? 0)
    if (pid === 0 || pidAlive(pid)) continue
    try {
      fs.rmdirSync(path.join(root, d))
    } catch {
      // still charged or in use: left
    }
  }
}

/** Sets up the slow swap; `delayMs`: how late each swap-in read is answered. */
export function slowSwap(delayMs = 30, sizeMiB = 64): SlowSwap | Skip {
  const reason = slowSwapReason()
  if (reason) return { skip: reason }
  return swapFixture(sizeMiB, (undo) => {
    const fx = faultFs({ size: sizeMiB << 20, delayMs, threads: 4, name: `odirect-swap-${process.pid}` })
    if (isSkip(fx)) return fx
    undo.push(() => fx.cleanup())
    const device = sh('losetup', ['--find', '--show', fx.file]).trim()
    undo.push(() => sh('losetup', ['-d', device]))
    return device
  })
}

/**
 * The same fixture over a plain loop device (a sparse file in /var/tmp): swap-ins at the disk's
 * speed, for tests that need pages out in swap but not a slow device.
 */
export function fastSwap(sizeMiB = 64): SlowSwap | Skip {
  const reason = fastSwapReason()
  if (reason) return { skip: reason }
  return swapFixture(sizeMiB, (undo) => {
    const dev = loopDevice(4096, sizeMiB)
    if (isSkip(dev)) return dev
    undo.push(() => dev.cleanup())
    return dev.device
  })
}

/** Swap on the device `makeDevice` returns (it pushes its own undo steps), a tmpfs and a memory cgroup. */
function swapFixture(sizeMiB: number, makeDevice: (undo: Array<() => void>) => string | Skip): SlowSwap | Skip {
  sweepStaleSwaps((cgroupRoot() as { dir: string }).dir)
  const undo: Array<() => void> = []
  const cleanup = (): void => {
    for (const f of undo.splice(0).reverse()) {
      try {
        f()
      } catch (e) {
        console.warn(`swap fixture cleanup: ${(e as Error).message}`)
      }
    }
  }
  try {
    const device = makeDevice(undo)
    if (isSkip(device)) {
      cleanup()
      return device
    }
    sh('mkswap', [device])
    sh('swapon', ['-p', '32767', device])
    undo.push(() => sh('swapoff', [device], 300_000))
    const tmp = tmpfsDir(sizeMiB)
    if (isSkip(tmp)) {
      cleanup()
      return tmp
    }
    // Unmounted before the swapoff: the files' swapped pages are dropped, not read back.
    undo.push(() => tmp.cleanup())
    const root = cgroupRoot() as { dir: string; v: 1 | 2 }
    const cg = fs.mkdtempSync(path.join(root.dir, `odirect-swap-${process.pid}-`))
    // rmdir once the pages it was charged for are gone (the tmpfs unmounted, pushed just after).
    undo.splice(undo.length - 1, 0, () => fs.rmdirSync(cg))
    const name = path.basename(device)
    /** A counter of the cgroup's memory.stat (bytes; 0 when the kernel has no such line). */
    const cgStat = (key: string): number => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(fs.readFileSync(path.join(cg, 'memory.stat'), 'utf8'))?.[1] ?? 0)
    /** One pass of reclaim over the whole cgroup (v1 force_empty, v2 memory.reclaim). */
    const reclaimPass = (): void => {
      if (root.v === 1) fs.writeFileSync(path.join(cg, 'memory.force_empty'), '0')
      else {
        try {
          fs.writeFileSync(path.join(cg, 'memory.reclaim'), `${sizeMiB}M`)
        } catch (e) {
          // EAGAIN: less reclaimed than asked (the rest is under writeback): try again.
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e
        }
      }
    }
    /**
     * Reclaim passes until `done()`. The deadline only bounds a failure: a pass that frees
     * everything returns at once. A page whose write to the swap device is under way stays in
     * the swap cache until that write completes, which nothing reports (no fd, no event): the
     * next pass, 10 ms later, frees it.
     */
    const reclaimUntil = (done: () => boolean, what: () => string): void => {
      const deadline = Date.now() + 60_000
      for (;;) {
        reclaimPass()
        if (done()) return
        if (Date.now() > deadline) throw new Error(`${what()} after 60 s of reclaim passes`)
        sleepSync(10)
      }
    }
    return {
      dir: tmp.dir,
      device,
      cgroup: cg,
      swapOutAll() {
        reclaimUntil(() => cgStat('swapcached') === 0 && cgStat(root.v === 1 ? 'rss' : 'anon') === 0, () => 'cgroup memory still resident')
      },
      write(file, data) {
        // The writer joins the cgroup first: the file's pages are charged to it.
        execFileSync('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec cat > "$0"`, file], { input: data })
      },
      swapOut(file) {
        // Out of memory altogether: no page of the file resident, and none of the cgroup's pages
        // left as shmem or in the swap cache (whose reads would not reach the device).
        reclaimUntil(
          () => residentPages(file).resident === 0 && cgStat('shmem') === 0 && cgStat('swapcached') === 0,
          () => `${file}: ${residentPages(file).resident} pages still resident, cgroup shmem ${cgStat('shmem')} swapcached ${cgStat('swapcached')} bytes`,
        )
      },
      swapReads: () => Number(fs.readFileSync(`/sys/block/${name}/stat`, 'utf8').trim().split(/\s+/)[0]),
      cleanup,
    }
  } catch (e) {
    cleanup()
    throw e
  }
}
