// `odirect bench [PATH] [options]`: odirect against fio and node:fs on one file, in one run.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { open, probe } from '../index'
import {
  allowedCpus,
  appliesTo,
  type BenchContext,
  cleanupChildren,
  defaultPinCpu,
  ENGINES,
  type EngineId,
  engineLabel,
  findFio,
  fmtSize,
  machineFacts,
  prepareFile,
  RUNTIME_ENGINES,
  type RuntimeName,
  RUN_MODES,
  runEngine,
  standardWorkloads,
  tmpfsWorkloads,
  type Variant,
  type Workload,
} from './harness'
import { type Cell, figure, fmtValue, json, markdown, type Options, type ScalingResult, streamTable, summarize, summarizeStreams, svgChart, table, targetLines, targets, writeChart } from './report'
import { durableBench, durableTable } from './durable'
import { fioHugePages, hugePageSize, readNrHugePages, reserveHugePages } from './hugepages'
import { scalingBench, scalingTable } from './scaling'
import { hasFincore, prepareScratch, runStream, STREAM_CHUNK, STREAM_DEPTH, STREAM_VARIANT_ENGINES, type StreamCell, streamRowLabel, streamWorkloads, type StreamWorkload } from './streams'

const HELP = `usage: odirect bench [PATH] [options]

Compares fio (io_uring, libaio), node:fs and odirect on one file: 4 KiB random read and write at
QD 1 and 64 (IOPS, p50/p99 latency, CPU µs per op), 1 MiB sequential read and write at QD 4 (MB/s);
fio with huge-page buffers too on the 1 MiB rows and streams (as root: huge pages are reserved
and a hugetlbfs mounted for the run, both undone after); fio with 2 jobs as the device's limit;
odirect per op, readMany/writeMany and registered buffers; the per-op loop under Bun and Deno
too. Then the software path: the random workloads on a file in a tmpfs (/dev/shm, or one mounted
under the temporary directory when root; O_DIRECT works on tmpfs since Linux 6.6). Then one
whole sequential pass through odirect's createReadStream/createWriteStream, node:fs streams and
fio (MB/s, % of the file left in the page cache). Engines are interleaved within each run;
medians over runs; ratios to the best fio configuration of each workload; at the end, how this
run compares with odirect's performance goals.

PATH          a directory to make a temporary file in (default: os.tmpdir(), or /var/tmp when that
              is tmpfs), or a file to use; an existing file is only read unless --write is given
--quick       a smoke run for CI: 32 MiB file, 16 MiB on tmpfs, 1 run of 0.1 s per cell, every
              engine and workload (figures meaningless, the report's shape is the point)
--full        the recorded run: 512 MiB file, 256 MiB on tmpfs, 5 runs of 2 s per cell, every
              engine, then the scaling table (1 and 2 worker_threads on tmpfs, as --scaling 2),
              report to bench/RESULTS.md (+ results.png/.svg); other options override
--size SIZE   file size (default 256M; an existing file's own size)
--tmpfs DIR|off  the tmpfs directory for the software-path workloads, or off (default: /dev/shm,
              else a tmpfs mounted for the run when root)
--tmpfs-size SIZE  the tmpfs file's size (default: the smaller of --size and 256M; quick 16M,
              short 64M)
--open-options JSON  options for odirect's open() in every odirect row (Bun/Deno too), e.g.
              '{"backend":"aio"}', to compare engine settings; shown in the report
--variant NAME=JSON  A/B: an extra row per workload, odirect in a Node child process (one per
              run, interleaved with the other engines) with {"open": {...open() options},
              "env": {...environment}, "mode": "op"|"batch"|"typed"|"lanes"|"queue"|"registered"|"arraylanes"}; repeatable. Add a baseline the
              same way (--variant base={}) so that both sides pay for a child process. The stream
              workloads get a createReadStream/createWriteStream and a web stream row per variant
              (env, open options; stream options as JSON in ODIRECT_BENCH_STREAM_OPTIONS;
              ODIRECT_BENCH_ODIRECT_SOURCE=1: the write rows copy the transferChunks rows' source)
--pin-cpu N|off  the CPU the QD 1 rows of fio and odirect's per op loops (odirect in a child
              process there) run on, with taskset, so that io_uring's worker threads run where
              their submitter does for both (default: the last CPU allowed; off: unpinned; one
              CPU: unpinned). QD 64 rows are never pinned
--runtimes A,B|off  the runtimes of the per-op rows besides Node: bun, deno (default both)
--bs SIZE     block size of the random workloads (default 4k)
--qd N        the deep queue depth of the random workloads (default 64)
--runs N      runs per workload and engine, the median is reported (default 3; short: 1)
--duration S  seconds per run (default 3; short: 1)
--ops N       a fixed number of ops per run instead of a duration
--engines A,B only these engines: ${ENGINES.map((e) => e.id).join(', ')}
--workloads A,B  only workloads whose id contains one of these (randread, randwrite, seqread, qd64,
              tmpfs, stream...)
--short       the quick look (also what no arguments at all runs): 1 run of 1 s each, without the
              fio libaio, node:fs O_DIRECT, Bun and Deno engines
--out FILE    also write a markdown report to FILE and a chart (results.png/.svg) beside it
--json        print JSON instead of the table
--write       allow the write workloads on an existing file (destroys its contents)
--keep        keep the temporary files
--durable     only the durable-write table: one 4 KiB write made durable at QD 1 by write +
              datasync, write { dsync } and writeMany { datasync }, per backend, in PATH (a
              directory; default as above); --runs and --duration apply
--scaling N   only the scaling table: 1..N worker_threads, each with its own engine, 4 KiB
              random reads at QD 64 each, against fio --numjobs=1..N on one file in PATH (a
              directory; default /dev/shm, else as above); --size (default 256M), --runs and
              --duration apply`

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
  quick: boolean
  full: boolean
  tmpfs?: string
  tmpfsSize?: number
  runtimes?: RuntimeName[]
  openOptions?: Record<string, unknown>
  variants: Map<string, Variant>
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
  durable: boolean
  scaling?: number
  /** --pin-cpu: the CPU of the QD 1 rows, 'off', or undefined (the default: defaultPinCpu). */
  pinCpu?: number | 'off'
}

