// The power-cut bed (crates/faultfs/src/crashfs.rs) driven from tests: mount a disk with a
// volatile write cache, run a workload through the public API, cut the power after the Nth
// mutating operation (or after the workload), and hand the durable tree (what a remount would
// show) to a checker. Cut points are enumerated (all of them when there are few, a seeded
// sample otherwise); torn-sector choices are seeded per cut point. A failure names the
// replay: CRASH_CUT=<k> CRASH_SEED=<s> runs only that cut point.
import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { faultFsBinary, type Requirement } from './fixtures.js'

export const CRASH_REQS: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']

const BASE = '/var/tmp'
const PREFIX = 'odirect-crash-'

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown }

export interface CrashRunOptions {
  /** Fill the initial (durable) tree: called with a real directory that becomes the fs root. */
  image?: (dir: string) => void
  /** Cut when mutating operation number `cutAfter` (0-based) arrives; absent: after the workload. */
  cutAfter?: number
  /** Seed of the torn-sector coin flips. */
  seed?: number
  /** Sectors written since the last sync survive or not, by a seeded coin flip. */
  torn?: boolean
  /** The disk acknowledges syncs without making anything durable (a liar). */
  ignoreSync?: boolean
}

export interface CrashRun<T> {
  /** Mutating operations the fs applied before the cut. */
  ops: number
  /** The cut point when the cut came from `cutAfter` during the workload. */
  cutAt: number | undefined
  /** The durable tree after the cut (the root directory). */
  dump: string
  outcome: Outcome<T>
}

let sweptStale = false

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function removeTree(dir: string): void {
  const mnt = path.join(dir, 'mnt')
  try {
    fs.rmdirSync(mnt) // fails (EBUSY) if still mounted: then leave everything
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return
  }
  fs.rmSync(dir, { recursive: true, force: true })
}

/** Remove the work dirs of dead processes (their pid is in the name). */
function sweepStale(): void {
  if (sweptStale) return
  sweptStale = true
  for (const name of fs.readdirSync(BASE)) {
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(name)
    if (!m || Number(m[1]) === process.pid || pidAlive(Number(m[1]))) continue
    const dir = path.join(BASE, name)
    spawnSyncQuiet('umount', ['-l', path.join(dir, 'mnt')])
    removeTree(dir)
  }
}

function spawnSyncQuiet(cmd: string, args: string[]): void {
  spawnSync(cmd, args, { stdio: 'ignore' })
}

let binary: string | undefined
/** crashfs is built with faultfs (same crate). */
export function crashFsBinary(): string {
  binary ??= path.join(path.dirname(faultFsBinary()), 'crashfs')
  return binary
}

function exited(child: ReturnType<typeof spawn>): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once('exit', () => resolve())
  })
}

/**
 * One run: mount, run `workload(root)`, cut (at `cutAfter` or after the workload), unmount.
 * The caller removes the work dir with the returned `cleanup` after checking `dump`.
 */
export async function crashRun<T>(o: CrashRunOptions, workload: (root: string) => Promise<T>): Promise<CrashRun<T> & { cleanup(): void }> {
  sweepStale()
  const bin = crashFsBinary()
  const work = fs.mkdtempSync(path.join(BASE, `${PREFIX}${process.pid}-`))
  const mnt = path.join(work, 'mnt')
  const img = path.join(work, 'img')
  const dump = path.join(work, 'dump')
  for (const d of [mnt, img, dump]) fs.mkdirSync(d)
  const cleanup = (): void => removeTree(work)
  o.image?.(img)
  const args = [mnt, '--dump', dump, '--image', img, '--seed', String(o.seed ?? 0)]
  if (o.cutAfter !== undefined) args.push('--cut-after', String(o.cutAfter))
  if (o.torn) args.push('--torn')
  if (o.ignoreSync) args.push('--ignore-sync')
  if (process.env.CRASHFS_VERBOSE) args.push('--verbose')
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()))
  try {
    await new Promise<void>((resolve, reject) => {
      let out = ''
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('ready')) resolve()
      })
      child.once('exit', (code) => reject(new Error(`crashfs exited (${code}) before mounting: ${err}`)))
      child.once('error', reject)
    })
    let outcome: Outcome<T>
    try {
      outcome = { ok: true, value: await workload(mnt) }
    } catch (error) {
      outcome = { ok: false, error }
    }
    const ctl = path.join(mnt, '.crashfs')
    // Cuts now unless the run was already cut; the reply comes after the dump is written.
    fs.writeFileSync(ctl, 'cut')
    const status = fs.readFileSync(ctl, 'utf8')
    const num = (k: string): number => Number(new RegExp(`${k}=(-?\\d+)`).exec(status)?.[1] ?? NaN)
    const cutAt = o.cutAfter !== undefined && num('cutAt') === o.cutAfter ? o.cutAfter : undefined
    return { ops: num('ops'), cutAt, dump, outcome, cleanup }
  } catch (e) {
    cleanup()
    throw e
  } finally {
    child.kill('SIGTERM') // the daemon detaches the mount and exits
    await exited(child)
    if (process.env.CRASHFS_VERBOSE) console.error(err)
    spawnSyncQuiet('umount', ['-l', mnt]) // in case it died without detaching
  }
}

