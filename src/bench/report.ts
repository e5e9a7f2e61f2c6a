// Medians, ratios, and the three outputs: a markdown report, a JSON document, and an SVG chart
// (converted to PNG with rsvg-convert when it is installed).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { type EngineId, engineLabel, fmtSize, type MachineFacts, type RunResult, type Workload } from './harness'
import { type StreamCell, type StreamEngineId, streamEngineLabel, type StreamWorkload } from './streams'

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
  /** Median steal time of the machine during the runs, percent of all CPU time. */
  stealPct: number
  /** value / the fio io_uring value for the same workload. */
  ratio: number
}

export interface Options {
  size: number
  runs: number
  durationMs: number
  ops: number
  rampMs: number
  short: boolean
  file: string
  temporary: boolean
}

export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
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
      stealPct: median(c.runs.map((r) => r.stealPct ?? NaN)),
      ratio: NaN,
    }
  })
  for (const s of out) {
    const ref = out.find((x) => x.workload.id === s.workload.id && x.engine === 'fio-io_uring')
    if (ref && Number.isFinite(ref.value) && ref.value > 0) s.ratio = s.value / ref.value
  }
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
// Targets are judged on the unrounded ratio: show enough digits that the verdict matches.
const fmtRatio3 = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(3)}×` : '–')

/** The results table (markdown). */
export function table(sums: Summary[]): string {
  const rows = ['| Workload | Engine | Median | Runs min–max | p50 µs | p99 µs | CPU % | steal % | vs fio io_uring |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']
  let lastW = ''
  for (const s of sums) {
    const wl = s.workload.id === lastW ? '' : s.workload.label
    lastW = s.workload.id
    if (s.skipped !== undefined) {
      rows.push(`| ${wl} | ${engineLabel(s.engine)} | skipped: ${s.skipped} | | | | | | |`)
      continue
    }
    const spread = s.min === s.max ? '' : `${fmtValue(s.workload, s.min).replace(/ (IOPS|MB\/s)$/, '')}–${fmtValue(s.workload, s.max)}`
    rows.push(`| ${wl} | ${engineLabel(s.engine)} | **${fmtValue(s.workload, s.value)}** | ${spread} | ${fmtLat(s.p50)} | ${fmtLat(s.p99)} | ${num(s.cpuPct)} | ${num(s.stealPct, 1)} | ${fmtRatio(s.ratio)} |`)
  }
  return rows.join('\n')
}

/** The issue's targets at the deep random workloads, checked against this run. */
export function targets(sums: Summary[]): string[] {
  const lines: string[] = []
  const get = (w: string, e: EngineId): Summary | undefined => sums.find((s) => s.workload.id === w && s.engine === e && s.skipped === undefined)
  const deep = [...new Set(sums.filter((s) => s.workload.random && s.workload.qd > 1).map((s) => s.workload.id))]
  for (const wid of deep) {
    const label = sums.find((s) => s.workload.id === wid)?.workload.label ?? wid
    const batch = get(wid, 'odirect-batch')
    const perOp = get(wid, 'odirect')
    const nodefs = get(wid, 'node-fs')
    const mark = (ok: boolean): string => (ok ? 'met' : '**not met**')
    if (batch && Number.isFinite(batch.ratio)) lines.push(`- ${label}: odirect batch = ${fmtRatio3(batch.ratio)} fio io_uring (target ≥ 0.90×): ${mark(batch.ratio >= 0.9)}`)
    if (perOp && Number.isFinite(perOp.ratio)) lines.push(`- ${label}: odirect per-op = ${fmtRatio3(perOp.ratio)} fio io_uring (target ≥ 0.70×): ${mark(perOp.ratio >= 0.7)}`)
    if (perOp && nodefs && nodefs.value > 0) {
      const r = perOp.value / nodefs.value
      lines.push(`- ${label}: odirect per-op = ${fmtRatio3(r)} node:fs buffered (target ≥ 2×): ${mark(r >= 2)}`)
    }
  }
  return lines
}

function factsLines(f: MachineFacts, o: Options): string[] {
  const load = (l: number[] | undefined): string => (l ? l.map((x) => x.toFixed(2)).join(' / ') : '?')
  return [
    `- Date: ${f.date}`,
    `- Kernel: ${f.kernel}; CPUs: ${f.cpus} × ${f.cpuModel}; memory: ${f.memGiB} GiB`,
    `- File: ${o.file}${o.temporary ? ' (temporary, removed after)' : ''}, ${fmtSize(o.size)}, filesystem ${f.fsType}, ${f.device}`,
    `- Node ${f.node}; ${f.fio}; odirect backend: ${f.backend}`,
    `- Runs: ${o.runs} per cell (median shown), ${o.ops > 0 ? `${o.ops} ops` : `${o.durationMs / 1000} s`} each after ${o.rampMs / 1000} s warm-up${o.short ? ' (short mode)' : ''}`,
    `- Page cache for node:fs: ${f.cacheDrop}`,
    `- Load average (1/5/15 min) at start: ${load(f.loadStart)}; at end: ${load(f.loadEnd)}`,
  ]
}

const NOTES_BEGIN = '<!-- notes:begin (kept when the report is regenerated) -->'
const NOTES_END = '<!-- notes:end -->'

const STANDARD_NOTES = `- **Figures are noisy.** This machine has few cores and is shared (other builds run while the
  benchmark does); compare engines within one run, where they alternate on the same file, rather
  than across runs. The "runs min–max" column shows the spread.
