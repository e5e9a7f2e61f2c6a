// Smoke test of `odirect bench --quick --json`: the report is well-formed and has every row (each
// workload × engine that applies, disk and tmpfs, the streams, issue 10's targets), with a figure
// or a reason it was skipped. No timing assertions: the figures of a quick run mean nothing.
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { isRoot } from './helpers/fixtures'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const CLI = path.join(root, 'dist', 'cli.js')
const req = createRequire(import.meta.url)
const harness = req(path.join(root, 'dist', 'bench', 'harness.js')) as typeof import('../bench/harness')
const huge = req(path.join(root, 'dist', 'bench', 'hugepages.js')) as typeof import('../bench/hugepages')
const reportLib = req(path.join(root, 'dist', 'bench', 'report.js')) as typeof import('../bench/report')

interface Row {
  workload: string
  place: string
  engine: string
  skipped?: string
  median?: number
  p50Us?: number | null
  cpuUsPerOp?: number | null
  ratioToFio?: number | null
  fioReference?: string
  ratioToFioIoUring?: number | null
  path?: string
  pinned?: string
  runtime?: string
  threadCpuUsPerOp?: Record<string, number>
}

interface Report {
  facts: { kernel: string; enginePath: string }
  options: { tmpfs?: { file?: string; skipped?: string }; runtimes?: Record<string, string>; hugePages?: string }
  results: Row[]
  streams: { workload: string; engine: string; variant?: string; skipped?: string; medianMBps?: number; ratioToFio?: number | null; fioReference?: string; runs?: unknown[] }[]
  targets: { name: string; goal: string; figure: string; met: boolean | null }[]
}

/** What fio's huge-page rows change on the machine: the pool size and the hugetlbfs mounts. */
type HugeState = { nr: number; mounts: string[] }
const hugeState = (): HugeState => ({ nr: huge.readNrHugePages(), mounts: huge.hugetlbfsMounts() })
const ours = (m: string): boolean => path.basename(m).startsWith('odirect-bench-huge-')

/**
 * A bench run left huge pages as it found them: none of its hugetlbfs mounts remain, and the pool
 * has its old size. The pool is machine-wide: when another process started or stopped using a
 * hugetlbfs meanwhile (its mount came or went), its size says nothing about the bench, so it is
 * compared only when the other mounts are the same as before.
 */
function restored(t: import('ava').ExecutionContext, before: HugeState): void {
  const after = hugeState()
  t.deepEqual(after.mounts.filter(ours), before.mounts.filter(ours), 'no hugetlbfs of the bench left mounted')
  const others = (s: HugeState): string => s.mounts.filter((m) => !ours(m)).join(' ')
  if (others(after) === others(before)) t.is(after.nr, before.nr, 'nr_hugepages as found')
  else t.log(`another process's hugetlbfs came or went during the run (${others(before) || 'none'} -> ${others(after) || 'none'}): nr_hugepages not compared`)
}

function bench(args: string[], env: NodeJS.ProcessEnv = process.env): { report: Report; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'bench', ...args], { encoding: 'utf8', env, timeout: 170_000, maxBuffer: 64 << 20 })
  if (r.status !== 0) throw new Error(`bench exited ${r.status ?? r.signal}: ${r.error?.message ?? ''}\n${r.stderr}`)
  return { report: JSON.parse(r.stdout) as Report, stderr: r.stderr }
}

const fioInstalled = spawnSync('fio', ['--version']).status === 0

