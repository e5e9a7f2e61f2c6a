// Stream workloads (issue 5 item 8): one sequential pass over a file through odirect's Node
// streams, node:fs streams and fio (1 MiB blocks, QD 4, --direct=1, io_uring). Reports MB/s and how
// much of the file the page cache still holds afterwards (fincore from util-linux).
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import { performance } from 'node:perf_hooks'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import { allocAligned, copyFile, createReadStream, createWriteStream, type FileHandle, open, readableWebStream, writableWebStream } from '../index'
import { native } from '../src/native'
import { readCopyStats } from '../src/streams/core'
import { type BenchContext, dropCaches, fioArgs, fmtSize, hugeSkip, parseFio, type Variant, type Workload } from './harness'

export type StreamEngineId =
  | 'odirect-stream'
  | 'odirect-stream-sha'
  | 'odirect-stream-reuse'
  | 'odirect-web'
  | 'odirect-web-sha'
  | 'odirect-web-byob'
  | 'odirect-stream-transfer'
  | 'odirect-web-transfer'
  | 'odirect-pipe'
  | 'odirect-pipe-transfer'
  | 'odirect-copyfile'
  | 'node-fs-stream'
  | 'node-fs-stream-1m'
  | 'node-fs-stream-1m-sha'
  | 'fio-io_uring'
  | 'fio-io_uring-huge'
  | 'dd-direct'

export interface StreamWorkload {
  id: 'stream-read' | 'stream-write' | 'stream-copy'
  label: string
  write: boolean
  engines: StreamEngineId[]
}

/** Bytes per I/O of the peers (fio, dd, fs's 1 MiB highWaterMark rows) and of the written source's chunks. */
export const STREAM_CHUNK = 1 << 20
export const STREAM_DEPTH = 4
/** odirect's streams run with their defaults: 2 MiB chunks, readAhead / writeBehind 4. */
export const ODIRECT_STREAM_CHUNK = 2 << 20
const ODIRECT_CHUNK_LABEL = `${ODIRECT_STREAM_CHUNK / 2 ** 20} MiB`

export function streamWorkloads(size: number): StreamWorkload[] {
  return [
    {
      id: 'stream-read',
      label: `sequential read of ${fmtSize(size)}`,
      write: false,
      engines: ['odirect-stream', 'odirect-stream-reuse', 'odirect-web', 'odirect-web-byob', 'node-fs-stream', 'node-fs-stream-1m', 'odirect-stream-sha', 'odirect-web-sha', 'node-fs-stream-1m-sha', 'fio-io_uring', 'fio-io_uring-huge', 'dd-direct'],
    },
    {
      id: 'stream-write',
      label: `sequential write of ${fmtSize(size)}`,
      write: true,
      engines: ['odirect-stream', 'odirect-web', 'odirect-stream-transfer', 'odirect-web-transfer', 'node-fs-stream', 'fio-io_uring', 'fio-io_uring-huge', 'dd-direct'],
    },
    // A file copied through streams (read stream piped into a write stream), against copyFile.
    { id: 'stream-copy', label: `copy of ${fmtSize(size)} (test file → scratch file)`, write: true, engines: ['odirect-pipe', 'odirect-pipe-transfer', 'odirect-copyfile'] },
  ]
}