- fio: \`--direct=1 --fixedbufs --registerfiles --hipri=0 --sqthread_poll=0\` (io_uring), batched
  submit/reap (\`--iodepth_batch_submit=min(16,QD)\`, \`--iodepth_batch_complete_min=half of that\`),
  \`--norandommap --randrepeat=0\`. Latency is fio's completion latency (clat).
- JS engines: latency is measured in JS from the call to the promise settling (what an application
  sees, so it includes event-loop turnaround). For readMany/writeMany every op of a batch gets the
  batch's latency. CPU % is the whole Node process (JS thread + odirect's ring thread, or the libuv
  pool), in percent of one core. "steal %" is the machine's steal time during the run (/proc/stat):
  CPU time the hypervisor took away from this VM; when it is high the engine was throttled.
- node:fs (buffered) starts with the page cache emptied, and during the run the file's pages are
  dropped (posix_fadvise DONTNEED, which also starts writeback of dirty ones) every 4 MiB moved and
  at each sequential wrap, so reads keep reaching the device; its buffered writes include a final
  \`fdatasync\` in the elapsed time. Rewrites of a still-dirty page are still merged in the cache.
  Its QD is capped in practice by libuv's thread pool (4 threads unless UV_THREADPOOL_SIZE is set).
  node:fs O_DIRECT is the same loop with \`fs.constants.O_DIRECT\` and aligned buffers.
- odirect per op: QD workers, each \`await fh.read(buf, pos)\` in a loop (the queue stays full).
  odirect batch: one \`fh.readMany([...QD ops])\` at a time (the queue drains between batches).
- "vs fio io_uring" divides each median by fio io_uring's median for the same workload.`

/** Keeps the hand-written notes block of an existing report. */
function keptNotes(out: string): string | undefined {
  try {
    const old = fs.readFileSync(out, 'utf8')
    const a = old.indexOf(NOTES_BEGIN)
    const b = old.indexOf(NOTES_END)
    if (a >= 0 && b > a) return old.slice(a + NOTES_BEGIN.length, b).trim()
  } catch {
    // no previous report
  }
  return undefined
}

export function markdown(sums: Summary[], facts: MachineFacts, o: Options, chart: string | undefined, out: string | undefined, streams: StreamSummary[] = []): string {
  const kept = out ? keptNotes(out) : undefined
  const t = targets(sums)
  return [
    '# odirect benchmark',
    '',
    'Generated by `odirect bench` (`node dist/cli.js bench`, or `node --import @oxc-node/core/register bench/run.ts`).',
    '',
    '## Machine',
    '',
    ...factsLines(facts, o),
    '',
    '## Results',
    '',
    table(sums),
    '',
    ...(chart ? [`![fraction of fio io_uring per workload](${chart})`, ''] : []),
    ...(streams.length ? ['## Streams', '', streamTable(streams), ''] : []),
    ...(t.length ? ['## Targets (issue 4)', '', ...t, ''] : []),
    '## Method',
    '',
    STANDARD_NOTES,
    ...(streams.length ? [STREAM_NOTES] : []),
    '',
    '## Notes',
    '',
    NOTES_BEGIN,
    kept ?? '_(none yet)_',
    NOTES_END,
    '',
  ].join('\n')
}