function parseArgs(argv: string[]): Args {
  const a: Args = { bs: 4096, qd: 64, ops: 0, quick: false, full: false, variants: new Map(), short: argv.length === 0, json: false, write: false, keep: false, help: false, durable: false }
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
      case '--quick':
        a.quick = true
        break
      case '--full':
        a.full = true
        break
      case '--tmpfs':
        a.tmpfs = value()
        break
      case '--open-options': {
        const v = value()
        let o: unknown
        try {
          o = JSON.parse(v)
        } catch {
          throw new Error(`--open-options must be a JSON object, got '${v}'`)
        }
        if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error(`--open-options must be a JSON object, got '${v}'`)
        a.openOptions = o as Record<string, unknown>
        break
      }
      case '--variant': {
        const v = value()
        const at = v.indexOf('=')
        const nm = at > 0 ? v.slice(0, at) : ''
        if (!/^[\w.-]+$/.test(nm)) throw new Error(`--variant wants NAME=JSON (NAME of letters, digits, . _ -), got '${v}'`)
        let o: unknown
        try {
          o = JSON.parse(v.slice(at + 1))
        } catch {
          throw new Error(`--variant ${nm}: not JSON: '${v.slice(at + 1)}'`)
        }
        const ok = (x: unknown): boolean => x === undefined || (x !== null && typeof x === 'object' && !Array.isArray(x))
        const vo = o as Variant
        if (!ok(o) || !ok(vo.open) || !ok(vo.env) || (vo.mode !== undefined && !(RUN_MODES as readonly unknown[]).includes(vo.mode))) {
          throw new Error(`--variant ${nm}: want {"open"?: {...}, "env"?: {...}, "mode"?: ${RUN_MODES.map((m) => `"${m}"`).join('|')}}, got '${v.slice(at + 1)}'`)
        }
        for (const k of Object.keys(o as object)) if (k !== 'open' && k !== 'env' && k !== 'mode') throw new Error(`--variant ${nm}: unknown key '${k}' (open, env, mode)`)
        a.variants.set(nm, vo)
        break
      }
      case '--pin-cpu': {
        const v = value()
        const cpus = allowedCpus()
        if (v !== 'off' && !(/^\d+$/.test(v) && (cpus === undefined || cpus.includes(Number(v))))) throw new Error(`--pin-cpu wants a CPU this process may use (${cpus?.join(', ') ?? 'unknown'}) or off, got '${v}'`)
        a.pinCpu = v === 'off' ? 'off' : Number(v)
        break
      }
      case '--tmpfs-size':
        a.tmpfsSize = parseSize(value())
        break
      case '--runtimes': {
        const v = value()
        const ids = v === 'off' || v === 'none' ? [] : v.split(',').map((x) => x.trim().toLowerCase()).filter(Boolean)
        for (const id of ids) if (id !== 'bun' && id !== 'deno') throw new Error(`unknown runtime '${id}' (known: bun, deno; or off)`)
        a.runtimes = ids as RuntimeName[]
        break
      }
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
      case '--durable':
        a.durable = true
        break
      case '--scaling':
        a.scaling = int(value(), 1)
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
  if (a.quick && a.full) throw new Error('--quick and --full exclude each other')
  return a
}