export function streamEngineLabel(w: StreamWorkload, e: StreamEngineId): string {
  switch (e) {
    case 'odirect-stream':
      return w.write ? `odirect createWriteStream (${ODIRECT_CHUNK_LABEL}, writeBehind ${STREAM_DEPTH}, datasync)` : `odirect createReadStream (${ODIRECT_CHUNK_LABEL}, readAhead ${STREAM_DEPTH})`
    case 'node-fs-stream':
      return w.write ? 'fs.createWriteStream + fsync' : 'fs.createReadStream (default 64 KiB highWaterMark)'
    case 'node-fs-stream-1m':
      return 'fs.createReadStream (1 MiB highWaterMark)'
    case 'odirect-stream-sha':
      return 'odirect createReadStream → sha256'
    case 'odirect-stream-reuse':
      return 'odirect createReadStream (reuseChunks)'
    case 'odirect-web':
      return w.write ? `odirect writableWebStream (${ODIRECT_CHUNK_LABEL}, writeBehind ${STREAM_DEPTH}, datasync)` : 'odirect readableWebStream (default reader)'
    case 'odirect-web-sha':
      return 'odirect readableWebStream → sha256'
    case 'odirect-web-byob':
      return `odirect readableWebStream (BYOB reader, ${ODIRECT_CHUNK_LABEL} views)`
    case 'node-fs-stream-1m-sha':
      return 'fs.createReadStream (1 MiB) → sha256'
    case 'odirect-stream-transfer':
      return `odirect createWriteStream, transferChunks, source of odirect ${ODIRECT_CHUNK_LABEL} chunks (writeBehind ${STREAM_DEPTH}, datasync)`
    case 'odirect-web-transfer':
      return `odirect writableWebStream, transferChunks, source of odirect ${ODIRECT_CHUNK_LABEL} chunks (writeBehind ${STREAM_DEPTH}, datasync)`
    case 'odirect-pipe':
      return `odirect createReadStream → createWriteStream (${ODIRECT_CHUNK_LABEL}, depth ${STREAM_DEPTH}, datasync)`
    case 'odirect-pipe-transfer':
      return `odirect createReadStream → createWriteStream, transferChunks (${ODIRECT_CHUNK_LABEL}, depth ${STREAM_DEPTH}, datasync)`
    case 'odirect-copyfile':
      return 'odirect copyFile (defaults: temp file + rename, datasync)'
    case 'fio-io_uring':
      return `fio io_uring (1 MiB, QD ${STREAM_DEPTH}, --direct=1)`
    case 'fio-io_uring-huge':
      return `fio io_uring, huge pages (1 MiB, QD ${STREAM_DEPTH}, --direct=1)`
    case 'dd-direct':
      return w.write ? 'dd oflag=direct bs=1M conv=fdatasync' : 'dd iflag=direct bs=1M'
  }
}

export interface StreamRun {
  mbps: number
  /** CPU seconds (user + system, every thread; fio and dd: the child's) per GiB moved. NaN when unknown. */
  cpuPerGiB: number
  /** Bytes of the file in the page cache after the run / bytes streamed, percent. NaN when unknown. */
  residentPct: number
  /** Peak RSS during the pass minus RSS before it, MiB (JS engines: a fresh process per run, no forced GC). NaN when unknown. */
  rssGrowthMiB: number
  /** The round (0-based) this run belongs to (see RunResult.round). */
  round?: number
}

export interface StreamCell {
  workload: StreamWorkload
  engine: StreamEngineId
  /** --variant NAME: this row's child runs with the variant's env and open() options. */
  variant?: string
  runs: StreamRun[]
  skipped?: string
}

/** The odirect stream engines a --variant adds a row for (A/B of stream settings): the plain consumers and the hashing pipelines. */
export const STREAM_VARIANT_ENGINES: readonly StreamEngineId[] = ['odirect-stream', 'odirect-web', 'odirect-stream-sha', 'odirect-web-sha']

/** A row's label: the engine's, with the variant's name. */
export const streamRowLabel = (w: StreamWorkload, c: { engine: StreamEngineId; variant?: string }): string =>
  c.variant === undefined ? streamEngineLabel(w, c.engine) : `${streamEngineLabel(w, c.engine)} [variant '${c.variant}']`

/** Resident bytes of a file from `fincore --bytes --noheadings --raw FILE`, or NaN. */
export function residentBytes(file: string): number {
  const r = spawnSync('fincore', ['--bytes', '--noheadings', '--raw', file], { encoding: 'utf8' })
  if (r.status !== 0 || r.error) return NaN
  const n = Number((r.stdout ?? '').trim().split(/\s+/)[0])
  return Number.isFinite(n) ? n : NaN
}

export function hasFincore(): boolean {
  const r = spawnSync('fincore', ['--version'], { encoding: 'utf8' })
  return r.status === 0 && !r.error
}