export function json(sums: Summary[], facts: MachineFacts, o: Options, cells: Cell[], streams: StreamSummary[] = [], streamCells: StreamCell[] = []): string {
  return JSON.stringify(
    {
      facts,
      options: o,
      results: sums.map((s) => ({
        workload: s.workload.id,
        engine: s.engine,
        metric: s.workload.metric,
        ...(s.skipped !== undefined ? { skipped: s.skipped } : { median: s.value, min: s.min, max: s.max, p50Us: s.p50, p99Us: s.p99, cpuPct: s.cpuPct, stealPct: Number.isFinite(s.stealPct) ? s.stealPct : null, ratioToFioIoUring: Number.isFinite(s.ratio) ? s.ratio : null }),
        runs: cells.find((c) => c.workload.id === s.workload.id && c.engine === s.engine)?.runs ?? [],
      })),
      streams: streams.map((s) => ({
        workload: s.workload.id,
        engine: s.engine,
        ...(s.skipped !== undefined ? { skipped: s.skipped } : { medianMBps: s.mbps, min: s.min, max: s.max, residentPct: Number.isFinite(s.residentPct) ? s.residentPct : null, ratioToFioIoUring: Number.isFinite(s.ratio) ? s.ratio : null }),
        runs: streamCells.find((c) => c.workload.id === s.workload.id && c.engine === s.engine)?.runs ?? [],
      })),
    },
    null,
    2,
  )
}

// ---------------------------------------------------------------------------------------------
// Chart: one group of horizontal bars per workload, bar length = fraction of fio io_uring (or of
// the best engine when fio did not run), labelled with the absolute figure.

