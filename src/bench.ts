// `odirect bench [PATH] [options]`: odirect against fio and node:fs on one file, in one run.
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { open, probe } from '../index'
import { type BenchContext, ENGINES, type EngineId, engineLabel, findFio, fmtSize, machineFacts, prepareFile, runEngine, standardWorkloads, type Workload } from './bench/harness'
import { type Cell, figure, fmtValue, json, markdown, type Options, summarize, summarizeStreams, streamTable, svgChart, table, targets, writeChart } from './bench/report'
import { hasFincore, prepareScratch, runStream, STREAM_CHUNK, type StreamCell, streamEngineLabel, streamWorkloads, type StreamWorkload } from './bench/streams'

const HELP = `usage: odirect bench [PATH] [options]

Compares fio (io_uring, libaio), node:fs and odirect on one file: 4 KiB random read and write at
QD 1 and 64 (IOPS, p50/p99 latency), 1 MiB sequential read and write at QD 4 (MB/s); then one
whole sequential pass through odirect's createReadStream/createWriteStream, fs.createReadStream/
createWriteStream and fio (MB/s and % of the file left in the page cache, workloads 'stream-read',
'stream-write'; the write pass uses a scratch file beside the test file; short: at most 64 MiB).

PATH          a directory to make a temporary file in (default: os.tmpdir(), or /var/tmp when that
              is tmpfs), or a file to use; an existing file is only read unless --write is given
--size SIZE   file size (default 256M; an existing file's own size)
--bs SIZE     block size of the random workloads (default 4k)
--qd N        the deep queue depth of the random workloads (default 64)
--runs N      runs per workload and engine, the median is reported (default 3; short: 1)
--duration S  seconds per run (default 3; short: 1)
--ops N       a fixed number of ops per run instead of a duration
--engines A,B only these engines: ${ENGINES.map((e) => e.id).join(', ')}
--workloads A,B  only workloads whose id contains one of these (randread, randwrite, seqread, qd64...)
--short       the quick version (also what no arguments at all runs): 1 run of 1 s each,
              without the fio libaio and node:fs O_DIRECT engines
--out FILE    also write a markdown report to FILE and a chart (results.png/.svg) beside it
--json        print JSON instead of the table
--write       allow the write workloads on an existing file (destroys its contents)
--keep        keep the temporary file`

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1 << 10, kb: 1 << 10, kib: 1 << 10, m: 1 << 20, mb: 1 << 20, mib: 1 << 20, g: 1 << 30, gb: 1 << 30, gib: 1 << 30, t: 2 ** 40, tb: 2 ** 40, tib: 2 ** 40 }

export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(s.trim())
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined
  if (!m || unit === undefined) throw new Error(`bad size '${s}' (use e.g. 4k, 1M, 512M, 2G)`)
  return Math.round(Number(m[1]) * unit)
}

interface Args {
  path?: string
  size?: number
  bs: number
  qd: number
  runs?: number
  duration?: number
  ops: number
  engines?: EngineId[]
  workloads?: string[]
  short: boolean
  out?: string
  json: boolean
  write: boolean
  keep: boolean
  help: boolean
}

