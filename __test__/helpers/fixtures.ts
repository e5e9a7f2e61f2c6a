/**
 * Real-kernel fault test bed for odirect's test suites.
 *
 * Every fixture is synchronous (built on child_process.execFileSync) and returns either
 * the fixture — always with an idempotent `cleanup()` — or `{ skip: reason }` when the
 * machine cannot provide it (not root, a tool or kernel feature missing). Use
 * `skipReason([...])` at test-registration time to choose between `test` and `test.skip`;
 * a fixture that then fails to set up throws (after undoing what it created).
 *
 * All fixture state lives in `/var/tmp/odirect-fx-<pid>-<random>/` (backing image,
 * mountpoint `mnt/`, logs). Live fixtures are cleaned up on process exit (and on
 * SIGINT/SIGTERM/SIGHUP); `sweepStaleFixtures()` (run automatically before the first
 * fixture of a process) removes leftovers of processes that died without cleaning up.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { watchUntil } from './watch.cjs'

// ---------------------------------------------------------------------------------------
// Types

export interface Skip {
  skip: string
}

export interface Cleanup {
  /** Idempotent; never throws (problems are reported with console.warn). */
  cleanup(): void
}

export interface DirFixture extends Cleanup {
  /** Mounted directory. */
  dir: string
}

export interface LoopDevice extends Cleanup {
  /** e.g. /dev/loop3 */
  device: string
  backingFile: string
  sectorSize: 512 | 4096
  sizeBytes: number
  /** Whether the loop device itself does direct I/O on its backing file (losetup --direct-io=on). */
  directIo: boolean
}

export interface LoopFs extends DirFixture {
  device: string
  backingFile: string
  sectorSize: 512 | 4096
  fsType: string
  directIo: boolean
}

export interface FullFs extends DirFixture {
  kind: 'loop-ext4' | 'tmpfs'
  sizeBytes: number
  /** Bytes available to root right after setup (statfs f_bavail * f_bsize). */
  freeBytes: number
  device?: string
}

export interface FaultFsOptions {
  /** Size of the data file in bytes (default 1 MiB). */
  size?: number
  /** Reads/writes whose byte range contains one of these offsets fail with EIO. */
  eioAt?: readonly number[]
  /** Every read reply (and write reply with holdWrites) is sent this many ms late. */
  delayMs?: number
  /**
   * Enable the hold file: while it exists, read replies (and write replies with holdWrites)
   * are held back. `true` = start released (call `hold()`); `'held'` = start held.
   */
  hold?: boolean | 'held'
  /** Reads return min(available, max(1, requested / 2)) bytes. */
  shortReads?: boolean
  /** Reads return at most this many bytes (faultfs --read-max). */
  readMax?: number
  /** Writes store and acknowledge max(1, len / 2) bytes. */
  shortWrites?: boolean
  /** Apply delayMs / hold to writes as well. */
  holdWrites?: boolean
  /** fsync/fdatasync on the data file fail with EIO. */
  fsyncEio?: boolean
  /** FLUSH requests of the data file (each close of it) wait on the hold file / delay like reads. */
  holdFlush?: boolean
  /** Don't set FOPEN_DIRECT_IO: buffered opens use the page cache, O_DIRECT opens FUSE's direct_IO. */
  pageCache?: boolean
  /** Name of the data file (default 'data'). */
  name?: string
  /** FUSE worker threads (default 1). */
  threads?: number
  /** Log every request to the fixture's faultfs.err. */
  verbose?: boolean
}

export interface FaultFsStats {
  /** Read requests received for the data file. */
  reads: number
  writes: number
  /** Data requests received but not answered yet. */
  inflight: number
  /** Requests currently waiting for the hold file to go away. */
  held: number
  /** EIO replies sent. */
  eio: number
  /** The most data requests ever unanswered at once. */
  peak: number
}

export interface FaultFs extends DirFixture {
  /** Path of the data file. */
  file: string
  /** Path of the daemon's `.stats` file. */
  statsFile: string
  /** Hold-file path (only when `hold` was enabled). */
  holdFile?: string
  pid: number
  /** Path of the daemon's stderr log (verbose request log with `verbose: true`). */
  logFile: string
  /** Path of the daemon's stdout: `ready`, then the `.stats` line again at every change of a counter. */
  outFile: string
  /** Start holding replies (needs `hold`). */
  hold(): void
  /** Let held replies go (needs `hold`). */
  release(): void
  stats(): FaultFsStats
  /**
   * Resolves once `cond(stats())` holds, checked whenever the daemon reports a change (its
   * stdout, watched with inotify); rejects after timeoutMs, naming `what`.
   */
  waitFor(cond: (s: FaultFsStats) => boolean, what: string, timeoutMs?: number): Promise<void>
  /** Resolve once at least `n` requests are held; rejects after timeoutMs. */
  waitForHeld(n?: number, timeoutMs?: number): Promise<void>
}