const COLORS: Record<EngineId, string> = {
  'fio-io_uring': '#4c566a',
  'fio-libaio': '#8f9bb3',
  'node-fs': '#e0a030',
  'node-fs-direct': '#c77c2e',
  odirect: '#2e86c1',
  'odirect-batch': '#1a5276',
  'odirect-registered': '#48c9b0',
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

export function svgChart(sums: Summary[], facts: MachineFacts): string {
  const shown = sums.filter((s) => s.skipped === undefined && Number.isFinite(s.value))
  const workloads = [...new Map(shown.map((s) => [s.workload.id, s.workload])).values()]
  const engines = [...new Set(shown.map((s) => s.engine))]
  const barH = 16
  const gap = 3
  const groupGap = 22
  const left = 230
  const plotW = 520
  const right = 150
  const top = 70
  let y = top
  const parts: string[] = []
  let maxRatio = 1
  const rel = new Map<Summary, number>()
  for (const w of workloads) {
    const group = shown.filter((s) => s.workload.id === w.id)
    const ref = group.find((s) => s.engine === 'fio-io_uring')?.value ?? Math.max(...group.map((s) => s.value))
    for (const s of group) {
      const r = s.value / ref
      rel.set(s, r)
      maxRatio = Math.max(maxRatio, r)
    }
  }
  const scaleMax = Math.ceil(maxRatio * 4) / 4
  const x = (r: number): number => left + (r / scaleMax) * plotW
  for (const w of workloads) {
    const group = engines.map((e) => shown.find((s) => s.workload.id === w.id && s.engine === e)).filter((s): s is Summary => s !== undefined)
    const h = group.length * (barH + gap)
    parts.push(`<text x="${left - 10}" y="${y + h / 2}" text-anchor="end" dominant-baseline="middle" font-weight="bold" font-size="13">${esc(w.label)}</text>`)
    for (const s of group) {
      const r = rel.get(s) ?? 0
      parts.push(`<rect x="${left}" y="${y}" width="${Math.max(1, x(r) - left)}" height="${barH}" fill="${COLORS[s.engine]}"/>`)
      parts.push(`<text x="${x(r) + 5}" y="${y + barH / 2}" dominant-baseline="middle" font-size="11">${esc(fmtValue(s.workload, s.value))}${Number.isFinite(s.ratio) ? ` (${s.ratio.toFixed(2)}×)` : ''}</text>`)
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
  const legend = engines.map((e, i) => {
    const lx = left + (i % 3) * 200 - 60
    const ly = legendY + Math.floor(i / 3) * 18
    return `<rect x="${lx}" y="${ly}" width="12" height="12" fill="${COLORS[e]}"/><text x="${lx + 17}" y="${ly + 10}" font-size="12">${esc(engineLabel(e))}</text>`
  })
  const height = legendY + Math.ceil(engines.length / 3) * 18 + 14
  const width = left + plotW + right
  const title = 'odirect vs fio vs node:fs — throughput relative to fio io_uring (median)'
  const sub = `${facts.kernel}, ${facts.cpus} CPUs, ${facts.fsType}, ${facts.date.slice(0, 10)} — shared machine, figures are noisy`
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
// Streams: one sequential pass per run; MB/s, ratio to fio io_uring, % of the file left in the
// page cache.

export interface StreamSummary {
  workload: StreamWorkload
  engine: StreamEngineId
  skipped?: string
  mbps: number
  min: number
  max: number
  residentPct: number
  ratio: number
}

export function summarizeStreams(cells: StreamCell[]): StreamSummary[] {
  const out: StreamSummary[] = cells.map((c) => {
    const v = c.runs.map((r) => r.mbps)
    return {
      workload: c.workload,
      engine: c.engine,
      ...(c.skipped !== undefined && c.runs.length === 0 ? { skipped: c.skipped } : {}),
      mbps: median(v),
      min: v.length ? Math.min(...v) : NaN,
      max: v.length ? Math.max(...v) : NaN,
      residentPct: median(c.runs.map((r) => r.residentPct)),
      ratio: NaN,
    }
  })
  for (const s of out) {
    const ref = out.find((x) => x.workload.id === s.workload.id && x.engine === 'fio-io_uring')
    if (ref && Number.isFinite(ref.mbps) && ref.mbps > 0) s.ratio = s.mbps / ref.mbps
  }
  return out
}

export function streamTable(sums: StreamSummary[]): string {
  const rows = ['| Workload | Engine | MB/s (median) | Runs min–max | vs fio io_uring | % of file resident after |', '|---|---|---:|---:|---:|---:|']
  let lastW = ''
  for (const s of sums) {
    const wl = s.workload.id === lastW ? '' : s.workload.label
    lastW = s.workload.id
    const label = streamEngineLabel(s.workload, s.engine)
    if (s.skipped !== undefined) {
      rows.push(`| ${wl} | ${label} | skipped: ${s.skipped} | | | |`)
      continue
    }
    const spread = s.min === s.max ? '' : `${num(s.min)}–${num(s.max)}`
    rows.push(`| ${wl} | ${label} | **${num(s.mbps)}** | ${spread} | ${fmtRatio(s.ratio)} | ${Number.isFinite(s.residentPct) ? `${num(s.residentPct, 1)} %` : '–'} |`)
  }
  return rows.join('\n')
}

const STREAM_NOTES = `- Streams: one whole pass per run over the first N bytes of the test file (reads) or over a
  scratch file of N bytes beside it, fully written beforehand, overwritten in place (writes), N as
  in the workload label. MB/s is 10^6 bytes over the time from creating the stream to its end
  ('end' for reads; for writes, after odirect's fdatasync on 'finish', or node:fs's final
  \`fsync\`). The page cache is emptied before every run (drop_caches when root, else
  posix_fadvise DONTNEED on the file). "% of file resident after" is \`fincore --bytes\` of the
  file after the run, over N. fio: \`--rw=read\`/\`write\`, 1 MiB blocks, iodepth 4, the same
  io_uring options as above, \`--io_size=N\`, no time limit; fio's write figure has no final
  flush (no \`--end_fsync\`), while odirect's (fdatasync) and node:fs's (fsync) do.`