/** A context for one stream run: `file` holds (at least) `size` bytes, read or written once. */
export interface StreamTarget {
  /** The file read (the test file) or written (a scratch file of `size` bytes beside it). */
  file: string
  size: number
  /**
   * odirect rows: the file opened before the clock starts, as fio opens its file (and sets up its
   * buffers) before its runtime starts; the stream closes it at its end, inside the clock.
   */
  fh?: FileHandle
  /** Copy workloads: the file read (the test file); `file` is the copy. */
  source?: string
}

const drop = (ctx: BenchContext, file: string): void => {
  const fd = fs.openSync(file, 'r')
  try {
    dropCaches({ ...ctx, path: file }, fd)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Stream options a --variant sets through its env (A/B of stream settings), e.g.
 * `--variant wb8='{"env":{"ODIRECT_BENCH_STREAM_OPTIONS":"{\\"writeBehind\\":8}"}}'`; merged over the row's own.
 */
const variantOpts = (): Record<string, unknown> => {
  const v = process.env.ODIRECT_BENCH_STREAM_OPTIONS
  return v === undefined || v === '' ? {} : (JSON.parse(v) as Record<string, unknown>)
}

const readOpts = (t: StreamTarget): { chunkSize: number; readAhead: number; end: number; autoClose: true } => ({ chunkSize: ODIRECT_STREAM_CHUNK, readAhead: STREAM_DEPTH, end: t.size - 1, ...variantOpts(), autoClose: true })
/** What an odirect stream opens: the handle opened before the clock, or the path. */
const src = (t: StreamTarget): string | FileHandle => t.fh ?? t.file

/** A plain consumer: counts the bytes of each chunk and drops it. */
async function count(src: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0
  for await (const chunk of src) n += chunk.length
  return n
}

/** A hashing pipeline (what backup tools run): the stream piped into sha256. */
async function hashRead(src: Readable): Promise<number> {
  const h = createHash('sha256')
  let n = 0
  await pipeline(
    src,
    new Writable({
      write(chunk: Buffer, _e, cb) {
        n += chunk.length
        h.update(chunk)
        cb()
      },
    }),
  )
  h.digest()
  return n
}

/** A web stream read with a default reader (chunks handed over), optionally hashed. */
async function readWeb(t: StreamTarget, hash: boolean): Promise<number> {
  const r = readableWebStream(src(t), readOpts(t)).getReader()
  const h = hash ? createHash('sha256') : undefined
  let n = 0
  for (;;) {
    const { done, value } = await r.read()
    if (done) break
    n += value.length
    h?.update(value)
  }
  h?.digest()
  return n
}

/** A web stream read with a BYOB reader into views of the stream's chunk size (the same memory each time). */
async function readByob(t: StreamTarget): Promise<number> {
  const r = readableWebStream(src(t), readOpts(t)).getReader({ mode: 'byob' })
  let view = new Uint8Array(ODIRECT_STREAM_CHUNK)
  let n = 0
  for (;;) {
    const { done, value } = await r.read(view)
    if (done || value === undefined) break
    n += value.length
    view = new Uint8Array(value.buffer)
  }
  return n
}

/** The CPU of waited-for children so far (cutime + cstime of /proc/self/stat), seconds. */
function childCpu(): number {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[13]) + Number(f[14])) / 100
}

/** `dd` with O_DIRECT, 1 MiB blocks (one in flight): the plainest direct sequential pass. */
function runDd(t: StreamTarget, write: boolean): StreamRun | string {
  const count = String(t.size / STREAM_CHUNK)
  const args = write ? ['if=/dev/zero', `of=${t.file}`, 'oflag=direct', 'bs=1M', `count=${count}`, 'conv=notrunc,fdatasync'] : [`if=${t.file}`, 'of=/dev/null', 'iflag=direct', 'bs=1M', `count=${count}`]
  const c0 = childCpu()
  const t0 = performance.now()
  const r = spawnSync('dd', args, { encoding: 'utf8' })
  const secs = (performance.now() - t0) / 1000
  if (r.error) return `dd failed: ${r.error.message}`
  if (r.status !== 0) return `dd failed: ${(r.stderr ?? '').trim().split('\n')[0]}`
  return { mbps: t.size / secs / 1e6, cpuPerGiB: (childCpu() - c0) / (t.size / 2 ** 30), residentPct: NaN, rssGrowthMiB: NaN }
}