export interface RunResult {
  status: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export type Requirement =
  | 'root'
  | 'loop'
  | 'fuse'
  | 'cc'
  | 'cargo'
  | 'python3'
  | 'io_uring_disabled'
  | `cmd:${string}`
  | `fs:${string}`

// ---------------------------------------------------------------------------------------
// Small utilities

export function isSkip<T>(r: T | Skip): r is Skip {
  return typeof r === 'object' && r !== null && 'skip' in r && typeof (r as Skip).skip === 'string'
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0
}

/** Block the thread for `ms` milliseconds (the fixtures are synchronous). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

const EXTRA_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
const commandCache = new Map<string, string | null>()

/** Absolute path of an executable on PATH (plus the sbin directories), or null. */
export function findCommand(name: string): string | null {
  const cached = commandCache.get(name)
  if (cached !== undefined) return cached
  let found: string | null = null
  if (name.includes('/')) {
    found = isExecutable(name) ? name : null
  } else {
    const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...EXTRA_PATH]
    for (const d of dirs) {
      const p = path.join(d, name)
      if (isExecutable(p)) {
        found = p
        break
      }
    }
  }
  commandCache.set(name, found)
  return found
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK)
    return fs.statSync(p).isFile()
  } catch {
    return false
  }
}

function errText(e: unknown): string {
  if (e instanceof Error) {
    const withStreams = e as Error & { stderr?: unknown; stdout?: unknown }
    const stderr = typeof withStreams.stderr === 'string' ? withStreams.stderr.trim() : ''
    return stderr ? `${e.message.split('\n')[0]} — ${stderr}` : e.message
  }
  return String(e)
}

