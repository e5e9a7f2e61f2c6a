// Benchmark harness: the same workloads on the same file through fio (io_uring, libaio), node:fs
// and odirect (one promise per op, batches, registered buffers). Each runner returns raw counts;
// medians, ratios and the report are made in report.ts.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as nodePath from 'node:path'
import { performance } from 'node:perf_hooks'

import { allocAligned, BatchWindow, type FileHandle, open, probe } from '../index'
import * as engineModule from '../src/engine'
import { native } from '../src/native'
import type { HugePages } from './hugepages'

// ---------------------------------------------------------------------------------------------
// Workloads and engines

export interface Workload {
  /** Stable id, e.g. 'randread-4k-qd64'. */
  id: string
  /** Human label, e.g. '4 KiB random read, QD 64'. */
  label: string
  write: boolean
  random: boolean
  /** Block size in bytes. */
  bs: number
  /** Ops in flight. */
  qd: number
  /** What the headline figure is. */
  metric: 'iops' | 'mbps'
  /** Which file: the test file (usually on a disk), or the one on a tmpfs (no device: CPU decides). */
  place: Place
}

export type Place = 'disk' | 'tmpfs'

export type EngineId =
  | 'fio-io_uring'
  | 'fio-io_uring-huge'
  | 'fio-io_uring-2j'
  | 'fio-libaio'
  | 'node-fs'
  | 'node-fs-direct'
  | 'odirect'
  | 'odirect-batch'
  | 'odirect-batch-typed'
  | 'odirect-batch-lanes'
  | 'odirect-batch-queue'
  | 'odirect-registered'
  | 'odirect-bun'
  | 'odirect-deno'
  | VariantId

/** An A/B variant (--variant NAME=JSON): odirect in a Node child process with its own options/env. */
export type VariantId = `variant:${string}`

export interface Variant {
  /** Options for open(). */
  open?: Record<string, unknown>
  /** Environment variables of the child process (engine switches read at start-up). */
  env?: Record<string, string>
  /** How odirect issues the ops (see RUN_MODES); 'op' by default. */
  mode?: RunMode
}

/**
 * How an odirect run issues its ops: 'op' one promise per op (QD workers); 'batch' array-form
 * readMany/writeMany; 'typed' typed-array readMany/writeMany of BATCH_FACTOR x QD ops with
 * `{ window: QD }`; 'lanes' two typed calls of QD/2 alternating; 'queue' two typed calls of
 * BATCH_FACTOR x QD / 2 ops always queued in one BatchWindow of QD (never drains); 'registered'
 * one promise per op on QD buffers of fh.registerBuffers (the odirect-registered row);
 * 'arraylanes' (variants only) the array form in two lanes of QD/2 ops with `{ window: QD/2 }`,
 * each lane issuing its next call when its last one resolved (the issue's "2 x 32 alternating").
 */
export const RUN_MODES = ['op', 'batch', 'typed', 'lanes', 'queue', 'registered', 'arraylanes'] as const
export type RunMode = (typeof RUN_MODES)[number]

export const isVariant = (e: string): e is VariantId => e.startsWith('variant:')

export const ENGINES: readonly { id: EngineId; label: string }[] = [
  { id: 'fio-io_uring', label: 'fio io_uring' },
  { id: 'fio-io_uring-huge', label: 'fio io_uring, huge pages' },
  { id: 'fio-io_uring-2j', label: 'fio io_uring, 2 jobs (limit)' },
  { id: 'fio-libaio', label: 'fio libaio' },
  { id: 'node-fs', label: 'node:fs (buffered)' },
  { id: 'node-fs-direct', label: 'node:fs O_DIRECT' },
  { id: 'odirect', label: 'odirect read/write per op' },
  { id: 'odirect-batch', label: 'odirect readMany/writeMany' },
  { id: 'odirect-batch-typed', label: 'odirect readMany/writeMany, typed arrays' },
  { id: 'odirect-batch-lanes', label: 'odirect typed readMany/writeMany, 2 lanes of QD/2' },
  { id: 'odirect-batch-queue', label: 'odirect typed readMany/writeMany, a queue of 2 in a BatchWindow of QD' },
  { id: 'odirect-registered', label: 'odirect registered buffers' },
  { id: 'odirect-bun', label: 'odirect per op, Bun' },
  { id: 'odirect-deno', label: 'odirect per op, Deno' },
]

export const engineLabel = (id: EngineId): string => ENGINES.find((e) => e.id === id)?.label ?? (isVariant(id) ? `odirect variant '${id.slice('variant:'.length)}'` : id)

/** The runtimes the per-op workload also runs under (child processes). */
export type RuntimeName = 'bun' | 'deno'
export const RUNTIME_ENGINES: Record<RuntimeName, EngineId> = { bun: 'odirect-bun', deno: 'odirect-deno' }

/**
 * The fio configurations a workload's "vs fio" ratio may take as its reference (the best of them in
 * the run: fio at its peak); not the 2-job row, which is the device's limit rather than a peer.
 */
export const FIO_PEERS: readonly EngineId[] = ['fio-io_uring', 'fio-io_uring-huge', 'fio-libaio']

/**
 * Which engines run which workload: fio with 2 jobs is the limit row of the deep random workloads;
 * fio with huge-page buffers the 1 MiB-block ones, where it is faster; Bun and Deno
 * run the random workloads; libaio only on the disk; everything else everywhere.
 */
export function appliesTo(e: EngineId, w: Workload): boolean {
  switch (e) {
    case 'fio-io_uring-huge':
      // 4 KiB blocks: one page per buffer either way; huge pages made no difference there (measured).
      return w.bs >= 1 << 20
    case 'fio-io_uring-2j':
      return w.random && w.qd > 1
    case 'odirect-bun':
    case 'odirect-deno':
      return w.random
    case 'fio-libaio':
      return w.place === 'disk'
    case 'odirect-batch-lanes':
    case 'odirect-batch-queue':
      return w.qd > 1
    default:
      return true
  }
}

