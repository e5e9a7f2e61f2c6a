// Medians, ratios, and the three outputs: a markdown report, a JSON document, and an SVG chart
// (converted to PNG with rsvg-convert when it is installed).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { type EngineId, engineLabel, FIO_PEERS, fmtSize, isVariant, type MachineFacts, type Place, type RunResult, type VariantId, type Workload } from './harness'
import { type ScalingRow, scalingTable } from './scaling'
import { ODIRECT_STREAM_CHUNK, STREAM_DEPTH, STREAM_FIO, type StreamCell, type StreamEngineId, streamEngineLabel, streamRowLabel, type StreamRun, type StreamWorkload } from './streams'

export interface Cell {
  workload: Workload
  engine: EngineId
  runs: RunResult[]
  /** Why the cell has no (or fewer) runs. */
  skipped?: string
  /** The failure may be transient: later runs try again. */
  retry?: boolean
}

export interface Summary {
  workload: Workload
  engine: EngineId
  skipped?: string
  /** Median over runs of the headline figure: IOPS or MB/s (10^6 bytes/s). */
  value: number
  min: number
  max: number
  p50: number
  p99: number
  cpuPct: number
  /** Median CPU microseconds per op (whole process; fio: its own usr+sys). */
  cpuUsPerOp: number
  /** fio: median CPU µs per op by fio's own accounting (without io_uring's workers). */
  fioSelfCpuUsPerOp: number
  /** JS engines: median CPU µs per op by thread group. */
  threads?: Record<string, number>
  /** odirect: median native (fh.stats()) latency percentiles. */
  nativeP50: number
  nativeP99: number
  /** odirect: the engine path(s) that ran; Bun/Deno rows: the runtime. */
  path?: string
  runtime?: string
  /** The CPU the runs were pinned to (QD 1 rows of fio and odirect), e.g. 'CPU 1'. */
  pinned?: string
  /** Median steal time of the machine during the runs, percent of all CPU time. */
  stealPct: number
  /** value / the value of the best fio configuration of the same workload (fioRef). */
  ratio: number
  /** Which fio configuration `ratio` divides by: the fio row with the best median (bestFio). */
  fioRef?: EngineId
  /** value / the value of plain fio io_uring (malloc'ed buffers) for the same workload. */
  ratioIoUring: number
  /** The runs the medians come from (each with its round, for paired ratios). */
  runs: readonly RunResult[]
}

export interface Options {
  size: number
  runs: number
  durationMs: number
  ops: number
  rampMs: number
  short: boolean
  /** --quick: the CI smoke run (small file, one short run per cell). */
  quick?: boolean
  file: string
  temporary: boolean
  /** The tmpfs workloads' file and its size, or why they did not run. */
  tmpfs?: { file?: string; size?: number; how?: string; skipped?: string }
  /** --variant: the A/B variants that ran, by name. */
  variants?: Record<string, unknown>
  /** The huge pages of fio's huge-page rows: what was reserved, or why those rows were skipped. */
  hugePages?: string
  /** --open-options: what odirect's open() got in every odirect row. */
  openOptions?: Record<string, unknown>
  /** Bun/Deno: the versions that ran, or why not. */
  runtimes?: Record<string, string>
}

export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** A run's round: engines are interleaved within a round, so runs of one round met the same machine. */
interface Rounded {
  round?: number
}

/**
 * The ratio a / b of two rows measured in the same rounds: the median of the per-round ratios
 * (`pickA(run of a) / pickB(run of b)` of each round both have a figure for), so a round where
 * the machine was slower for both counts once, as a ratio, instead of moving each side's median
 * on its own. Runs without a round (a report from before rounds were recorded) fall back to the
 * ratio of the medians. `rounds`: how many rounds were paired (0: the fallback).
 */
export function pairedRatio<A extends Rounded, B extends Rounded>(a: readonly A[], b: readonly B[], pickA: (r: A) => number, pickB: (r: B) => number): { ratio: number; rounds: number } {
  const byRound = new Map<number, B>()
  for (const r of b) if (r.round !== undefined) byRound.set(r.round, r)
  const rs: number[] = []
  for (const r of a) {
    const other = r.round === undefined ? undefined : byRound.get(r.round)
    if (other === undefined) continue
    const x = pickA(r)
    const y = pickB(other)
    if (Number.isFinite(x) && Number.isFinite(y) && y > 0) rs.push(x / y)
  }
  if (rs.length > 0) return { ratio: median(rs), rounds: rs.length }
  return { ratio: median(a.map(pickA)) / median(b.map(pickB)), rounds: 0 }
}

/** The median CPU µs/op of each thread group over the runs that report it. */
function threadMedians(runs: RunResult[]): { threads?: Record<string, number> } {
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.threadCpuUsPerOp ?? {})))]
  if (keys.length === 0) return {}
  const threads: Record<string, number> = {}
  for (const k of keys) threads[k] = median(runs.map((r) => r.threadCpuUsPerOp?.[k] ?? 0))
  return { threads }
}