let sourceBuf: Buffer | undefined

/**
 * The written source's 1 MiB of non-zero data, made once per process: by the warm-up pass, so
 * the measured pass does not pay for it, as fio fills its buffers before its clock starts
 * (making it took ~3 ms, 2-3% of a 512 MiB pass on the repository's VM).
 */
function sourceChunk(): Buffer {
  if (sourceBuf === undefined) {
    sourceBuf = Buffer.alloc(STREAM_CHUNK)
    for (let i = 0; i < sourceBuf.length; i += 8) sourceBuf[i] = (Math.random() * 255 + 1) | 0
  }
  return sourceBuf
}

/** The same 1 MiB of non-zero data, `size / 1 MiB` times (never modified, so sharing it is safe). */
function source(size: number): Readable {
  const buf = sourceChunk()
  const count = size / STREAM_CHUNK
  return Readable.from(
    (function* () {
      for (let i = 0; i < count; i++) yield buf
    })(),
  )
}

const writeOpts = (t: StreamTarget): { chunkSize: number; writeBehind: number; datasync: true; autoClose: true; flags?: 'r+' } => ({
  chunkSize: ODIRECT_STREAM_CHUNK,
  writeBehind: STREAM_DEPTH,
  datasync: true,
  ...variantOpts(),
  autoClose: true,
  ...(t.fh === undefined ? { flags: 'r+' as const } : {}),
})

/**
 * The transfer rows' source: 2 MiB chunks of odirect memory (allocAligned, the streams' chunk
 * size: a read stream's chunks with its defaults) holding the same data as `source`, made
 * before the clock (as fio fills its buffers before its runtime); each is yielded once and
 * dropped by the source. A `--variant` with `ODIRECT_BENCH_ODIRECT_SOURCE=1` in its env gives
 * the plain write rows this source, copied (the A/B; see ODIRECT_SOURCE).
 */
let odirectChunks: Buffer[] = []

/**
 * The size of the odirect source's chunks: the streams' chunk size, or
 * ODIRECT_BENCH_SOURCE_CHUNK bytes (a variant's env: e.g. 1 MiB transferred chunks).
 */
const SOURCE_CHUNK = Number(process.env.ODIRECT_BENCH_SOURCE_CHUNK ?? '') || ODIRECT_STREAM_CHUNK

function prepareOdirectChunks(size: number): void {
  const data = sourceChunk()
  // Chunks of the streams' own size (as a read stream with its defaults hands out); `size` is a
  // multiple of STREAM_CHUNK, the last chunk may be that.
  odirectChunks = []
  for (let at = 0; at < size; at += SOURCE_CHUNK) {
    const n = Math.min(SOURCE_CHUNK, size - at)
    const b = allocAligned(n)
    for (let o = 0; o < n; o += data.length) b.set(data.subarray(0, Math.min(data.length, n - o)), o)
    odirectChunks.push(b)
  }
}

function* takeOdirectChunks(): Generator<Buffer> {
  const chunks = odirectChunks
  odirectChunks = []
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i] as Buffer
    chunks[i] = undefined as unknown as Buffer
    yield c
  }
}

async function writeOdirect(t: StreamTarget): Promise<void> {
  await pipeline(source(t.size), createWriteStream(src(t), writeOpts(t)))
}

async function writeWeb(t: StreamTarget): Promise<void> {
  await Readable.toWeb(source(t.size)).pipeTo(writableWebStream(src(t), writeOpts(t)) as WritableStream<unknown>)
}

