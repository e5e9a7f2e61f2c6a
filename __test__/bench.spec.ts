// Smoke test of `odirect bench --quick --json`: the report is well-formed and has every row (each
// workload × engine that applies, disk and tmpfs, the streams, issue 10's targets), with a figure
// or a reason it was skipped. No timing assertions: the figures of a quick run mean nothing.
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const CLI = path.join(root, 'dist', 'cli.js')
const harness = createRequire(import.meta.url)(path.join(root, 'dist', 'bench', 'harness.js')) as typeof import('../bench/harness')

interface Row {
  workload: string
  place: string
  engine: string
  skipped?: string
  median?: number
  p50Us?: number | null
  cpuUsPerOp?: number | null
  ratioToFioIoUring?: number | null
  path?: string
  threadCpuUsPerOp?: Record<string, number>
}

interface Report {
  facts: { kernel: string; enginePath: string }
  options: { tmpfs?: { file?: string; skipped?: string }; runtimes?: Record<string, string> }
  results: Row[]
  streams: { workload: string; engine: string; skipped?: string; medianMBps?: number }[]
  targets: { name: string; goal: string; figure: string; met: boolean | null }[]
}

function bench(args: string[], env: NodeJS.ProcessEnv = process.env): { report: Report; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'bench', ...args], { encoding: 'utf8', env, timeout: 170_000, maxBuffer: 64 << 20 })
  if (r.status !== 0) throw new Error(`bench exited ${r.status ?? r.signal}: ${r.error?.message ?? ''}\n${r.stderr}`)
  return { report: JSON.parse(r.stdout) as Report, stderr: r.stderr }
}

const fioInstalled = spawnSync('fio', ['--version']).status === 0

test('bench --quick --json: every workload × engine row, streams and targets, each with a figure or a reason', (t) => {
  t.timeout(180_000)
  const { report } = bench(['--quick', '--json'])
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
  }

  const streams = report.streams.map((s) => `${s.workload} ${s.engine}`)
  for (const s of ['stream-read odirect-stream', 'stream-read fio-io_uring', 'stream-write odirect-stream', 'stream-write fio-io_uring']) t.true(streams.includes(s), s)
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
  const args = ['--quick', '--json', '--workloads', 'randread-4096-qd1', '--engines', 'fio-io_uring,odirect', '--tmpfs', 'off', '--runtimes', 'off', '--variant', 'aio={"open":{"backend":"aio"}}']
  const { report } = bench(args, { ...process.env, PATH: '/nonexistent' })
  const variant = report.results.find((r) => r.engine === 'variant:aio')
  t.true((variant?.median ?? 0) > 0 || /\S/.test(variant?.skipped ?? ''), 'the variant row has a figure or a reason')
  if (variant?.median !== undefined) t.regex(variant.path ?? '', /aio/)
  const fio = report.results.find((r) => r.engine === 'fio-io_uring' && r.place === 'disk')
  t.regex(fio?.skipped ?? '', /fio is not installed/)
  const od = report.results.find((r) => r.engine === 'odirect' && r.place === 'disk')
  t.true((od?.median ?? 0) > 0)
  t.is(od?.ratioToFioIoUring, null)
  t.regex(report.options.tmpfs?.skipped ?? '', /--tmpfs off/)
  const lat = report.targets.find((x) => x.name.includes('QD 1, disk'))
  t.is(lat?.met, null)
  t.regex(lat?.figure ?? '', /fio is not installed/)
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