/**
 * One turn of the event loop. fio and dd run synchronously (spawnSync), so a stretch of their
 * cells never reaches the loop, where a SIGINT/SIGTERM/SIGHUP is delivered: without this turn between
 * cells, Ctrl-C there waited for the end of the run and was then lost.
 */
const signalsIn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

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

/** A tmpfs for the software-path workloads: a directory (and an unmount when we mounted it), or why not. */
interface TmpfsDir {
  dir?: string
  how?: string
  skipped?: string
  unmount?: () => void
}

const TMPFS_MAGIC = 0x01021994

function isTmpfs(dir: string): boolean {
  try {
    return fs.statfsSync(dir).type === TMPFS_MAGIC
  } catch {
    return false
  }
}

async function findTmpfs(args: Args, bytes: number, isRoot: boolean): Promise<TmpfsDir> {
  if (args.tmpfs === 'off') return { skipped: 'disabled (--tmpfs off)' }
  let t: TmpfsDir
  if (args.tmpfs !== undefined) {
    if (!isTmpfs(args.tmpfs)) return { skipped: `${args.tmpfs} is not a tmpfs` }
    t = { dir: args.tmpfs, how: 'given with --tmpfs' }
  } else if (isTmpfs('/dev/shm') && freeBytes('/dev/shm') >= bytes + (16 << 20) && canWrite('/dev/shm')) {
    t = { dir: '/dev/shm', how: '/dev/shm' }
  } else if (isRoot) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-bench-tmpfs-'))
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes + (16 << 20)}`, 'odirect-bench', dir], { encoding: 'utf8' })
    if (r.status !== 0 || r.error) {
      fs.rmSync(dir, { recursive: true, force: true })
      return { skipped: `/dev/shm is not a writable tmpfs with room for ${fmtSize(bytes)}, and mounting one failed: ${(r.error?.message ?? r.stderr ?? '').trim()}` }
    }
    t = {
      dir,
      how: `a tmpfs mounted for the run on ${dir}`,
      unmount: () => {
        spawnSync('umount', [dir])
        fs.rmSync(dir, { recursive: true, force: true })
      },
    }
  } else {
    return { skipped: `/dev/shm is not a writable tmpfs with room for ${fmtSize(bytes)}, and mounting one needs root` }
  }
  try {
    const p = await probe(t.dir!)
    if (!p.direct.works) {
      t.unmount?.()
      return { skipped: `O_DIRECT does not work on tmpfs here (${os.type()} ${os.release()}; tmpfs has O_DIRECT since Linux 6.6)${p.direct.reason ? `: ${p.direct.reason}` : ''}` }
    }
  } catch (e) {
    t.unmount?.()
    return { skipped: `probing ${t.dir} failed: ${(e as Error).message}` }
  }
  return t
}

function canWrite(dir: string): boolean {
  try {
    fs.accessSync(dir, fs.constants.W_OK)
    return true
  } catch {
    return false
  }
}

export async function benchCommand(argv: string[]): Promise<number> {
  let args: Args
  try {
    args = parseArgs(argv)
  } catch (e) {
    console.error(`odirect bench: ${(e as Error).message}\n\n${HELP}`)
    return 2 // a usage error, as the other commands say it
  }
  if (args.help) {
    console.log(HELP)
    return 0
  }
  const log = (m: string): void => void process.stderr.write(`${m}\n`)
  if (args.durable) {
    const dir = args.path ?? (await tempDir())
    const where = await probe(dir)
    const backends = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => where.backends[b].available)
    const rows = await durableBench(dir, backends, args.runs ?? 3, (args.duration ?? 2) * 1000, log)
    console.log(args.json ? JSON.stringify(rows, null, 2) : durableTable(rows, `${dir} (${where.fsType}, ${where.kernel})`))
    return 0
  }
  if (args.scaling !== undefined) {
    const dir = args.path ?? (fs.existsSync('/dev/shm') ? '/dev/shm' : await tempDir())
    const where = await probe(dir)
    const rows = await scalingBench(dir, args.scaling, args.size ?? 256 << 20, args.runs ?? 3, (args.duration ?? 3) * 1000, findFio(), log)
    console.log(args.json ? JSON.stringify(rows, null, 2) : scalingTable(rows, `${dir} (${where.fsType}, ${where.kernel})`))
    return 0
  }
  const seqBs = 1 << 20
  if (args.quick || args.full) args.short = false
  if (args.full && args.out === undefined) args.out = 'bench/RESULTS.md'

  // The file: a temporary one in a directory, or the one given.
  let file: string
  let temporary = false
  let existing = false
  let size = args.size ?? (args.quick ? 32 << 20 : args.full ? 512 << 20 : 256 << 20)
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
  } else if (!st.isFile() && !st.isBlockDevice()) {
    // A FIFO's open waits for a writer (the bench hung there, after preparing its tmpfs file);
    // a character device or socket has no blocks to measure either.
    const kind = st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isSocket() ? 'a socket' : 'not a regular file'
    console.error(`odirect bench: ${target} is ${kind}: pass a directory, a regular file or a block device`)
    return 1
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

  const selected = (id: string): boolean => !args.workloads || args.workloads.some((f) => id.includes(f))
  let workloads: Workload[] = standardWorkloads(args.bs, args.qd, seqBs, 4).filter((w) => selected(w.id))
  let tworkloads: Workload[] = tmpfsWorkloads(args.bs, args.qd).filter((w) => selected(w.id))
  let swl: StreamWorkload[] = streamWorkloads(0).filter((w) => selected(w.id))
  if (existing && !args.write) {
    const dropped = workloads.filter((w) => w.write)
    if (dropped.length) log(`note: ${file} exists: only reading it (pass --write to run the write workloads, which overwrite it)`)
    workloads = workloads.filter((w) => !w.write)
  }
  const runtimeEngines = new Set<EngineId>((args.runtimes ?? (['bun', 'deno'] as RuntimeName[])).map((r) => RUNTIME_ENGINES[r]))
  const engines: EngineId[] =
    args.engines ??
    ENGINES.map((e) => e.id).filter((e) => {
      if ((e === 'odirect-bun' || e === 'odirect-deno') && !runtimeEngines.has(e)) return false
      return !args.short || (e !== 'node-fs-direct' && e !== 'fio-libaio' && e !== 'odirect-bun' && e !== 'odirect-deno')
    })
  for (const nm of args.variants.keys()) engines.push(`variant:${nm}`)
  if (args.engines && args.runtimes) for (const e of [...engines]) if ((e === 'odirect-bun' || e === 'odirect-deno') && !runtimeEngines.has(e)) engines.splice(engines.indexOf(e), 1)

  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
  let tsize = Math.floor(Math.min(args.tmpfsSize ?? Math.min(size, args.quick ? 16 << 20 : args.short ? 64 << 20 : 256 << 20), size) / unit) * unit
  if (tsize < unit * 4) tsize = unit * 4
  const tmpfs: TmpfsDir = tworkloads.length ? await findTmpfs(args, tsize, isRoot) : { skipped: 'no tmpfs workload selected' }
  if (tworkloads.length && tmpfs.skipped !== undefined) log(`note: no tmpfs workloads: ${tmpfs.skipped}`)
  const tfile = tmpfs.dir !== undefined ? path.join(tmpfs.dir, `odirect-bench-${process.pid}-tmpfs.dat`) : undefined

  if (workloads.length === 0 && tworkloads.length === 0 && swl.length === 0) {
    console.error('odirect bench: no workload selected')
    tmpfs.unmount?.()
    return 1
  }

  const opts: Options = {
    size,
    runs: args.runs ?? (args.full ? 5 : args.short || args.quick ? 1 : 3),
    durationMs: (args.duration ?? (args.quick ? 0.1 : args.full ? 2 : args.short ? 1 : 3)) * 1000,
    ops: args.ops,
    rampMs: args.quick ? 20 : args.short ? 100 : 500,
    short: args.short,
    quick: args.quick,
    file,
    temporary,
    ...(args.openOptions ? { openOptions: args.openOptions } : {}),
    ...(args.variants.size ? { variants: Object.fromEntries(args.variants) } : {}),
    tmpfs: tfile !== undefined ? { file: tfile, size: tsize, how: tmpfs.how } : { skipped: tmpfs.skipped },
  }
  const fioPath = findFio()
  const limit = { durationMs: opts.durationMs, ops: opts.ops, rampMs: opts.rampMs }
  const runtimes: NonNullable<BenchContext['runtimes']> = new Map()
  const ctx: BenchContext = { variants: args.variants, path: file, size, limit, isRoot, fadviseOnly: args.quick, openOptions: args.openOptions, fioPath, fioBroken: new Map(), fioFailures: new Map(), runtimes, log }
  const pinCpu = args.pinCpu === 'off' ? undefined : (args.pinCpu ?? defaultPinCpu())
  if (pinCpu !== undefined) ctx.pinCpu = pinCpu
  const tctx: BenchContext | undefined = tfile !== undefined ? { ...ctx, path: tfile, size: tsize, fioBroken: new Map(), fioFailures: new Map() } : undefined
  if (!fioPath && engines.some((e) => e.startsWith('fio'))) log('note: fio is not installed (apt-get install fio): the fio rows are skipped and there is no ratio column')
  if (!isRoot) log('note: not root: the page cache is emptied with posix_fadvise(DONTNEED) on the file instead of /proc/sys/vm/drop_caches')

  // The stream workloads' scratch file, next to the test file: removed by cleanup too, with a
  // copyFile row's temp file beside it, so that a run ended by a signal leaves neither (it left
  // the scratch file, as large as the stream workload: adversary-s22).
  const scratch = path.join(path.dirname(file), `odirect-bench-${process.pid}-stream.dat`)
  const removeScratch = (): void => {
    fs.rmSync(scratch, { force: true })
    try {
      for (const n of fs.readdirSync(path.dirname(scratch))) if (n.startsWith(`${path.basename(scratch)}.odirect-tmp-`)) fs.rmSync(path.join(path.dirname(scratch), n), { force: true })
    } catch {
      // The directory cannot be read: nothing more to remove.
    }
  }
  const cleanup = (): void => {
    removeScratch()
    if (typeof ctx.hugePages === 'object') {
      ctx.hugePages.release()
      log(`huge pages given back: nr_hugepages ${readNrHugePages()}, hugetlbfs ${ctx.hugePages.dir} unmounted`)
      ctx.hugePages = undefined
    }
    if (temporary && !args.keep) fs.rmSync(file, { force: true })
    if (tfile !== undefined && !args.keep) fs.rmSync(tfile, { force: true })
    tmpfs.unmount?.()
    tmpfs.unmount = undefined
    cleanupChildren()
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    cleanup()
    process.kill(process.pid, sig)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  // A closed terminal too: the huge pages and mounts of the run are given back before it ends.
  process.once('SIGHUP', onSignal)

  try {
    if (!existing || (args.write && st !== undefined && st.isFile() && st.size < size)) {
      log(`preparing ${file} (${fmtSize(size)})...`)
      await prepareFile(file, size)
    }
    if (tfile !== undefined) {
      log(`preparing ${tfile} (${fmtSize(tsize)}, tmpfs)...`)
      try {
        await prepareFile(tfile, tsize)
      } catch (e) {
        const why = `preparing ${tfile} failed: ${(e as Error).message}`
        log(`note: no tmpfs workloads: ${why}`)
        fs.rmSync(tfile, { force: true })
        opts.tmpfs = { skipped: why }
        tmpfs.skipped = why
        tworkloads = []
      }
    } else {
      tworkloads = []
    }
    const facts = await machineFacts(file, fioPath, isRoot)
    if (ctx.fadviseOnly) facts.cacheDrop = 'quick run: posix_fadvise(POSIX_FADV_DONTNEED) on the file before and after each node:fs run (no global drop_caches)'
    const streamSize = Math.floor(Math.min(size, args.quick ? 8 << 20 : args.short ? 64 << 20 : size) / STREAM_CHUNK) * STREAM_CHUNK
    swl = streamWorkloads(streamSize).filter((w) => swl.some((x) => x.id === w.id))
    const streamCells: StreamCell[] = []
    for (const w of swl) for (const e of w.engines) streamCells.push({ workload: w, engine: e, runs: [] })
    for (const nm of args.variants.keys()) for (const w of swl) for (const e of STREAM_VARIANT_ENGINES) if (w.engines.includes(e)) streamCells.push({ workload: w, engine: e, variant: nm, runs: [] })
    if (swl.some((w) => w.write) && freeBytes(path.dirname(file)) < streamSize + (64 << 20)) {
      for (const c of streamCells) if (c.workload.write) c.skipped = `not enough free space for a ${fmtSize(streamSize)} scratch file`
    }
    if (streamCells.length && !hasFincore()) log('note: fincore (util-linux) is not installed: no page-cache residency figures')
    const all = [...workloads, ...tworkloads]
    // Huge pages for fio's huge-page rows, reserved once for the run (released by cleanup).
    const hugeJobs = [...(engines.includes('fio-io_uring-huge') ? all.filter((w) => appliesTo('fio-io_uring-huge', w)) : []), ...swl.filter((w) => w.engines.includes('fio-io_uring-huge')).map(() => ({ qd: STREAM_DEPTH, bs: STREAM_CHUNK }))]
    if (hugeJobs.length && fioPath !== undefined) {
      const ps = hugePageSize() ?? 2 << 20
      const h = reserveHugePages(Math.max(...hugeJobs.map((w) => fioHugePages(w.qd, w.bs, ps))), log)
      ctx.hugePages = h
      if (tctx !== undefined) tctx.hugePages = h
      opts.hugePages = typeof h === 'string' ? `skipped: ${h}` : `${h.pages} × ${fmtSize(h.pageSize)} huge pages reserved for the run (nr_hugepages ${h.before} → ${h.during}, restored after), fio's buffers in a file on a private hugetlbfs`
      log(typeof h === 'string' ? `note: no huge pages for fio, its huge-page rows are skipped: ${h}` : `huge pages for fio: ${h.pages} × ${fmtSize(h.pageSize)} (nr_hugepages ${h.before} → ${h.during}), hugetlbfs on ${h.dir}`)
    }
    const cells: Cell[] = []
    for (const w of all) for (const e of engines) if (appliesTo(e, w)) cells.push({ workload: w, engine: e, runs: [] })
    const total = cells.length * opts.runs
    let done = 0
    const t0 = Date.now()
    for (const w of all) {
      const wctx = w.place === 'tmpfs' ? tctx! : ctx
      const wcells = cells.filter((c) => c.workload.id === w.id)
      for (let r = 0; r < opts.runs; r++) {
        // Every engine once per run, in an order that changes between runs (see roundOrder).
        for (const k of roundOrder(wcells.length, r)) {
          const cell = wcells[k]
          const e = cell.engine
          done++
          if (cell.skipped !== undefined && !cell.retry) continue
          const tc = Date.now()
          const out = await runEngine(wctx, e, w)
          await signalsIn()
          const took = ` (${((Date.now() - tc) / 1000).toFixed(1)} s)`
          if (out.ok) {
            out.result.round = r
            cell.runs.push(out.result)
            const cpu = Number.isFinite(out.result.cpuUsPerOp) ? `, ${out.result.cpuUsPerOp.toFixed(1)} µs CPU/op` : ''
            log(`[${done}/${total}] ${w.id} ${engineLabel(e)}: ${fmtValue(w, figure(w, out.result))}, p50 ${out.result.p50.toFixed(1)} µs, p99 ${out.result.p99.toFixed(1)} µs${cpu}${took}`)
          } else {
            cell.skipped = out.skipped
            if (out.transient) cell.retry = true
            log(`[${done}/${total}] ${w.id} ${engineLabel(e)}: ${out.transient ? 'failed' : 'skipped'}: ${out.skipped}${took}`)
          }
        }
      }
    }
    // Streams: one whole pass per run, engines in an order that changes between runs (see roundOrder).
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
        const target = { file: w.write ? scratch : file, size: streamSize, ...(w.id === 'stream-copy' ? { source: file } : {}) }
        for (let r = 0; r < opts.runs; r++) {
          for (const k of roundOrder(cellsW.length, r)) {
            const cell = cellsW[k]
            sdone++
            if (cell.skipped !== undefined) continue
            try {
              const out = await runStream(ctx, w, cell.engine, target, cell.variant === undefined ? undefined : args.variants.get(cell.variant))
              await signalsIn()
              if (typeof out === 'string') {
                cell.skipped = out
                log(`[${sdone}/${stotal}] ${w.id} ${streamRowLabel(w, cell)}: skipped: ${out}`)
              } else {
                out.round = r
                cell.runs.push(out)
                log(`[${sdone}/${stotal}] ${w.id} ${streamRowLabel(w, cell)}: ${out.mbps.toFixed(0)} MB/s, ${out.cpuPerGiB.toFixed(2)} s CPU/GiB, ${out.residentPct.toFixed(1)} % resident`)
              }
            } catch (e) {
              cell.skipped = `failed: ${(e as Error).message}`
              log(`[${sdone}/${stotal}] ${w.id} ${streamRowLabel(w, cell)}: ${cell.skipped}`)
            }
          }
        }
      }
    } finally {
      removeScratch()
    }
    const ssums = summarizeStreams(streamCells)
    // The full run's scaling table (issue 19 item 4): 1..2 worker_threads on the tmpfs file's
    // directory, against fio --numjobs (`--scaling N` runs it alone, for any N).
    let scaling: ScalingResult | undefined
    if (args.full && tmpfs.dir !== undefined && selected('scaling')) {
      const rows = await scalingBench(tmpfs.dir, 2, tsize, opts.runs, opts.durationMs, fioPath, log)
      scaling = { rows, where: `${tmpfs.dir} (tmpfs, ${fmtSize(tsize)} file)` }
    }
    facts.loadEnd = os.loadavg()
    log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    const sums = summarize(cells)
    // Which runtime versions (and engine paths) the Bun/Deno rows ran on, or why they did not.
    const rts: Record<string, string> = {}
    for (const [rt, f] of runtimes) {
      const paths = [...new Set(sums.filter((s) => s.engine === RUNTIME_ENGINES[rt] && s.path).map((s) => s.path!))]
      rts[rt] = f.bin ? `${f.version ?? '?'}${paths.length ? `, engine path ${paths.join(', ')}` : ''}` : `not run: ${f.why}`
    }
    opts.runtimes = rts
    if (args.out) {
      const outPath = path.resolve(args.out)
      fs.mkdirSync(path.dirname(outPath), { recursive: true })
      const chart = writeChart(path.dirname(outPath), svgChart(sums, facts, ssums), log)
      fs.writeFileSync(outPath, markdown(sums, facts, opts, chart, outPath, ssums, scaling))
      log(`wrote ${outPath} and ${path.join(path.dirname(outPath), chart)}`)
    }
    if (args.json) {
      console.log(json(sums, facts, opts, cells, ssums, streamCells))
    } else {
      const disk = sums.filter((s) => s.workload.place === 'disk')
      const tsums = sums.filter((s) => s.workload.place === 'tmpfs')
      console.log(
        [
          `odirect bench: ${file} (${fmtSize(size)}, ${facts.fsType}), ${facts.kernel}, ${facts.cpus} CPUs, ${opts.runs} run(s) × ${opts.ops > 0 ? `${opts.ops} ops` : `${opts.durationMs / 1000} s`}${opts.quick ? ' (quick: figures meaningless)' : opts.short ? ' (short)' : ''}; engine path ${facts.enginePath}`,
          ...Object.entries(rts).map(([k, v]) => `${k}: ${v}`),
          '',
          ...(disk.length ? [table(disk)] : []),
          '',
          tsums.length ? `tmpfs (${tfile}, ${fmtSize(tsize)}):` : `tmpfs: not run: ${tmpfs.skipped ?? 'no tmpfs workload selected'}`,
          ...(tsums.length ? ['', table(tsums)] : []),
          ...(ssums.length ? ['', 'Streams:', '', streamTable(ssums)] : []),
          ...(scaling ? ['', scalingTable(scaling.rows, scaling.where)] : []),
          '',
          "odirect's performance goals, as measured in this run (a goal not reached here is not an error: it depends on the machine and its load):",
          ...targetLines(targets(sums, ssums)),
          '',
          'Figures on a shared or small machine are noisy; compare engines within one run.',
        ].join('\n'),
      )
    }
    return 0
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('SIGHUP', onSignal)
    cleanup()
  }
}

/**
 * The order of n cells in round r: rotated by r/2 and reversed in odd rounds. A rotation alone keeps
 * every cell's predecessor the same in every round (a cyclic shift keeps neighbours), so a row that
 * always follows a heavy one (a device still flushing, page cache dropped) lost every round: the
 * nineteenth session's stream traces found the Node transferChunks row losing 7 of 7 rounds to the
 * web row after it, and the web row losing 5 of 7 with the two swapped. Reversing odd rounds gives
 * each cell both neighbours in turn.
 */
export function roundOrder(n: number, r: number): number[] {
  const out: number[] = []
  const shift = Math.floor(r / 2)
  for (let i = 0; i < n; i++) out.push((i + shift) % n)
  return r % 2 === 1 ? out.reverse() : out
}