/**
 * A variant with `ODIRECT_BENCH_ODIRECT_SOURCE=1` gives the plain write rows ('odirect-stream',
 * 'odirect-web') the transfer rows' source of odirect chunks, copied (unless the variant's stream
 * options say `transferChunks`): the copy vs transfer A/B on the same source.
 */
const ODIRECT_SOURCE = process.env.ODIRECT_BENCH_ODIRECT_SOURCE === '1'

/** The rows (in this child) whose source is odirect chunks. */
const odirectSourced = (e: StreamEngineId): boolean => e === 'odirect-stream-transfer' || e === 'odirect-web-transfer' || (ODIRECT_SOURCE && (e === 'odirect-stream' || e === 'odirect-web'))

async function writeTransfer(t: StreamTarget, web: boolean, transferChunks: boolean): Promise<void> {
  const opts = { ...writeOpts(t), transferChunks, ...variantOpts() }
  if (!web) {
    await pipeline(Readable.from(takeOdirectChunks()), createWriteStream(src(t), opts))
    return
  }
  // A plain pull source of the chunks (what a web producer of odirect memory would be).
  const it = takeOdirectChunks()
  const rs = new ReadableStream<Uint8Array>({
    pull(c) {
      const r = it.next()
      if (r.done === true) c.close()
      else c.enqueue(r.value)
    },
  })
  await rs.pipeTo(writableWebStream(src(t), opts))
}

/** A read stream of the source piped into a write stream of the copy (in place, as the write rows). */
async function copyPipe(t: StreamTarget, transferChunks: boolean): Promise<void> {
  const from = t.source as string
  await pipeline(createReadStream(from, { chunkSize: ODIRECT_STREAM_CHUNK, readAhead: STREAM_DEPTH, end: t.size - 1 }), createWriteStream(src(t), { ...writeOpts(t), transferChunks, ...variantOpts() }))
}