function parseArgs(argv: string[]): Args {
  const a: Args = { bs: 4096, qd: 64, ops: 0, short: argv.length === 0, json: false, write: false, keep: false, help: false }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const eq = arg.indexOf('=')
    const name = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg
    const value = (): string => {
      if (arg.startsWith('--') && eq > 0) return arg.slice(eq + 1)
      const v = argv[++i]
      if (v === undefined) throw new Error(`${name} needs a value`)
      return v
    }
    const int = (v: string, min: number): number => {
      const n = Number(v)
      if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got '${v}'`)
      return n
    }
    switch (name) {
      case '--size':
        a.size = parseSize(value())
        break
      case '--bs':
        a.bs = parseSize(value())
        break
      case '--qd':
        a.qd = int(value(), 1)
        break
      case '--runs':
        a.runs = int(value(), 1)
        break
      case '--duration': {
        const v = value()
        a.duration = Number(v)
        if (!(a.duration > 0)) throw new Error(`--duration must be a positive number of seconds, got '${v}'`)
        break
      }
      case '--ops':
        a.ops = int(value(), 1)
        break
      case '--engines': {
        const ids = value().split(',').map((s) => s.trim()).filter(Boolean)
        for (const id of ids) if (!ENGINES.some((e) => e.id === id)) throw new Error(`unknown engine '${id}' (known: ${ENGINES.map((e) => e.id).join(', ')})`)
        a.engines = ENGINES.map((e) => e.id).filter((e) => ids.includes(e))
        break
      }
      case '--workloads':
        a.workloads = value().split(',').map((s) => s.trim()).filter(Boolean)
        break
      case '--short':
        a.short = true
        break
      case '--out':
        a.out = value()
        break
      case '--json':
        a.json = true
        break
      case '--write':
        a.write = true
        break
      case '--keep':
        a.keep = true
        break
      case '--help':
      case '-h':
        a.help = true
        break
      default:
        if (arg.startsWith('-')) throw new Error(`unknown option '${arg}'`)
        if (a.path !== undefined) throw new Error(`one PATH only (got '${a.path}' and '${arg}')`)
        a.path = arg
    }
  }
  if (a.bs % 512 !== 0) throw new Error(`--bs must be a multiple of 512, got ${a.bs}`)
  return a
}

async function tempDir(): Promise<string> {
  for (const d of [os.tmpdir(), '/var/tmp']) {
    try {
      const p = await probe(d)
      if (p.direct.works && p.fsType !== 'tmpfs') return d
    } catch {
      // next
    }
  }
  return os.tmpdir()
}

function freeBytes(dir: string): number {
  try {
    const s = fs.statfsSync(dir)
    return s.bavail * s.bsize
  } catch {
    return Infinity
  }
}

export async function benchCommand(argv: string[]): Promise<number> {
  let args: Args
  try {
    args = parseArgs(argv)
  } catch (e) {
    console.error(`odirect bench: ${(e as Error).message}\n\n${HELP}`)
    return 1
  }
  if (args.help) {
    console.log(HELP)
    return 0
  }
  const log = (m: string): void => void process.stderr.write(`${m}\n`)
  const seqBs = 1 << 20

  // The file: a temporary one in a directory, or the one given.
  let file: string
  let temporary = false
  let existing = false
  let size = args.size ?? 256 << 20
  const target = args.path ?? (await tempDir())
  const st = fs.statSync(target, { throwIfNoEntry: false })
  if (st === undefined || st.isDirectory()) {
    const dir = st === undefined ? path.dirname(path.resolve(target)) : target
    file = st === undefined ? path.resolve(target) : path.join(dir, `odirect-bench-${process.pid}.dat`)
    temporary = st !== undefined
    const free = freeBytes(dir)
    if (free < size + (64 << 20)) {
      console.error(`odirect bench: ${dir} has ${fmtSize(Math.floor(free / (1 << 20)) * (1 << 20))} free, not enough for a ${fmtSize(size)} file; pass --size or another PATH`)
      return 1
    }
  } else {
    file = target
    existing = true
    let real = st.size
    if (st.isBlockDevice()) {
      const fh = await open(target, 'r')
      real = (await fh.stat()).size
      await fh.close()
    }
    if (args.size === undefined && real > 0) size = real
    if (real > 0 && size > real) size = real
  }
  const unit = Math.max(seqBs, args.bs)
  size = Math.floor(size / unit) * unit
  if (size < unit * 4) {
    console.error(`odirect bench: the file must hold at least ${fmtSize(unit * 4)} (got ${fmtSize(size)})`)
    return 1
  }

  let workloads: Workload[] = standardWorkloads(args.bs, args.qd, seqBs, 4)
  if (args.workloads) workloads = workloads.filter((w) => args.workloads!.some((f) => w.id.includes(f)))
  let swl: StreamWorkload[] = streamWorkloads(0)
  if (args.workloads) swl = swl.filter((w) => args.workloads!.some((f) => w.id.includes(f)))
  if (existing && !args.write) {
    const dropped = workloads.filter((w) => w.write)
    if (dropped.length) log(`note: ${file} exists: only reading it (pass --write to run the write workloads, which overwrite it)`)
    workloads = workloads.filter((w) => !w.write)
  }
  if (workloads.length === 0 && swl.length === 0) {
    console.error('odirect bench: no workload selected')
    return 1
  }
  const engines: EngineId[] = args.engines ?? ENGINES.map((e) => e.id).filter((e) => !args.short || (e !== 'node-fs-direct' && e !== 'fio-libaio'))

  const opts: Options = {
    size,
    runs: args.runs ?? (args.short ? 1 : 3),
    durationMs: (args.duration ?? (args.short ? 1 : 3)) * 1000,
    ops: args.ops,
    rampMs: args.short ? 100 : 500,
    short: args.short,
    file,
    temporary,
  }
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  const fioPath = findFio()
  const ctx: BenchContext = { path: file, size, limit: { durationMs: opts.durationMs, ops: opts.ops, rampMs: opts.rampMs }, isRoot, fioPath, fioBroken: new Map(), fioFailures: new Map(), log }
  if (!fioPath && engines.some((e) => e.startsWith('fio'))) log('note: fio is not installed (apt-get install fio): the fio rows are skipped and there is no ratio column')
  if (!isRoot) log('note: not root: the page cache is emptied with posix_fadvise(DONTNEED) on the file instead of /proc/sys/vm/drop_caches')

  const cleanup = (): void => {
    if (temporary && !args.keep) fs.rmSync(file, { force: true })
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    cleanup()
    process.kill(process.pid, sig)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    if (!existing || (args.write && st !== undefined && st.isFile() && st.size < size)) {
      log(`preparing ${file} (${fmtSize(size)})...`)
      await prepareFile(file, size)
    }
    const facts = await machineFacts(file, fioPath, isRoot)
    const streamSize = Math.floor(Math.min(size, args.short ? 64 << 20 : size) / STREAM_CHUNK) * STREAM_CHUNK
    const scratch = path.join(path.dirname(file), `odirect-bench-${process.pid}-stream.dat`)
    swl = streamWorkloads(streamSize).filter((w) => swl.some((x) => x.id === w.id))
    const streamCells: StreamCell[] = []
    for (const w of swl) for (const e of w.engines) streamCells.push({ workload: w, engine: e, runs: [] })
    if (swl.some((w) => w.write) && freeBytes(path.dirname(file)) < streamSize + (64 << 20)) {
      for (const c of streamCells) if (c.workload.write) c.skipped = `not enough free space for a ${fmtSize(streamSize)} scratch file`
    }
    if (streamCells.length && !hasFincore()) log('note: fincore (util-linux) is not installed: no page-cache residency figures')
    const cells: Cell[] = []
    for (const w of workloads) for (const e of engines) cells.push({ workload: w, engine: e, runs: [] })
    const total = workloads.length * engines.length * opts.runs
    let done = 0
    const t0 = Date.now()
    for (const w of workloads) {
      for (let r = 0; r < opts.runs; r++) {
        // Alternate the engine order between runs so none always follows the same neighbour.
        const order = engines.map((_, i) => engines[(i + r) % engines.length])
        for (const e of order) {
          const cell = cells.find((c) => c.workload.id === w.id && c.engine === e)!
          done++
          if (cell.skipped !== undefined && !cell.retry) continue
          const out = await runEngine(ctx, e, w)
          if (out.ok) {
            cell.runs.push(out.result)
            log(`[${done}/${total}] ${w.id} ${engineLabel(e)}: ${fmtValue(w, figure(w, out.result))}, p50 ${out.result.p50.toFixed(1)} µs, p99 ${out.result.p99.toFixed(1)} µs`)
          } else {
            cell.skipped = out.skipped
            if (out.transient) cell.retry = true
            log(`[${done}/${total}] ${w.id} ${engineLabel(e)}: ${out.transient ? 'failed' : 'skipped'}: ${out.skipped}`)
          }
        }
      }
    }
    // Streams: one whole pass per run, engines in alternating order.
    const stotal = streamCells.length * opts.runs
    let sdone = 0
    try {
      for (const w of swl) {
        const cellsW = streamCells.filter((c) => c.workload.id === w.id)
        if (w.write && cellsW.every((c) => c.skipped !== undefined)) continue
        if (w.write) {
          log(`preparing ${scratch} (${fmtSize(streamSize)})...`)
          await prepareScratch(scratch, streamSize)
        }
        const target = { file: w.write ? scratch : file, size: streamSize }
        for (let r = 0; r < opts.runs; r++) {
          for (let i = 0; i < cellsW.length; i++) {
            const cell = cellsW[(i + r) % cellsW.length]
            sdone++
            if (cell.skipped !== undefined) continue
            try {
              const out = await runStream(ctx, w, cell.engine, target)
              if (typeof out === 'string') {
                cell.skipped = out
                log(`[${sdone}/${stotal}] ${w.id} ${streamEngineLabel(w, cell.engine)}: skipped: ${out}`)
              } else {
                cell.runs.push(out)
                log(`[${sdone}/${stotal}] ${w.id} ${streamEngineLabel(w, cell.engine)}: ${out.mbps.toFixed(0)} MB/s, ${out.residentPct.toFixed(1)} % resident`)
              }
            } catch (e) {
              cell.skipped = `failed: ${(e as Error).message}`
              log(`[${sdone}/${stotal}] ${w.id} ${streamEngineLabel(w, cell.engine)}: ${cell.skipped}`)
            }
          }
        }
      }
    } finally {
      fs.rmSync(scratch, { force: true })
    }
    const ssums = summarizeStreams(streamCells)
    facts.loadEnd = os.loadavg()
    log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    const sums = summarize(cells)
    if (args.out) {
      const outPath = path.resolve(args.out)
      fs.mkdirSync(path.dirname(outPath), { recursive: true })
      const chart = writeChart(path.dirname(outPath), svgChart(sums, facts), log)
      fs.writeFileSync(outPath, markdown(sums, facts, opts, chart, outPath, ssums))
      log(`wrote ${outPath} and ${path.join(path.dirname(outPath), chart)}`)
    }
    if (args.json) {
      console.log(json(sums, facts, opts, cells, ssums, streamCells))
    } else {
      const t = targets(sums)
      console.log(
        [
          `odirect bench: ${file} (${fmtSize(size)}, ${facts.fsType}), ${facts.kernel}, ${facts.cpus} CPUs, ${opts.runs} run(s) × ${opts.ops > 0 ? `${opts.ops} ops` : `${opts.durationMs / 1000} s`}${opts.short ? ' (short)' : ''}`,
          '',
          ...(sums.length ? [table(sums)] : []),
          ...(ssums.length ? ['', 'Streams:', '', streamTable(ssums)] : []),
          ...(t.length ? ['', ...t] : []),
          '',
          'Figures on a shared or small machine are noisy; compare engines within one run.',
        ].join('\n'),
      )
    }
    return 0
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    cleanup()
  }
}