/** Run a command, return its stdout; throws with stderr in the message. */
export function sh(cmd: string, args: readonly string[], timeoutMs = 120_000): string {
  const bin = findCommand(cmd) ?? cmd
  try {
    return execFileSync(bin, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    })
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${errText(e)}`)
  }
}

function kernelFilesystems(): Set<string> {
  const out = new Set<string>()
  try {
    for (const line of fs.readFileSync('/proc/filesystems', 'utf8').split('\n')) {
      const name = line.trim().split(/\s+/).pop()
      if (name) out.add(name)
    }
  } catch {
    // no /proc: leave empty
  }
  return out
}

function kernelHasFs(type: string): boolean {
  if (kernelFilesystems().has(type)) return true
  // Not loaded yet: a module that mount(2) would autoload still counts.
  try {
    const rel = sh('uname', ['-r']).trim()
    const dep = fs.readFileSync(`/lib/modules/${rel}/modules.dep`, 'utf8')
    return new RegExp(`/${type}\\.ko(\\.[a-z]+)?:`).test(dep)
  } catch {
    return false
  }
}

/**
 * Why the listed requirements can't be met here, or undefined when they can.
 * Decide `test` vs `test.skip` with it at registration time.
 */
export function skipReason(reqs: readonly Requirement[]): string | undefined {
  for (const r of reqs) {
    if (r === 'root') {
      if (!isRoot()) return 'needs root (mount, losetup, /proc/sys writes)'
    } else if (r === 'loop') {
      if (!fs.existsSync('/dev/loop-control')) return 'no /dev/loop-control (loop driver missing)'
      if (!findCommand('losetup')) return 'losetup not installed (util-linux)'
    } else if (r === 'fuse') {
      if (!fs.existsSync('/dev/fuse')) return 'no /dev/fuse'
      if (!kernelHasFs('fuse')) return 'kernel has no fuse filesystem'
    } else if (r === 'cc') {
      if (!findCommand('cc')) return 'no C compiler (cc); install build-essential'
    } else if (r === 'cargo') {
      if (!process.env.FAULTFS_BIN && !findCommand('cargo')) return 'cargo not found (needed to build faultfs)'
    } else if (r === 'python3') {
      if (!findCommand('python3')) return 'python3 not installed'
    } else if (r === 'io_uring_disabled') {
      if (!fs.existsSync(IO_URING_DISABLED)) return `${IO_URING_DISABLED} missing (kernel < 6.6)`
    } else if (r.startsWith('cmd:')) {
      const c = r.slice(4)
      if (!findCommand(c)) return `${c} not installed`
    } else if (r.startsWith('fs:')) {
      const t = r.slice(3)
      if (!kernelHasFs(t)) return `kernel has no ${t} filesystem`
    }
  }
  return undefined
}

/** Wrap a function so it runs at most once. */
function once(fn: () => void): () => void {
  let done = false
  return () => {
    if (done) return
    done = true
    fn()
  }
}

/** LIFO stack of undo actions; `run()` executes all of them, reporting (not throwing) errors. */
class Undo {
  private readonly actions: Array<{ what: string; fn: () => void }> = []
  push(what: string, fn: () => void): void {
    this.actions.push({ what, fn })
  }
  run(): void {
    while (this.actions.length > 0) {
      const a = this.actions.pop()
      if (!a) break
      try {
        a.fn()
      } catch (e) {
        console.warn(`fixtures: cleanup step "${a.what}" failed: ${errText(e)}`)
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Process-wide registry: clean up on exit, sweep leftovers of dead processes

const live = new Set<() => void>()
let exitHooksInstalled = false

function cleanupAllLive(): void {
  for (const c of [...live]) c()
}

/** Clean up every live fixture of this process (e.g. in `test.after.always`). */
export function cleanupAll(): void {
  cleanupAllLive()
}

function installExitHooks(): void {
  if (exitHooksInstalled) return
  exitHooksInstalled = true
  process.on('exit', cleanupAllLive)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanupAllLive()
      process.removeListener(sig, onSignal)
      // Re-raise so the process still dies of the signal, unless someone else handles it.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
    }
    process.on(sig, onSignal)
  }
}

/** Register a fixture's cleanup: it becomes idempotent and runs at exit if not called. */
function track(undo: Undo): () => void {
  installExitHooks()
  const c = once(() => {
    live.delete(c)
    undo.run()
  })
  live.add(c)
  return c
}

const FX_BASE = '/var/tmp'
const FX_PREFIX = 'odirect-fx-'
let swept = false

function newWorkDir(undo: Undo): string {
  if (!swept) {
    swept = true
    sweepStaleFixtures()
  }
  const dir = fs.mkdtempSync(path.join(FX_BASE, `${FX_PREFIX}${process.pid}-`))
  undo.push(`remove ${dir}`, () => removeWorkDir(dir))
  return dir
}

/** Remove a work dir without ever recursing into a (possibly still mounted) mountpoint. */
function removeWorkDir(dir: string): void {
  const mnt = path.join(dir, 'mnt')
  if (fs.existsSync(mnt)) {
    if (isMountpoint(mnt)) throw new Error(`${mnt} is still mounted; leaving ${dir}`)
    fs.rmdirSync(mnt)
  }
  for (const name of fs.readdirSync(dir)) {
    fs.rmSync(path.join(dir, name), { force: true })
  }
  fs.rmdirSync(dir)
}

function pidAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // State is the field after the parenthesised comm.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

/**
 * Undo fixtures left by processes that died without cleaning up (their pid is in the
 * work-dir name): unmount, detach loop devices, stop faultfs daemons, delete the files.
 * Needs root; a no-op otherwise. Runs automatically before the first fixture of a process.
 */
export function sweepStaleFixtures(): void {
  if (!isRoot()) return
  let names: string[]
  try {
    names = fs.readdirSync(FX_BASE)
  } catch {
    return
  }
  for (const name of names) {
    const m = new RegExp(`^${FX_PREFIX}(\\d+)-`).exec(name)
    if (!m) continue
    const owner = Number(m[1])
    if (owner === process.pid || pidAlive(owner)) continue
    const dir = path.join(FX_BASE, name)
    const undo = new Undo()
    undo.push(`remove ${dir}`, () => removeWorkDir(dir))
    const img = path.join(dir, 'backing.img')
    if (fs.existsSync(img)) undo.push(`detach loops of ${img}`, () => detachLoopsOf(img))
    const mnt = path.join(dir, 'mnt')
    undo.push(`unmount ${mnt}`, () => unmountAll(mnt))
    const pidFile = path.join(dir, 'faultfs.pid')
    if (fs.existsSync(pidFile)) undo.push('stop stale faultfs', () => stopFaultFsFromPidFile(pidFile))
    undo.run()
  }
}

// ---------------------------------------------------------------------------------------
// Mount helpers

function decodeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m: string, o: string) => String.fromCharCode(parseInt(o, 8)))
}

interface MountEntry {
  mountPoint: string
  fsType: string
  source: string
}

export function mounts(): MountEntry[] {
  const out: MountEntry[] = []
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue
    const sep = line.indexOf(' - ')
    if (sep < 0) continue
    const l = line.slice(0, sep).split(' ')
    const r = line.slice(sep + 3).split(' ')
    out.push({ mountPoint: decodeMountPath(l[4] ?? ''), fsType: r[0] ?? '', source: decodeMountPath(r[1] ?? '') })
  }
  return out
}

export function isMountpoint(dir: string): boolean {
  const abs = path.resolve(dir)
  return mounts().some((m) => m.mountPoint === abs)
}

/** Unmount everything stacked on `dir`: plain umount first, lazy (`umount -l`) as fallback. */
function unmountAll(dir: string): void {
  for (let i = 0; i < 8 && isMountpoint(dir); i++) {
    try {
      sh('umount', [dir], 30_000)
    } catch (e) {
      try {
        sh('umount', ['-l', dir], 30_000)
      } catch (e2) {
        throw new Error(`umount ${dir}: ${errText(e)}; umount -l: ${errText(e2)}`)
      }
    }
  }
}

function mountIn(undo: Undo, work: string, args: readonly string[]): string {
  const mnt = path.join(work, 'mnt')
  fs.mkdirSync(mnt)
  sh('mount', [...args, mnt])
  undo.push(`unmount ${mnt}`, () => unmountAll(mnt))
  return mnt
}

function mountFailureSkip(e: unknown, what: string): Skip | null {
  const t = errText(e)
  if (/unknown filesystem type|no such device/i.test(t)) return { skip: `${what}: ${t}` }
  return null
}

// ---------------------------------------------------------------------------------------
// Loop devices

function createBackingFile(work: string, sizeBytes: number): string {
  const img = path.join(work, 'backing.img')
  const fd = fs.openSync(img, 'w', 0o600)
  try {
    fs.ftruncateSync(fd, sizeBytes)
  } finally {
    fs.closeSync(fd)
  }
  return img
}

function attachLoop(img: string, sectorSize: number): { device: string; directIo: boolean } {
  const base = ['--find', '--show', '--sector-size', String(sectorSize)]
  let firstErr: unknown
  try {
    const dev = sh('losetup', [...base, '--direct-io=on', img]).trim()
    return { device: dev, directIo: true }
  } catch (e) {
    firstErr = e
  }
  // A --direct-io=on failure may still have left a device attached (older util-linux
  // attaches first and then fails the LOOP_SET_DIRECT_IO ioctl).
  detachLoopsOf(img)
  try {
    const dev = sh('losetup', [...base, img]).trim()
    return { device: dev, directIo: false }
  } catch (e) {
    throw new Error(`losetup failed with and without --direct-io=on: ${errText(firstErr)}; ${errText(e)}`)
  }
}

/** Detach every loop device backed by `img` (`losetup -j`). */
function detachLoopsOf(img: string): void {
  let out = ''
  try {
    out = sh('losetup', ['-j', img, '-O', 'NAME', '--noheadings'])
  } catch {
    return
  }
  for (const dev of out.split('\n').map((s) => s.trim()).filter(Boolean)) {
    detachLoop(dev)
  }
}

function detachLoop(dev: string): void {
  for (let i = 0; ; i++) {
    try {
      sh('losetup', ['-d', dev], 30_000)
      return
    } catch (e) {
      // Gone already?
      if (/No such device|not a block device|failed to use device/i.test(errText(e))) return
      if (i >= 20) throw e
      sleepSync(100) // EBUSY right after umount: retry briefly
    }
  }
}

function loopSetup(
  sectorSize: 512 | 4096,
  sizeMiB: number,
  undo: Undo,
): { work: string; img: string; device: string; directIo: boolean } {
  if (sectorSize !== 512 && sectorSize !== 4096) throw new Error(`sectorSize must be 512 or 4096, got ${sectorSize}`)
  if (!(sizeMiB > 0)) throw new Error(`sizeMiB must be > 0, got ${sizeMiB}`)
  const work = newWorkDir(undo)
  const img = createBackingFile(work, Math.ceil(sizeMiB * 1024 * 1024))
  const { device, directIo } = attachLoop(img, sectorSize)
  undo.push(`detach ${device}`, () => detachLoop(device))
  const ss = Number(sh('blockdev', ['--getss', device]).trim())
  if (ss !== sectorSize) throw new Error(`${device}: logical sector size is ${ss}, asked for ${sectorSize}`)
  return { work, img, device, directIo }
}

/**
 * A raw loop block device (no filesystem) with the given logical sector size, backed by a
 * sparse file in /var/tmp. Opening the device with O_DIRECT enforces sector alignment.
 */
export function loopDevice(sectorSize: 512 | 4096, sizeMiB: number): LoopDevice | Skip {
  const reason = skipReason(['root', 'loop', 'cmd:blockdev'])
  if (reason) return { skip: reason }
  const undo = new Undo()
  try {
    const { img, device, directIo } = loopSetup(sectorSize, sizeMiB, undo)
    const cleanup = track(undo)
    return { device, backingFile: img, sectorSize, sizeBytes: Math.ceil(sizeMiB * 1024 * 1024), directIo, cleanup }
  } catch (e) {
    undo.run()
    throw e
  }
}

function mkfsArgs(fsType: string, device: string, extra: readonly string[] = []): [string, string[]] {
  switch (fsType) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      // -b 4096 works for both sector sizes (block size must be >= the logical sector size);
      // nodiscard: nothing to discard on a fresh sparse file. A `-b` in `extra` replaces it.
      return [`mkfs.${fsType}`, ['-q', '-F', ...(extra.includes('-b') ? [] : ['-b', '4096']), '-E', 'nodiscard', ...extra, device]]
    case 'xfs':
      return ['mkfs.xfs', ['-q', '-f', '-K', ...extra, device]]
    case 'btrfs':
      return ['mkfs.btrfs', ['-q', '-f', '-K', ...extra, device]]
    case 'vfat':
      return ['mkfs.vfat', [...extra, device]]
    default:
      return [`mkfs.${fsType}`, [...extra, device]]
  }
}

/**
 * A filesystem of `fsType` (default ext4) on a loop device with the given logical sector
 * size, mounted in a temp dir. O_DIRECT I/O on it must be aligned to `sectorSize`. `mkfsExtra`: more
 * mkfs arguments (for ext4, a `-b` there replaces the default 4096-byte blocks).
 */
export function loopFs(sectorSize: 512 | 4096, sizeMiB: number, fsType = 'ext4', mountOptions?: string, mkfsExtra: readonly string[] = []): LoopFs | Skip {
  const [mkfs] = mkfsArgs(fsType, '')
  const reason = skipReason(['root', 'loop', 'cmd:blockdev', 'cmd:mount', `cmd:${mkfs}`, `fs:${fsType}`])
  if (reason) return { skip: reason }
  const undo = new Undo()
  try {
    const { work, img, device, directIo } = loopSetup(sectorSize, sizeMiB, undo)
    const [cmd, args] = mkfsArgs(fsType, device, mkfsExtra)
    sh(cmd, args)
    let dir: string
    try {
      dir = mountIn(undo, work, ['-t', fsType, ...(mountOptions === undefined ? [] : ['-o', mountOptions]), device])
    } catch (e) {
      const skip = mountFailureSkip(e, `mount -t ${fsType}`)
      if (skip) {
        undo.run()
        return skip
      }
      throw e
    }
    const cleanup = track(undo)
    return { dir, device, backingFile: img, sectorSize, fsType, directIo, cleanup }
  } catch (e) {
    undo.run()
    throw e
  }
}

// ---------------------------------------------------------------------------------------
// ramfs / tmpfs / full filesystem

/**
 * A ramfs mount. ramfs has no O_DIRECT support: observed on Linux 6.18, `open(O_DIRECT)`
 * fails with EINVAL (and `open(O_CREAT | O_DIRECT)` creates the file, then fails EINVAL).
 * ramfs has no size limit: keep writes small.
 */
export function ramfsDir(): DirFixture | Skip {
  return memFs('ramfs', ['-t', 'ramfs', '-o', 'mode=0755', 'ramfs'])
}

/**
 * A tmpfs mount of `sizeMiB` MiB. Since Linux 6.6 tmpfs accepts O_DIRECT (observed on 6.18:
 * open succeeds and even unaligned O_DIRECT reads succeed — the I/O goes through the page
 * cache); older kernels fail `open(O_DIRECT)` with EINVAL.
 */
export function tmpfsDir(sizeMiB: number): DirFixture | Skip {
  if (!(sizeMiB > 0)) throw new Error(`sizeMiB must be > 0, got ${sizeMiB}`)
  return memFs('tmpfs', ['-t', 'tmpfs', '-o', `size=${Math.ceil(sizeMiB * 1024)}k,mode=0755`, 'tmpfs'])
}

function memFs(type: string, mountArgs: readonly string[]): DirFixture | Skip {
  const reason = skipReason(['root', 'cmd:mount', `fs:${type}`])
  if (reason) return { skip: reason }
  const undo = new Undo()
  try {
    const work = newWorkDir(undo)
    let dir: string
    try {
      dir = mountIn(undo, work, mountArgs)
    } catch (e) {
      const skip = mountFailureSkip(e, `mount -t ${type}`)
      if (skip) {
        undo.run()
        return skip
      }
      throw e
    }
    return { dir, cleanup: track(undo) }
  } catch (e) {
    undo.run()
    throw e
  }
}

function statfsFree(dir: string): number {
  const s = fs.statfsSync(dir)
  return Number(s.bavail) * Number(s.bsize)
}

/**
 * A small filesystem to fill up for ENOSPC tests. Default: ext4 (no journal, no reserved
 * blocks, 4 KiB blocks) on a 4096-byte-sector loop device — supports real O_DIRECT and
 * fails writes with ENOSPC once `freeBytes` are used. Falls back to a `size=`-limited
 * tmpfs when loop devices are unavailable (or with `kind: 'tmpfs'`).
 */
export function fullFs(
  sizeMiB: number,
  opts: { kind?: 'loop-ext4' | 'tmpfs'; sectorSize?: 512 | 4096 } = {},
): FullFs | Skip {
  if (!(sizeMiB >= 1)) throw new Error(`sizeMiB must be >= 1, got ${sizeMiB}`)
  const sizeBytes = Math.ceil(sizeMiB * 1024 * 1024)
  const loopReason = skipReason(['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4'])
  if ((opts.kind ?? 'loop-ext4') === 'loop-ext4' && !loopReason) {
    const undo = new Undo()
    try {
      const { work, device } = loopSetup(opts.sectorSize ?? 4096, sizeMiB, undo)
      const [cmd, args] = mkfsArgs('ext4', device, ['-m', '0', '-O', '^has_journal,^resize_inode', '-N', '64'])
      sh(cmd, args)
      const dir = mountIn(undo, work, ['-t', 'ext4', device])
      const cleanup = track(undo)
      return { dir, kind: 'loop-ext4', sizeBytes, freeBytes: statfsFree(dir), device, cleanup }
    } catch (e) {
      undo.run()
      throw e
    }
  }
  if (opts.kind === 'loop-ext4' && loopReason) return { skip: loopReason }
  const t = tmpfsDir(sizeMiB)
  if (isSkip(t)) return t
  return { dir: t.dir, kind: 'tmpfs', sizeBytes, freeBytes: statfsFree(t.dir), cleanup: t.cleanup }
}

// ---------------------------------------------------------------------------------------
// Aligned memory

interface WasmMemoryCtor {
  new (descriptor: { initial: number; maximum?: number }): { buffer: ArrayBuffer }
}

/**
 * A zero-filled Buffer whose memory starts on a page boundary (>= 4096-byte aligned), for
 * O_DIRECT with plain node:fs: ordinary Buffers are only ~16-byte aligned, and block
 * devices (loop: dma_alignment 511) reject misaligned user memory with EINVAL.
 * Backed by a WebAssembly.Memory (mmap'ed by V8), so it is aligned by construction.
 */
export function alignedBuffer(size: number): Buffer {
  const pages = Math.max(1, Math.ceil(size / 65536))
  const Memory = (globalThis as unknown as { WebAssembly: { Memory: WasmMemoryCtor } }).WebAssembly.Memory
  return Buffer.from(new Memory({ initial: pages, maximum: pages }).buffer, 0, size)
}

// ---------------------------------------------------------------------------------------
// Page cache

/** `sync` then drop the page cache, dentries and inodes system-wide (needs root). */
export function dropCaches(): void {
  if (!isRoot()) throw new Error('dropCaches needs root')
  sh('sync', [])
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3\n')
}

/** Drop one file's clean cached pages (posix_fadvise DONTNEED via `dd iflag=nocache`). */
export function evictFile(file: string): void {
  sh('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none'])
}

let pageSizeCache = 0
export function pageSize(): number {
  if (!pageSizeCache) pageSizeCache = Number(sh('getconf', ['PAGESIZE']).trim()) || 4096
  return pageSizeCache
}

/**
 * How much of `file` is in the page cache (util-linux `fincore`):
 * `resident` and `total` are page counts (total = ceil(size / page size)).
 */
export function residentPages(file: string): { resident: number; total: number; residentBytes: number; sizeBytes: number } {
  const out = sh('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'PAGES,RES,SIZE', file]).trim()
  const nums = out.split(/\s+/).map(Number)
  const pages = nums[0] ?? NaN
  const res = nums[1] ?? NaN
  const size = nums[2] ?? NaN
  if (nums.length !== 3 || ![pages, res, size].every(Number.isFinite)) {
    throw new Error(`unexpected fincore output: ${JSON.stringify(out)}`)
  }
  return { resident: pages, total: Math.ceil(size / pageSize()), residentBytes: res, sizeBytes: size }
}

// ---------------------------------------------------------------------------------------
// io_uring switches

const IO_URING_DISABLED = '/proc/sys/kernel/io_uring_disabled'

/**
 * Run `fn` with /proc/sys/kernel/io_uring_disabled = 2 (io_uring_setup fails with EPERM for
 * every process, root included), restoring the previous value afterwards — after the
 * returned promise settles if `fn` is async. Machine-wide: other processes are affected
 * while it runs. Check `skipReason(['root', 'io_uring_disabled'])` first; throws otherwise.
 */
export function withIoUringDisabled<T>(fn: () => Promise<T>): Promise<T>
export function withIoUringDisabled<T>(fn: () => T): T
export function withIoUringDisabled<T>(fn: () => T | Promise<T>): T | Promise<T> {
  const reason = skipReason(['root', 'io_uring_disabled'])
  if (reason) throw new Error(`withIoUringDisabled: ${reason}`)
  return withSetting(IO_URING_DISABLED, '2', fn)
}

/** The transparent huge page setting of the machine. */
export const THP_ENABLED = '/sys/kernel/mm/transparent_hugepage/enabled'

/** The machine's transparent huge page mode ('always', 'madvise', 'never'), or undefined without THP. */
export function thpMode(): string | undefined {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync(THP_ENABLED, 'utf8'))?.[1]
  } catch {
    return undefined
  }
}

/**
 * Run `fn` with transparent huge pages set to `mode` ('never', 'madvise', 'always') machine-wide,
 * restoring the previous mode afterwards (as withIoUringDisabled). Needs root and THP.
 */
export function withThp<T>(mode: string, fn: () => Promise<T>): Promise<T>
export function withThp<T>(mode: string, fn: () => T): T
export function withThp<T>(mode: string, fn: () => T | Promise<T>): T | Promise<T> {
  const previous = thpMode()
  if (!isRoot() || previous === undefined) throw new Error('withThp: needs root and transparent huge pages')
  return withSetting(THP_ENABLED, mode, fn, previous)
}

/**
 * Run `fn` with the kernel setting `file` written to `value`, restoring what it held (or
 * `previous`) afterwards — after the returned promise settles if `fn` is async — and at exit.
 */
function withSetting<T>(file: string, value: string, fn: () => T | Promise<T>, previous = fs.readFileSync(file, 'utf8').trim()): T | Promise<T> {
  const restore = once(() => fs.writeFileSync(file, `${previous}\n`))
  fs.writeFileSync(file, `${value}\n`)
  installExitHooks()
  live.add(restore)
  const done = (): void => {
    live.delete(restore)
    restore()
  }
  let result: T | Promise<T>
  try {
    result = fn()
  } catch (e) {
    done()
    throw e
  }
  if (result instanceof Promise) return result.finally(done)
  done()
  return result
}

let launcherPath: string | undefined

/** Repository root: nearest ancestor of cwd (or ODIRECT_ROOT) holding __test__/helpers. */
export function repoRoot(): string {
  if (process.env.ODIRECT_ROOT) return path.resolve(process.env.ODIRECT_ROOT)
  let d = process.cwd()
  for (;;) {
    if (fs.existsSync(path.join(d, '__test__', 'helpers', 'seccomp_deny.c'))) return d
    const up = path.dirname(d)
    if (up === d) throw new Error('cannot find the odirect repository root from cwd; set ODIRECT_ROOT')
    d = up
  }
}

/**
 * Path of the `seccomp_deny` launcher (compiled from __test__/helpers/seccomp_deny.c into
 * target/test-helpers/ when missing or older than the source):
 * `seccomp_deny [-e ERRNO] [-u] [-l] [-r] CMD...` runs CMD with io_uring (-u) or hard links (-l)
 * refused by seccomp (EPERM by default), or renameat2's flags (-r, EINVAL).
 */
export function seccompLauncher(): string | Skip {
  if (launcherPath) return launcherPath
  const reason = skipReason(['cc'])
  if (reason) return { skip: reason }
  const root = repoRoot()
  const src = path.join(root, '__test__', 'helpers', 'seccomp_deny.c')
  const outDir = path.join(root, 'target', 'test-helpers')
  const bin = path.join(outDir, 'seccomp_deny')
  const fresh = fs.existsSync(bin) && fs.statSync(bin).mtimeMs >= fs.statSync(src).mtimeMs
  if (!fresh) {
    fs.mkdirSync(outDir, { recursive: true })
    const tmp = `${bin}.${process.pid}.tmp`
    sh('cc', ['-O2', '-Wall', '-o', tmp, src])
    fs.renameSync(tmp, bin)
  }
  launcherPath = bin
  return bin
}

/**
 * Run a Node script (`.ts` files get `--import @oxc-node/core/register`) in a child
 * process where io_uring_setup fails with EPERM (seccomp; `errno` overrides, e.g. 38 for
 * ENOSYS). Synchronous; returns the exit status and output.
 */
export function runWithoutIoUring(
  scriptPath: string,
  env: NodeJS.ProcessEnv = {},
  opts: { args?: readonly string[]; errno?: number; timeoutMs?: number; nodeArgs?: readonly string[] } = {},
): RunResult | Skip {
  const launcher = seccompLauncher()
  if (isSkip(launcher)) return launcher
  const nodeArgs = [...(opts.nodeArgs ?? [])]
  if (/\.(c|m)?ts$/.test(scriptPath) && !nodeArgs.includes('@oxc-node/core/register')) {
    nodeArgs.unshift('--import', '@oxc-node/core/register')
  }
  const argv = [
    '-u',
    ...(opts.errno !== undefined ? ['-e', String(opts.errno)] : []),
    process.execPath,
    ...nodeArgs,
    scriptPath,
    ...(opts.args ?? []),
  ]
  const r = spawnSync(launcher, argv, {
    cwd: repoRoot(),
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  if (r.error) throw r.error
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr }
}

// ---------------------------------------------------------------------------------------
// faultfs (FUSE fault injection)

/**
 * Initial content of faultfs's data file: the byte at offset `o`. Same function as
 * `pattern_byte` in crates/faultfs/src/main.rs:
 *   s = floor(o / 256) mod 2^32;  h = ((s * 0x9E3779B1) mod 2^32) >>> 24
 *   byte = ((o mod 256) * 31 + 7 + h) mod 256
 */
export function patternByte(o: number): number {
  const s = Math.floor(o / 256) >>> 0
  const h = Math.imul(s, 0x9e3779b1) >>> 24
  return ((o % 256) * 31 + 7 + h) & 0xff
}

/** `length` bytes of the faultfs pattern starting at file offset `offset`. */
export function patternBuffer(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = patternByte(offset + i)
  return b
}

let faultFsBin: string | undefined

/**
 * Path of the faultfs binary: $FAULTFS_BIN if set, else `cargo build -p faultfs --release`
 * (once per process; a no-op when up to date — the first build takes ~1-2 min).
 */
export function faultFsBinary(): string {
  if (faultFsBin) return faultFsBin
  if (process.env.FAULTFS_BIN) {
    faultFsBin = path.resolve(process.env.FAULTFS_BIN)
    return faultFsBin
  }
  const root = repoRoot()
  sh('cargo', ['build', '-q', '-p', 'faultfs', '--release'], 900_000)
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target')
  faultFsBin = path.join(targetDir, 'release', 'faultfs')
  return faultFsBin
}

function faultFsArgs(o: FaultFsOptions, holdFile: string | undefined): string[] {
  const a: string[] = []
  if (o.size !== undefined) a.push('--size', String(o.size))
  if (o.eioAt && o.eioAt.length > 0) a.push('--eio-at', o.eioAt.join(','))
  if (o.delayMs) a.push('--delay-ms', String(o.delayMs))
  if (holdFile) a.push('--hold-file', holdFile)
  if (o.shortReads) a.push('--short-reads')
  if (o.readMax !== undefined) a.push('--read-max', String(o.readMax))
  if (o.shortWrites) a.push('--short-writes')
  if (o.holdWrites) a.push('--hold-writes')
  if (o.fsyncEio) a.push('--fsync-eio')
  if (o.holdFlush) a.push('--hold-flush')
  if (o.pageCache) a.push('--page-cache')
  if (o.name) a.push('--name', o.name)
  if (o.threads) a.push('--threads', String(o.threads))
  if (o.verbose) a.push('--verbose')
  return a
}

function parseStats(text: string): FaultFsStats {
  const v: Record<string, number> = {}
  for (const m of text.matchAll(/(\w+)=(\d+)/g)) {
    if (m[1] !== undefined) v[m[1]] = Number(m[2])
  }
  return { reads: v.reads ?? 0, writes: v.writes ?? 0, inflight: v.inflight ?? 0, held: v.held ?? 0, eio: v.eio ?? 0, peak: v.peak ?? 0 }
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL. */
function stopPid(pid: number, graceMs = 3000): void {
  if (!pidAlive(pid)) return
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return
  }
  const deadline = Date.now() + graceMs
  while (pidAlive(pid) && Date.now() < deadline) sleepSync(20)
  if (pidAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone
    }
    const d2 = Date.now() + 2000
    while (pidAlive(pid) && Date.now() < d2) sleepSync(20)
  }
}

function stopFaultFsFromPidFile(pidFile: string): void {
  const pid = Number(fs.readFileSync(pidFile, 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0) return
  let cmdline = ''
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch {
    return
  }
  if (cmdline.includes('faultfs') && cmdline.includes(path.dirname(pidFile))) stopPid(pid)
}

/**
 * Mount faultfs (crates/faultfs) in a temp dir: a FUSE filesystem with one file `data`
 * (`size` bytes of `patternByte` content; writes kept in memory) and injectable faults.
 * Every open gets FOPEN_DIRECT_IO unless `pageCache`, so O_DIRECT opens are allowed and
 * every read(2)/write(2) reaches the daemon (split into <= 1 MiB requests by the kernel).
 * Note FUSE imposes no O_DIRECT alignment: unaligned O_DIRECT I/O succeeds here.
 *
 * Kernel behaviour observed on 6.18: a sync read(2) larger than one request whose later
 * request hits an EIO offset returns a short count (the bytes before the failing 1 MiB
 * request); the next read starting there fails with EIO. With `pageCache: true`, an O_DIRECT
 * read is split into parallel requests and fails as a whole with EIO. To get EIO
 * deterministically, start the read inside the request that covers the EIO offset.
 */
export function faultFs(opts: FaultFsOptions = {}): FaultFs | Skip {
  const reason = skipReason(['root', 'fuse', 'cargo', 'cmd:umount'])
  if (reason) return { skip: reason }
  const bin = faultFsBinary()
  const undo = new Undo()
  try {
    const work = newWorkDir(undo)
    const mnt = path.join(work, 'mnt')
    fs.mkdirSync(mnt)
    const holdFile = opts.hold ? path.join(work, 'hold') : undefined
    if (holdFile && opts.hold === 'held') fs.writeFileSync(holdFile, '')
    if (holdFile) undo.push('remove hold file', () => fs.rmSync(holdFile, { force: true }))
    const outFile = path.join(work, 'faultfs.out')
    const logFile = path.join(work, 'faultfs.err')
    const outFd = fs.openSync(outFile, 'w')
    const errFd = fs.openSync(logFile, 'w')
    let pid: number
    try {
      const child = spawn(bin, [mnt, ...faultFsArgs(opts, holdFile)], {
        detached: true,
        stdio: ['ignore', outFd, errFd],
      })
      child.unref()
      if (child.pid === undefined) throw new Error(`could not start ${bin}`)
      pid = child.pid
    } finally {
      fs.closeSync(outFd)
      fs.closeSync(errFd)
    }
    const pidFile = path.join(work, 'faultfs.pid')
    fs.writeFileSync(pidFile, `${pid}\n`)
    // Undo order (LIFO): release the hold file (pushed above, runs last but the daemon is
    // gone by then), unmount, stop the daemon.
    undo.push(`stop faultfs ${pid}`, () => stopPid(pid))
    undo.push(`unmount ${mnt}`, () => {
      if (holdFile) fs.rmSync(holdFile, { force: true }) // let held replies go first
      unmountAll(mnt)
    })
    const deadline = Date.now() + 15_000
    for (;;) {
      const ready = fs.readFileSync(outFile, 'utf8').includes('ready')
      if (ready && isMountpoint(mnt)) break
      if (!pidAlive(pid)) {
        throw new Error(`faultfs exited before mounting: ${fs.readFileSync(logFile, 'utf8').trim()}`)
      }
      if (Date.now() > deadline) {
        throw new Error(`faultfs did not mount within 15 s: ${fs.readFileSync(logFile, 'utf8').trim()}`)
      }
      sleepSync(20)
    }
    const statsFile = path.join(mnt, '.stats')
    const stats = (): FaultFsStats => parseStats(fs.readFileSync(statsFile, 'utf8'))
    const needHold = (): string => {
      if (!holdFile) throw new Error('faultFs: pass { hold: true } to use hold()/release()')
      return holdFile
    }
    const cleanup = track(undo)
    const waitFor = (cond: (s: FaultFsStats) => boolean, what: string, timeoutMs = 30_000): Promise<void> => watchUntil(outFile, () => cond(stats()), `faultfs: ${what}`, timeoutMs)
    return {
      dir: mnt,
      file: path.join(mnt, opts.name ?? 'data'),
      statsFile,
      holdFile,
      pid,
      logFile,
      outFile,
      hold: () => fs.writeFileSync(needHold(), ''),
      release: () => fs.rmSync(needHold(), { force: true }),
      stats,
      waitFor,
      waitForHeld: (n = 1, timeoutMs = 30_000) => waitFor((s) => s.held >= n, `${n} requests held`, timeoutMs),
      cleanup,
    }
  } catch (e) {
    undo.run()
    throw e
  }
}