export interface SweepOptions<T> extends Omit<CrashRunOptions, 'cutAfter' | 'seed'> {
  /** At most this many cut points (a seeded sample when there are more). Default 40. */
  maxPoints?: number
  /** With `torn`, every cut point is run this many times with different seeds. Default 3. */
  rounds?: number
  seed?: number
  workload: (root: string) => Promise<T>
  /** A violation of the guarantee, described, or undefined. */
  check: (run: CrashRun<T>) => string | undefined
}

export interface SweepResult {
  /** Mutating operations of the uncut workload. */
  ops: number
  /** Cut points run (plus the cut after the workload). */
  points: number[]
  violations: string[]
  /** Runs in which the workload had been acknowledged (resolved) before the cut. */
  acked: number
  /** Runs in all (cut points x torn rounds, plus the uncut run). */
  runs: number
}

function mix(a: number, b: number): number {
  let x = (Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35)) >>> 0
  x ^= x >>> 16
  return Math.imul(x, 0x7feb352d) >>> 0
}

/** Seeded sample of `n` distinct numbers in [0, total), sorted. */
function sample(total: number, n: number, seed: number): number[] {
  if (total <= n) return Array.from({ length: total }, (_, i) => i)
  const picked = new Set<number>()
  for (let i = 0; picked.size < n; i++) picked.add(mix(seed, i) % total)
  return [...picked].sort((a, b) => a - b)
}

/**
 * Runs the workload uncut (to count its operations), then once per cut point, and checks
 * every durable tree. CRASH_CUT / CRASH_SEED replay a single cut point.
 */
export async function crashSweep<T>(o: SweepOptions<T>): Promise<SweepResult> {
  const baseSeed = Number(process.env.CRASH_SEED ?? o.seed ?? 1)
  const violations: string[] = []
  let acked = 0
  const one = async (cutAfter: number | undefined, round = 0): Promise<void> => {
    const seed = mix(baseSeed + round, cutAfter ?? -1)
    const run = await crashRun({ image: o.image, torn: o.torn, ignoreSync: o.ignoreSync, cutAfter, seed }, o.workload)
    try {
      if (run.outcome.ok) acked++
      const v = o.check(run)
      const where = cutAfter === undefined ? 'cut after the workload' : `cut at op ${cutAfter}`
      if (v !== undefined) violations.push(`${where} (replay: CRASH_CUT=${cutAfter ?? 'end'} CRASH_SEED=${baseSeed + round}${o.torn ? ', torn' : ''}): ${v}`)
    } finally {
      run.cleanup()
    }
  }
  const only = process.env.CRASH_CUT
  if (only !== undefined) {
    await one(only === 'end' ? undefined : Number(only))
    return { ops: -1, points: only === 'end' ? [] : [Number(only)], violations, acked, runs: 1 }
  }
  // Uncut run: counts the operations (and is itself the "cut after the workload" point).
  let ops = 0
  {
    const run = await crashRun({ image: o.image, torn: o.torn, ignoreSync: o.ignoreSync, seed: mix(baseSeed, -1) }, o.workload)
    try {
      ops = run.ops
      if (!run.outcome.ok) throw new Error(`the workload fails without a cut: ${String(run.outcome.error)}`)
      acked++
      const v = o.check(run)
      if (v !== undefined) violations.push(`cut after the workload (replay: CRASH_CUT=end CRASH_SEED=${baseSeed}): ${v}`)
    } finally {
      run.cleanup()
    }
  }
  const points = sample(ops, o.maxPoints ?? 40, baseSeed)
  const rounds = o.torn ? (o.rounds ?? 3) : 1
  for (let round = 0; round < rounds; round++) for (const k of points) await one(k, round)
  return { ops, points, violations, acked, runs: 1 + rounds * points.length }
}

/** The durable content of `name` in a dump, or undefined if absent. */
export function durable(run: CrashRun<unknown>, name: string): Buffer | undefined {
  try {
    return fs.readFileSync(path.join(run.dump, name))
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw e
  }
}

/** Short description of a content against the expected ones. */
export function describe(b: Buffer | undefined, known: Record<string, Buffer | undefined>): string {
  if (b === undefined) return 'absent'
  for (const [k, v] of Object.entries(known)) if (v !== undefined && b.equals(v)) return k
  return `${b.length} bytes matching none of ${Object.keys(known).join('/')}`
}

/** Deterministic bytes (so a replayed run writes the same data). */
export function bytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  let x = (seed * 2654435761) >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    b[i] = x & 0xff
  }
  return b
}