async function writeFs(t: StreamTarget): Promise<void> {
  await pipeline(source(t.size), fs.createWriteStream(t.file, { flags: 'r+', start: 0 }))
  // fsync flushes the inode's dirty pages whichever descriptor asks.
  const fh = await fs.promises.open(t.file, 'r+')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

/** The stream section's fio engines: the peers of the "vs fio" ratio (the best of them per run). */
export const STREAM_FIO: readonly StreamEngineId[] = ['fio-io_uring', 'fio-io_uring-huge']

function runFioStream(ctx: BenchContext, t: StreamTarget, write: boolean, huge: boolean): StreamRun | string {
  if (ctx.fioPath === undefined) return 'fio is not installed (apt-get install fio)'
  const noHuge = huge ? hugeSkip(ctx) : undefined
  if (noHuge !== undefined) return noHuge
  const w: Workload = { id: write ? 'stream-write' : 'stream-read', label: '', write, random: false, bs: STREAM_CHUNK, qd: STREAM_DEPTH, metric: 'mbps', place: 'disk' }
  // One pass over the file: no time limit, no ramp.
  const c: BenchContext = { ...ctx, path: t.file, size: t.size, limit: { durationMs: 0, ops: t.size / STREAM_CHUNK, rampMs: 0 } }
  // Writes end with an fdatasync, as the odirect rows (datasync: true) and dd (conv=fdatasync) do.
  const args = [...fioArgs(c, w, 'io_uring', 1, huge), ...(write ? ['--end_fsync=1'] : [])]
  const r = spawnSync(ctx.fioPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.status !== 0 || r.error) {
    const text = `${r.error?.message ?? ''}\n${r.stderr ?? ''}\n${(r.stdout ?? '').split('\n{')[0]}`
    return `fio failed: ${text.split('\n').map((l) => l.trim()).filter(Boolean).slice(-3).join(' ') || `exit ${r.status}`}`
  }
  const res = parseFio(r.stdout, write)
  return { mbps: res.bytes / res.seconds / 1e6, cpuPerGiB: (res.cpuUsPerOp * res.ops) / 1e6 / (res.bytes / 2 ** 30), residentPct: NaN, rssGrowthMiB: NaN }
}

/** One pass of a JS engine over `t`: the bytes it read (writes: `t.size`). */
async function pass(e: StreamEngineId, write: boolean, t: StreamTarget): Promise<number> {
  if (write) {
    if (odirectSourced(e)) await writeTransfer(t, e === 'odirect-web-transfer' || e === 'odirect-web', e.endsWith('-transfer'))
    else if (e === 'odirect-pipe' || e === 'odirect-pipe-transfer') await copyPipe(t, e === 'odirect-pipe-transfer')
    else if (e === 'odirect-copyfile') await copyFile(t.source as string, t.file)
    else await (e === 'odirect-stream' ? writeOdirect(t) : e === 'odirect-web' ? writeWeb(t) : writeFs(t))
    return t.size
  }
  switch (e) {
    case 'odirect-stream':
      return count(createReadStream(src(t), readOpts(t)))
    case 'odirect-stream-reuse':
      return count(createReadStream(src(t), { ...readOpts(t), reuseChunks: true }))
    case 'odirect-stream-sha':
      return hashRead(createReadStream(src(t), readOpts(t)))
    case 'odirect-web':
      return readWeb(t, false)
    case 'odirect-web-sha':
      return readWeb(t, true)
    case 'odirect-web-byob':
      return readByob(t)
    case 'node-fs-stream-1m-sha':
      return hashRead(fs.createReadStream(t.file, { start: 0, end: t.size - 1, highWaterMark: STREAM_CHUNK }))
    case 'node-fs-stream-1m':
      return count(fs.createReadStream(t.file, { start: 0, end: t.size - 1, highWaterMark: STREAM_CHUNK }))
    default:
      return count(fs.createReadStream(t.file, { start: 0, end: t.size - 1 }))
  }
}

const CHILD_FLAG = '--odirect-stream-child'
const WARM = 4 * STREAM_CHUNK

/**
 * In a fresh process (this file run with CHILD_FLAG): a short warm-up pass (code paths, the
 * engine), the file's pages dropped again, then the measured pass. Prints its StreamRun (RSS
 * growth: peak resident set during the pass over the resident set before it; no forced GC).
 */
async function childMain(args: string[]): Promise<void> {
  const [e, write, file, size] = [args[0] as StreamEngineId, args[1] === '1', args[2], Number(args[3])]
  const openOptions = args[4] === undefined ? {} : (JSON.parse(args[4]) as Record<string, unknown>)
  const from = process.env.ODIRECT_BENCH_COPY_SOURCE
  const source = from === undefined || from === '' ? undefined : from
  const transferSource = write && odirectSourced(e)
  if (transferSource) prepareOdirectChunks(Math.min(size, WARM))
  await pass(e, write, { file, size: Math.min(size, WARM), source })
  for (const f of [file, source]) {
    if (f === undefined) continue
    const fd = fs.openSync(f, 'r')
    try {
      native.dropCache(fd, 0, 0)
    } finally {
      fs.closeSync(fd)
    }
  }
  if (transferSource) prepareOdirectChunks(size)
  // The peak is this pass's: ru_maxrss (resourceUsage().maxRSS) starts at the RSS of the forked
  // parent at exec (Linux keeps the old mm's high-water mark), so a big bench process showed its own
  // size as every child's growth. Writing 5 to clear_refs resets VmHWM (Linux 4.0+).
  const hwmReset = resetPeakRss()
  const rss0 = process.memoryUsage.rss()
  // odirect's rows open the file before the clock, as fio does (its runtime starts after its
  // open and buffer setup; it does include its end_fsync, as these rows include the datasync).
  const fh = e.startsWith('odirect') && e !== 'odirect-copyfile' ? await open(file, write ? 'r+' : 'r', openOptions) : undefined
  const k0 = readCopyStats()
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  const n = await pass(e, write, { file, size, fh, source })
  const secs = (performance.now() - t0) / 1000
  const c = process.cpuUsage(c0)
  const peak = hwmReset ? peakRss() : process.resourceUsage().maxRSS * 1024
  if (n !== size) throw new Error(`read ${n} bytes, expected ${size}`)
  const run: StreamRun = { mbps: size / secs / 1e6, cpuPerGiB: (c.user + c.system) / 1e6 / (size / 2 ** 30), residentPct: NaN, rssGrowthMiB: Math.max(0, peak - rss0) / 2 ** 20 }
  // ODIRECT_BENCH_STREAM_COUNTS=1 (bench/stream-ab.cjs diagnostics): the read streams' counts over
  // the pass (src/streams/core.ts readCopyStats: copies, handed over, reused, new, copy windows yes/no).
  const counts = process.env.ODIRECT_BENCH_STREAM_COUNTS === '1' ? { counts: readCopyStats().map((v, i) => v - (k0[i] ?? 0)) } : {}
  process.stdout.write(JSON.stringify({ ...run, ...counts }))
}

/** Resets the kernel's peak-RSS mark (VmHWM) of this process; false where that is refused. */
function resetPeakRss(): boolean {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5')
    return true
  } catch {
    return false
  }
}