export function fmtSize(n: number): string {
  if (n >= 1 << 30 && n % (1 << 30) === 0) return `${n / (1 << 30)} GiB`
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`
  if (n >= 1 << 10 && n % (1 << 10) === 0) return `${n / (1 << 10)} KiB`
  return `${n} B`
}

/** The issue's workload set: random bs at QD 1 and `qd`, both directions; 1 MiB sequential at QD 4. */
export function standardWorkloads(bs = 4096, qd = 64, seqBs = 1 << 20, seqQd = 4): Workload[] {
  const w: Workload[] = []
  for (const write of [false, true]) {
    for (const d of qd === 1 ? [1] : [1, qd]) {
      const dir = write ? 'randwrite' : 'randread'
      w.push({ id: `${dir}-${bs}-qd${d}`, label: `${fmtSize(bs)} random ${write ? 'write' : 'read'}, QD ${d}`, write, random: true, bs, qd: d, metric: 'iops', place: 'disk' })
    }
  }
  for (const write of [false, true]) {
    const dir = write ? 'seqwrite' : 'seqread'
    w.push({ id: `${dir}-${seqBs}-qd${seqQd}`, label: `${fmtSize(seqBs)} sequential ${write ? 'write' : 'read'}, QD ${seqQd}`, write, random: false, bs: seqBs, qd: seqQd, metric: 'mbps', place: 'disk' })
  }
  return w
}

/**
 * The software-path workloads, on a file in a tmpfs (O_DIRECT works there since Linux 6.6; no
 * device, so the CPU spent per op decides): random read at QD 1 and `qd`, random write at `qd`.
 */
export function tmpfsWorkloads(bs = 4096, qd = 64): Workload[] {
  const mk = (write: boolean, d: number): Workload => ({
    id: `tmpfs-${write ? 'randwrite' : 'randread'}-${bs}-qd${d}`,
    label: `${fmtSize(bs)} random ${write ? 'write' : 'read'}, QD ${d}, tmpfs`,
    write,
    random: true,
    bs,
    qd: d,
    metric: 'iops',
    place: 'tmpfs',
  })
  return qd === 1 ? [mk(false, 1), mk(true, 1)] : [mk(false, 1), mk(false, qd), mk(true, qd)]
}

/** How long one measured run lasts: a time, or a number of ops; plus an unmeasured warm-up. */
export interface Limit {
  durationMs: number
  /** When > 0, the run ends after this many measured ops instead of after durationMs. */
  ops: number
  rampMs: number
}

export interface RunResult {
  ops: number
  bytes: number
  seconds: number
  /** Latency percentiles, microseconds (fio: completion latency; JS engines: call to settle). */
  p50: number
  p99: number
  /** CPU time used (user + system) / wall time, percent of one core. */
  cpuPct: number
  /**
   * CPU time (user + system) of the whole process (every thread: JS, odirect's, libuv's pool,
   * io_uring workers) in the measured window, per op, microseconds. fio: its usr_cpu + sys_cpu
   * times its runtime, over its ops (summed over jobs).
   */
  cpuUsPerOp: number
  /** odirect: latency percentiles of fh.stats() (native, submit to reap, whole run incl. warm-up). */
  nativeP50?: number
  nativeP99?: number
  /** odirect: which engine path ran, e.g. 'libuv/io_uring' or 'thread/io_uring'. */
  path?: string
  /** The runtime of the child process (Bun/Deno rows), e.g. 'bun 1.2.3'. */
  runtime?: string
  /**
   * fio: CPU µs per op by fio's own accounting (usr_cpu + sys_cpu of its job threads). It leaves out
   * io_uring's kernel workers (io-wq), which do the copying on a tmpfs; cpuUsPerOp is the whole
   * process tree's, as for the JS engines.
   */
  fioSelfCpuUsPerOp?: number
  /**
   * JS engines: CPU µs per op by thread group ('js' = the main thread, 'odirect-reaper',
   * 'iou-wrk' = io_uring's workers, 'libuv-worker', 'exited/other'...), from /proc/self/task.
   */
  threadCpuUsPerOp?: Record<string, number>
  /**
   * Steal time of the whole machine during the run, percent of all CPU time (a VM whose host
   * throttles it: the guest's CPUs stop in bursts). Filled in by runEngine; NaN when unknown.
   */
  stealPct?: number
  /** The round (0-based) this run belongs to: every engine runs once per round, interleaved (set by bench.ts; report.ts pairs ratios by it). */
  round?: number
  /**
   * The CPU the run was pinned to (QD 1 rows of fio and odirect, see pinCpuFor), e.g. 'CPU 1':
   * the one CPU the process that ran it reported it may use (its Cpus_allowed_list).
   */
  pinned?: string
  /** A child process's own Cpus_allowed_list (odirect in a child; fio through its shell). */
  cpus?: string
}

/** [steal, total] jiffies from /proc/stat, or undefined off Linux. */
function cpuTimes(): [number, number] | undefined {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number)
    return [f[7] ?? 0, f.reduce((a, b) => a + b, 0)]
  } catch {
    return undefined
  }
}

export interface BenchContext {
  path: string
  /** Bytes of the file the workloads use (a multiple of every block size). */
  size: number
  limit: Limit
  isRoot: boolean
  /** Empty the page cache with posix_fadvise on the file even as root (quick runs: no global drop). */
  fadviseOnly?: boolean
  fioPath: string | undefined
  /** fio engines that failed to start here (e.g. io_uring refused), with the reason. */
  fioBroken: Map<string, string>
  /** Consecutive failed fio cells per ioengine. */
  fioFailures?: Map<string, number>
  /** Huge pages reserved for fio's buffers (bench/hugepages.ts), or why there are none. */
  hugePages?: HugePages | string
  /** Extra options for odirect's open() (--open-options), e.g. an engine option to compare. */
  openOptions?: Record<string, unknown>
  /** --variant: name -> what differs. */
  variants?: Map<string, Variant>
  /** Bun/Deno: the binary, or why that runtime's rows are skipped (filled on first use). */
  runtimes?: Map<RuntimeName, { bin?: string; version?: string; why?: string }>
  /**
   * The CPU the QD 1 rows of fio and odirect run on (see pinCpuFor); undefined: not pinned
   * (--pin-cpu off, one CPU only, or no taskset).
   */
  pinCpu?: number
  log: (msg: string) => void
}

/**
 * The CPUs this process may run on (/proc/self/status Cpus_allowed_list, e.g. '0-1,4'), or
 * undefined when unknown.
 */
export function allowedCpus(): number[] | undefined {
  const list = allowedCpuList()
  if (list === undefined) return undefined
  const cpus: number[] = []
  for (const part of list.split(',')) {
    const [a, b] = part.split('-').map(Number)
    if (!Number.isInteger(a) || !(b === undefined || Number.isInteger(b))) return undefined
    for (let c = a; c <= (b ?? a); c++) cpus.push(c)
  }
  return cpus
}

/** This process's Cpus_allowed_list as /proc/self/status says it ('0-1'), or undefined. */
export function allowedCpuList(): string | undefined {
  try {
    return /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1]
  } catch {
    return undefined
  }
}

/**
 * `pinned` of a run made under `taskset -c pin`: 'CPU n' when the process that ran it reported
 * exactly that CPU as all it may use (`cpus`), else undefined (and `cpus` is dropped either way).
 */
function confirmPin(result: RunResult, pin: number | undefined): void {
  if (pin !== undefined && result.cpus === String(pin)) result.pinned = `CPU ${pin}`
  delete result.cpus
}

/**
 * The default CPU of the QD 1 rows: the last one this process may use (taskset must exist; with
 * one CPU there is nothing to pin). Why pin: at QD 1 every tmpfs read (and some disk I/O) goes to
 * an io_uring worker thread (io-wq), and whether it runs on its submitter's CPU or the other one
 * decided the row per run, for fio too (6 µs vs 40-50 µs p50 with the same command). A process
 * pinned before its ring exists gets its io-wq workers on the same CPU (they take the
 * submitter's affinity; Linux 6.18 here), so both engines run in one regime.
 */
export function defaultPinCpu(): number | undefined {
  const cpus = allowedCpus()
  if (cpus === undefined || cpus.length < 2) return undefined
  const r = spawnSync('taskset', ['-c', String(cpus[cpus.length - 1]), 'true'], { encoding: 'utf8' })
  return r.status === 0 ? cpus[cpus.length - 1] : undefined
}

/**
 * The CPU a run of `engine` on `w` is pinned to, or undefined: QD 1 workloads only (QD 64 rows use
 * every CPU, as a program would), and only engines that start a process of their own for the run
 * (fio; odirect in a child process: a fresh io_uring, so its io-wq workers are made pinned too).
 */
export function pinCpuFor(ctx: BenchContext, engine: EngineId, w: Workload): number | undefined {
  if (ctx.pinCpu === undefined || w.qd !== 1) return undefined
  return PINNED_ENGINES.has(engine) || isVariant(engine) ? ctx.pinCpu : undefined
}

/**
 * Engines run pinned at QD 1 (pinCpuFor): fio and odirect's per-op loops (in a child process),
 * registered buffers too (else its row ran in this process, unpinned, against a per-op row pinned
 * to the CPU of the disk's interrupt: the nineteenth session's full run read that as registered
 * buffers being 8-13 µs faster, README "Depth 1 on the disk: registered buffers vs per op").
 */
const PINNED_ENGINES: ReadonlySet<EngineId> = new Set<EngineId>(['fio-io_uring', 'fio-io_uring-huge', 'fio-libaio', 'odirect', 'odirect-registered', 'odirect-bun', 'odirect-deno'])

/** The registered-buffers row when it runs in a child (pinned): the per-op loop on registered buffers. */
const REGISTERED_CHILD: Variant = { mode: 'registered' }

/** `cmd args` under `taskset -c cpu` when `cpu` is given. */
const pinnedCommand = (cpu: number | undefined, cmd: string, args: string[]): [string, string[]] => (cpu === undefined ? [cmd, args] : ['taskset', ['-c', String(cpu), cmd, ...args]])

/** `transient`: this run failed but the next may work (the cell is tried again). */
export type Outcome = { ok: true; result: RunResult } | { ok: false; skipped: string; transient?: boolean }

/**
 * CPU time (user + system) of the whole process, microseconds: process.cpuUsage() (getrusage
 * RUSAGE_SELF: every thread), or /proc/self/stat (clock ticks) where a runtime lacks it.
 */
export function cpuNow(): number {
  try {
    if (typeof process.cpuUsage === 'function') {
      const u = process.cpuUsage()
      if (Number.isFinite(u.user) && Number.isFinite(u.system)) return u.user + u.system
    }
  } catch {
    // fall through
  }
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; USER_HZ is 100.
    return (Number(f[11]) + Number(f[12])) * 1e4
  } catch {
    return NaN
  }
}

/**
 * CPU time of each thread of this process, microseconds by thread id, with the thread's group:
 * 'js' (the main thread), or its name without trailing numbers ('iou-wrk', 'iou-sqp',
 * 'odirect-reaper', 'libuv-worker', 'V8 DefaultWorke'...). Undefined where /proc is missing.
 */
export function threadCpu(): Map<string, { group: string; us: number }> | undefined {
  try {
    const out = new Map<string, { group: string; us: number }>()
    const self = fs.readlinkSync('/proc/self')
    for (const tid of fs.readdirSync('/proc/self/task')) {
      try {
        const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
        const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        const group = tid === self ? 'js' : name.replace(/[-_ ]?\d+$/, '') || name
        out.set(tid, { group, us: (Number(f[11]) + Number(f[12])) * 1e4 })
      } catch {
        // the thread exited meanwhile
      }
    }
    return out
  } catch {
    return undefined
  }
}

/**
 * Per-group CPU µs per op between two threadCpu() snapshots; what the process used beyond the
 * threads still there at the end (threads that exited, e.g. idle io-wq workers) is 'exited/other'.
 */
function threadSplit(a: ReturnType<typeof threadCpu>, b: ReturnType<typeof threadCpu>, totalUs: number, ops: number): Record<string, number> | undefined {
  if (a === undefined || b === undefined || !(ops > 0)) return undefined
  const by: Record<string, number> = {}
  let sum = 0
  for (const [tid, t] of b) {
    const d = t.us - (a.get(tid)?.us ?? 0)
    if (d <= 0) continue
    by[t.group] = (by[t.group] ?? 0) + d / ops
    sum += d
  }
  if (Number.isFinite(totalUs) && totalUs - sum > 0) by['exited/other'] = (totalUs - sum) / ops
  return by
}

// ---------------------------------------------------------------------------------------------
// Latency recording

class LatencyRecorder {
  private a = new Float64Array(1 << 16)
  n = 0
  add(v: number): void {
    if (this.n === this.a.length) this.grow()
    this.a[this.n++] = v
  }
  addN(v: number, k: number): void {
    for (let i = 0; i < k; i++) this.add(v)
  }
  private grow(): void {
    const b = new Float64Array(this.a.length * 2)
    b.set(this.a)
    this.a = b
  }
  /** Percentiles in microseconds from samples in milliseconds. */
  percentiles(): { p50: number; p99: number } {
    if (this.n === 0) return { p50: NaN, p99: NaN }
    const s = this.a.subarray(0, this.n).sort()
    const at = (p: number): number => s[Math.min(this.n - 1, Math.floor(p * this.n))] * 1000
    return { p50: at(0.5), p99: at(0.99) }
  }
}

// ---------------------------------------------------------------------------------------------
// Position generators: uniform random block, or a shared sequential cursor that wraps.

function positions(w: Workload, size: number, onWrap?: () => void): () => number {
  const blocks = Math.floor(size / w.bs)
  if (w.random) return () => Math.floor(Math.random() * blocks) * w.bs
  let next = 0
  return () => {
    const p = next
    next += w.bs
    if (next + w.bs > blocks * w.bs) {
      next = 0
      onWrap?.()
    }
    return p
  }
}

/** For buffered reads: keeps the file out of the page cache while the run goes on. */
interface Uncache {
  /** Called every `every` completions and whenever the sequential cursor wraps. */
  every: number
  fn: () => void
}

// ---------------------------------------------------------------------------------------------
// The JS loops. A measured window starts after the warm-up; an op counts when it completes inside
// the window (ops still in flight at the end are drained, not counted).

interface Window {
  measuring: boolean
  stop: boolean
  start: number
  last: number
  ops: number
  lat: LatencyRecorder
  /** Process CPU time (µs) when the window opened, and what it used until the window closed. */
  cpuStart: number
  cpuUsed: number
  /** Per-thread CPU at the window's start and end. */
  threadsStart?: ReturnType<typeof threadCpu>
  threadsEnd?: ReturnType<typeof threadCpu>
}

function newWindow(): Window {
  return { measuring: false, stop: false, start: 0, last: 0, ops: 0, lat: new LatencyRecorder(), cpuStart: NaN, cpuUsed: NaN }
}

/** Called after each completion (or batch): starts the window after the ramp, ends it on time or count. */
function tick(win: Window, t0: number, t1: number, k: number, limit: Limit, startedAt: number): void {
  if (!win.measuring) {
    if (t1 - startedAt >= limit.rampMs) {
      win.measuring = true
      win.start = t1
      win.last = t1
      win.threadsStart = threadCpu()
      win.cpuStart = cpuNow()
    }
    return
  }
  if (t0 >= win.start) {
    win.ops += k
    win.lat.addN(t1 - t0, k)
    win.last = t1
  }
  if (!win.stop && (limit.ops > 0 ? win.ops >= limit.ops : t1 - win.start >= limit.durationMs)) {
    win.stop = true
    win.cpuUsed = cpuNow() - win.cpuStart
    win.threadsEnd = threadCpu()
  }
}

function finish(win: Window, bs: number): RunResult {
  const seconds = Math.max(1e-9, (win.last - win.start) / 1000)
  const { p50, p99 } = win.lat.percentiles()
  const cpu = win.cpuUsed
  const threads = threadSplit(win.threadsStart, win.threadsEnd, cpu, win.ops)
  return { ops: win.ops, bytes: win.ops * bs, seconds, p50, p99, cpuPct: (cpu / 1e6 / seconds) * 100, cpuUsPerOp: win.ops > 0 ? cpu / win.ops : NaN, ...(threads ? { threadCpuUsPerOp: threads } : {}) }
}

type OpFn = (buf: Uint8Array, pos: number) => Promise<unknown>

/** `qd` workers, each: take a position, await one op, repeat — the queue stays full. */
export async function perOpLoop(w: Workload, size: number, limit: Limit, bufs: Uint8Array[], op: OpFn, uncache?: Uncache): Promise<RunResult> {
  const next = positions(w, size, uncache?.fn)
  let sinceUncache = 0
  const win = newWindow()
  const wall0 = performance.now()
  const worker = async (buf: Uint8Array): Promise<void> => {
    while (!win.stop) {
      const t0 = performance.now()
      await op(buf, next())
      tick(win, t0, performance.now(), 1, limit, wall0)
      if (uncache !== undefined && ++sinceUncache >= uncache.every) {
        sinceUncache = 0
        uncache.fn()
      }
    }
  }
  await Promise.all(bufs.slice(0, w.qd).map(worker))
  return finish(win, w.bs)
}

/**
 * The array form in two lanes of QD/2 ops, `{ window: QD/2 }` (mode 'arraylanes'): each lane awaits
 * its call, then issues the next; the other lane's ops run meanwhile.
 */
async function arrayLanesLoop(fh: FileHandle, w: Workload, size: number, limit: Limit): Promise<RunResult> {
  const next = positions(w, size)
  const win = newWindow()
  const n = Math.max(1, Math.floor(w.qd / 2))
  const wall0 = performance.now()
  const lane = async (): Promise<void> => {
    const ops = Array.from({ length: n }, () => ({ buffer: fh.alloc(w.bs), position: 0 }))
    if (w.write) fillBuffers(ops.map((o) => o.buffer))
    const opts = { window: n }
    while (!win.stop) {
      for (const o of ops) o.position = next()
      const t0 = performance.now()
      await (w.write ? fh.writeMany(ops, opts) : fh.readMany(ops, opts))
      tick(win, t0, performance.now(), n, limit, wall0)
    }
  }
  await Promise.all([lane(), lane()])
  return finish(win, w.bs)
}

/**
 * readMany/writeMany: each call carries BATCH_FACTOR x QD ops with `{ window: QD }`, so the queue
 * stays QD deep inside a call (each completion lets the next op in) and drains only at the end
 * of each call, not after every QD ops.
 */
const BATCH_FACTOR = 8
async function batchLoop(w: Workload, size: number, limit: Limit, bufs: Uint8Array[], many: (ops: { buffer: Uint8Array; position: number }[], options: { window: number }) => Promise<unknown>): Promise<RunResult> {
  const next = positions(w, size)
  const win = newWindow()
  const all = bufs.slice(0, w.qd)
  while (all.length < w.qd * BATCH_FACTOR) all.push(allocAligned(w.bs))
  if (w.write) fillBuffers(all.slice(w.qd))
  const ops = all.map((buffer) => ({ buffer, position: 0 }))
  const wall0 = performance.now()
  while (!win.stop) {
    for (const o of ops) o.position = next()
    const t0 = performance.now()
    await many(ops, { window: w.qd })
    tick(win, t0, performance.now(), ops.length, limit, wall0)
  }
  return finish(win, w.bs)
}

/**
 * readMany/writeMany in the typed-array form over one fh.alloc region. `lanes` 1: one call at a
 * time of BATCH_FACTOR x QD ops with `{ window: QD }` (as batchLoop); 2: two calls of QD/2 ops
 * each in flight at once, each lane issuing its next batch when its last one resolved (one lane
 * refills while the other's ops run). `queue`: two lanes of BATCH_FACTOR x QD / 2 ops sharing one
 * BatchWindow of QD (the second lane's ops go in as the first one's tail drains: QD ops in
 * flight from one batch to the next, as fio). The regions are registered (io_uring fixed buffers, as fio's
 * --fixedbufs) when the handle can; plain fh.alloc memory otherwise.
 */
async function typedBatchLoop(fh: FileHandle, w: Workload, size: number, limit: Limit, lanes: number, queue = false): Promise<RunResult> {
  const next = positions(w, size)
  const win = newWindow()
  const n = queue ? Math.max(1, (w.qd * BATCH_FACTOR) / lanes) : lanes === 1 ? w.qd * BATCH_FACTOR : Math.max(1, Math.floor(w.qd / lanes))
  const window = queue ? new BatchWindow(w.qd) : lanes === 1 ? w.qd : n
  let reg: { buffers: readonly Buffer[]; unregister(): void } | undefined
  try {
    // ODIRECT_BENCH_NOREG=1 (A/B): plain fh.alloc regions, not registered.
    if (process.env.ODIRECT_BENCH_NOREG !== '1') reg = fh.registerBuffers(lanes, n * w.bs)
  } catch {
    // RLIMIT_MEMLOCK or no io_uring: plain odirect memory
  }
  const regions = reg?.buffers.slice() ?? Array.from({ length: lanes }, () => fh.alloc(n * w.bs))
  const wall0 = performance.now()
  const lane = async (memory: Buffer): Promise<void> => {
    if (w.write) fillBuffers([memory])
    const offsets = new Uint32Array(n).map((_, i) => i * w.bs)
    const lengths = new Uint32Array(n).fill(w.bs)
    const positionsArr = new Float64Array(n)
    const results = new Int32Array(n)
    const batch = { memory, offsets, lengths, positions: positionsArr, results }
    const opts = { window }
    while (!win.stop) {
      for (let i = 0; i < n; i++) positionsArr[i] = next()
      const t0 = performance.now()
      await (w.write ? fh.writeMany(batch, opts) : fh.readMany(batch, opts))
      tick(win, t0, performance.now(), n, limit, wall0)
    }
  }
  await Promise.all(regions.map(lane))
  reg?.unregister()
  return finish(win, w.bs)
}

export function fillBuffers(bufs: Uint8Array[]): void {
  for (const b of bufs) {
    for (let i = 0; i < b.length; i += 4096) b[i] = (Math.random() * 256) | 0
  }
}

// ---------------------------------------------------------------------------------------------
// odirect runners

/**
 * Which engine path runs odirect's ops: `engineInfo().path` (the JS thread's own ring on the libuv
 * loop, or a reaper thread) when the engine says, plus the handle's backend.
 */
export function enginePath(fh?: { backend?: string }): string {
  let p = ''
  const info = (engineModule as Record<string, unknown>).engineInfo
  if (typeof info === 'function') {
    try {
      const i = (info as () => unknown)() as { path?: unknown } | undefined
      if (i && typeof i.path === 'string') p = i.path
    } catch {
      // not available on this build
    }
  }
  const b = fh?.backend
  return [p, typeof b === 'string' ? b : ''].filter(Boolean).join('/') || 'unknown'
}

/** The native latency percentiles of a handle (fh.stats().latencyUs), when it has them. */
function nativeLatency(fh: FileHandle): { nativeP50?: number; nativeP99?: number } {
  try {
    const st = (fh as { stats?: () => { latencyUs?: { p50?: number; p99?: number } } }).stats?.()
    const l = st?.latencyUs
    if (l && typeof l.p50 === 'number') return { nativeP50: l.p50, nativeP99: typeof l.p99 === 'number' ? l.p99 : NaN }
  } catch {
    // no stats on this build
  }
  return {}
}

/** One odirect run on an open handle: per op (QD workers) or one readMany/writeMany at a time. */
export async function odirectRun(fh: FileHandle, size: number, limit: Limit, w: Workload, mode: RunMode): Promise<RunResult> {
  if (mode === 'arraylanes') return { ...(await arrayLanesLoop(fh, w, size, limit)), ...nativeLatency(fh), path: enginePath(fh) }
  if (mode === 'typed' || mode === 'lanes' || mode === 'queue') return { ...(await typedBatchLoop(fh, w, size, limit, mode === 'typed' ? 1 : 2, mode === 'queue')), ...nativeLatency(fh), path: enginePath(fh) }
  const reg = mode === 'registered' ? fh.registerBuffers(w.qd, w.bs) : undefined
  const bufs = reg ? reg.buffers.slice() : Array.from({ length: w.qd }, () => fh.alloc(w.bs))
  if (w.write) fillBuffers(bufs)
  const result =
    mode === 'op' || mode === 'registered'
      ? await perOpLoop(w, size, limit, bufs, w.write ? (b, p) => fh.write(b, { position: p }) : (b, p) => fh.read(b, { position: p }))
      : await batchLoop(w, size, limit, bufs, w.write ? (o, opt) => fh.writeMany(o, opt) : (o, opt) => fh.readMany(o, opt))
  reg?.unregister()
  return { ...result, ...nativeLatency(fh), path: enginePath(fh) }
}

async function runOdirect(ctx: BenchContext, w: Workload, mode: RunMode): Promise<Outcome> {
  const fh = await open(ctx.path, 'r+', ctx.openOptions)
  try {
    return { ok: true, result: await odirectRun(fh, ctx.size, ctx.limit, w, mode) }
  } finally {
    await fh.close()
  }
}

/**
 * Registered (fixed) buffers. The API is not there yet; the expected shape is
 * `fh.registerBuffers(count, size)` returning (or resolving to) `{ buffers: Uint8Array[], ... }`
 * (a bare array is accepted too), after which `fh.read(buffers[i], { position: pos })` uses the fixed-buffer
 * path. Any `unregister()`/`release()` on the result, or `fh.unregisterBuffers()`, is called after.
 */
async function runOdirectRegistered(ctx: BenchContext, w: Workload): Promise<Outcome> {
  const fh = await open(ctx.path, 'r+', ctx.openOptions)
  try {
    const h = fh as FileHandle & {
      registerBuffers?: (count: number, size: number) => unknown
      unregisterBuffers?: () => unknown
    }
    if (typeof h.registerBuffers !== 'function') return { ok: false, skipped: 'not available (fh.registerBuffers does not exist yet)' }
    const reg = (await h.registerBuffers(w.qd, w.bs)) as unknown as readonly Uint8Array[] | { buffers?: readonly Uint8Array[]; unregister?: () => unknown; release?: () => unknown } | undefined
    const list = Array.isArray(reg) ? reg : (reg as { buffers?: readonly Uint8Array[] } | undefined)?.buffers
    const bufs = Array.isArray(list) ? [...list] : undefined
    if (!Array.isArray(bufs) || bufs.length < w.qd) return { ok: false, skipped: 'registerBuffers returned no usable buffers' }
    try {
      if (w.write) fillBuffers(bufs)
      const result = await perOpLoop(w, ctx.size, ctx.limit, bufs, w.write ? (b, p) => fh.write(b, { position: p }) : (b, p) => fh.read(b, { position: p }))
      return { ok: true, result: { ...result, ...nativeLatency(fh), path: enginePath(fh) } }
    } finally {
      const r = Array.isArray(reg) ? undefined : (reg as { unregister?: () => unknown; release?: () => unknown } | undefined)
      if (typeof r?.unregister === 'function') await r.unregister()
      else if (typeof r?.release === 'function') await r.release()
      else if (typeof h.unregisterBuffers === 'function') await h.unregisterBuffers()
    }
  } finally {
    await fh.close()
  }
}

// ---------------------------------------------------------------------------------------------
// The per-op workload under Bun and Deno: a child process per run (see child.ts).

/** The marker of the result line on a child's stdout. */
export const CHILD_MARKER = '@@odirect-bench-result '

/** The package's root (dist/bench/harness.js -> ../..). */
const packageRoot = (): string => nodePath.resolve(__dirname, '..', '..')

/** Finds bun or deno: scripts/runtime-bin.cjs of a checkout (the devDependencies), else the PATH. */
export function findRuntime(rt: RuntimeName): { bin?: string; version?: string; why?: string } {
  let bin: string | undefined
  const script = nodePath.join(packageRoot(), 'scripts', 'runtime-bin.cjs')
  let why = ''
  if (fs.existsSync(script)) {
    const r = spawnSync(process.execPath, [script, '--path', rt], { encoding: 'utf8', timeout: 60_000 })
    const p = (r.stdout ?? '').trim().split('\n').pop()
    if (r.status === 0 && p && fs.existsSync(p)) bin = p
    else why = (r.stderr ?? '').trim().split('\n').pop() ?? ''
  }
  if (bin === undefined) {
    for (const dir of (process.env.PATH ?? '').split(':')) {
      const p = nodePath.join(dir || '.', rt)
      try {
        fs.accessSync(p, fs.constants.X_OK)
        bin = p
        break
      } catch {
        // keep looking
      }
    }
  }
  if (bin === undefined) return { why: `${rt} not found (npm install in a checkout brings it as a devDependency, or put it on PATH)${why ? `: ${why}` : ''}` }
  const v = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 30_000 })
  if (v.status !== 0 || v.error) return { why: `${bin} --version failed: ${v.error?.message ?? (v.stderr ?? '').trim()}` }
  return { bin, version: (v.stdout ?? '').trim().split('\n')[0] }
}

let wrapperDir: string | undefined

/** An ES module (in a temporary directory) that requires child.js and runs it on its last argument. */
function childWrapper(): string {
  if (wrapperDir === undefined) wrapperDir = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'odirect-bench-child-'))
  const file = nodePath.join(wrapperDir, 'child.mjs')
  if (!fs.existsSync(file)) {
    const child = nodePath.join(__dirname, 'child.js')
    fs.writeFileSync(
      file,
      [
        "import { createRequire } from 'node:module'",
        `const m = createRequire(import.meta.url)(${JSON.stringify(child)})`,
        'await m.childMain(process.argv[process.argv.length - 1])',
        '',
      ].join('\n'),
    )
  }
  return file
}

/** Removes the child wrapper's temporary directory. */
export function cleanupChildren(): void {
  if (wrapperDir !== undefined) fs.rmSync(wrapperDir, { recursive: true, force: true })
  wrapperDir = undefined
}

const numOrNaN = (x: unknown): number => (typeof x === 'number' ? x : NaN)

async function runInRuntime(ctx: BenchContext, rt: RuntimeName | 'node', w: Workload, variant?: Variant, pin?: number): Promise<Outcome> {
  let found: { bin?: string; why?: string } = { bin: process.execPath }
  if (rt !== 'node') {
    ctx.runtimes ??= new Map()
    let f = ctx.runtimes.get(rt)
    if (f === undefined) {
      f = findRuntime(rt)
      ctx.runtimes.set(rt, f)
      if (f.why !== undefined) ctx.log(`note: ${f.why}: no ${rt} rows`)
    }
    found = f
  }
  if (found.bin === undefined) return { ok: false, skipped: found.why ?? `${rt} not found` }
  const openOptions = variant ? { ...ctx.openOptions, ...variant.open } : ctx.openOptions
  const req = JSON.stringify({ file: ctx.path, size: ctx.size, workload: w, limit: ctx.limit, openOptions, mode: variant?.mode ?? 'op' })
  // Deno loads Node-API addons through process.dlopen (--allow-ffi, part of --allow-all).
  const args = rt === 'deno' ? ['run', '--allow-all', '--no-check', '--no-lock', '--no-config', childWrapper(), req] : [childWrapper(), req]
  const timeout = (ctx.limit.ops > 0 ? 300 : ctx.limit.durationMs / 1000 + 120) * 1000
  const env = variant?.env ? { ...process.env, ...variant.env } : process.env
  const [cmd, cmdArgs] = pinnedCommand(pin, found.bin, args)
  const r = spawnSync(cmd, cmdArgs, { encoding: 'utf8', maxBuffer: 64 << 20, timeout, cwd: packageRoot(), env })
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith(CHILD_MARKER))
  if (line === undefined) {
    const text = `${r.error?.message ?? ''}\n${r.stderr ?? ''}\n${r.stdout ?? ''}`
    const why = text.split('\n').map((l) => l.trim()).filter(Boolean).slice(-3).join(' ') || `exit ${r.status ?? r.signal}`
    return { ok: false, skipped: `${rt} failed: ${why}`, transient: true }
  }
  const out = JSON.parse(line.slice(CHILD_MARKER.length)) as Outcome
  if (!out.ok) return out
  const res = out.result as unknown as Record<string, unknown>
  for (const k of ['p50', 'p99', 'cpuPct', 'cpuUsPerOp', 'nativeP50', 'nativeP99']) if (k in res) res[k] = numOrNaN(res[k])
  confirmPin(out.result, pin)
  // The plain odirect rows run in a child (pinned): the same Node as the bench, no runtime label.
  if (rt === 'node' && (variant === undefined || variant === REGISTERED_CHILD)) delete out.result.runtime
  return out
}

// ---------------------------------------------------------------------------------------------
// node:fs runners

let dropNoteShown = false

/** Empties the page cache of the file: drop_caches when root, else posix_fadvise(DONTNEED) on it. */
export function dropCaches(ctx: BenchContext, fd?: number): void {
  if (ctx.isRoot && !ctx.fadviseOnly) {
    try {
      fs.writeFileSync('/proc/sys/vm/drop_caches', '1')
      return
    } catch (e) {
      if (!dropNoteShown) ctx.log(`note: cannot write /proc/sys/vm/drop_caches (${(e as Error).message}); using posix_fadvise(DONTNEED) on the file`)
      dropNoteShown = true
    }
  }
  const f = fd ?? fs.openSync(ctx.path, 'r')
  try {
    native.dropCache(f, 0, 0)
  } finally {
    if (fd === undefined) fs.closeSync(f)
  }
}

async function runNodeFs(ctx: BenchContext, w: Workload, direct: boolean): Promise<Outcome> {
  const flags = fs.constants.O_RDWR | (direct ? fs.constants.O_DIRECT : 0)
  if (direct && !fs.constants.O_DIRECT) return { ok: false, skipped: 'no O_DIRECT on this platform' }
  const fh = await fs.promises.open(ctx.path, flags)
  try {
    // Buffered: start cold. Direct: the cache is not used, but clean it anyway so the engines
    // after this one meet the same state.
    dropCaches(ctx, fh.fd)
    const bufs = Array.from({ length: w.qd }, () => allocAligned(w.bs))
    if (w.write) fillBuffers(bufs)
    const op: OpFn = w.write ? (b, p) => fh.write(b, 0, b.length, p) : (b, p) => fh.read(b, 0, b.length, p)
    // Buffered: every page read stays cached, and one run reads more than the file holds
    // (sequential) or a growing part of it (random); written pages are rewritten in the cache
    // and only the last version reaches the device. posix_fadvise(DONTNEED) on the file every 4 MiB
    // moved and at each wrap drops clean pages and starts writeback of dirty ones, which keeps the
    // figure about the device rather than the page cache.
    const uncache: Uncache | undefined = direct ? undefined : { every: Math.max(1, Math.floor((4 << 20) / w.bs)), fn: () => native.dropCache(fh.fd, 0, 0) }
    const result = await perOpLoop(w, ctx.size, ctx.limit, bufs, op, uncache)
    if (w.write && !direct) {
      // Buffered writes only reached the page cache: count the flush to the device in the time.
      const t0 = performance.now()
      await fh.datasync()
      result.seconds += (performance.now() - t0) / 1000
    }
    return { ok: true, result }
  } finally {
    await fh.close()
    if (!direct) dropCaches(ctx)
  }
}

// ---------------------------------------------------------------------------------------------
// fio

export function findFio(): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    const p = `${dir || '.'}/fio`
    try {
      fs.accessSync(p, fs.constants.X_OK)
      return p
    } catch {
      // keep looking
    }
  }
  return undefined
}

export function fioVersion(fio: string): string {
  const r = spawnSync(fio, ['--version'], { encoding: 'utf8' })
  return (r.stdout ?? '').trim()
}

/**
 * fio's arguments for one workload and ioengine. Batched submit and reap, as fio's peak configs.
 * `jobs` > 1: that many processes, each at the workload's depth, on the same file (the device's limit).
 * `huge`: the buffers in huge pages (ctx.hugePages must hold them).
 */
export function fioArgs(ctx: BenchContext, w: Workload, ioengine: 'io_uring' | 'libaio', jobs = 1, huge = false): string[] {
  const rw = w.random ? (w.write ? 'randwrite' : 'randread') : w.write ? 'write' : 'read'
  const batch = Math.min(16, w.qd)
  const args = [
    '--name=odirect-bench',
    `--filename=${ctx.path}`,
    `--size=${ctx.size}`,
    `--rw=${rw}`,
    `--bs=${w.bs}`,
    `--iodepth=${w.qd}`,
    `--ioengine=${ioengine}`,
    '--direct=1',
    `--iodepth_batch_submit=${batch}`,
    `--iodepth_batch_complete_min=${Math.max(1, batch >> 1)}`,
    `--iodepth_batch_complete_max=${batch}`,
    '--norandommap',
    '--randrepeat=0',
    '--fallocate=none',
    '--invalidate=1',
    `--numjobs=${jobs}`,
    '--percentile_list=50:99',
    // Total latency (submission + completion) percentiles: what the JS rows measure (call to
    // settle); fio's clat alone leaves out the submission, which on a virtio disk is 10-20 us.
    '--lat_percentiles=1',
    '--output-format=json',
  ]
  if (ioengine === 'io_uring') args.push('--fixedbufs', '--registerfiles', '--hipri=0', '--sqthread_poll=0')
  if (huge) {
    if (typeof ctx.hugePages !== 'object') throw new Error('fioArgs: no huge pages reserved')
    args.push(...ctx.hugePages.fioArgs())
  }
  if (ctx.limit.ops > 0) args.push(`--io_size=${ctx.limit.ops * w.bs}`)
  else args.push('--time_based', `--runtime=${Math.max(1, Math.round(ctx.limit.durationMs))}ms`)
  if (ctx.limit.rampMs > 0 && ctx.limit.ops === 0) args.push(`--ramp_time=${Math.round(ctx.limit.rampMs)}ms`)
  return args
}

interface FioSide {
  iops: number
  bw_bytes: number
  total_ios: number
  io_bytes: number
  runtime: number
  clat_ns?: { percentile?: Record<string, number> }
  /** Submission + completion latency; its percentiles only with --lat_percentiles=1. */
  lat_ns?: { percentile?: Record<string, number> }
}

interface FioJob {
  error: number
  read: FioSide
  write: FioSide
  usr_cpu: number
  sys_cpu: number
  /** Milliseconds the job ran (after ramp_time). */
  job_runtime?: number
}

/**
 * Parses fio's JSON (which may follow warnings on stdout) into a RunResult. Several jobs: their
 * rates and CPU add up; latency percentiles are the first job's (the jobs are alike).
 */
export function parseFio(stdout: string, write: boolean): RunResult {
  const at = stdout.indexOf('{')
  if (at < 0) throw new Error('fio printed no JSON')
  const j = JSON.parse(stdout.slice(at)) as { jobs: FioJob[] }
  if (!Array.isArray(j.jobs) || j.jobs.length === 0) throw new Error('fio reported no jobs')
  for (const job of j.jobs) if (job.error) throw new Error(`fio job error ${job.error}`)
  const side = (job: FioJob): FioSide => (write ? job.write : job.read)
  const first = side(j.jobs[0])
  // Total latency where fio gives its percentiles (see fioArgs), else completion latency.
  const pct = first.lat_ns?.percentile ?? first.clat_ns?.percentile ?? {}
  const pick = (p: string): number => {
    const k = Object.keys(pct).find((x) => Number(x) === Number(p))
    return k === undefined ? NaN : pct[k] / 1000
  }
  let ops = 0
  let iops = 0
  let bw = 0
  let cpuUs = 0
  let cpuPct = 0
  let maxRuntime = 0
  for (const job of j.jobs) {
    const s = side(job)
    ops += s.total_ios
    iops += s.iops
    bw += s.bw_bytes
    const runtimeMs = job.job_runtime ?? s.runtime
    maxRuntime = Math.max(maxRuntime, s.runtime)
    cpuPct += job.usr_cpu + job.sys_cpu
    cpuUs += ((job.usr_cpu + job.sys_cpu) / 100) * runtimeMs * 1000
  }
  // fio's own rates (its stats restart after ramp_time): seconds = ios / IOPS reproduces them.
  const seconds = iops > 0 ? ops / iops : Math.max(1e-9, maxRuntime / 1000)
  return {
    ops,
    bytes: bw * seconds,
    seconds,
    p50: pick('50'),
    p99: pick('99'),
    cpuPct,
    cpuUsPerOp: ops > 0 ? cpuUs / ops : NaN,
    fioSelfCpuUsPerOp: ops > 0 ? cpuUs / ops : NaN,
    fioRuntimeMs: Math.max(...j.jobs.map((job) => job.job_runtime ?? side(job).runtime)),
  } as RunResult
}

/**
 * Runs fio under `sh`, which prints its own /proc/self/stat after fio exits: its cutime + cstime
 * are the CPU of fio's whole process tree (job processes, their threads and io_uring workers).
 */
function spawnFio(fio: string, args: string[], pin?: number): { r: ReturnType<typeof spawnSync>; treeCpuUs: number; cpus?: string } {
  const script =
    'fio="$1"; shift; echo "@@cpus $(sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" /proc/$$/status)" >&2; "$fio" "$@"; rc=$?; echo "@@stat $(cat /proc/$$/stat)" >&2; exit $rc'
  // taskset execs sh: the tree's CPU below is still fio's.
  const [cmd, cmdArgs] = pinnedCommand(pin, '/bin/sh', ['-c', script, 'sh', fio, ...args])
  const r = spawnSync(cmd, cmdArgs, { encoding: 'utf8', maxBuffer: 64 << 20 })
  let treeCpuUs = NaN
  const err = String(r.stderr ?? '')
  const line = err.split('\n').find((l) => l.startsWith('@@stat '))
  if (line !== undefined) {
    const f = line.slice(line.lastIndexOf(')') + 2).split(' ')
    // Fields 16 and 17 (cutime, cstime: waited-for children) are at 13 and 14 after the name; USER_HZ 100.
    const ticks = Number(f[13]) + Number(f[14])
    if (Number.isFinite(ticks)) treeCpuUs = ticks * 1e4
  }
  const cpus = err.split('\n').find((l) => l.startsWith('@@cpus '))?.slice('@@cpus '.length).trim()
  r.stderr = err.split('\n').filter((l) => !l.startsWith('@@stat ') && !l.startsWith('@@cpus ')).join('\n')
  return { r, treeCpuUs, cpus }
}

/** Why fio's huge-page rows cannot run (no huge pages reserved), or undefined when they can. */
export const hugeSkip = (ctx: BenchContext): string | undefined => (typeof ctx.hugePages === 'object' ? undefined : `no huge pages: ${ctx.hugePages ?? 'none reserved'}`)

async function runFio(ctx: BenchContext, w: Workload, ioengine: 'io_uring' | 'libaio', jobs = 1, huge = false, pin?: number): Promise<Outcome> {
  if (ctx.fioPath === undefined) return { ok: false, skipped: 'fio is not installed (apt-get install fio)' }
  const noHuge = huge ? hugeSkip(ctx) : undefined
  if (noHuge !== undefined) return { ok: false, skipped: noHuge }
  // Failures are counted per configuration: a huge-page failure says nothing of fio's other rows.
  const config = huge ? `${ioengine} --mem=mmaphuge` : ioengine
  const broken = ctx.fioBroken.get(config)
  if (broken !== undefined) return { ok: false, skipped: broken }
  let why = ''
  // One retry: a failure can be transient (memory for fixed buffers, a busy device).
  for (let attempt = 0; attempt < 2; attempt++) {
    const { r, treeCpuUs, cpus } = spawnFio(ctx.fioPath, fioArgs(ctx, w, ioengine, jobs, huge), pin)
    if (r.status === 0 && !r.error) {
      try {
        const result = parseFio(String(r.stdout), w.write)
        // The tree's CPU covers fio's whole life: count the measured window's share of it (the
        // ramp runs at the same rate; start-up and the JSON report are small beside it).
        const extra = result as RunResult & { fioRuntimeMs?: number }
        const runtimeMs = extra.fioRuntimeMs ?? NaN
        delete extra.fioRuntimeMs
        const ramp = ctx.limit.ops > 0 ? 0 : ctx.limit.rampMs
        if (Number.isFinite(treeCpuUs) && result.ops > 0 && runtimeMs > 0) {
          const windowCpu = treeCpuUs * (runtimeMs / (runtimeMs + ramp))
          result.cpuUsPerOp = windowCpu / result.ops
          result.cpuPct = (windowCpu / 1e6 / (runtimeMs / 1000)) * 100
        }
        ctx.fioFailures?.set(config, 0)
        result.cpus = cpus
        confirmPin(result, pin)
        return { ok: true, result }
      } catch (e) {
        why = (e as Error).message
      }
    } else {
      // fio reports most errors on stdout (before or instead of the JSON), some on stderr.
      const text = `${r.error?.message ?? ''}\n${String(r.stderr ?? '')}\n${String(r.stdout ?? '').split('\n{')[0]}`
      why = text.split('\n').map((l) => l.trim()).filter(Boolean).slice(-3).join(' ') || `exit ${r.status}`
    }
    ctx.log(`note: fio --ioengine=${config} (${w.id}) failed${attempt === 0 ? ', retrying' : ''}: ${why}`)
  }
  if (ctx.fioFailures !== undefined) {
    const n = (ctx.fioFailures.get(config) ?? 0) + 1
    ctx.fioFailures.set(config, n)
    // Three failed cells in a row: stop trying this configuration for the rest of the run.
    if (n >= 3) ctx.fioBroken.set(config, `fio --ioengine=${config} keeps failing: ${why}`)
  }
  return { ok: false, skipped: `fio --ioengine=${config} failed: ${why}`, transient: !ctx.fioBroken.has(config) }
}

// ---------------------------------------------------------------------------------------------

export async function runEngine(ctx: BenchContext, engine: EngineId, w: Workload): Promise<Outcome> {
  const before = cpuTimes()
  const out = await runEngineInner(ctx, engine, w)
  const after = cpuTimes()
  if (out.ok) out.result.stealPct = before && after && after[1] > before[1] ? ((after[0] - before[0]) / (after[1] - before[1])) * 100 : NaN
  return out
}

async function runEngineInner(ctx: BenchContext, engine: EngineId, w: Workload): Promise<Outcome> {
  const pin = pinCpuFor(ctx, engine, w)
  if (isVariant(engine)) {
    const v = ctx.variants?.get(engine.slice('variant:'.length))
    if (v === undefined) return { ok: false, skipped: 'unknown variant' }
    return runInRuntime(ctx, 'node', w, v, pin)
  }
  switch (engine) {
    case 'fio-io_uring':
      return runFio(ctx, w, 'io_uring', 1, false, pin)
    case 'fio-io_uring-huge':
      return runFio(ctx, w, 'io_uring', 1, true, pin)
    case 'fio-io_uring-2j':
      return runFio(ctx, w, 'io_uring', 2)
    case 'fio-libaio':
      return runFio(ctx, w, 'libaio', 1, false, pin)
    case 'node-fs':
      return runNodeFs(ctx, w, false)
    case 'node-fs-direct':
      return runNodeFs(ctx, w, true)
    case 'odirect':
      // Pinned: in a child process of its own (its ring and io-wq workers made on that CPU).
      return pin !== undefined ? runInRuntime(ctx, 'node', w, undefined, pin) : runOdirect(ctx, w, 'op')
    case 'odirect-batch':
      return runOdirect(ctx, w, 'batch')
    case 'odirect-batch-typed':
      return runOdirect(ctx, w, 'typed')
    case 'odirect-batch-lanes':
      return runOdirect(ctx, w, 'lanes')
    case 'odirect-batch-queue':
      return runOdirect(ctx, w, 'queue')
    case 'odirect-registered':
      // Pinned at QD 1 as the per-op row is: in a child process of its own.
      return pin !== undefined ? runInRuntime(ctx, 'node', w, REGISTERED_CHILD, pin) : runOdirectRegistered(ctx, w)
    case 'odirect-bun':
      return runInRuntime(ctx, 'bun', w, undefined, pin)
    case 'odirect-deno':
      return runInRuntime(ctx, 'deno', w, undefined, pin)
  }
}

/** Writes `size` bytes of non-zero data (so reads touch the device, not holes), 1 MiB at a time. */
export async function prepareFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'w+')
  try {
    const chunk = 1 << 20
    const bufs = Array.from({ length: 4 }, () => fh.alloc(chunk))
    for (const b of bufs) for (let i = 0; i < b.length; i += 8) b[i] = (Math.random() * 255 + 1) | 0
    for (let pos = 0; pos < size; ) {
      const ops: { buffer: Uint8Array; position: number }[] = []
      for (const b of bufs) {
        if (pos >= size) break
        const len = Math.min(chunk, size - pos)
        ops.push({ buffer: len === chunk ? b : b.subarray(0, len), position: pos })
        pos += len
      }
      await fh.writeMany(ops)
    }
    await fh.datasync()
  } finally {
    await fh.close()
  }
}

// ---------------------------------------------------------------------------------------------
// Machine facts

export interface MachineFacts {
  date: string
  kernel: string
  cpus: number
  cpuModel: string
  memGiB: number
  fsType: string
  device: string
  node: string
  fio: string
  backend: string
  /** The engine path odirect's ops take on Node (engineInfo().path / fh.backend). */
  enginePath?: string
  isRoot: boolean
  cacheDrop: string
  loadStart: number[]
  loadEnd?: number[]
}

function mountOf(path: string): string {
  try {
    const st = fs.statSync(path)
    const major = Math.floor(st.dev / 256) & 0xfff
    const minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00)
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const f = line.split(' ')
      if (f[2] === `${major}:${minor}`) {
        const sep = f.indexOf('-')
        return `${f[sep + 2]} on ${f[4]} (${f[sep + 1]})`
      }
    }
  } catch {
    // not Linux, or no procfs
  }
  return 'unknown'
}

export async function machineFacts(path: string, fioPath: string | undefined, isRoot: boolean): Promise<MachineFacts> {
  const cpus = os.cpus()
  let fsType = ''
  let backend = ''
  let path_ = ''
  try {
    const p = await probe(path)
    fsType = p.fsType
    backend = Object.entries(p.backends).find(([, b]) => b.available)?.[0] ?? ''
  } catch {
    // reported as unknown
  }
  try {
    const fh = await open(path, 'r')
    try {
      path_ = enginePath(fh)
    } finally {
      await fh.close()
    }
  } catch {
    // reported as unknown
  }
  return {
    date: new Date().toISOString(),
    kernel: `${os.type()} ${os.release()}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model?.trim() ?? 'unknown',
    memGiB: Math.round(os.totalmem() / (1 << 30)),
    fsType: fsType || 'unknown',
    device: mountOf(path),
    node: process.version,
    fio: fioPath ? fioVersion(fioPath) : 'not installed',
    backend: backend || 'unknown',
    enginePath: path_ || 'unknown',
    isRoot,
    cacheDrop: isRoot ? 'echo 1 > /proc/sys/vm/drop_caches before and after each node:fs run' : 'not root: posix_fadvise(POSIX_FADV_DONTNEED) on the file before and after each node:fs run',
    loadStart: os.loadavg(),
  }
}