test('bench report: every ratio pairs the two rows by round (median of per-round ratios), not the ratio of two medians', (t) => {
  // Three rounds of 1 s, the machine's speed differing between them for every row. Per round,
  // registered buffers did 1.10x, 1.10x, 0.80x what per op did: paired, 1.10x; the medians (152
  // vs 190, from different rounds) would say 0.80x.
  const w = harness.tmpfsWorkloads(4096, 64).find((x) => x.write)
  if (w === undefined) return t.fail('no tmpfs random-write workload at QD 64')
  const run = (ops: number, round: number | undefined): import('../bench/harness').RunResult => ({ ops, bytes: ops * 4096, seconds: 1, p50: 10, p99: 20, cpuPct: 100, cpuUsPerOp: 1e6 / ops, round })
  const cell = (engine: import('../bench/harness').EngineId, ops: number[], rounds: (number | undefined)[]): import('../bench/report').Cell => ({ workload: w, engine, runs: ops.map((o, i) => run(o, rounds[i])) })
  const find = (ts: import('../bench/report').Target[]): import('../bench/report').Target | undefined => ts.find((x) => x.name.includes('write') && x.name.includes('registered buffers vs odirect per op'))
  const perOp = [300, 100, 190]
  const reg = [330, 110, 152]
  const sums = reportLib.summarize([cell('fio-io_uring', [400, 150, 200], [0, 1, 2]), cell('odirect', perOp, [0, 1, 2]), cell('odirect-registered', reg, [0, 1, 2])])
  const target = find(reportLib.targets(sums))
  t.regex(target?.figure ?? '', /^1\.100× \(median of 3 paired rounds/, target?.figure)
  t.true(target?.met)
  // The "vs best fio" column is paired the same way: odirect per op / fio per round 0.75, 0.667, 0.95.
  t.is(sums.find((s) => s.engine === 'odirect')?.ratio.toFixed(4), (0.75).toFixed(4))
  // Runs whose rounds do not meet are not paired; runs without rounds (an old report): the medians.
  t.is(reportLib.pairedRatio([{ round: 0 }, { round: 2 }], [{ round: 1 }, { round: 2 }], () => 3, () => 2).rounds, 1)
  const old = reportLib.summarize([cell('odirect', perOp, [undefined, undefined, undefined]), cell('odirect-registered', reg, [undefined, undefined, undefined])])
  t.regex(find(reportLib.targets(old))?.figure ?? '', /^0\.800× \(152 IOPS vs 190 IOPS\)/)
})

// Serial: the runs that reserve huge pages do not overlap (each restores the pool it found).
test.serial('bench --quick --json: every workload × engine row, streams and targets, each with a figure or a reason', (t) => {
  t.timeout(180_000)
  const state = hugeState()
  const { report } = bench(['--quick', '--json'])
  restored(t, state)
  t.is(typeof report.facts.kernel, 'string')
  t.is(typeof report.facts.enginePath, 'string')

  const tmpfsRan = typeof report.options.tmpfs?.file === 'string'
  if (!tmpfsRan) t.regex(report.options.tmpfs?.skipped ?? '', /\S/, 'the tmpfs rows say why they did not run')
  const workloads = [...harness.standardWorkloads(), ...(tmpfsRan ? harness.tmpfsWorkloads() : [])]
  const expected = workloads.flatMap((w) => harness.ENGINES.filter((e) => harness.appliesTo(e.id, w)).map((e) => `${w.id} ${e.id}`))
  t.deepEqual(report.results.map((r) => `${r.workload} ${r.engine}`).sort(), expected.sort())

  for (const r of report.results) {
    const what = `${r.workload} ${r.engine}`
    if (r.skipped !== undefined) {
      t.regex(r.skipped, /\S/, `${what}: a reason`)
      t.false(r.engine === 'odirect' || r.engine === 'odirect-batch' || r.engine === 'odirect-registered', `${what} ran (${r.skipped})`)
      if (r.engine.startsWith('fio') && !fioInstalled) t.regex(r.skipped, /not installed/)
      continue
    }
    t.true(typeof r.median === 'number' && r.median > 0, `${what}: a median`)
    for (const k of ['p50Us', 'cpuUsPerOp', 'ratioToFioIoUring'] as const) t.true(r[k] === null || typeof r[k] === 'number', `${what}: ${k}`)
    if (r.engine.startsWith('odirect')) {
      t.true(typeof r.cpuUsPerOp === 'number' && r.cpuUsPerOp > 0, `${what}: CPU per op`)
      t.is(typeof r.path, 'string', `${what}: the engine path`)
      t.true(typeof r.threadCpuUsPerOp === 'object' && r.threadCpuUsPerOp !== null, `${what}: CPU by thread`)
    }
    if (r.engine === 'fio-io_uring') t.is(r.ratioToFioIoUring, 1)
    if (r.engine === r.fioReference) t.is(r.ratioToFio, 1)
  }
  // Each workload's ratio is to its best fio configuration (one job; not the 2-job limit row).
  for (const w of new Set(report.results.map((r) => r.workload))) {
    const rows = report.results.filter((r) => r.workload === w)
    const peers = rows.filter((r) => harness.FIO_PEERS.includes(r.engine as never) && r.median !== undefined)
    if (peers.length === 0) continue
    const best = peers.reduce((a, b) => ((b.median ?? 0) > (a.median ?? 0) ? b : a))
    for (const r of rows.filter((x) => x.median !== undefined)) {
      t.is(r.fioReference, best.engine, `${w} ${r.engine}: the reference`)
      t.is(r.ratioToFio, (r.median ?? NaN) / (best.median ?? NaN), `${w} ${r.engine}: the ratio`)
    }
  }
  // The huge-page row: on the 1 MiB workloads (and the streams), with a figure, or why not.
  const hugeRows = report.results.filter((r) => r.engine === 'fio-io_uring-huge')
  t.deepEqual(hugeRows.map((r) => r.workload).sort(), ['seqread-1048576-qd4', 'seqwrite-1048576-qd4'])
  if (fioInstalled) t.regex(report.options.hugePages ?? '', /\S/, 'the report says what fio had')
  if (fioInstalled && isRoot()) for (const r of hugeRows) t.true((r.median ?? 0) > 0, `${r.workload}: ${r.skipped}`)

  const streams = report.streams.map((s) => `${s.workload} ${s.engine}`)
  for (const s of ['stream-read odirect-stream', 'stream-read fio-io_uring', 'stream-read fio-io_uring-huge', 'stream-write odirect-stream', 'stream-write fio-io_uring', 'stream-write fio-io_uring-huge']) t.true(streams.includes(s), s)
  for (const s of report.streams) t.true(s.skipped !== undefined ? /\S/.test(s.skipped) : typeof s.medianMBps === 'number', `${s.workload} ${s.engine}`)

  t.true(report.targets.length >= 15)
  for (const x of report.targets) {
    t.regex(x.goal, /^[≤≥] \d/)
    t.true(x.met === null || typeof x.met === 'boolean')
    if (x.met === null) t.regex(x.figure, /^not measured/)
  }
  t.true(report.targets.some((x) => x.name.includes('tmpfs')))
})

test('bench without fio and without tmpfs: the rows are marked, not missing; an A/B variant row', (t) => {
  const args = ['--quick', '--json', '--workloads', 'randread-4096-qd1', '--engines', 'fio-io_uring,odirect', '--tmpfs', 'off', '--runtimes', 'off', '--variant', 'aio={"open":{"backend":"aio"}}', '--variant', 'typed={"mode":"typed"}']
  const { report } = bench(args, { ...process.env, PATH: '/nonexistent' })
  const variant = report.results.find((r) => r.engine === 'variant:aio')
  t.true((variant?.median ?? 0) > 0 || /\S/.test(variant?.skipped ?? ''), 'the variant row has a figure or a reason')
  if (variant?.median !== undefined) t.regex(variant.path ?? '', /aio/)
  // The batch forms are variants too (the A/B tool of the typed and lanes rows).
  const typed = report.results.find((r) => r.engine === 'variant:typed' && r.place === 'disk')
  t.true((typed?.median ?? 0) > 0, typed?.skipped)
  const fio = report.results.find((r) => r.engine === 'fio-io_uring' && r.place === 'disk')
  t.regex(fio?.skipped ?? '', /fio is not installed/)
  const od = report.results.find((r) => r.engine === 'odirect' && r.place === 'disk')
  t.true((od?.median ?? 0) > 0)
  t.is(od?.ratioToFioIoUring, null)
  t.is(od?.ratioToFio, null)
  t.regex(report.options.tmpfs?.skipped ?? '', /--tmpfs off/)
  const lat = report.targets.find((x) => x.name.includes('QD 1, disk'))
  t.is(lat?.met, null)
  t.regex(lat?.figure ?? '', /fio is not installed/)
})

const tasksetInstalled = spawnSync('taskset', ['-c', '0', 'true']).status === 0

test('bench QD 1 rows: fio, odirect per op and odirect registered buffers (in a child) run pinned to one CPU, as their own processes report; QD 64 rows and --pin-cpu off do not', (t) => {
  if (!tasksetInstalled) return t.fail('taskset (util-linux) is missing: the QD 1 rows cannot be pinned')
  t.timeout(150_000)
  const cpus = harness.allowedCpus() ?? []
  const cpu = cpus[cpus.length - 1]
  const base = ['--quick', '--json', '--workloads', 'tmpfs-randread-4096', '--engines', 'fio-io_uring,odirect,odirect-registered', '--runtimes', 'off', '--tmpfs', '/dev/shm']
  const { report } = bench([...base, '--pin-cpu', String(cpu)])
  const row = (engine: string, qd: number): Row | undefined => report.results.find((r) => r.engine === engine && r.workload.endsWith(`-qd${qd}`))
  const od1 = row('odirect', 1)
  t.true((od1?.median ?? 0) > 0, od1?.skipped)
  // Set only from what the child read in its own /proc/self/status (harness.ts confirmPin).
  t.is(od1?.pinned, `CPU ${cpu}`)
  t.is(row('odirect', 64)?.pinned, undefined, 'QD 64 runs where the scheduler puts it')
  // Registered buffers at QD 1 as per op (a like-for-like pair), labelled as the bench's Node.
  const reg1 = row('odirect-registered', 1)
  t.true((reg1?.median ?? 0) > 0, reg1?.skipped)
  t.is(reg1?.pinned, `CPU ${cpu}`)
  t.is(reg1?.runtime, undefined)
  t.is(row('odirect-registered', 64)?.pinned, undefined)
  if (fioInstalled) {
    t.is(row('fio-io_uring', 1)?.pinned, `CPU ${cpu}`)
    t.is(row('fio-io_uring', 64)?.pinned, undefined)
    t.regex(report.targets.find((x) => x.name.includes('QD 1, tmpfs'))?.figure ?? '', new RegExp(`both pinned to CPU ${cpu}`))
  } else t.log('fio is not installed: only the odirect rows checked')
  const off = bench([...base, '--workloads', 'tmpfs-randread-4096-qd1', '--pin-cpu', 'off']).report
  t.true(off.results.length > 0 && off.results.every((r) => r.pinned === undefined), 'unpinned with --pin-cpu off')
})

test('bench --variant on the stream workloads: a Node and a web stream row per variant, run with its env and stream options', (t) => {
  t.timeout(120_000)
  // 'nt0' runs (the streaming copy off); 'bad' passes writeBehind 0, which the stream refuses: its rows fail with that reason, so the options reached the child.
  const args = ['--quick', '--json', '--workloads', 'stream-write', '--tmpfs', 'off', '--runtimes', 'off', '--variant', 'nt0={"env":{"ODIRECT_STREAM_NTCOPY":"0"}}', '--variant', 'bad={"env":{"ODIRECT_BENCH_STREAM_OPTIONS":"{\\"writeBehind\\":0}"}}']
  const { report } = bench(args, { ...process.env, PATH: '/nonexistent' })
  const rows = (v: string): Report['streams'] => report.streams.filter((s) => s.variant === v)
  t.deepEqual(rows('nt0').map((s) => s.engine).sort(), ['odirect-stream', 'odirect-web'])
  for (const s of rows('nt0')) t.true((s.medianMBps ?? 0) > 0 && s.runs?.length === 1, `${s.engine}: ${s.skipped}`)
  t.deepEqual(rows('bad').map((s) => s.engine).sort(), ['odirect-stream', 'odirect-web'])
  for (const s of rows('bad')) t.regex(s.skipped ?? '', /writeBehind|writes in flight/, s.engine)
  // The plain rows are still there, without a variant.
  t.true(report.streams.some((s) => s.engine === 'odirect-stream' && s.variant === undefined && (s.medianMBps ?? 0) > 0))
})

test('bench --durable --json: one row per backend × durable-write primitive, each with a rate and a ratio', (t) => {
  t.timeout(120_000)
  const r = spawnSync(process.execPath, [CLI, 'bench', '--durable', '--json', '--runs', '1', '--duration', '0.1', '/var/tmp'], { encoding: 'utf8', timeout: 110_000 })
  t.is(r.status, 0, r.stderr)
  const rows = JSON.parse(r.stdout) as Array<{ backend: string; mode: string; opsPerSec: number; p50us: number; p99us: number; ratio: number }>
  t.true(rows.length >= 3 && rows.length % 3 === 0)
  for (const row of rows) {
    t.true(['write+datasync', 'dsync', 'writeMany+datasync'].includes(row.mode), row.mode)
    t.true(row.opsPerSec > 0 && row.p50us > 0 && row.p99us >= row.p50us && row.ratio > 0, JSON.stringify(row))
  }
  t.deepEqual(rows.filter((x) => x.mode === 'write+datasync').map((x) => x.ratio), rows.filter((x) => x.mode === 'write+datasync').map(() => 1))
})

test('bench --scaling 2 --json: odirect with 1 and 2 worker_threads against fio --numjobs 1 and 2, each with IOPS and a ratio', (t) => {
  t.timeout(120_000)
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : '/var/tmp', 'odirect-scaling-'))
  try {
    const r = spawnSync(process.execPath, [CLI, 'bench', '--scaling', '2', '--json', '--runs', '1', '--duration', '0.2', '--size', '16M', dir], { encoding: 'utf8', timeout: 110_000 })
    t.is(r.status, 0, r.stderr)
    const rows = JSON.parse(r.stdout) as Array<{ threads: number; engine: string; iops?: number; ratio?: number; skipped?: string }>
    t.deepEqual(
      rows.map((x) => `${x.threads} ${x.engine}`),
      ['1 odirect-workers', '1 fio-io_uring', '2 odirect-workers', '2 fio-io_uring'],
    )
    for (const row of rows) {
      if (row.engine === 'odirect-workers') t.true((row.iops ?? 0) > 0, JSON.stringify(row))
      else t.true((row.iops ?? 0) > 0 || /\S/.test(row.skipped ?? ''), JSON.stringify(row))
      if (row.engine === 'odirect-workers' && rows.find((x) => x.threads === row.threads && x.engine === 'fio-io_uring')?.iops !== undefined) t.true((row.ratio ?? 0) > 0, JSON.stringify(row))
    }
    // The scratch file is removed.
    t.deepEqual(fs.readdirSync(dir), [])
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

// fio's huge-page rows change the machine for the run (nr_hugepages, a hugetlbfs mount): whatever
// happens, they leave both exactly as they found them.
const hugetlbfs = fs.existsSync('/proc/filesystems') && /\thugetlbfs$/m.test(fs.readFileSync('/proc/filesystems', 'utf8'))
const hugeWhy = !isRoot() ? 'needs root (nr_hugepages, mount)' : !hugetlbfs ? 'this kernel has no hugetlbfs' : undefined
const hugeTest = hugeWhy === undefined ? test.serial : test.skip
const fioPath = spawnSync('sh', ['-c', 'command -v fio'], { encoding: 'utf8' }).stdout.trim()
const hugeFioTest = hugeWhy === undefined && fioInstalled ? test.serial : test.skip

test('huge pages for fio: reserving them without root says why', (t) => {
  if (isRoot()) {
    // As root the reason is another: run the check in a child without root.
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', `process.stdout.write(String(require(${JSON.stringify(path.join(root, 'dist', 'bench', 'hugepages.js'))}).reserveHugePages(1)))`], { encoding: 'utf8' })
    t.is(r.status, 0, r.error?.message ?? r.stderr)
    t.regex(r.stdout, /needs root/)
  } else {
    t.regex(String(huge.reserveHugePages(1)), /needs root/)
  }
})

hugeTest(`huge pages for fio: reserved and mounted for the run, then nr_hugepages and the mounts exactly as found${hugeWhy ? ` (skipped: ${hugeWhy})` : ''}`, (t) => {
  const before = hugeState()
  const h = huge.reserveHugePages(2)
  if (typeof h === 'string') return void t.fail(h)
  try {
    t.is(h.pages, 3, 'two pages and one of slack')
    t.is(h.before, before.nr)
    t.is(huge.readNrHugePages(), before.nr + 3)
    t.deepEqual(huge.hugetlbfsMounts(), [...before.mounts, h.dir])
    t.is(fs.statfsSync(h.dir).bsize, h.pageSize, 'the mount is a hugetlbfs of that page size')
    // The mount holds the pages for fio: a file there gets them (what fio's --mem=mmaphuge:FILE does).
    t.regex(h.fioArgs()[0], new RegExp(`^--mem=mmaphuge:${h.dir}/`))
  } finally {
    h.release()
  }
  h.release()
  t.deepEqual(hugeState(), before)
  t.false(fs.existsSync(h.dir))
})

/**
 * A `fio` for the bench's PATH: it records what it saw (nr_hugepages, hugetlbfs mounts, its --mem
 * argument) in `log`, then `onHuge` when called with --mem=mmaphuge (a shell snippet), else runs
 * the real fio.
 */
function fioWrapper(dir: string, log: string, onHuge: string): string {
  const bin = path.join(dir, 'bin')
  fs.mkdirSync(bin)
  const script = `#!/bin/sh
case "$*" in
*--mem=mmaphuge:*)
  mem=$(printf '%s\\n' "$@" | grep -- '--mem=mmaphuge:')
  echo "nr=$(cat /proc/sys/vm/nr_hugepages) mem=$mem mounts=$(awk '$0 ~ / - hugetlbfs / { print $5 }' /proc/self/mountinfo | tr '\\n' ' ')" >> ${JSON.stringify(log)}
  ${onHuge}
  ;;
esac
exec ${JSON.stringify(fioPath)} "$@"
`
  fs.writeFileSync(path.join(bin, 'fio'), script, { mode: 0o755 })
  return bin
}

const seqHugeArgs = ['--quick', '--json', '--workloads', 'seqread', '--engines', 'fio-io_uring,fio-io_uring-huge', '--tmpfs', 'off', '--runtimes', 'off']

hugeFioTest(`bench: fio failing in its huge-page row leaves nr_hugepages and the mounts as found; the row says why, fio's other rows run${hugeWhy ? ` (skipped: ${hugeWhy})` : ''}`, (t) => {
  t.timeout(120_000)
  const dir = fs.mkdtempSync(path.join('/var/tmp', 'odirect-bench-hugefail-'))
  try {
    const log = path.join(dir, 'fio.log')
    const bin = fioWrapper(dir, log, 'echo "fio: stub failure" >&2; exit 1')
    const before = hugeState()
    const { report } = bench([...seqHugeArgs, dir], { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` })
    restored(t, before)
    // While fio ran, the pool was larger and its --mem file was on a hugetlbfs mounted for the run.
    const seen = fs.readFileSync(log, 'utf8').trim().split('\n')
    t.true(seen.length >= 1)
    for (const line of seen) {
      const m = /^nr=(\d+) mem=--mem=mmaphuge:(\S+) mounts=(.*)$/.exec(line)
      t.truthy(m, line)
      t.true(Number(m![1]) > before.nr, line)
      t.true(m![3].split(' ').includes(path.dirname(m![2])), line)
      t.true(ours(path.dirname(m![2])), line)
      t.false(fs.existsSync(path.dirname(m![2])), 'the mount point removed')
    }
    const row = report.results.find((r) => r.engine === 'fio-io_uring-huge')
    t.regex(row?.skipped ?? '', /stub failure/)
    const plain = report.results.find((r) => r.engine === 'fio-io_uring')
    t.true((plain?.median ?? 0) > 0, plain?.skipped)
    t.is(plain?.fioReference, 'fio-io_uring', 'the reference is the fio row that ran')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

hugeFioTest(`bench: Ctrl-C (SIGINT) while fio runs with huge pages leaves nr_hugepages and the mounts as found${hugeWhy ? ` (skipped: ${hugeWhy})` : ''}`, (t) => {
  t.timeout(120_000)
  const dir = fs.mkdtempSync(path.join('/var/tmp', 'odirect-bench-hugeint-'))
  try {
    const log = path.join(dir, 'fio.log')
    // fio runs under `sh -c` (which reports its CPU): SIGINT to the bench, sh's parent.
    const bin = fioWrapper(dir, log, `kill -INT "$(awk '{ print $4 }' /proc/$PPID/stat)"`)
    const before = hugeState()
    const r = spawnSync(process.execPath, [CLI, 'bench', ...seqHugeArgs, dir], { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` }, timeout: 110_000 })
    t.is(r.signal, 'SIGINT', `the bench ends by the signal: ${r.status} ${r.stderr}`)
    const seen = /^nr=\d+ mem=--mem=mmaphuge:(\S+) /.exec(fs.readFileSync(log, 'utf8'))
    t.truthy(seen, 'the signal came while fio had huge pages')
    restored(t, before)
    t.false(fs.existsSync(path.dirname(seen![1])), 'the mount point removed')
    t.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('odirect-bench-')), [], 'the test file removed')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