/** VmHWM of this process in bytes (the peak resident set since the last reset). */
function peakRss(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}

/** One run of a JS engine in a fresh Node process (so RSS and the heap start from the same state for every engine). */
function runChild(e: StreamEngineId, write: boolean, t: StreamTarget, v?: Variant): StreamRun | string {
  const args = [__filename, CHILD_FLAG, e, write ? '1' : '0', t.file, String(t.size), ...(v?.open ? [JSON.stringify(v.open)] : [])]
  const env = { ...process.env, ...(v?.env ?? {}), ODIRECT_BENCH_COPY_SOURCE: t.source ?? '' }
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 20, env })
  if (r.error) return `failed: ${r.error.message}`
  if (r.status !== 0) return `failed: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' ') || `exit ${r.status}`}`
  try {
    return JSON.parse(r.stdout) as StreamRun
  } catch {
    return `failed: no result (${r.stdout.slice(0, 200)})`
  }
}

/** One run of one engine; the page cache of the file is emptied first. */
export async function runStream(ctx: BenchContext, w: StreamWorkload, e: StreamEngineId, t: StreamTarget, v?: Variant): Promise<StreamRun | string> {
  drop(ctx, t.file)
  if (t.source !== undefined) drop(ctx, t.source)
  if (e === 'odirect-copyfile' && t.source !== undefined && fs.statSync(t.source).size !== t.size) {
    return `copyFile copies the whole test file (${fmtSize(fs.statSync(t.source).size)}), not the workload's ${fmtSize(t.size)}`
  }
  const r = e === 'dd-direct' ? runDd(t, w.write) : STREAM_FIO.includes(e) ? runFioStream(ctx, t, w.write, e === 'fio-io_uring-huge') : runChild(e, w.write, t, v)
  if (typeof r === 'string') return r
  const res = residentBytes(t.file)
  r.residentPct = Number.isFinite(res) ? Math.min(100, (res / t.size) * 100) : NaN
  return r
}

/** A scratch file of `size` bytes of data, fully written (so every write engine overwrites in place). */
export async function prepareScratch(file: string, size: number): Promise<void> {
  const fh = await open(file, 'w+')
  try {
    const bufs = Array.from({ length: STREAM_DEPTH }, () => fh.alloc(STREAM_CHUNK))
    for (const b of bufs) for (let i = 0; i < b.length; i += 8) b[i] = (Math.random() * 255 + 1) | 0
    for (let pos = 0; pos < size; ) {
      const ops: { buffer: Uint8Array; position: number }[] = []
      for (const b of bufs) {
        if (pos >= size) break
        ops.push({ buffer: b, position: pos })
        pos += STREAM_CHUNK
      }
      await fh.writeMany(ops)
    }
    await fh.datasync()
  } finally {
    await fh.close()
  }
}

if (require.main === module && process.argv[2] === CHILD_FLAG) {
  childMain(process.argv.slice(3)).catch((e: unknown) => {
    console.error(e)
    process.exit(1)
  })
}