/** CPU µs per op by thread, for the rows that have it (markdown), largest first. */
export function threadTable(sums: Summary[]): string {
  const rows = ['| Workload | Engine | CPU µs/op | by thread (µs/op) |', '|---|---|---:|---|']
  let lastW = ''
  for (const s of sums) {
    if (s.skipped !== undefined || s.threads === undefined) continue
    const wl = s.workload.id === lastW ? '' : s.workload.label
    lastW = s.workload.id
    const parts = Object.entries(s.threads)
      .filter(([, v]) => v >= 0.005)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${fmtCpu(v)}`)
    rows.push(`| ${wl} | ${rowLabel(s)} | ${fmtCpu(s.cpuUsPerOp)} | ${parts.join(', ')} |`)
  }
  return rows.length > 2 ? rows.join('\n') : ''
}

/** `{ [key]: 'a, b' }` of the distinct defined values, or nothing. */
function distinct<K extends string>(key: K, xs: (string | undefined)[]): Partial<Record<K, string>> {
  const v = [...new Set(xs.filter((x): x is string => typeof x === 'string' && x !== ''))]
  return v.length ? ({ [key]: v.join(', ') } as Partial<Record<K, string>>) : {}
}

/**
 * fio at its peak: among one workload's rows, the fio configuration (`peers`) with the best figure
 * by `pick` (highest, or lowest for latency and CPU), skipped and figureless rows left out.
 */
export function bestFio<T extends { engine: string; skipped?: string }>(rows: readonly T[], peers: readonly string[], pick: (s: T) => number, lowerIsBetter = false): T | undefined {
  let best: T | undefined
  for (const s of rows) {
    const v = pick(s)
    if (!peers.includes(s.engine) || s.skipped !== undefined || !Number.isFinite(v) || v <= 0) continue
    if (best === undefined || (lowerIsBetter ? v < pick(best) : v > pick(best))) best = s
  }
  return best
}

/**
 * Each row's ratio to the best fio row of its workload (and that row's engine), and to plain fio
 * io_uring: the best fio row is chosen by its median (`value`), the ratio is paired by round
 * (`pairedRatio` of `runValue`).
 */
function fioRatios<R extends Rounded, T extends { workload: { id: string }; engine: string; skipped?: string; ratio: number; ratioIoUring: number; fioRef?: string; runs: readonly R[] }>(
  rows: T[],
  peers: readonly string[],
  value: (s: T) => number,
  runValue: (s: T, r: R) => number,
): void {
  for (const s of rows) {
    const same = rows.filter((x) => x.workload.id === s.workload.id)
    const vs = (ref: T): number => pairedRatio(s.runs, ref.runs, (r) => runValue(s, r), (r) => runValue(ref, r)).ratio
    const ref = bestFio(same, peers, value)
    if (ref !== undefined) {
      s.ratio = vs(ref)
      s.fioRef = ref.engine
    }
    const uring = bestFio(same, ['fio-io_uring'], value)
    if (uring !== undefined) s.ratioIoUring = vs(uring)
  }
}

export function figure(w: Workload, r: RunResult): number {
  return w.metric === 'iops' ? r.ops / r.seconds : r.bytes / r.seconds / 1e6
}

export function summarize(cells: Cell[]): Summary[] {
  const out: Summary[] = cells.map((c) => {
    const vals = c.runs.map((r) => figure(c.workload, r))
    return {
      workload: c.workload,
      engine: c.engine,
      ...(c.skipped !== undefined && c.runs.length === 0 ? { skipped: c.skipped } : {}),
      value: median(vals),
      min: vals.length ? Math.min(...vals) : NaN,
      max: vals.length ? Math.max(...vals) : NaN,
      p50: median(c.runs.map((r) => r.p50)),
      p99: median(c.runs.map((r) => r.p99)),
      cpuPct: median(c.runs.map((r) => r.cpuPct)),
      cpuUsPerOp: median(c.runs.map((r) => r.cpuUsPerOp)),
      fioSelfCpuUsPerOp: median(c.runs.map((r) => r.fioSelfCpuUsPerOp ?? NaN)),
      ...threadMedians(c.runs),
      nativeP50: median(c.runs.map((r) => r.nativeP50 ?? NaN)),
      nativeP99: median(c.runs.map((r) => r.nativeP99 ?? NaN)),
      ...distinct('path', c.runs.map((r) => r.path)),
      ...distinct('runtime', c.runs.map((r) => r.runtime)),
      ...distinct('pinned', c.runs.map((r) => r.pinned)),
      stealPct: median(c.runs.map((r) => r.stealPct ?? NaN)),
      ratio: NaN,
      ratioIoUring: NaN,
      runs: c.runs,
    }
  })
  fioRatios<RunResult, Summary>(out, FIO_PEERS, (s) => s.value, (s, r) => figure(s.workload, r))
  return out
}

const num = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '–')

export function fmtValue(w: Workload, v: number): string {
  if (!Number.isFinite(v)) return '–'
  if (w.metric === 'mbps') return `${num(v)} MB/s`
  return v >= 1000 ? `${num(v / 1000, 1)}k IOPS` : `${num(v)} IOPS`
}

const fmtLat = (us: number): string => (!Number.isFinite(us) ? '–' : us >= 1000 ? num(us, 0) : num(us, 1))
const fmtRatio = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–')
/** The "vs fio" cell: the ratio, and "(ref)" on the fio row it is relative to. */
const fmtFioRatio = (s: { engine: string; ratio: number; fioRef?: string }): string => `${fmtRatio(s.ratio)}${s.engine === s.fioRef ? ' (ref)' : ''}`
// Targets are judged on the unrounded ratio: show enough digits that the verdict matches.
const fmtRatio3 = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(3)}×` : '–')

const fmtCpu = (us: number): string => (!Number.isFinite(us) ? '–' : us >= 100 ? num(us, 0) : us >= 10 ? num(us, 1) : num(us, 2))

/** A row's engine label, with its runtime (Bun/Deno, variants) and the CPU it was pinned to (QD 1). */
const rowLabel = (s: Pick<Summary, 'engine' | 'runtime' | 'pinned'>): string => engineLabel(s.engine) + (s.runtime ? ` (${s.runtime})` : '') + (s.pinned ? `, pinned to ${s.pinned}` : '')

/** The results table (markdown) of the given rows. */
export function table(sums: Summary[]): string {
  const rows = [
    '| Workload | Engine | Median | Runs min–max | p50 µs | p99 µs | native p50 µs | CPU µs/op | CPU % | steal % | vs best fio |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  let lastW = ''
  for (const s of sums) {
    const wl = s.workload.id === lastW ? '' : s.workload.label
    lastW = s.workload.id
    const label = rowLabel(s)
    if (s.skipped !== undefined) {
      rows.push(`| ${wl} | ${label} | skipped: ${s.skipped.replace(/\|/g, '\\|')} | | | | | | | | |`)
      continue
    }
    const spread = s.min === s.max ? '' : `${fmtValue(s.workload, s.min).replace(/ (IOPS|MB\/s)$/, '')}–${fmtValue(s.workload, s.max)}`
    rows.push(
      `| ${wl} | ${label} | **${fmtValue(s.workload, s.value)}** | ${spread} | ${fmtLat(s.p50)} | ${fmtLat(s.p99)} | ${fmtLat(s.nativeP50)} | ${fmtCpu(s.cpuUsPerOp)}${Number.isFinite(s.fioSelfCpuUsPerOp) ? ` (own ${fmtCpu(s.fioSelfCpuUsPerOp)})` : ''} | ${num(s.cpuPct)} | ${num(s.stealPct, 1)} | ${fmtFioRatio(s)} |`,
    )
  }
  return rows.join('\n')
}

export interface Target {
  /** What is compared, e.g. '4 KiB random read, QD 64, disk: odirect per op vs fio'. */
  name: string
  /** The goal, e.g. '≥ 0.95×'. */
  goal: string
  /** The measured figure, e.g. '0.612× (85.1k vs 139.0k IOPS; fio io_uring)' (the fio configuration compared with), or why there is none. */
  figure: string
  /** undefined: not measured in this run. */
  met?: boolean
}

/** A figure of a row a goal compares: its median (the Summary's) and its value in one run. */
type Fig = 'value' | 'p50' | 'p99' | 'cpu'
const FIG: Record<Fig, { median: (s: Summary) => number; run: (s: Summary, r: RunResult) => number }> = {
  value: { median: (s) => s.value, run: (s, r) => figure(s.workload, r) },
  p50: { median: (s) => s.p50, run: (_, r) => r.p50 },
  p99: { median: (s) => s.p99, run: (_, r) => r.p99 },
  cpu: { median: (s) => s.cpuUsPerOp, run: (_, r) => r.cpuUsPerOp },
}

/** odirect's performance goals, each judged on this run's rounds (or marked not measured). */
export function targets(sums: Summary[], streams: StreamSummary[] = []): Target[] {
  const out: Target[] = []
  const find = (pred: (w: Workload) => boolean, e: EngineId): Summary | undefined => sums.find((s) => pred(s.workload) && s.engine === e)
  // fio at its peak for this figure (best throughput; lowest latency or CPU), else the plain
  // io_uring row (which says why it is missing).
  const fio = (pred: (w: Workload) => boolean, pick: (s: Summary) => number = (s) => s.value, lowerIsBetter = false): Summary | undefined =>
    bestFio(sums.filter((s) => pred(s.workload)), FIO_PEERS, pick, lowerIsBetter) ?? find(pred, 'fio-io_uring')
  const why = (...xs: (Summary | undefined)[]): string => {
    for (const x of xs) if (x?.skipped !== undefined) return `not measured: ${engineLabel(x.engine)} skipped (${x.skipped})`
    return 'not measured (workload or engine not selected)'
  }
  const ok = (...xs: (Summary | undefined)[]): boolean => xs.every((x) => x !== undefined && x.skipped === undefined)
  // Each goal's ratio pairs the two rows' runs by round (`pairedRatio`); the figures shown beside
  // it are the rows' medians.
  const ratio = (name: string, goal: number, a: Summary | undefined, b: Summary | undefined, fig: Fig, unit: (s: Summary, v: number) => string, lowerIsBetter = false): void => {
    const g = `${lowerIsBetter ? '≤' : '≥'} ${goal.toFixed(2)}×`
    if (!ok(a, b)) return void out.push({ name, goal: g, figure: why(a, b) })
    const va = FIG[fig].median(a!)
    const vb = FIG[fig].median(b!)
    if (!Number.isFinite(va) || !Number.isFinite(vb) || vb <= 0) return void out.push({ name, goal: g, figure: 'not measured (no figure)' })
    const { ratio: r, rounds } = pairedRatio(a!.runs, b!.runs, (x) => FIG[fig].run(a!, x), (x) => FIG[fig].run(b!, x))
    const which = (FIO_PEERS.includes(b!.engine) ? `; ${engineLabel(b!.engine)}` : '') + (a!.pinned !== undefined && a!.pinned === b!.pinned ? `; both pinned to ${a!.pinned}` : '')
    const how = rounds > 0 ? `median of ${rounds} paired rounds; medians ` : ''
    out.push({ name, goal: g, figure: `${fmtRatio3(r)} (${how}${unit(a!, va)} vs ${unit(b!, vb)}${which})`, met: lowerIsBetter ? r <= goal : r >= goal })
  }
  const rate = (s: Summary, v: number): string => fmtValue(s.workload, v)
  const us = (_: Summary, v: number): string => `${fmtLat(v)} µs`
  const cpu = (_: Summary, v: number): string => `${fmtCpu(v)} µs`
  const places: Place[] = ['disk', 'tmpfs']
  const at = (label: string, place: Place): string => (label.endsWith(place) ? label : `${label}, ${place}`)
  // Depth 1 latency.
  for (const place of places) {
    const is = (w: Workload): boolean => w.place === place && w.random && !w.write && w.qd === 1
    const label = sums.find((s) => is(s.workload))?.workload.label ?? `random read, QD 1`
    ratio(`${at(label, place)}: odirect per op p50 latency vs fio's`, 1.1, find(is, 'odirect'), fio(is, (s) => s.p50, true), 'p50', us, true)
  }
  // Tail latency at depth: no worse than node:fs at the same depth (issue 19).
  for (const place of places) {
    for (const write of [false, true]) {
      const is = (w: Workload): boolean => w.place === place && w.random && w.write === write && w.qd > 1
      const label = sums.find((s) => is(s.workload))?.workload.label ?? `random ${write ? 'write' : 'read'}, deep QD`
      ratio(`${at(label, place)}: odirect per op p99 latency vs node:fs's`, 1, find(is, 'odirect'), find(is, 'node-fs'), 'p99', us, true)
    }
  }
  // Depth 64 on tmpfs.
  for (const write of [false, true]) {
    const is = (w: Workload): boolean => w.place === 'tmpfs' && w.random && w.write === write && w.qd > 1
    const label = sums.find((s) => is(s.workload))?.workload.label ?? `random ${write ? 'write' : 'read'}, deep QD`
    const perOp = find(is, 'odirect')
    ratio(`${at(label, 'tmpfs')}: odirect per op vs fio`, 0.8, perOp, fio(is), 'value', rate)
    ratio(`${at(label, 'tmpfs')}: odirect ${write ? 'writeMany' : 'readMany'} vs fio`, 0.8, find(is, 'odirect-batch'), fio(is), 'value', rate)
    ratio(`${at(label, 'tmpfs')}: odirect typed ${write ? 'writeMany' : 'readMany'} (window) vs fio`, 1.0, find(is, 'odirect-batch-typed'), fio(is), 'value', rate)
    ratio(`${at(label, 'tmpfs')}: odirect typed ${write ? 'writeMany' : 'readMany'} (2 lanes) vs fio`, 1.0, find(is, 'odirect-batch-lanes'), fio(is), 'value', rate)
    ratio(`${at(label, 'tmpfs')}: odirect typed ${write ? 'writeMany' : 'readMany'} (queue in a BatchWindow) vs fio`, 1.0, find(is, 'odirect-batch-queue'), fio(is), 'value', rate)
    ratio(`${at(label, 'tmpfs')}: odirect registered buffers vs odirect per op`, 1, find(is, 'odirect-registered'), perOp, 'value', rate)
  }
  // Depth 64 on the disk.
  for (const write of [false, true]) {
    const is = (w: Workload): boolean => w.place === 'disk' && w.random && w.write === write && w.qd > 1
    const label = sums.find((s) => is(s.workload))?.workload.label ?? `random ${write ? 'write' : 'read'}, deep QD`
    ratio(`${at(label, 'disk')}: odirect per op vs fio`, 0.95, find(is, 'odirect'), fio(is), 'value', rate)
    ratio(`${at(label, 'disk')}: odirect ${write ? 'writeMany' : 'readMany'} vs fio`, 1.0, find(is, 'odirect-batch'), fio(is), 'value', rate)
    ratio(`${at(label, 'disk')}: odirect typed ${write ? 'writeMany' : 'readMany'} (window) vs fio`, 1.0, find(is, 'odirect-batch-typed'), fio(is), 'value', rate)
    ratio(`${at(label, 'disk')}: odirect typed ${write ? 'writeMany' : 'readMany'} (2 lanes) vs fio`, 1.0, find(is, 'odirect-batch-lanes'), fio(is), 'value', rate)
    ratio(`${at(label, 'disk')}: odirect typed ${write ? 'writeMany' : 'readMany'} (queue in a BatchWindow) vs fio`, 1.0, find(is, 'odirect-batch-queue'), fio(is), 'value', rate)
  }
  // Sequential.
  for (const write of [false, true]) {
    const is = (w: Workload): boolean => w.place === 'disk' && !w.random && w.write === write
    const label = sums.find((s) => is(s.workload))?.workload.label ?? `sequential ${write ? 'write' : 'read'}`
    ratio(`${at(label, 'disk')}: odirect per op vs fio`, 0.95, find(is, 'odirect'), fio(is), 'value', rate)
  }
  // Streams (issue 19): throughput vs fio, CPU vs node:fs's stream, RSS growth.
  const stream = (id: string, eng: StreamEngineId): StreamSummary | undefined => streams.find((x) => x.workload.id === id && x.engine === eng && x.variant === undefined)
  const streamRow = (name: string, goal: string, a: StreamSummary | undefined, figure: (a: StreamSummary) => [string, boolean | undefined] | undefined): void => {
    if (a === undefined) out.push({ name, goal, figure: 'not measured (streams not selected)' })
    else if (a.skipped !== undefined) out.push({ name, goal, figure: `not measured: ${a.skipped}` })
    else {
      const f = figure(a)
      out.push(f === undefined ? { name, goal, figure: 'not measured' } : { name, goal, figure: f[0], met: f[1] })
    }
  }
  const STREAM_TARGETS: [string, StreamEngineId][] = [
    ['stream-read', 'odirect-stream'],
    ['stream-read', 'odirect-stream-sha'],
    ['stream-read', 'odirect-stream-reuse'],
    ['stream-read', 'odirect-web'],
    ['stream-read', 'odirect-web-sha'],
    ['stream-read', 'odirect-web-byob'],
    ['stream-write', 'odirect-stream'],
    ['stream-write', 'odirect-web'],
    ['stream-write', 'odirect-stream-transfer'],
    ['stream-write', 'odirect-web-transfer'],
  ]
  for (const [id, eng] of STREAM_TARGETS) {
    const a = stream(id, eng)
    if (a === undefined) continue
    const what = `Streams, disk: ${streamEngineLabel(a.workload, eng).replace(/ \(1 MiB.*\)$/, '')}`
    if (!eng.endsWith('-sha')) {
      const ref = bestFio(streams.filter((x) => x.workload.id === id), STREAM_FIO, (x) => x.mbps)
      streamRow(`${what} vs fio`, '≥ 0.90×', a, (x) => {
        if (ref === undefined || !Number.isFinite(x.mbps / ref.mbps)) return undefined
        const r = pairedRatio(x.runs, ref.runs, (y) => y.mbps, (y) => y.mbps).ratio
        return [`${fmtRatio3(r)} (${num(x.mbps)} vs ${num(ref.mbps)} MB/s; ${streamEngineLabel(ref.workload, ref.engine).replace(/ \(.*$/, '')})`, r >= 0.9]
      })
    }
    streamRow(`${what}: CPU per GiB vs ${id === 'stream-write' ? 'fs.createWriteStream + fsync' : eng.endsWith('-sha') ? 'fs.createReadStream (1 MiB) → sha256' : 'fs.createReadStream (1 MiB)'}`, '≤ 1.00×', a, (x) =>
      Number.isFinite(x.cpuRatio) ? [`${fmtRatio3(x.cpuRatio)} (${x.cpuPerGiB.toFixed(2)} s/GiB)`, x.cpuRatio <= 1] : undefined,
    )
    if (id === 'stream-read') {
      // readAhead x chunk + 16 MiB, the bench's streams being odirect's defaults (4 x 2 MiB).
      const limit = STREAM_DEPTH * (ODIRECT_STREAM_CHUNK / 2 ** 20) + 16
      streamRow(`${what}: peak RSS growth, no forced GC`, `≤ ${limit} MiB`, a, (x) => (Number.isFinite(x.rssGrowthMiB) ? [`${num(x.rssGrowthMiB)} MiB`, x.rssGrowthMiB <= limit] : undefined))
    }
  }
  // CPU per op at depth 64.
  for (const place of places) {
    for (const write of [false, true]) {
      const is = (w: Workload): boolean => w.place === place && w.random && w.write === write && w.qd > 1
      const label = sums.find((s) => is(s.workload))?.workload.label ?? `random ${write ? 'write' : 'read'}, deep QD`
      ratio(`${at(label, place)}: odirect per op CPU µs/op vs fio's`, 2, find(is, 'odirect'), fio(is, (s) => s.cpuUsPerOp, true), 'cpu', cpu, true)
    }
  }
  return out
}

const verdict = (t: Target): string => (t.met === undefined ? 'not measured' : t.met ? 'met' : '**not met**')

/** The targets as a markdown table. */
export function targetTable(ts: Target[]): string {
  return ['| Target | Goal | This run | Verdict |', '|---|---:|---|---|', ...ts.map((t) => `| ${t.name} | ${t.goal} | ${t.figure} | ${verdict(t)} |`)].join('\n')
}

/** The targets as plain lines for the terminal, in a user's words. */
export function targetLines(ts: Target[]): string[] {
  const said = (t: Target): string => (t.met === undefined ? 'not measured' : t.met ? 'reached' : 'not reached on this run')
  return ts.map((t) => `- ${t.name}: ${t.figure}; goal ${t.goal}: ${said(t)}`)
}

function factsLines(f: MachineFacts, o: Options): string[] {
  const load = (l: number[] | undefined): string => (l ? l.map((x) => x.toFixed(2)).join(' / ') : '?')
  return [
    `- Date: ${f.date}`,
    `- Kernel: ${f.kernel}; CPUs: ${f.cpus} × ${f.cpuModel}; memory: ${f.memGiB} GiB`,
    `- File: ${o.file}${o.temporary ? ' (temporary, removed after)' : ''}, ${fmtSize(o.size)}, filesystem ${f.fsType}, ${f.device}`,
    `- tmpfs workloads: ${o.tmpfs?.file ? `${o.tmpfs.file} (${fmtSize(o.tmpfs.size ?? 0)}${o.tmpfs.how ? `, ${o.tmpfs.how}` : ''})` : `not run: ${o.tmpfs?.skipped ?? 'not selected'}`}`,
    `- Node ${f.node}; ${f.fio}; odirect backend: ${f.backend}; engine path on Node: ${f.enginePath ?? 'unknown'}`,
    ...(o.hugePages ? [`- fio's huge-page rows: ${o.hugePages}`] : []),
    ...(o.openOptions ? [`- odirect opened with: \`${JSON.stringify(o.openOptions)}\``] : []),
    ...Object.entries(o.variants ?? {}).map(([k, v]) => `- Variant '${k}' (odirect in a Node child process per run): \`${JSON.stringify(v)}\``),
    ...(o.runtimes && Object.keys(o.runtimes).length ? [`- Other runtimes (per-op rows): ${Object.entries(o.runtimes).map(([k, v]) => `${k}: ${v}`).join('; ')}`] : []),
    `- Runs: ${o.runs} per cell (median shown; engines interleaved within each run), ${o.ops > 0 ? `${o.ops} ops` : `${o.durationMs / 1000} s`} each after ${o.rampMs / 1000} s warm-up${o.quick ? ' (quick mode: a smoke run, figures meaningless)' : o.short ? ' (short mode)' : ''}`,
    `- Page cache for node:fs: ${f.cacheDrop}`,
    `- Load average (1/5/15 min) at start: ${load(f.loadStart)}; at end: ${load(f.loadEnd)}`,
  ]
}

const NOTES_BEGIN = '<!-- notes:begin (kept when the report is regenerated) -->'
const NOTES_END = '<!-- notes:end -->'
const PROFILE_BEGIN = '<!-- profile:begin (kept when the report is regenerated) -->'
const PROFILE_END = '<!-- profile:end -->'
const PROFILE_PLACEHOLDER = `_To be filled from perf after the run: where the remaining microseconds per op go (JS thread,
native, kernel), at QD 1 and QD 64, on the disk and on tmpfs, for the path shown above._`

const STANDARD_NOTES = `- **Figures are noisy.** This machine has few cores and is shared (other builds run while the
  benchmark does); compare engines within one run, where they alternate on the same file, rather
  than across runs. The "runs min–max" column shows the spread.
- Each run interleaves the engines on the same file (fio, then the JS engines, then the next run
  in another order: rotated by one every second run and reversed in odd runs, so no engine always
  follows the same neighbour), so every engine meets the same machine state; the median of
  the runs is shown.
- fio: \`--direct=1 --fixedbufs --registerfiles --hipri=0 --sqthread_poll=0\` (io_uring), batched
  submit/reap (\`--iodepth_batch_submit=min(16,QD)\`, \`--iodepth_batch_complete_min=half of that\`),
  \`--norandommap --randrepeat=0\`: fio's peak configuration. fio's buffers are its default
  (malloc'ed, 4 KiB pages) in "fio io_uring" and "fio libaio"; "fio io_uring, huge pages" is the
  same io_uring job with its buffers in 2 MiB huge pages (\`--mem=mmaphuge:FILE\` on a private
  hugetlbfs the bench mounts for the run, with the pages it needs added to
  \`/proc/sys/vm/nr_hugepages\`; both undone at the end, also on Ctrl-C or an error; it needs
  root, else the row says why it was skipped). It runs on the workloads of 1 MiB blocks (the
  sequential ones) and the streams: a 1 MiB transfer in 4 KiB pages is 256 segments, which a disk with a 254-segment
  limit (virtio here) splits into two requests, one in huge pages; on this machine that doubled
  fio's sequential figures. For 4 KiB blocks each buffer is one page either way and huge pages
  made no difference, so those rows have no huge-page run. Latency is fio's total latency
  (\`--lat_percentiles=1\`: submission + completion, slat + clat), the counterpart of the JS
  rows' call-to-settle figure; fio's clat alone leaves out the submission (on the virtio disk
  here 13-17 µs per op at QD 1). "fio io_uring, 2 jobs (limit)" runs two such jobs (each at the workload's QD) on the same
  file at once: what the device (or, on tmpfs, the machine) gives at most; it is shown, but
  never taken as the reference of the "vs best fio" ratio (that compares one job with one).
- JS engines: latency is measured in JS from the call to the promise settling (what an application
  sees, so it includes event-loop turnaround). For readMany/writeMany every op of a batch gets the
  batch's latency. "native p50" is odirect's own histogram (\`fh.stats().latencyUs\`, submit to
  reap, over the whole run including the warm-up).
- CPU µs/op: the CPU time (user + system) of the whole process during the measured window
  (\`process.cpuUsage()\`, i.e. getrusage(RUSAGE_SELF): the JS thread, odirect's threads, libuv's
  pool, io_uring workers), divided by the ops completed in it. fio: the CPU of its whole process
  tree (cutime + cstime of a shell that waited for it: job processes, their threads and io_uring's
  io-wq workers), times runtime / (runtime + ramp), over its ops. "(own …)" is fio's own
  \`usr_cpu + sys_cpu\` accounting, which leaves out the io-wq workers: on tmpfs, where io_uring
  punts O_DIRECT reads to them, it shows a fraction of what fio costs. CPU % is the CPU time over
  the wall time, in percent of one core. "steal %" is the machine's steal time during the run (/proc/stat): CPU time the
  hypervisor took away from this VM; when it is high the engine was throttled.
- tmpfs rows: the same workloads on a file in a tmpfs (O_DIRECT works there since Linux 6.6). No
  device is involved, so they show the software path: how many ops per second and how much CPU per
  op each engine needs when the storage answers at memory speed.
- Bun and Deno rows: the odirect per-op loop in a child process of that runtime (one per run), on
  the same file; the engine path they take is listed under Machine.
- node:fs (buffered) starts with the page cache emptied, and during the run the file's pages are
  dropped (posix_fadvise DONTNEED, which also starts writeback of dirty ones) every 4 MiB moved and
  at each sequential wrap, so reads keep reaching the device; its buffered writes include a final
  \`fdatasync\` in the elapsed time. Rewrites of a still-dirty page are still merged in the cache.
  Its QD is capped in practice by libuv's thread pool (4 threads unless UV_THREADPOOL_SIZE is set).
  node:fs O_DIRECT is the same loop with \`fs.constants.O_DIRECT\` and aligned buffers.
- odirect per op: QD workers, each \`await fh.read(buf, pos)\` in a loop (the queue stays full).
  odirect batch: one \`fh.readMany([...8 x QD ops], { window: QD })\` at a time: QD in the kernel, each completion lets the next op in; the queue drains only at the end of each call.
  Typed arrays: the same with \`fh.readMany({ memory, offsets, lengths, positions, results }, { window: QD })\` over one
  \`fh.alloc\` region (the engine refills the window at reap time; one promise per call). "2 lanes of QD/2": two such
  calls of QD/2 ops each in flight at once, each lane starting its next call when its last one resolved.
- "vs best fio" compares each row with the best fio configuration of the same workload in this
  run: the highest median of fio io_uring, fio io_uring with huge pages and fio libaio (the row
  marked "(ref)"). Every ratio (this column, the performance goals, "vs odirect per op", CPU vs
  node:fs) is paired: the median over rounds of the two rows' ratio within the round (every
  engine runs once per round, interleaved), so a slow moment of the machine weighs on both sides
  of one ratio instead of moving each median on its own. The performance goals compare with fio
  the same way, each with the fio configuration best at that figure (highest rate; lowest p50
  latency or CPU per op), and name it, with both rows' medians. The JSON report has both \`ratioToFio\` (with \`fioReference\`) and
  \`ratioToFioIoUring\` (to plain fio io_uring).`

/** Keeps a hand-written block (notes, profile) of an existing report. */
function keptBlock(out: string, begin: string, end: string): string | undefined {
  try {
    const old = fs.readFileSync(out, 'utf8')
    const a = old.indexOf(begin)
    const b = old.indexOf(end)
    if (a >= 0 && b > a) return old.slice(a + begin.length, b).trim()
  } catch {
    // no previous report
  }
  return undefined
}

/** The scaling table of a full run (`scalingBench`) and where it ran. */
export interface ScalingResult {
  rows: ScalingRow[]
  where: string
}

const SCALING_NOTES = `n worker_threads, each with its own engine and handle (so its own io_uring), 4 KiB random
reads per op at QD 64 each (every thread's loop as in the per-op rows), against \`fio --numjobs=n
--iodepth=64\` with the same peak options as the tables above, on one file; the two alternate
within each run; the ratio is the median of the per-run ratios odirect / fio.`

export function markdown(sums: Summary[], facts: MachineFacts, o: Options, chart: string | undefined, out: string | undefined, streams: StreamSummary[] = [], scaling?: ScalingResult): string {
  const notes = out ? keptBlock(out, NOTES_BEGIN, NOTES_END) : undefined
  const profile = out ? keptBlock(out, PROFILE_BEGIN, PROFILE_END) : undefined
  const disk = sums.filter((s) => s.workload.place === 'disk')
  const tmpfs = sums.filter((s) => s.workload.place === 'tmpfs')
  return [
    '# odirect benchmark',
    '',
    'Generated by `odirect bench` (`npm run bench:full`, i.e. `node dist/cli.js bench --full`; `node dist/cli.js bench --help` for the options).',
    '',
    '## Machine',
    '',
    ...factsLines(facts, o),
    '',
    '## Results: the disk',
    '',
    disk.length ? table(disk) : '_(no disk workload selected)_',
    '',
    '## Results: tmpfs (no device: the software path)',
    '',
    tmpfs.length ? table(tmpfs) : `_Not run: ${o.tmpfs?.skipped ?? 'not selected'}._`,
    '',
    ...(streams.length ? ['## Streams', '', streamTable(streams), ''] : []),
    ...(scaling ? ['## Scaling over worker_threads', '', `On ${scaling.where}. ${SCALING_NOTES}`, '', scalingTable(scaling.rows, scaling.where, false), ''] : []),
    ...(chart ? [`![fraction of the best fio configuration per workload](${chart})`, ''] : []),
    '## Performance goals',
    '',
    targetTable(targets(sums, streams)),
    '',
    ...(threadTable(sums) ? ['## CPU per op by thread', '', THREAD_NOTES, '', threadTable(sums), ''] : []),
    '## Profile',
    '',
    PROFILE_BEGIN,
    profile ?? PROFILE_PLACEHOLDER,
    PROFILE_END,
    '',
    '## Method',
    '',
    STANDARD_NOTES,
    ...(streams.length ? [STREAM_NOTES] : []),
    '',
    '## Notes',
    '',
    NOTES_BEGIN,
    notes ?? '_(none yet)_',
    NOTES_END,
    '',
  ].join('\n')
}

const finite = (x: number): number | null => (Number.isFinite(x) ? x : null)

/** A row's ratios in the JSON: to the best fio configuration (named), and to plain fio io_uring. */
const fioRatioJson = (s: { ratio: number; fioRef?: string; ratioIoUring: number }): Record<string, number | string | null> => ({
  ratioToFio: finite(s.ratio),
  ...(s.fioRef ? { fioReference: s.fioRef } : {}),
  ratioToFioIoUring: finite(s.ratioIoUring),
})

export function json(sums: Summary[], facts: MachineFacts, o: Options, cells: Cell[], streams: StreamSummary[] = [], streamCells: StreamCell[] = []): string {
  return JSON.stringify(
    {
      facts,
      options: o,
      results: sums.map((s) => ({
        workload: s.workload.id,
        label: s.workload.label,
        place: s.workload.place,
        engine: s.engine,
        metric: s.workload.metric,
        ...(s.skipped !== undefined
          ? { skipped: s.skipped }
          : {
              median: s.value,
              min: s.min,
              max: s.max,
              p50Us: finite(s.p50),
              p99Us: finite(s.p99),
              nativeP50Us: finite(s.nativeP50),
              nativeP99Us: finite(s.nativeP99),
              cpuUsPerOp: finite(s.cpuUsPerOp),
              ...(Number.isFinite(s.fioSelfCpuUsPerOp) ? { fioSelfCpuUsPerOp: s.fioSelfCpuUsPerOp } : {}),
              ...(s.threads ? { threadCpuUsPerOp: s.threads } : {}),
              cpuPct: finite(s.cpuPct),
              stealPct: finite(s.stealPct),
              ...fioRatioJson(s),
              ...(s.path ? { path: s.path } : {}),
              ...(s.runtime ? { runtime: s.runtime } : {}),
              ...(s.pinned ? { pinned: s.pinned } : {}),
            }),
        runs: cells.find((c) => c.workload.id === s.workload.id && c.engine === s.engine)?.runs ?? [],
      })),
      streams: streams.map((s) => ({
        workload: s.workload.id,
        engine: s.engine,
        ...(s.variant !== undefined ? { variant: s.variant } : {}),
        ...(s.skipped !== undefined ? { skipped: s.skipped } : { medianMBps: s.mbps, min: s.min, max: s.max, residentPct: finite(s.residentPct), rssGrowthMiB: finite(s.rssGrowthMiB), ...fioRatioJson(s), cpuPerGiB: finite(s.cpuPerGiB), cpuRatioToNodeFs: finite(s.cpuRatio) }),
        runs: streamCells.find((c) => c.workload.id === s.workload.id && c.engine === s.engine && c.variant === s.variant)?.runs ?? [],
      })),
      targets: targets(sums, streams).map((t) => ({ ...t, met: t.met ?? null })),
    },
    null,
    2,
  )
}

// ---------------------------------------------------------------------------------------------
// Chart: one group of horizontal bars per workload, bar length = fraction of the best fio
// configuration (or of the best engine when fio did not run), labelled with the absolute figure.

const COLORS: Record<Exclude<EngineId, VariantId>, string> = {
  'fio-io_uring': '#4c566a',
  'fio-io_uring-huge': '#3b4252',
  'fio-io_uring-2j': '#2e3440',
  'fio-libaio': '#8f9bb3',
  'node-fs': '#e0a030',
  'node-fs-direct': '#c77c2e',
  odirect: '#2e86c1',
  'odirect-batch': '#1a5276',
  'odirect-batch-typed': '#154360',
  'odirect-batch-lanes': '#0b2f4a',
  'odirect-batch-queue': '#0e6251',
  'odirect-registered': '#48c9b0',
  'odirect-bun': '#af7ac5',
  'odirect-deno': '#58d68d',
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

const VARIANT_COLORS = ['#c0392b', '#d35400', '#7d3c98', '#16a085', '#b7950b', '#566573']

const STREAM_COLORS: Record<StreamEngineId, string> = {
  'odirect-stream': '#2e86c1',
  'node-fs-stream': '#e0a030',
  'node-fs-stream-1m': '#f5c469',
  'odirect-stream-sha': '#5dade2',
  'odirect-stream-reuse': '#1b4f72',
  'odirect-web': '#48c9b0',
  'odirect-web-sha': '#a3e4d7',
  'odirect-web-byob': '#117a65',
  'odirect-stream-transfer': '#1f618d',
  'odirect-web-transfer': '#0e6655',
  'odirect-pipe': '#6c3483',
  'odirect-pipe-transfer': '#4a235a',
  'odirect-copyfile': '#a04000',
  'node-fs-stream-1m-sha': '#f8d98f',
  'fio-io_uring': '#4c566a',
  'fio-io_uring-huge': '#3b4252',
  'dd-direct': '#7b8394',
}

interface Bar {
  key: string
  legend: string
  color: string
  value: number
  text: string
  ratio: number
  isRef: boolean
}

/** The chart: the workloads' rows, then the streams' rows, each group relative to its best fio row. */
export function svgChart(sums: Summary[], facts: MachineFacts, streams: StreamSummary[] = []): string {
  const groups: { label: string; bars: Bar[] }[] = []
  const shown = sums.filter((s) => s.skipped === undefined && Number.isFinite(s.value))
  for (const w of [...new Map(shown.map((s) => [s.workload.id, s.workload])).values()]) {
    const g = shown.filter((s) => s.workload.id === w.id)
    groups.push({
      label: w.label,
      bars: g.map((s) => ({ key: s.engine, legend: engineLabel(s.engine), color: isVariant(s.engine) ? VARIANT_COLORS[[...s.engine].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) % VARIANT_COLORS.length] : COLORS[s.engine], value: s.value, text: fmtValue(s.workload, s.value), ratio: s.ratio, isRef: s.engine === s.fioRef })),
    })
  }
  const sshown = streams.filter((s) => s.skipped === undefined && s.variant === undefined && Number.isFinite(s.mbps))
  for (const w of [...new Map(sshown.map((s) => [s.workload.id, s.workload])).values()]) {
    const g = sshown.filter((s) => s.workload.id === w.id)
    groups.push({
      label: `stream: ${w.label}`,
      bars: g.map((s) => ({ key: `stream:${s.engine}`, legend: STREAM_FIO.includes(s.engine) ? engineLabel(s.engine as EngineId) : streamEngineLabel(w, s.engine).replace(/ \(.*$/, ''), color: STREAM_COLORS[s.engine], value: s.mbps, text: `${num(s.mbps)} MB/s`, ratio: s.ratio, isRef: s.engine === s.fioRef })),
    })
  }
  const barH = 16
  const gap = 3
  const groupGap = 22
  const left = 280
  const plotW = 520
  const right = 150
  const top = 70
  let y = top
  const parts: string[] = []
  let maxRatio = 1
  const rel = new Map<Bar, number>()
  for (const g of groups) {
    const ref = g.bars.find((b) => b.isRef)?.value ?? Math.max(...g.bars.map((b) => b.value))
    for (const b of g.bars) {
      const r = ref > 0 ? b.value / ref : 0
      rel.set(b, r)
      maxRatio = Math.max(maxRatio, r)
    }
  }
  const scaleMax = Math.ceil(maxRatio * 4) / 4
  const x = (r: number): number => left + (r / scaleMax) * plotW
  const legendMap = new Map<string, { legend: string; color: string }>()
  for (const g of groups) {
    const h = g.bars.length * (barH + gap)
    parts.push(`<text x="${left - 10}" y="${y + h / 2}" text-anchor="end" dominant-baseline="middle" font-weight="bold" font-size="13">${esc(g.label)}</text>`)
    for (const b of g.bars) {
      if (!legendMap.has(b.legend)) legendMap.set(b.legend, { legend: b.legend, color: b.color })
      const r = rel.get(b) ?? 0
      parts.push(`<rect x="${left}" y="${y}" width="${Math.max(1, x(r) - left)}" height="${barH}" fill="${b.color}"/>`)
      parts.push(`<text x="${x(r) + 5}" y="${y + barH / 2}" dominant-baseline="middle" font-size="11">${esc(b.text)}${Number.isFinite(b.ratio) ? ` (${b.ratio.toFixed(2)}×)` : ''}</text>`)
      y += barH + gap
    }
    y += groupGap
  }
  const bottom = y
  const grid: string[] = []
  for (let g = 0; g <= scaleMax + 1e-9; g += 0.25) {
    const gx = x(g)
    grid.push(`<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${bottom - groupGap + 4}" stroke="${g === 1 ? '#555' : '#ddd'}" stroke-width="${g === 1 ? 1.2 : 1}"${g === 1 ? ' stroke-dasharray="4 3"' : ''}/>`)
    grid.push(`<text x="${gx}" y="${bottom - groupGap + 18}" text-anchor="middle" font-size="11" fill="#444">${g.toFixed(2)}×</text>`)
  }
  const legendY = bottom + 14
  const entries = [...legendMap.values()]
  const legend = entries.map((e, i) => {
    const lx = 20 + (i % 3) * 300
    const ly = legendY + Math.floor(i / 3) * 18
    return `<rect x="${lx}" y="${ly}" width="12" height="12" fill="${e.color}"/><text x="${lx + 17}" y="${ly + 10}" font-size="12">${esc(e.legend)}</text>`
  })
  const height = legendY + Math.ceil(entries.length / 3) * 18 + 14
  const width = left + plotW + right
  const title = 'odirect vs fio vs node:fs — throughput relative to the best fio configuration (median)'
  const sub = `${facts.kernel}, ${facts.cpus} CPUs, ${facts.fsType} (+ tmpfs rows), ${facts.date.slice(0, 10)} — shared machine, figures are noisy`
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="20" y="26" font-size="16" font-weight="bold">${esc(title)}</text>`,
    `<text x="20" y="46" font-size="12" fill="#555">${esc(sub)}</text>`,
    ...grid,
    ...parts,
    ...legend,
    '</svg>',
    '',
  ].join('\n')
}

/** Writes `<dir>/results.svg` and, with rsvg-convert, `<dir>/results.png`. Returns the PNG's name or the SVG's. */
export function writeChart(dir: string, svg: string, log: (m: string) => void): string {
  const svgPath = path.join(dir, 'results.svg')
  fs.writeFileSync(svgPath, svg)
  const pngPath = path.join(dir, 'results.png')
  const r = spawnSync('rsvg-convert', ['-f', 'png', '-z', '1.5', '-o', pngPath, svgPath], { encoding: 'utf8' })
  if (r.status === 0) return 'results.png'
  log(`note: rsvg-convert ${r.error ? 'is not installed (apt-get install librsvg2-bin)' : `failed: ${r.stderr.trim()}`}; the chart is ${svgPath}`)
  return 'results.svg'
}

// ---------------------------------------------------------------------------------------------
// Streams: one sequential pass per run; MB/s, ratio to the best fio row, % of the file left in
// the page cache.

export interface StreamSummary {
  workload: StreamWorkload
  engine: StreamEngineId
  variant?: string
  skipped?: string
  mbps: number
  min: number
  max: number
  residentPct: number
  /** Median peak RSS growth during a run, MiB (NaN: not measured). */
  rssGrowthMiB: number
  /** mbps / the best fio row's (fioRef), and / plain fio io_uring's. */
  ratio: number
  fioRef?: StreamEngineId
  ratioIoUring: number
  /** Median CPU seconds per GiB, and its ratio to node:fs's stream doing the same job (1 MiB highWaterMark for reads). */
  cpuPerGiB: number
  cpuRatio: number
  /** The runs the medians come from (each with its round, for paired ratios). */
  runs: readonly StreamRun[]
}

/** The node:fs engine a stream row's CPU is compared with. */
const fsPeer = (s: StreamSummary): StreamEngineId => (s.workload.write ? 'node-fs-stream' : s.engine.endsWith('-sha') ? 'node-fs-stream-1m-sha' : 'node-fs-stream-1m')

export function summarizeStreams(cells: StreamCell[]): StreamSummary[] {
  const out: StreamSummary[] = cells.map((c) => {
    const v = c.runs.map((r) => r.mbps)
    return {
      workload: c.workload,
      engine: c.engine,
      ...(c.variant !== undefined ? { variant: c.variant } : {}),
      ...(c.skipped !== undefined && c.runs.length === 0 ? { skipped: c.skipped } : {}),
      mbps: median(v),
      min: v.length ? Math.min(...v) : NaN,
      max: v.length ? Math.max(...v) : NaN,
      residentPct: median(c.runs.map((r) => r.residentPct)),
      rssGrowthMiB: median(c.runs.map((r) => r.rssGrowthMiB ?? NaN)),
      ratio: NaN,
      ratioIoUring: NaN,
      cpuPerGiB: median(c.runs.map((r) => r.cpuPerGiB)),
      cpuRatio: NaN,
      runs: c.runs,
    }
  })
  fioRatios<StreamRun, StreamSummary>(out, STREAM_FIO, (s) => s.mbps, (_, r) => r.mbps)
  for (const s of out) {
    const peer = out.find((x) => x.workload.id === s.workload.id && x.engine === fsPeer(s) && x.variant === undefined)
    if (peer && Number.isFinite(peer.cpuPerGiB) && peer.cpuPerGiB > 0) s.cpuRatio = pairedRatio(s.runs, peer.runs, (r) => r.cpuPerGiB, (r) => r.cpuPerGiB).ratio
  }
  return out
}

export function streamTable(sums: StreamSummary[]): string {
  const rows = ['| Workload | Engine | MB/s (median) | Runs min–max | vs best fio | CPU s/GiB | CPU vs node:fs | Peak RSS growth | % of file resident after |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']
  let lastW = ''
  for (const s of sums) {
    const wl = s.workload.id === lastW ? '' : s.workload.label
    lastW = s.workload.id
    const label = streamRowLabel(s.workload, s)
    if (s.skipped !== undefined) {
      rows.push(`| ${wl} | ${label} | skipped: ${s.skipped} | | | | | | |`)
      continue
    }
    const spread = s.min === s.max ? '' : `${num(s.min)}–${num(s.max)}`
    const cpu = Number.isFinite(s.cpuPerGiB) ? s.cpuPerGiB.toFixed(2) : '–'
    const rss = Number.isFinite(s.rssGrowthMiB) ? `${num(s.rssGrowthMiB)} MiB` : '–'
    rows.push(`| ${wl} | ${label} | **${num(s.mbps)}** | ${spread} | ${fmtFioRatio(s)} | ${cpu} | ${fmtRatio(s.cpuRatio)} | ${rss} | ${Number.isFinite(s.residentPct) ? `${num(s.residentPct, 1)} %` : '–'} |`)
  }
  return rows.join('\n')
}

const THREAD_NOTES = `Where the JS engines' CPU goes, from \`/proc/self/task/*/stat\` at the measured window's start and end
(10 ms ticks, so short runs are coarse): \`js\` is the main (JS) thread; other names are the threads'
own (\`odirect-reaper\`, \`iou-wrk\` = io_uring's io-wq workers, \`iou-sqp\` = SQPOLL, \`libuv-worker\`,
\`V8 DefaultWorke\` = GC helpers; on Node 20 libuv's pool threads are \`node\`); \`exited/other\` is what
threads that ended during the window used.`

const STREAM_NOTES = `- Streams: one whole pass per run over the first N bytes of the test file (reads) or over a
  scratch file of N bytes beside it, fully written beforehand, overwritten in place (writes), N as
  in the workload label. Each JS run is a fresh Node process: a 4 MiB warm-up pass, the file's
  pages dropped again, then the measured pass. MB/s is 10^6 bytes over the time from creating the
  stream to its end ('end' for reads; for writes, after odirect's fdatasync on 'finish', or
  node:fs's final \`fsync\`). odirect's streams get a FileHandle opened just before the clock
  starts (and close it inside it), as fio's runtime starts once it opened its file and set up its
  buffers (it includes its \`end_fsync\`); node:fs's streams open the path inside the clock. "Peak RSS growth" is the process's peak resident set during the
  pass over its resident set before it, with no forced GC. The page cache is emptied before every run (drop_caches when root, else
  posix_fadvise DONTNEED on the file). "% of file resident after" is \`fincore --bytes\` of the
  file after the run, over N. fio: \`--rw=read\`/\`write\`, 1 MiB blocks, iodepth 4, the same
  io_uring options as above, with its default buffers and with huge-page buffers (the "vs best
  fio" column divides by the faster of the two), \`--io_size=N\`, no time limit; fio's writes
  end with a flush (\`--end_fsync=1\`), as odirect's (fdatasync), dd's (conv=fdatasync) and
  node:fs's (fsync) do. The plain write rows write one 1 MiB Buffer N / 1 MiB times (copied into
  the stream's blocks); the \`transferChunks\` rows write N bytes of odirect chunks of 2 MiB
  (\`allocAligned\`, filled before the clock), each taken and written in place (a \`--variant\` with
  \`ODIRECT_BENCH_ODIRECT_SOURCE=1\` gives the plain rows that source, copied: the A/B). The copy
  rows read the test file's first N bytes into the scratch file: a read stream piped into a
  write stream (in place, \`r+\`), with and without \`transferChunks\`, and \`copyFile\` (a new temp
  file renamed over the scratch file; skipped when the test file is longer than N).`
