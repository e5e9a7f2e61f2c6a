// Streams suite: Node and web streams over real files with O_DIRECT (ext4 under /var/tmp),
// the page cache left alone, bounded memory, and `odirect cp`.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { once } from 'node:events'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { setImmediate as tick } from 'node:timers/promises'
import * as zlib from 'node:zlib'

import test, { type ExecutionContext } from 'ava'

import {
  addressOf,
  createReadStream,
  createWriteStream,
  DirectIoError,
  DirectReadStream,
  DirectWriteStream,
  type FileHandle,
  open,
  readableWebStream,
  writableWebStream,
} from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { native } from '../dist/src/native.js'
import { closeEvent, expectError, engineRoundTrip, until } from './helpers/events.ts'
import { COPY_SIZE, interruptCopy } from './helpers/cpinterrupt.ts'
import { collect } from './helpers/rw.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { inKernel, offerBlocks } from './helpers/wstream.ts'
import { FAULTFS_REASON, FULLFS_REASON, testIf } from './helpers/skips.ts'
import { faultFs, fullFs, isSkip, patternBuffer, ramfsDir, skipReason } from './helpers/fixtures.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.join(__dirname, '..', 'dist', 'cli.js')
const MiB = 1024 * 1024
const IS_ROOT = process.getuid?.() === 0

const RAMFS_REASON = skipReason(['root', 'cmd:mount', 'fs:ramfs'])
const ROOT_REASON = IS_ROOT ? undefined : 'needs root to drop caches'

const scratch = scratchDirs('streams')

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex')
}

function shaFile(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}

/** Writes `data` through `ws` in chunks of varying odd sizes, honouring backpressure. */
async function writeOdd(ws: Writable, data: Buffer): Promise<void> {
  let off = 0
  let i = 0
  while (off < data.length) {
    const n = Math.min(data.length - off, [1, 7, 4096, 4097, 65_537, 300_001][i++ % 6])
    if (!ws.write(data.subarray(off, off + n))) await new Promise((r) => ws.once('drain', r))
    off += n
  }
  ws.end()
  await new Promise<void>((resolve, reject) => {
    ws.once('finish', resolve)
    ws.once('error', reject)
  })
}

function residentBytes(file: string): number {
  const out = execFileSync('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', file], { encoding: 'utf8' }).trim()
  return Number(out)
}

function dropCaches(): void {
  execFileSync('sync')
  fs.writeFileSync('/proc/sys/vm/drop_caches', '1\n')
}

for (const size of [0, 1, 4095, 4096, 4097, 10 * MiB + 123]) {
  test(`round trip of ${size} bytes through createWriteStream / createReadStream, sha256 equal`, async (t) => {
    const file = path.join(scratch(), 'rt.bin')
    const data = randomBytes(size)
    const ws = createWriteStream(file, { chunkSize: 256 * 1024 })
    t.true(ws instanceof DirectWriteStream)
    await writeOdd(ws, data)
    t.is(ws.bytesWritten, size)
    t.is(fs.statSync(file).size, size)
    t.is(shaFile(file), sha(data))
    const rs = createReadStream(file, { chunkSize: 64 * 1024 })
    t.true(rs instanceof DirectReadStream)
    const back = await collect(rs)
    t.is(back.length, size)
    t.is(sha(back), sha(data))
    t.is(rs.bytesRead, size)
    t.true(rs.handle!.direct)
    t.true(rs.handle!.closed, 'the stream closes the file it opened')
  })
}

test('chunks are aligned views over their own memory, and stay valid when retained', async (t) => {
  const file = path.join(scratch(), 'views.bin')
  const data = randomBytes(6 * MiB + 5)
  fs.writeFileSync(file, data)
  const chunks: Buffer[] = []
  for await (const c of createReadStream(file)) chunks.push(c as Buffer)
  t.is(chunks.length, 4)
  const buffers = new Set(chunks.map((c) => c.buffer))
  t.is(buffers.size, chunks.length, 'each chunk has its own ArrayBuffer')
  // The default chunk: 2 MiB.
  for (const c of chunks.slice(0, 3)) t.is(c.length, 2 * MiB)
  t.is(chunks[3].length, 5)
  t.is(sha(Buffer.concat(chunks)), sha(data))
})

test('start/end ranges (unaligned, inclusive end) match fs.createReadStream', async (t) => {
  const file = path.join(scratch(), 'range.bin')
  const size = 2 * MiB + 777
  fs.writeFileSync(file, randomBytes(size))
  const cases: Array<{ start?: number; end?: number }> = [
    { start: 0, end: 0 },
    { start: 1, end: 1 },
    { start: 4095, end: 4096 },
    { start: 100, end: 70_000 },
    { start: 65_535, end: 65_536 * 3 + 1 },
    { start: 4097 },
    { end: 12_345 },
    { start: size - 1 },
    { start: size - 10, end: size + 100 },
    { start: size },
    { start: size + 5000 },
    { start: 123_457, end: 2 * MiB + 1 },
  ]
  for (const c of cases) {
    for (const chunkSize of [4096, 65_536, MiB]) {
      const ours = await collect(createReadStream(file, { ...c, chunkSize, readAhead: 3 }))
      const theirs = await collect(fs.createReadStream(file, c))
      t.is(ours.length, theirs.length, `${JSON.stringify(c)} chunk ${chunkSize}`)
      t.true(ours.equals(theirs), `${JSON.stringify(c)} chunk ${chunkSize}`)
    }
  }
})

/** Waits until `fh` has no op in flight (each completion delivered, and whatever it started finished too). */
async function settled(fh: FileHandle): Promise<void> {
  while (fh.stats().inflight > 0) await engineRoundTrip(fh.backend)
  await engineRoundTrip(fh.backend)
}

test('reads stay in flight while the consumer holds back: one more chunk waits for it, then it stops', async (t) => {
  const file = path.join(scratch(), 'ahead.bin')
  fs.writeFileSync(file, randomBytes(4 * MiB))
  await using fh = await open(file, 'r')
  const readAhead = 3
  const rs = createReadStream(fh, { chunkSize: 64 * 1024, readAhead })
  // Nobody consumes: the Readable took one chunk into its buffer (its highWaterMark is smaller
  // than a chunk); the reader refilled from the completions (not from a pull) until one
  // completed chunk waited beside readAhead reads, and issued nothing after those completed too.
  await once(rs, 'readable')
  await settled(fh)
  t.is(fh.stats().reads, 1 + readAhead + 1)
  t.is(fh.stats().inflight, 0)
  await settled(fh)
  t.is(fh.stats().reads, 1 + readAhead + 1, 'nothing more without a consumer')
  let n = 0
  for await (const c of rs) n += (c as Buffer).length
  t.is(n, 4 * MiB)
})

test('backpressure: a slow consumer never has more than readAhead reads in flight, nor more than one more chunk buffered', async (t) => {
  const file = path.join(scratch(), 'bp.bin')
  fs.writeFileSync(file, randomBytes(4 * MiB))
  await using fh = await open(file, 'r')
  const readAhead = 3
  const rs = createReadStream(fh, { chunkSize: 64 * 1024, readAhead })
  let got = 0
  let maxInflight = 0
  let maxAhead = 0
  // Reads must not run ahead without bound while nobody consumes.
  await once(rs, 'readable')
  await settled(fh)
  t.true(fh.stats().reads + fh.stats().inflight <= readAhead + 2)
  for await (const c of rs) {
    got++
    const s = fh.stats()
    // In the kernel: the read the stream's chain holds back in the engine is not (streams-s12.spec).
    maxInflight = Math.max(maxInflight, inKernel(fh))
    // Issued reads minus chunks handed over: the core's queue plus at most one in the Readable's buffer.
    maxAhead = Math.max(maxAhead, s.reads + s.inflight - got)
    t.is((c as Buffer).length, 64 * 1024)
    // A slow consumer: the completions that arrive meanwhile are delivered before the next chunk is taken.
    await engineRoundTrip(fh.backend)
  }
  t.is(got, 64)
  t.true(maxInflight <= readAhead, `inflight ${maxInflight}`)
  t.true(maxInflight >= 1)
  t.true(maxAhead <= readAhead + 2, `ahead ${maxAhead}`)
  t.false(fh.closed, 'a FileHandle passed in is left open')
})


test.serial('write stream takes writeBehind more blocks while writeBehind writes are in flight, started as they complete, then applies backpressure', async (t) => {
  const file = path.join(scratch(), 'wbq.bin')
  await using fh = await open(file, 'w+')
  const writeBehind = 2
  const ws = createWriteStream(fh, { chunkSize: 64 * 1024, writeBehind })
  await once(ws, 'ready')
  // Ten full blocks offered at once; completions reach JS only from the event loop's poll
  // phase, so until then (ticks and microtasks only) the stream accepts (calls back) the blocks
  // it can keep: writeBehind in flight, and writeBehind more copied in to start as soon as
  // writes complete (the callback of the last of them waits for room).
  const { early, accepted } = await offerBlocks(fh, ws, 10, 64 * 1024)
  ws.end()
  await once(ws, 'finish')
  t.deepEqual(early, { inKernel: writeBehind, accepted: 2 * writeBehind - 1 })
  t.is(accepted(), 10)
  t.is((await fh.stat()).size, 10 * 64 * 1024)
})

/** A directory on tmpfs (removed after the test): its direct I/O completes within the submission, so every op in flight reaches JS in one delivery. */
function shmDir(t: ExecutionContext): string {
  const dir = fs.mkdtempSync('/dev/shm/odirect-streams-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * Replaces `fh[method]` (as the stream calls it) by a wrapper that records how many ops the
 * engine (the thread's, shared by every test of this file: tests using it run serially) has staged (not yet handed to the kernel) when the first call of each synchronous run
 * of calls is made.
 */
function stagedAtBursts(fh: FileHandle, method: 'read' | 'write'): number[] {
  const engine = getEngine().native
  const seen: number[] = []
  const orig = (fh[method] as (...a: unknown[]) => Promise<unknown>).bind(fh)
  let inRun = false
  const wrapped = (...a: unknown[]): Promise<unknown> => {
    if (!inRun) {
      inRun = true
      seen.push(engine.staged)
      queueMicrotask(() => (inRun = false))
    }
    return orig(...a)
  }
  Object.defineProperty(fh, method, { value: wrapped })
  return seen
}

test.serial('a read refilled from a completion is handed to the kernel at once, not after the microtasks queued before the engine\'s flush', async (t) => {
  const file = path.join(shmDir(t), 'refill.bin')
  const data = randomBytes(4 * MiB)
  fs.writeFileSync(file, data)
  await using fh = await open(file, 'r')
  t.true(fh.direct)
  // readAhead reads complete together; each refill (from a completion, or from the pull that
  // takes a chunk) goes to the kernel before control leaves the stream: a later refill never
  // finds an earlier one still staged.
  const staged = stagedAtBursts(fh, 'read')
  const parts: Buffer[] = []
  for await (const c of createReadStream(fh, { chunkSize: 64 * 1024, readAhead: 4 })) parts.push(c as Buffer)
  t.true(staged.length > 1)
  t.deepEqual(
    staged.filter((n) => n !== 0),
    [],
  )
  t.true(Buffer.concat(parts).equals(data))
})

test.serial('a write started by a completion is handed to the kernel at once, not after the other completions of its delivery', async (t) => {
  const file = path.join(shmDir(t), 'refill.bin')
  await using fh = await open(file, 'w+')
  t.true(fh.direct)
  // Each fh.write the stream makes finds nothing staged: the write before it (started by an
  // earlier completion of the same delivery, or by the producer) was submitted already.
  const staged: number[] = []
  const write = fh.write.bind(fh) as (...a: unknown[]) => Promise<unknown>
  Object.defineProperty(fh, 'write', { value: (...a: unknown[]) => (staged.push(getEngine().native.staged), write(...a)) })
  const ws = createWriteStream(fh, { chunkSize: 64 * 1024, writeBehind: 4 })
  const blocks = Array.from({ length: 32 }, () => randomBytes(64 * 1024))
  for (const b of blocks) ws.write(b)
  ws.end()
  await once(ws, 'finish')
  t.is(staged.length, 32)
  t.deepEqual(
    staged.filter((n) => n !== 0),
    [],
  )
  t.true(fs.readFileSync(file).equals(Buffer.concat(blocks)))
})

test.serial('write stream: a held write goes to the kernel at the reap of the write before it, before JS learns of that completion', async (t) => {
  const file = path.join(scratch(), 'chain.bin')
  await using fh = await open(file, 'w+')
  const engine = getEngine().native
  const [released0] = engine.chainStats
  // writeBehind 1: the first block in the kernel, the second held in the engine (accepted: 2).
  const seen: number[][] = []
  const write = fh.write.bind(fh) as (...a: unknown[]) => Promise<unknown>
  let first = true
  Object.defineProperty(fh, 'write', {
    value: (...a: unknown[]) => {
      const p = write(...a)
      // Where the first write's completion reaches JS: the reap that took it already handed
      // the held write to the kernel (nothing held, nothing staged, one release).
      if (first) p.then(() => seen.push([engine.chainStats[0] - released0, engine.chainStats[2], engine.staged]))
      first = false
      return p
    },
  })
  const ws = createWriteStream(fh, { chunkSize: 64 * 1024, writeBehind: 1 })
  const blocks = Array.from({ length: 8 }, () => randomBytes(64 * 1024))
  for (const b of blocks) ws.write(b)
  ws.end()
  await once(ws, 'finish')
  t.deepEqual(seen, [[1, 0, 0]])
  t.true(engine.chainStats[0] - released0 >= 7 - 1, `released ${engine.chainStats[0] - released0}`)
  t.is(engine.chainStats[2], 0)
  t.true(fs.readFileSync(file).equals(Buffer.concat(blocks)))
})

testIf(FAULTFS_REASON, 'write stream: a failed write stops its chain at the reap: the held block after it never reaches the file (faultfs EIO)', async (t) => {
  const block = 64 * 1024
  const fx = faultFs({ size: 8 * block, eioAt: [2 * block + 100] })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  try {
    const ws = createWriteStream(fx.file, { flags: 'r+', chunkSize: block, writeBehind: 1, datasync: false })
    const e = await expectError(t, pipeline(Readable.from(Array.from({ length: 8 }, (_, i) => Buffer.alloc(block, i + 1))), ws))
    t.is(e.code, 'EIO')
    t.is(e.position, 2 * block)
    t.is(ws.bytesWritten, 2 * block)
    // Blocks 0 and 1 written, block 2 failed; block 3, held in the engine then, was cancelled
    // at that reap instead of being handed to the kernel.
    t.is(fx.stats().writes, 3)
    await closeEvent(ws)
  } finally {
    fx.cleanup()
  }
})

test.serial('write stream keeps at most writeBehind writes in flight and applies backpressure', async (t) => {
  const file = path.join(scratch(), 'wb.bin')
  await using fh = await open(file, 'w+')
  const ws = createWriteStream(fh, { chunkSize: 64 * 1024, writeBehind: 2 })
  let maxInflight = 0
  const timer = setInterval(() => (maxInflight = Math.max(maxInflight, inKernel(fh))), 0)
  const data = randomBytes(8 * MiB + 3)
  await writeOdd(ws, data)
  clearInterval(timer)
  t.true(maxInflight <= 2, `inflight ${maxInflight}`)
  t.is(ws.bytesWritten, data.length)
  t.false(fh.closed)
  t.is((await fh.stat()).size, data.length)
  t.is(shaFile(file), sha(data))
})

test('pipeline: read stream -> gzip -> write stream -> read stream -> gunzip -> write stream', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src.bin')
  // Compressible but not trivial: random runs.
  const data = Buffer.concat(Array.from({ length: 400 }, (_, i) => Buffer.alloc(10_000 + i, randomBytes(16))))
  fs.writeFileSync(src, data)
  await pipeline(createReadStream(src, { chunkSize: 128 * 1024 }), zlib.createGzip(), createWriteStream(path.join(dir, 'src.gz')))
  t.true(fs.statSync(path.join(dir, 'src.gz')).size < data.length / 10)
  t.true(zlib.gunzipSync(fs.readFileSync(path.join(dir, 'src.gz'))).equals(data))
  await pipeline(createReadStream(path.join(dir, 'src.gz')), zlib.createGunzip(), createWriteStream(path.join(dir, 'out.bin')))
  t.is(shaFile(path.join(dir, 'out.bin')), sha(data))
})

test('for await over a read stream, and Readable.from into a write stream', async (t) => {
  const dir = scratch()
  const data = randomBytes(5 * MiB + 17)
  await pipeline(Readable.from([data.subarray(0, 3), data.subarray(3, 2 * MiB), data.subarray(2 * MiB)]), createWriteStream(path.join(dir, 'a')))
  let n = 0
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path.join(dir, 'a'), { readAhead: 2 })) {
    t.true(Buffer.isBuffer(chunk))
    n += (chunk as Buffer).length
    h.update(chunk as Buffer)
  }
  t.is(n, data.length)
  t.is(h.digest('hex'), sha(data))
  // Breaking out of the loop destroys the stream and closes its file.
  const rs = createReadStream(path.join(dir, 'a'), { chunkSize: 4096 })
  for await (const _ of rs) break
  t.true(rs.destroyed)
  await closeEvent(rs)
  t.true(rs.handle!.closed)
})

test('web streams: BYOB reader with odd view sizes, default reader, pipeTo a writable web stream', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'web.bin')
  const data = randomBytes(3 * MiB + 4099)
  fs.writeFileSync(file, data)

  // BYOB: read into a 1000-byte (unaligned) buffer, reusing it as the spec transfers it.
  const rs = readableWebStream(file, { chunkSize: 256 * 1024 })
  const reader = rs.getReader({ mode: 'byob' })
  const parts: Buffer[] = []
  let view = new Uint8Array(1000)
  for (;;) {
    const { value, done } = await reader.read(view)
    if (done) break
    t.true(value.byteLength > 0 && value.byteLength <= 1000)
    parts.push(Buffer.from(value))
    view = new Uint8Array(value.buffer, 0, 1000)
  }
  t.is(sha(Buffer.concat(parts)), sha(data))

  // Range + default reader.
  const ranged = await collect(readableWebStream(file, { start: 5000, end: 2 * MiB + 3 }) as unknown as AsyncIterable<Uint8Array>)
  t.true(ranged.equals(data.subarray(5000, 2 * MiB + 4)))

  // Web to web.
  const out = path.join(dir, 'copy.bin')
  await readableWebStream(file).pipeTo(writableWebStream(out, { chunkSize: 64 * 1024 }))
  t.is(fs.statSync(out).size, data.length)
  t.is(shaFile(out), sha(data))

  // Writable web stream with odd chunks, then exact length.
  const out2 = path.join(dir, 'odd.bin')
  const w = writableWebStream(out2).getWriter()
  for (let off = 0; off < data.length; off += 12_345) await w.write(data.subarray(off, off + 12_345))
  await w.close()
  t.is(shaFile(out2), sha(data))
})

test('web streams: cancel and errors', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'w.bin')
  fs.writeFileSync(file, randomBytes(2 * MiB))
  await using fh = await open(file, 'r')
  const rs = readableWebStream(fh, { chunkSize: 4096 })
  const reader = rs.getReader()
  await reader.read()
  await reader.cancel()
  // cancel() resolves once the reads in flight at the cancel completed; none is started after them.
  t.is(fh.stats().inflight, 0, 'the reads in flight at the cancel completed')
  const reads = fh.stats().reads
  await engineRoundTrip(fh.backend)
  t.is(fh.stats().reads, reads, 'no read started after the cancel')
  t.is(fh.stats().inflight, 0)
  t.false(fh.closed)
  // Errors reject the reader with the typed error.
  const e = await expectError(t, readableWebStream(path.join(dir, 'missing')).getReader().read())
  t.true(e instanceof DirectIoError)
  t.is(e.code, 'ENOENT')
  const w = writableWebStream(fh).getWriter()
  const e2 = await expectError(t, w.write(new Uint8Array(10)))
  t.is(e2.code, 'ERR_ODIRECT_FLAGS')
})

test('abort via signal mid-stream: the read stream errors with AbortError, no crash, file closed', async (t) => {
  const file = path.join(scratch(), 'abort.bin')
  fs.writeFileSync(file, randomBytes(16 * MiB))
  const ac = new AbortController()
  const rs = createReadStream(file, { chunkSize: 64 * 1024, signal: ac.signal })
  let n = 0
  const e = await expectError(
    t,
    (async () => {
      for await (const _ of rs) {
        if (++n === 10) ac.abort()
      }
    })(),
  )
  t.is(e.name, 'AbortError')
  t.is(e.code, 'ABORT_ERR')
  t.true(e instanceof DirectIoError)
  t.true(n >= 10 && n < 256)
  await closeEvent(rs)
  t.true(rs.handle!.closed)
  t.is(rs.handle!.stats().inflight, 0)

  // Already aborted.
  const e2 = await expectError(t, collect(createReadStream(file, { signal: AbortSignal.abort() })))
  t.is(e2.name, 'AbortError')

  // Write stream aborted mid-way.
  const ac2 = new AbortController()
  const ws = createWriteStream(path.join(scratch(), 'abort-w.bin'), { chunkSize: 64 * 1024, signal: ac2.signal })
  const errored = new Promise<Error>((r) => ws.once('error', r))
  for (let i = 0; i < 50; i++) {
    if (!ws.write(randomBytes(100_000))) await new Promise((r) => ws.once('drain', r))
    if (i === 20) ac2.abort()
    if (ws.destroyed) break
  }
  const e3 = (await errored) as DirectIoError
  t.is(e3.code, 'ABORT_ERR')
  t.true(ws.bytesWritten <= 21 * 100_000)
  await closeEvent(ws)
  t.true(ws.handle!.closed)

  // pipeline with a signal, aborted once data flows: rejects with AbortError, nothing crashes.
  const ac3 = new AbortController()
  const slow = new Writable({
    write: (_c, _e, cb) => {
      ac3.abort()
      setImmediate(cb)
    },
  })
  const e4 = await expectError(t, pipeline(createReadStream(file, { chunkSize: 4096, signal: ac3.signal }), slow))
  t.is(e4.name, 'AbortError')
})

test('errors propagate as typed errors: read-only handle, missing file, directory, bad options', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'ro.bin')
  fs.writeFileSync(file, randomBytes(10_000))
  await using ro = await open(file, 'r')
  const ws = createWriteStream(ro)
  const e = await expectError(t, pipeline(Readable.from([randomBytes(10)]), ws))
  t.true(e instanceof DirectIoError)
  t.is(e.code, 'ERR_ODIRECT_FLAGS')
  t.regex(e.message, /read-only/)
  t.false(ro.closed, 'a handle passed in is not closed on error')
  t.is(fs.statSync(file).size, 10_000)

  const e2 = await expectError(t, collect(createReadStream(path.join(dir, 'nope'))))
  t.is(e2.code, 'ENOENT')
  t.true(e2 instanceof DirectIoError)
  const e3 = await expectError(t, collect(createReadStream(dir)))
  t.is(e3.code, 'EISDIR')

  const bad: Array<[() => unknown, string]> = [
    [() => createReadStream(file, { chunkSize: 0 }), 'ERR_OUT_OF_RANGE'],
    [() => createReadStream(file, { chunkSize: 1.5 }), 'ERR_OUT_OF_RANGE'],
    [() => createReadStream(file, { readAhead: 0 }), 'ERR_OUT_OF_RANGE'],
    [() => createReadStream(file, { start: -1 }), 'ERR_OUT_OF_RANGE'],
    [() => createReadStream(file, { start: 10, end: 9 }), 'ERR_OUT_OF_RANGE'],
    [() => createReadStream(file, { end: '5' as unknown as number }), 'ERR_INVALID_ARG_TYPE'],
    [() => createReadStream(file, { signal: {} as AbortSignal }), 'ERR_INVALID_ARG_TYPE'],
    [() => createReadStream(file, { direct: 'yes' as 'require' }), 'ERR_INVALID_ARG_VALUE'],
    [() => createReadStream(ro, { direct: 'prefer' }), 'ERR_INVALID_ARG_VALUE'],
    [() => createReadStream(42 as unknown as string), 'ERR_INVALID_ARG_TYPE'],
    [() => createWriteStream(file, { flags: 'r' as 'w' }), 'ERR_ODIRECT_FLAGS'],
    [() => createWriteStream(file, { writeBehind: 2000 }), 'ERR_OUT_OF_RANGE'],
    [() => createWriteStream(file, { datasync: 1 as unknown as boolean }), 'ERR_INVALID_ARG_TYPE'],
    [() => createWriteStream(ro, { flags: 'w' }), 'ERR_INVALID_ARG_VALUE'],
    [() => readableWebStream(file, { readAhead: -1 }), 'ERR_OUT_OF_RANGE'],
    [() => writableWebStream(file, { mode: 0o10000 }), 'ERR_OUT_OF_RANGE'],
  ]
  for (const [fn, code] of bad) {
    const err = t.throws(fn, { instanceOf: DirectIoError }, String(fn))
    t.is((err as DirectIoError).code, code, String(fn))
  }
  // An unaligned write start is refused once the block size is known.
  const e4 = await expectError(t, pipeline(Readable.from([Buffer.from('x')]), createWriteStream(path.join(dir, 'u'), { start: 100 })))
  t.is(e4.code, 'ERR_ODIRECT_ALIGNMENT')
  // Non-byte chunks into a web writable.
  const w = writableWebStream(path.join(dir, 'w2')).getWriter()
  const e5 = await expectError(t, w.write('text' as unknown as Uint8Array))
  t.is(e5.code, 'ERR_INVALID_ARG_TYPE')
})

test('write stream: aligned start, r+ in place keeps the tail, and a given handle stays open', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'inplace.bin')
  const orig = randomBytes(100_000)
  fs.writeFileSync(file, orig)
  const patch = randomBytes(5000)
  await pipeline(Readable.from([patch]), createWriteStream(file, { flags: 'r+', start: 8192 }))
  const expected = Buffer.from(orig)
  patch.copy(expected, 8192)
  t.true(fs.readFileSync(file).equals(expected), 'bytes after the patch in its last block are kept')
  // Past the end with 'r+': the file grows to exactly start + bytes.
  await pipeline(Readable.from([patch]), createWriteStream(file, { flags: 'r+', start: 98_304 }))
  t.is(fs.statSync(file).size, 98_304 + 5000)
  // 'w' with a start leaves a hole before it.
  const f2 = path.join(dir, 'hole.bin')
  await pipeline(Readable.from([Buffer.from('abc')]), createWriteStream(f2, { start: 4096 }))
  const b = fs.readFileSync(f2)
  t.is(b.length, 4099)
  t.is(b.subarray(4096).toString(), 'abc')
  t.true(b.subarray(0, 4096).every((x) => x === 0))
  // Handle passed in: stays open, the stream does not move its position.
  await using fh = await open(path.join(dir, 'h.bin'), 'w+')
  await pipeline(Readable.from([Buffer.from('hello world')]), createWriteStream(fh, { datasync: false }))
  t.false(fh.closed)
  t.is((await fh.stat()).size, 11)
})

testIf(FULLFS_REASON, 'ENOSPC mid-stream: typed error, bytesWritten counts only confirmed blocks before the failure', async (t) => {
  const fx = fullFs(8)
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  try {
    const file = path.join(fx.dir, 'fill.bin')
    const ws = createWriteStream(file, { chunkSize: 256 * 1024, writeBehind: 4, direct: 'prefer' })
    const total = 32 * MiB
    const e = await expectError(
      t,
      pipeline(
        Readable.from(
          (function* () {
            for (let off = 0; off < total; off += MiB) yield patternBuffer(off, MiB)
          })(),
        ),
        ws,
      ),
    )
    t.true(e instanceof DirectIoError)
    t.is(e.code, 'ENOSPC')
    t.true(ws.bytesWritten > 0 && ws.bytesWritten < total, `bytesWritten ${ws.bytesWritten}`)
    t.is(ws.bytesWritten % (256 * 1024), 0)
    // Everything reported as written is really there.
    const fd = fs.openSync(file, 'r')
    const got = Buffer.alloc(ws.bytesWritten)
    fs.readSync(fd, got, 0, got.length, 0)
    fs.closeSync(fd)
    t.true(got.equals(patternBuffer(0, ws.bytesWritten)))
    t.true(ws.handle!.closed)
  } finally {
    fx.cleanup()
  }
})

testIf(FAULTFS_REASON, 'EIO mid-read (faultfs): chunks before the bad block, then the typed error', async (t) => {
  const fx = faultFs({ size: 4 * MiB, eioAt: [2 * MiB + 100] })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  try {
    const rs = createReadStream(fx.file, { chunkSize: MiB, readAhead: 2, direct: 'prefer' })
    const parts: Buffer[] = []
    const e = await expectError(
      t,
      (async () => {
        for await (const c of rs) parts.push(c as Buffer)
      })(),
    )
    t.true(e instanceof DirectIoError)
    t.is(e.code, 'EIO')
    t.is(e.position, 2 * MiB)
    t.is(rs.bytesRead, 2 * MiB)
    t.true(Buffer.concat(parts).equals(patternBuffer(0, 2 * MiB)))
    await closeEvent(rs)
    t.true(rs.handle!.closed)
  } finally {
    fx.cleanup()
  }
})

testIf(FAULTFS_REASON, 'short reads before end of file (faultfs) are continued, not taken for EOF', async (t) => {
  const fx = faultFs({ size: MiB + 5000, shortReads: true })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  try {
    const rs = createReadStream(fx.file, { chunkSize: 256 * 1024, direct: 'off' })
    const got = await collect(rs)
    t.is(got.length, MiB + 5000)
    t.true(got.equals(patternBuffer(0, MiB + 5000)))
  } finally {
    fx.cleanup()
  }
})

testIf(ROOT_REASON, 'page cache: createReadStream leaves a 256 MiB file uncached, fs.createReadStream does not (root, machine-wide)', async (t) => {
  const file = path.join(scratch(), 'cache-r.bin')
  const size = 256 * MiB
  await pipeline(Readable.from((function* () { for (let i = 0; i < 256; i++) yield randomBytes(MiB) })()), createWriteStream(file))
  dropCaches()
  t.true(residentBytes(file) <= size / 100)
  let t0 = performance.now()
  let n = 0
  for await (const c of createReadStream(file)) n += (c as Buffer).length
  const ours = size / ((performance.now() - t0) / 1000) / 1e6
  t.is(n, size)
  const resOurs = residentBytes(file)
  dropCaches()
  t0 = performance.now()
  n = 0
  for await (const c of fs.createReadStream(file, { highWaterMark: MiB })) n += (c as Buffer).length
  const theirs = size / ((performance.now() - t0) / 1000) / 1e6
  const resFs = residentBytes(file)
  t.log(`createReadStream: ${ours.toFixed(0)} MB/s, ${((resOurs / size) * 100).toFixed(2)}% resident; fs.createReadStream (1 MiB): ${theirs.toFixed(0)} MB/s, ${((resFs / size) * 100).toFixed(1)}% resident`)
  t.true(resOurs <= size / 100, `resident after createReadStream: ${resOurs}`)
  t.true(resFs > size / 2, `resident after fs.createReadStream: ${resFs}`)
  dropCaches()
})

testIf(ROOT_REASON, 'page cache: createWriteStream leaves a 256 MiB file uncached (root, machine-wide)', async (t) => {
  const file = path.join(scratch(), 'cache-w.bin')
  const size = 256 * MiB
  dropCaches()
  const block = randomBytes(MiB)
  const t0 = performance.now()
  const ws = createWriteStream(file)
  await pipeline(Readable.from((function* () { for (let i = 0; i < 256; i++) yield block })()), ws)
  const rate = size / ((performance.now() - t0) / 1000) / 1e6
  t.is(fs.statSync(file).size, size)
  const res = residentBytes(file)
  t.log(`createWriteStream: ${rate.toFixed(0)} MB/s (with datasync), ${((res / size) * 100).toFixed(2)}% resident`)
  t.true(res <= size / 100, `resident after createWriteStream: ${res}`)
  // fs.createWriteStream for comparison (not asserted).
  const f2 = path.join(path.dirname(file), 'cache-w-fs.bin')
  await pipeline(Readable.from((function* () { for (let i = 0; i < 256; i++) yield block })()), fs.createWriteStream(f2))
  t.log(`fs.createWriteStream: ${((residentBytes(f2) / size) * 100).toFixed(1)}% resident`)
  fs.rmSync(f2)
})

/** A sparse file of `size` bytes in a new scratch dir (reads of it cost no disk I/O). */
function sparseFile(name: string, size: number): string {
  const file = path.join(scratch(), name)
  fs.closeSync(fs.openSync(file, 'w'))
  fs.truncateSync(file, size)
  return file
}

/**
 * Runs an ESM `script` in a fresh Node process (asynchronously: the file's other tests go on)
 * and returns the JSON it printed; `gc` adds --expose-gc.
 */
function measureChild<T>(t: ExecutionContext, script: string, args: readonly string[], gc = false): Promise<T> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [...(gc ? ['--expose-gc'] : []), '--input-type=module', '-e', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
    c.on('error', reject)
    c.on('close', (status) => {
      t.is(status, 0, err)
      try {
        resolve(JSON.parse(out) as T)
      } catch {
        reject(new Error(`the child printed no result (exit ${String(status)}): ${err}${out}`))
      }
    })
  })
}

// Run in a fresh process: this one's RSS carries what earlier tests allocated and freed.
const MEMORY_SCRIPT = `
import { createReadStream } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}
import { setImmediate as tick } from 'node:timers/promises'
const [file, readAhead, chunkSize] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])]
// Warm up (engine, code paths), then measure from a collected heap.
for await (const _ of createReadStream(file, { end: 8 << 20 })) void _
gc(); await tick(); await tick(); gc()
const base = process.memoryUsage().rss
let peakNoGc = 0, peak = 0, n = 0, i = 0
const t0 = performance.now()
for await (const c of createReadStream(file, { chunkSize, readAhead })) {
  n += c.length
  // Consumed chunks are garbage: collect them, so RSS shows what the stream holds rather than
  // how late V8 gets round to freeing external memory.
  if (++i % 2 === 0) {
    gc()
    peak = Math.max(peak, process.memoryUsage().rss - base)
  }
}
const secs = (performance.now() - t0) / 1000
// For information: the same without forced GCs (V8 frees ArrayBuffers in its own time).
gc(); await tick(); await tick(); gc()
const base2 = process.memoryUsage().rss
for await (const c of createReadStream(file, { chunkSize, readAhead })) peakNoGc = Math.max(peakNoGc, process.memoryUsage().rss - base2)
console.log(JSON.stringify({ n, peak, peakNoGc, secs }))
`

test('memory: streaming a 1 GiB file keeps RSS growth under readAhead x chunkSize + 16 MiB', async (t) => {
  const file = sparseFile('sparse.bin', 1024 * MiB)
  const readAhead = 4
  const chunkSize = MiB
  const m = await measureChild<{ n: number; peak: number; peakNoGc: number; secs: number }>(t, MEMORY_SCRIPT, [file, String(readAhead), String(chunkSize)], true)
  t.is(m.n, 1024 * MiB)
  const limit = readAhead * chunkSize + 16 * MiB
  t.log(`RSS growth: ${(m.peak / MiB).toFixed(1)} MiB with a GC every 2 chunks (limit ${limit / MiB} MiB, ${((1024 * MiB) / m.secs / 1e6).toFixed(0)} MB/s); ${(m.peakNoGc / MiB).toFixed(1)} MiB without forced GCs`)
  t.true(m.peak < limit, `RSS grew by ${(m.peak / MiB).toFixed(1)} MiB`)
})

// Fresh processes again: page faults and RSS counted from a known start.
const REUSE_SCRIPT = `
import { createReadStream } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}
const file = process.argv[1]
for await (const _ of createReadStream(file, { end: 8 << 20, chunkSize: 1 << 20 })) void _
const f0 = process.resourceUsage().minorPageFault
const r0 = process.memoryUsage().rss
let n = 0, peak = 0
// A plain consumer: every chunk dropped at once, no forced GC.
for await (const c of createReadStream(file, { chunkSize: 1 << 20 })) {
  n += c.length
  peak = Math.max(peak, process.memoryUsage().rss - r0)
}
console.log(JSON.stringify({ n, faults: process.resourceUsage().minorPageFault - f0, peak }))
`

// Chunks are transparent huge pages: each 2 MiB chunk one physically contiguous segment for the
// device (crates/core/src/mempool.rs: regions marked MADV_HUGEPAGE). Kept chunks, so none is
// freed or reused while counting.
const THP_SCRIPT = `
import { createReadStream } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}
import * as fs from 'node:fs'
const huge = () => Number(/AnonHugePages:\\s+(\\d+) kB/.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]) * 1024
const file = process.argv[1]
for await (const _ of createReadStream(file, { end: (2 << 20) - 1 })) void _
const h0 = huge()
const kept = []
for await (const c of createReadStream(file, { end: (32 << 20) - 1 })) kept.push(c)
console.log(JSON.stringify({ chunks: kept.length, bytes: kept.reduce((n, c) => n + c.length, 0), huge: huge() - h0 }))
`

const THP_MODE = (() => {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'none'
  } catch {
    return 'none'
  }
})()

testIf(THP_MODE === 'madvise' || THP_MODE === 'always' ? undefined : `transparent huge pages are ${THP_MODE === 'none' ? 'not in this kernel' : 'disabled'} (/sys/kernel/mm/transparent_hugepage/enabled: ${THP_MODE})`, 'memory: read-stream chunks (2 MiB, the default) are transparent huge pages (AnonHugePages)', async (t) => {
  const m = await measureChild<{ chunks: number; bytes: number; huge: number }>(t, THP_SCRIPT, [sparseFile('sparse-thp.bin', 32 * MiB)])
  t.is(m.bytes, 32 * MiB)
  t.log(`${m.chunks} chunks kept; AnonHugePages grew by ${(m.huge / MiB).toFixed(0)} MiB (THP mode: ${THP_MODE})`)
  // At least half of the kept chunks' memory (a huge page the kernel could not find right away
  // is a small-page chunk, not an error).
  t.true(m.huge >= 16 * MiB, `AnonHugePages grew by ${m.huge} bytes`)
})

// Both scripts above read in 1 MiB chunks, the size their bounds were set for (the default is
// 2 MiB since 2026-12-06; with it a loaded machine showed 56.9 MiB here once and 5 mark-compacts
// in the test below, 33-35 MiB on a quiet one: V8 decides when 2 MiB chunks are collected).
// Quiet: without forced GCs the RSS bound depends on V8's background GC threads getting CPU,
// which a machine busy with the rest of the suite does not give them (52.8 MiB seen, 46 alone,
// when chunks were counted twice as external memory; 28 alone since they are collected young).
test('memory: a read stream reuses the pages of chunks the consumer dropped (faults, RSS without forced GC) (quiet)', async (t) => {
  const m = await measureChild<{ n: number; faults: number; peak: number }>(t, REUSE_SCRIPT, [sparseFile('sparse-reuse.bin', 512 * MiB)])
  t.is(m.n, 512 * MiB)
  const pages = m.n / 4096
  t.log(`${m.faults} minor page faults for ${pages} pages read (${((m.faults / pages) * 100).toFixed(0)}%); RSS growth ${(m.peak / MiB).toFixed(1)} MiB without forced GC`)
  // A fresh chunk per read faults in every page (100%); reused memory faults only until the
  // first collections have returned blocks to the cache.
  t.true(m.faults < pages / 2, `${m.faults} faults for ${pages} pages: chunk memory is not reused`)
  // Not proportional to the file: V8's own pace of collection plus the reuse cache (32 MiB).
  t.true(m.peak < 4 * MiB + 48 * MiB, `RSS grew by ${(m.peak / MiB).toFixed(1)} MiB`)
})

const ALLOC_SCRIPT = `
import { addressOf, allocAligned } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}
import { setImmediate as tick } from 'node:timers/promises'
// Node runs external ArrayBuffer finalizers after the GC, on the event loop: wait for them.
const collect = async () => { gc(); await tick(); await tick() }
for (let i = 0; i < 4; i++) allocAligned(1 << 20).fill(0xff)
await collect()
const f0 = process.resourceUsage().minorPageFault
let dirty = 0
const addrs = new Set()
for (let i = 0; i < 64; i++) {
  const b = allocAligned(1 << 20)
  addrs.add(addressOf(b))
  if (b.some((x) => x !== 0)) dirty++
  b.fill(0xa5)
  await collect()
}
console.log(JSON.stringify({ faults: process.resourceUsage().minorPageFault - f0, dirty, addrs: addrs.size }))
`

test('memory: a freed aligned block is reused for the next allocation of its size, zeroed again', async (t) => {
  const m = await measureChild<{ faults: number; dirty: number; addrs: number }>(t, ALLOC_SCRIPT, [], true)
  t.log(`64 x allocAligned(1 MiB), each filled then collected: ${m.faults} minor page faults, ${m.addrs} distinct addresses`)
  t.is(m.dirty, 0, 'a reused block must read as zeros, like a new one')
  // Without reuse every allocation faults its 256 pages in again (16k faults).
  t.true(m.faults < (64 * 256) / 4, `${m.faults} page faults: freed blocks are not reused`)
})

// Serial, as the next one: the reuse cache of aligned blocks is the process's, and a concurrent
// test taking the blocks these free would leave nothing reused here to check.
test.serial('a consumer that keeps every chunk gets the right bytes: held chunks are never reused', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'kept.bin')
  const other = path.join(dir, 'other.bin')
  const data = randomBytes(24 * MiB + 12345)
  fs.writeFileSync(file, data)
  fs.writeFileSync(other, Buffer.alloc(16 * MiB, 0x5a))
  const gc = (globalThis as { gc?: () => void }).gc
  t.truthy(gc, 'ava runs with --expose-gc')
  const kept: Buffer[] = []
  let i = 0
  for await (const c of createReadStream(file, { chunkSize: MiB, readAhead: 4 })) {
    kept.push(c as Buffer)
    // Churn: other 1 MiB chunks freed and collected while these are held, so the reuse cache
    // is full of blocks of the very same size.
    if (++i % 4 === 0) {
      for await (const d of createReadStream(other, { chunkSize: MiB, end: 4 * MiB - 1 })) void d
      gc?.()
      await new Promise<void>((r) => setImmediate(r))
    }
  }
  // More reads of the same chunk size, their chunks dropped and collected: any block still held
  // above must not come back through them.
  for (let k = 0; k < 3; k++) {
    for await (const d of createReadStream(other, { chunkSize: MiB })) (d as Buffer).fill(0xee)
    gc?.()
    await new Promise<void>((r) => setImmediate(r))
  }
  t.is(sha(Buffer.concat(kept)), sha(data))
  // Held chunks occupy distinct memory.
  const ranges = kept.map((c) => [addressOf(c), addressOf(c) + c.length]).sort((a, b) => a[0] - b[0])
  for (let k = 1; k < ranges.length; k++) t.true(ranges[k][0] >= ranges[k - 1][1], 'two held chunks share memory')
})

test.serial('a chunk over reused memory shows no old bytes: what a short read left is zeroed, to the end of its ArrayBuffer', async (t) => {
  // tmpfs: its O_DIRECT reads stop at the end of file, leaving the rest of the last block as it was.
  const dir = scratch('/dev/shm')
  const junk = path.join(dir, 'junk.bin')
  const file = path.join(dir, 'short.bin')
  fs.writeFileSync(junk, Buffer.alloc(8 * 512 * 1024, 0x5a))
  const data = randomBytes(512 * 1024 - 100)
  fs.writeFileSync(file, data)
  const gc = (globalThis as { gc?: () => void }).gc
  t.truthy(gc, 'ava runs with --expose-gc')
  for (let round = 0; round < 4; round++) {
    // Blocks of 512 KiB full of 0x5a, dropped and collected: the next read of that size reuses one.
    for await (const d of createReadStream(junk, { chunkSize: 512 * 1024 })) void d
    gc?.()
    await new Promise<void>((r) => setImmediate(r))
    await new Promise<void>((r) => setImmediate(r))
    const chunks: Buffer[] = []
    for await (const c of createReadStream(file, { chunkSize: 512 * 1024 })) chunks.push(c as Buffer)
    t.is(chunks.length, 1)
    const c = chunks[0]
    t.true(c.equals(data))
    const whole = new Uint8Array(c.buffer, c.byteOffset, c.buffer.byteLength - c.byteOffset)
    t.true(whole.subarray(c.length).every((x) => x === 0), `round ${round}: bytes after the data in the chunk's ArrayBuffer are not zero`)
  }
})

test('BYOB reads reuse the stream\'s chunks (copied out, never shown): right bytes with views of any size', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'byob.bin')
  const data = randomBytes(8 * MiB + 777)
  fs.writeFileSync(file, data)
  for (const viewSize of [MiB, 100_000, 3 * MiB + 5]) {
    const reader = readableWebStream(file, { chunkSize: MiB, readAhead: 2 }).getReader({ mode: 'byob' })
    const parts: Buffer[] = []
    let view = new Uint8Array(viewSize)
    for (;;) {
      const { value, done } = await reader.read(view)
      if (done || value === undefined) break
      parts.push(Buffer.from(value)) // a copy: the caller's own view is reused for the next read
      view = new Uint8Array(value.buffer)
    }
    t.is(sha(Buffer.concat(parts)), sha(data), `views of ${viewSize} bytes`)
  }
})

const BYOB_SCRIPT = `
import { readableWebStream } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}
const file = process.argv[1]
const read = async (options) => {
  const r = readableWebStream(file, options).getReader({ mode: 'byob' })
  let view = new Uint8Array(1 << 20), n = 0, peak = 0
  const r0 = process.memoryUsage().rss
  for (;;) {
    const { value, done } = await r.read(view)
    if (done) break
    n += value.length
    view = new Uint8Array(value.buffer)
    peak = Math.max(peak, process.memoryUsage().rss - r0)
  }
  return { n, peak }
}
// Warm up the engine and code paths with one chunk, then measure one whole pass.
await read({ end: (1 << 20) - 1 })
console.log(JSON.stringify(await read()))
`

test('memory: a BYOB reader of a 512 MiB file keeps RSS growth under readAhead x chunkSize + 16 MiB without forced GC', async (t) => {
  const m = await measureChild<{ n: number; peak: number }>(t, BYOB_SCRIPT, [sparseFile('sparse-byob.bin', 512 * MiB)])
  t.is(m.n, 512 * MiB)
  t.log(`BYOB, 1 MiB views: RSS growth ${(m.peak / MiB).toFixed(1)} MiB without forced GC`)
  t.true(m.peak < 4 * MiB + 16 * MiB, `RSS grew by ${(m.peak / MiB).toFixed(1)} MiB`)
})

// Script lines (in the child scripts below) counting young collections (scavenges) and
// mark-compacts from here on, in \`kinds\` (\`obs.disconnect()\` stops).
const GC_COUNTS = `const kinds = { minor: 0, major: 0 }
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MINOR) kinds.minor++
    else if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) kinds.major++
  }
})
obs.observe({ entryTypes: ['gc'] })`

const GC_SCRIPT = `
import { createReadStream } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}
import { PerformanceObserver, constants } from 'node:perf_hooks'
const file = process.argv[1]
for await (const _ of createReadStream(file, { end: 4 << 20, chunkSize: 1 << 20 })) void _
${GC_COUNTS}
let n = 0
// A plain consumer: every chunk dropped at once, no forced GC.
for await (const c of createReadStream(file, { chunkSize: 1 << 20 })) n += c.length
await new Promise((r) => setImmediate(r))
obs.disconnect()
console.log(JSON.stringify({ n, ...kinds }))
`

test('memory: chunks a consumer dropped are collected young (scavenges), as Buffer.allocUnsafe\'s, not by mark-compacts', async (t) => {
  const m = await measureChild<{ n: number; minor: number; major: number }>(t, GC_SCRIPT, [sparseFile('sparse-gc.bin', 512 * MiB)])
  t.is(m.n, 512 * MiB)
  t.log(`512 MiB in 1 MiB chunks: ${m.minor} scavenges, ${m.major} mark-compacts`)
  // Counted twice as external memory (V8's own count plus napi_adjust_external_memory), the
  // chunks made V8 run ~15 mark-compacts here and no scavenge.
  t.true(m.minor > 0, 'no young-generation collection freed the dropped chunks')
  t.true(m.major <= 2, `${m.major} mark-compacts`)
})

// Default-mode chunks with the defaults (2 MiB, readAhead 4), no forced GC: young collections
// (scavenges), mark-compacts and the peak RSS growth (VmHWM reset at the start) of one pass.
const HANDOVER_SCRIPT = `
import { createReadStream, readableWebStream } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}
import { PerformanceObserver, constants } from 'node:perf_hooks'
import * as fs from 'node:fs'
const [file, kind] = [process.argv[1], process.argv[2]]
const pass = async (end) => {
  let n = 0
  if (kind === 'web') {
    const r = readableWebStream(file, { end }).getReader()
    for (;;) {
      const { value, done } = await r.read()
      if (done) break
      n += value.length
    }
  } else for await (const c of createReadStream(file, { end })) n += c.length
  return n
}
await pass((8 << 20) - 1)
${GC_COUNTS}
fs.writeFileSync('/proc/self/clear_refs', '5')
const r0 = process.memoryUsage.rss()
const n = await pass(undefined)
const hwm = Number(/^VmHWM:\\s+(\\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024
await new Promise((r) => setImmediate(r))
obs.disconnect()
console.log(JSON.stringify({ n, peak: hwm - r0, ...kinds }))
`

interface HandoverRun {
  n: number
  peak: number
  minor: number
  major: number
}

// V8 runs a young collection when its young ArrayBuffers hold 32 MiB (2 x its default semi-space,
// Heap::AllocateExternalBackingStore): 16 per 512 MiB of dropped chunks plus those in flight
// (26-31 seen). Chunks handed over count twice until then (stream.rs handOver): 58-65 seen. The
// RSS this saves (31 -> 21 MiB median on the disk, 512 MiB passes) is the bench's figure: how soon
// Node runs the finalizers that free what V8 collected depends on the machine's load.
for (const kind of ['node', 'web'] as const) {
  test(`memory: ${kind} read stream, default mode: chunks handed over count twice towards V8's young-GC trigger, and none is promoted (scavenges, no mark-compact)`, async (t) => {
    const m = await measureChild<HandoverRun>(t, HANDOVER_SCRIPT, [sparseFile(`sparse-handover-${kind}.bin`, 512 * MiB), kind])
    t.is(m.n, 512 * MiB)
    t.log(`${kind}, 512 MiB in 2 MiB chunks: ${m.minor} scavenges, ${m.major} mark-compacts, RSS growth ${(m.peak / MiB).toFixed(1)} MiB without forced GC`)
    t.true(m.minor >= 42, `${m.minor} scavenges: chunks count once (about 31 per 512 MiB)`)
    t.true(m.major <= 2, `${m.major} mark-compacts: chunks were promoted`)
  })
}

test('reuseChunks: a for await loop and a pipeline into sha256 get the right bytes, read into at most readAhead + 3 blocks (readAhead in flight, one completed, one buffered, one with the consumer)', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'reuse.bin')
  const data = randomBytes(24 * MiB + 4321)
  fs.writeFileSync(file, data)
  const readAhead = 3
  // for await: each chunk is hashed in the loop body, before the next is asked for.
  const h1 = createHash('sha256')
  const seen1 = new Set<number>()
  for await (const c of createReadStream(file, { chunkSize: MiB, readAhead, reuseChunks: true })) {
    seen1.add(addressOf(c as Buffer) - (c as Buffer).byteOffset)
    h1.update(c as Buffer)
  }
  t.is(h1.digest('hex'), sha(data))
  // pipeline: flowing mode, the hash consumes each chunk in its write().
  const h2 = createHash('sha256')
  const seen2 = new Set<number>()
  const src = createReadStream(file, { chunkSize: MiB, readAhead, reuseChunks: true })
  src.on('data', (c: Buffer) => seen2.add(addressOf(c) - c.byteOffset))
  await pipeline(src, h2)
  t.is(h2.digest('hex'), sha(data))
  // 25 chunks each time; without reuse each would have a block of its own.
  t.log(`blocks used: ${seen1.size} (for await), ${seen2.size} (pipeline) for 25 chunks`)
  t.true(seen1.size <= readAhead + 3, `${seen1.size} blocks for 25 chunks (for await)`)
  t.true(seen2.size <= readAhead + 3, `${seen2.size} blocks for 25 chunks (pipeline)`)
})

test('reuseChunks: a piped destination that works on chunks later keeps them: no chunk it still holds is reused', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'reuse-late.bin')
  const data = randomBytes(16 * MiB + 5)
  fs.writeFileSync(file, data)
  const parts: Buffer[] = []
  // Queues up to 64 MiB (so write() keeps returning true and the source keeps flowing) and looks
  // at the chunks only once the whole file was read, as a slow file write stream or socket would:
  // its first write completes at the source's 'end', the queued ones after it.
  const src = createReadStream(file, { chunkSize: MiB, readAhead: 2, reuseChunks: true })
  let held: (() => void) | undefined
  const late = new Writable({
    highWaterMark: 64 * MiB,
    write(c: Buffer, _e, cb) {
      const take = (): void => {
        parts.push(Buffer.from(c))
        cb()
      }
      if (parts.length === 0 && held === undefined) held = take
      else take()
    },
  })
  src.once('end', () => held?.())
  await pipeline(src, late)
  t.is(sha(Buffer.concat(parts)), sha(data))
  // And through gzip (its work on a chunk is done in libuv's pool).
  const gz: Buffer[] = []
  await pipeline(
    createReadStream(file, { chunkSize: MiB, readAhead: 2, reuseChunks: true }),
    zlib.createGzip({ level: 1 }),
    new Writable({
      write(c: Buffer, _e, cb) {
        gz.push(c)
        cb()
      },
    }),
  )
  t.is(sha(zlib.gunzipSync(Buffer.concat(gz))), sha(data))
})

test('reuseChunks: paused-mode read() callers keep their chunks; leaving a loop early destroys the stream and closes the file', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'reuse-paused.bin')
  const data = randomBytes(12 * MiB + 99)
  fs.writeFileSync(file, data)
  // read() emits 'data' before its caller has the chunk: nothing may be given back there, so
  // every chunk kept here still holds its own bytes at the end.
  const s = createReadStream(file, { chunkSize: MiB, readAhead: 2, reuseChunks: true })
  const kept: Buffer[] = []
  s.on('readable', () => {
    for (let c = s.read() as Buffer | null; c !== null; c = s.read() as Buffer | null) kept.push(c)
  })
  await once(s, 'end')
  t.is(sha(Buffer.concat(kept)), sha(data))
  const r = createReadStream(file, { chunkSize: MiB, reuseChunks: true })
  let n = 0
  for await (const c of r) {
    n += (c as Buffer).length
    if (n >= 2 * MiB) break
  }
  await closeEvent(r)
  t.true(r.destroyed)
  t.is(r.handle?.closed, true)
})

// Node 22 (where a program can transfer() odirect's memory): a consumer that breaks the
// reuseChunks promise by keeping chunks and transferring them while the stream reads into them.
const TRANSFER_SCRIPT = `
import { createReadStream } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.mjs'))}
const file = process.argv[1]
let prev, n = 0, moved = []
const out = { transfer: typeof ArrayBuffer.prototype.transfer }
try {
  for await (const c of createReadStream(file, { chunkSize: 1 << 20, readAhead: 2, reuseChunks: true })) {
    n += c.length
    // The previous chunk went back to the stream when this one was asked for: take its memory.
    if (prev !== undefined && prev.buffer.byteLength > 0) moved.push(prev.buffer.transfer())
    prev = c
  }
  out.ended = true
} catch (e) {
  out.error = { name: e.name, code: e.code }
}
// Every transferred ArrayBuffer is still readable memory, whatever the stream did with it.
let sum = 0
for (const ab of moved) { const u = new Uint8Array(ab); for (let i = 0; i < u.length; i += 4096) sum += u[i] }
console.log(JSON.stringify({ ...out, n, moved: moved.length, sizes: [...new Set(moved.map((ab) => ab.byteLength))], sum: Number.isFinite(sum) }))
`

const NODE22_REASON = ((): string | undefined => {
  const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'runtime-bin.cjs'), '--path', 'node22'], { encoding: 'utf8' })
  return r.status === 0 && fs.existsSync(r.stdout.trim()) ? undefined : 'Node 22 is not installed here (scripts/runtime-bin.cjs node22)'
})()

testIf(NODE22_REASON, 'reuseChunks under Node 22: chunks transferred by a consumer that kept them end the stream with ERR_ODIRECT_DETACHED or are skipped; their memory stays valid', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'reuse-transfer.bin')
  fs.writeFileSync(file, randomBytes(12 * MiB))
  const bin = spawnSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'runtime-bin.cjs'), '--path', 'node22'], { encoding: 'utf8' }).stdout.trim()
  const r = spawnSync(bin, ['--input-type=module', '-e', TRANSFER_SCRIPT, file], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const m = JSON.parse(r.stdout) as { transfer: string; ended?: boolean; error?: { name: string; code: string }; n: number; moved: number; sizes: number[]; sum: boolean }
  t.log(JSON.stringify(m))
  t.is(m.transfer, 'function')
  t.true(m.moved > 0, 'no chunk was transferred')
  t.deepEqual(m.sizes, [MiB])
  t.true(m.sum)
  if (m.ended === true) t.is(m.n, 12 * MiB)
  else t.deepEqual(m.error, { name: 'DirectIoError', code: 'ERR_ODIRECT_DETACHED' })
})

test('reuseChunks: validated (boolean), refused by web streams with the BYOB reader as the hint', (t) => {
  const e1 = t.throws(() => createReadStream('/nonexistent', { reuseChunks: 'yes' as unknown as boolean }), { instanceOf: DirectIoError })
  t.is(e1?.code, 'ERR_INVALID_ARG_TYPE')
  const e2 = t.throws(() => readableWebStream('/nonexistent', { reuseChunks: true }), { instanceOf: DirectIoError })
  t.is(e2?.code, 'ERR_INVALID_ARG_VALUE')
  t.regex(e2?.hint ?? '', /byob/i)
})

const REUSE_RSS_SCRIPT = `
import { createReadStream } from ${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))}
import { createHash } from 'node:crypto'
const file = process.argv[1]
for await (const _ of createReadStream(file, { end: (1 << 20) - 1, reuseChunks: true })) void _
const r0 = process.memoryUsage().rss
let n = 0, peak = 0
const h = createHash('sha256')
for await (const c of createReadStream(file, { reuseChunks: true })) {
  n += c.length
  h.update(c)
  peak = Math.max(peak, process.memoryUsage().rss - r0)
}
console.log(JSON.stringify({ n, peak }))
`

test('memory: a reuseChunks read of 512 MiB keeps RSS growth under readAhead x chunkSize + 16 MiB without forced GC', async (t) => {
  const m = await measureChild<{ n: number; peak: number }>(t, REUSE_RSS_SCRIPT, [sparseFile('sparse-reuse-rss.bin', 512 * MiB)])
  t.is(m.n, 512 * MiB)
  t.log(`reuseChunks, hashed: RSS growth ${(m.peak / MiB).toFixed(1)} MiB without forced GC`)
  t.true(m.peak < 4 * MiB + 16 * MiB, `RSS grew by ${(m.peak / MiB).toFixed(1)} MiB`)
})

test('odirect cp SRC DST --verify: exact copy, no temp file left', (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src.bin')
  const dst = path.join(dir, 'dst.bin')
  const data = randomBytes(64 * MiB + 4097)
  // A zero last byte would make the last (padded) granule all zero: a hole cp keeps (1 in 256).
  data[data.length - 1] = 0xa5
  fs.writeFileSync(src, data)
  const r = spawnSync(process.execPath, [CLI, 'cp', src, dst, '--verify'], { encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  t.regex(r.stderr, /^copied 67112961 bytes \(64\.0 MiB\) in [\d.]+ s( \([\d.]+ [MG]iB\/s\))?, sha256 verified/m)
  t.is(fs.statSync(dst).size, data.length)
  t.is(shaFile(dst), sha(data))
  t.deepEqual(fs.readdirSync(dir).sort(), ['dst.bin', 'src.bin'])
  // Into a directory, with a chunk size, quietly.
  const sub = path.join(dir, 'sub')
  fs.mkdirSync(sub)
  const r2 = spawnSync(process.execPath, [CLI, 'cp', src, sub, '--chunk-size', '256k', '--quiet'], { encoding: 'utf8' })
  t.is(r2.status, 0, r2.stderr)
  t.is(r2.stderr, '')
  t.is(shaFile(path.join(sub, 'src.bin')), sha(data))
  t.deepEqual(fs.readdirSync(sub), ['src.bin'])
})

test('odirect cp failures: exit non-zero with a message, leave nothing behind', (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src.bin')
  fs.writeFileSync(src, randomBytes(100_000))
  const r = spawnSync(process.execPath, [CLI, 'cp', src, path.join(dir, 'no', 'such', 'dir', 'dst.bin')], { encoding: 'utf8' })
  t.not(r.status, 0)
  t.regex(r.stderr, /odirect cp: .*does not exist/)
  t.deepEqual(fs.readdirSync(dir), ['src.bin'])
  const r2 = spawnSync(process.execPath, [CLI, 'cp', path.join(dir, 'missing'), path.join(dir, 'x')], { encoding: 'utf8' })
  t.not(r2.status, 0)
  t.regex(r2.stderr, /ENOENT/)
  t.deepEqual(fs.readdirSync(dir), ['src.bin'])
  const r3 = spawnSync(process.execPath, [CLI, 'cp', src], { encoding: 'utf8' })
  t.is(r3.status, 2)
  t.regex(r3.stderr, /usage: odirect cp/)
  const r4 = spawnSync(process.execPath, [CLI, 'cp', src, path.join(dir, 'y'), '--chunk-size', 'lots'], { encoding: 'utf8' })
  t.is(r4.status, 2)
  t.deepEqual(fs.readdirSync(dir), ['src.bin'])
})

for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  test(`odirect cp interrupted by ${sig}: exit ${code}, temp file removed, DST untouched`, async (t) => {
    const r = await interruptCopy(scratch(), sig)
    if (r.status === 0) {
      // The copy won the race (a very fast disk): nothing to interrupt; the result must still be whole.
      t.is(fs.statSync(r.dst).size, COPY_SIZE)
      return
    }
    t.is(r.status, code, r.stderr)
    t.regex(r.stderr, new RegExp(`interrupted by ${sig}`))
    t.deepEqual(r.temps(), [])
    t.is(fs.readFileSync(r.dst, 'utf8'), 'old contents')
  })
}

testIf(RAMFS_REASON, 'odirect cp onto a filesystem without O_DIRECT (ramfs) falls back and says so', (t) => {
  const fx = ramfsDir()
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  try {
    const src = path.join(scratch(), 'src.bin')
    const data = randomBytes(3 * MiB + 1)
    fs.writeFileSync(src, data)
    const dst = path.join(fx.dir, 'dst.bin')
    const r = spawnSync(process.execPath, [CLI, 'cp', src, dst, '--verify'], { encoding: 'utf8' })
    t.is(r.status, 0, r.stderr)
    t.regex(r.stderr, /note: .*dst\.bin: direct I\/O unavailable, written with buffered I\/O/)
    t.is(shaFile(dst), sha(data))
    t.deepEqual(fs.readdirSync(fx.dir), ['dst.bin'])
  } finally {
    fx.cleanup()
  }
})

// ---------------------------------------------------------------------------------------
// fs's stream options and the FileHandle stream methods

test("fs's stream options: highWaterMark, encoding, URL and Buffer paths, flags, mode, emitClose", async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'opts.txt')
  fs.writeFileSync(file, 'héllo wörld\n'.repeat(1000))
  const want = fs.readFileSync(file, 'utf8')
  // highWaterMark means chunkSize (rounded up to the block); encoding gives strings.
  const rs = createReadStream(pathToFileURL(file), { highWaterMark: 4096, encoding: 'utf8' })
  let text = ''
  let chunks = 0
  for await (const c of rs) {
    t.is(typeof c, 'string')
    text += c as string
    chunks++
  }
  t.is(text, want)
  t.true(chunks >= 3, `${chunks} chunks of 4 KiB`)
  t.is((await collect(createReadStream(Buffer.from(file)))).toString('utf8'), want)
  t.is((await collect(createReadStream(file, { flags: 'r+' }))).toString('utf8'), want)
  t.throws(() => createReadStream(file, { flags: 'w' }), { instanceOf: DirectIoError, code: 'ERR_ODIRECT_FLAGS' })
  t.throws(() => createReadStream(file, { highWaterMark: 8192, chunkSize: 4096 }), { instanceOf: DirectIoError, code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => createReadStream(file, { encoding: 'klingon' as BufferEncoding }), { instanceOf: DirectIoError, code: 'ERR_INVALID_ARG_VALUE' })
  // mode and encoding on the write side; strings are encoded with it.
  const out = path.join(dir, 'out.hex')
  const ws = createWriteStream(out, { mode: 0o600, encoding: 'hex', emitClose: false })
  let closed = false
  ws.on('close', () => (closed = true))
  await pipeline(Readable.from(['68656c6c6f']), ws)
  t.is(fs.readFileSync(out, 'utf8'), 'hello')
  t.is(fs.statSync(out).mode & 0o777, 0o600 & ~process.umask())
  // Destroyed (its file closed): a 'close' event would be emitted by now (next tick after that).
  await until(() => ws.closed, 'the write stream to be destroyed')
  await tick()
  t.false(closed, "emitClose: false: no 'close' event")
})

test("fs's stream options direct I/O cannot honour are typed errors naming them", (t) => {
  const file = path.join(scratch(), 'x.bin')
  fs.writeFileSync(file, 'x')
  const e = t.throws(() => createReadStream(file, { fs: {} } as never), { instanceOf: DirectIoError, code: 'ERR_ODIRECT_UNSUPPORTED' })
  t.regex(e!.message, /'fs'/)
  const e2 = t.throws(() => createWriteStream(file, { fd: 3 } as never), { instanceOf: DirectIoError, code: 'ERR_ODIRECT_UNSUPPORTED' })
  t.regex(e2!.message, /'fd'/)
  // Unknown options are ignored, as fs ignores them (fs's own bufferSize, a typo...).
  t.notThrows(() => createReadStream(file, { bogus: 1, bufferSize: 4 } as never).destroy())
  // Odd values never make the message building throw.
  t.throws(() => createReadStream(file, { highWaterMark: Object.create(null) as number }), { instanceOf: DirectIoError, code: 'ERR_INVALID_ARG_TYPE' })
  // A Proxy trap is the caller's code: what it throws reaches the caller as the same object, as with fs.
  const boom = new Error('boom')
  // (A `has` trap: options are looked up by `in` and read by property access, as fs reads them,
  // since adversary-s22.)
  const hostile = new Proxy({}, { has: () => { throw boom } })
  t.is(t.throws(() => createReadStream(file, hostile)), boom)
})

test('fd: a FileHandle; closed at the end unless autoClose: false (fs), left open when passed first (odirect)', async (t) => {
  const file = path.join(scratch(), 'fd.bin')
  const data = randomBytes(100_000)
  fs.writeFileSync(file, data)
  const a = await open(file, 'r')
  const ra = createReadStream(null, { fd: a })
  t.true((await collect(ra)).equals(data))
  await closeEvent(ra)
  t.true(a.closed, 'fd option: autoClose defaults to true, as fs')
  const b = await open(file, 'r')
  t.true((await collect(createReadStream(null, { fd: b, autoClose: false }))).equals(data))
  t.false(b.closed)
  t.true((await collect(createReadStream(b))).equals(data))
  t.false(b.closed, 'a handle passed first is left open')
  await b.close()
})

test('fh.createReadStream(), fh.createWriteStream(), fh.readableWebStream() as on Node\'s FileHandle', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'm.bin')
  const data = randomBytes(3 * MiB + 17)
  const w = await open(file, 'w')
  await pipeline(Readable.from([data]), w.createWriteStream({ highWaterMark: MiB }))
  t.true(w.closed, 'createWriteStream closes the handle at the end (autoClose)')
  t.true(fs.readFileSync(file).equals(data))
  const r = await open(file, 'r')
  t.true((await collect(r.createReadStream({ start: 5, end: 99 }))).equals(data.subarray(5, 100)))
  t.true(r.closed)
  const r2 = await open(file, 'r')
  const parts: Uint8Array[] = []
  for await (const c of r2.readableWebStream({ type: 'bytes' })) parts.push(c)
  t.true(Buffer.concat(parts).equals(data))
  t.false(r2.closed, 'readableWebStream leaves the handle open, as Node')
  await r2.close()
})

test('a small file read with a huge chunkSize and readAhead allocates what the file needs, not readAhead chunks', async (t) => {
  const file = path.join(scratch(), 'small.bin')
  const data = randomBytes(10_000)
  fs.writeFileSync(file, data)
  const fh = await open(file, 'r')
  const sizes: number[] = []
  const alloc = fh.alloc.bind(fh)
  fh.alloc = (n: number) => {
    sizes.push(n)
    return alloc(n)
  }
  t.true((await collect(createReadStream(fh, { chunkSize: 1024 * MiB, readAhead: 64 }))).equals(data))
  const total = sizes.reduce((a, b) => a + b, 0)
  t.true(total <= 16384 + fh.alignment.offset * 2, `allocated ${total} bytes in ${sizes.length} buffers: ${sizes.join(', ')}`)
  await fh.close()
})

test('copyInto copies any view into another at any offset, streaming large copies; out of range or not a view: -1', (t) => {
  const src = randomBytes(3 * MiB + 77)
  for (const [at, from, n] of [
    [0, 0, 64 * 1024],
    [3, 1, 64 * 1024 + 61],
    [4093, 5, MiB + 13],
    [17, 0, 63 * 1024],
    [1, 7, 3 * MiB + 70],
  ]) {
    const dst = Buffer.alloc(n + at + 9, 0xee)
    const piece = src.subarray(from, from + n)
    t.is(native.copyInto(dst, at, piece), n)
    t.true(dst.subarray(at, at + n).equals(piece), `at ${at}, ${n} bytes`)
    t.true(dst.subarray(0, at).every((b) => b === 0xee) && dst.subarray(at + n).every((b) => b === 0xee), 'nothing outside the range is written')
  }
  // Overlapping ranges of one buffer: memmove semantics.
  const one = Buffer.from(src.subarray(0, 2 * MiB))
  const want = Buffer.from(one)
  want.copyWithin(1000, 0, MiB)
  t.is(native.copyInto(one, 1000, one.subarray(0, MiB)), MiB)
  t.true(one.equals(want))
  const dst = Buffer.alloc(MiB)
  t.is(native.copyInto(dst, 1, src.subarray(0, MiB)), -1, 'does not fit')
  t.is(native.copyInto(dst, -1, src.subarray(0, 10)), -1)
  t.is(native.copyInto(dst, 0.5, src.subarray(0, 10)), -1)
  t.is(native.copyInto({} as Uint8Array, 0, src.subarray(0, 10)), -1)
  t.is(native.copyInto(dst, 0, src.subarray(0, 0)), 0)
})

test('write streams copy large pieces of their source natively (copyInto) and small ones with set: every byte lands', async (t) => {
  const file = path.join(scratch(), 'ntcopy.bin')
  // Unaligned source memory (offset 1) in pieces across block boundaries, both directions.
  const data = randomBytes(9 * MiB + 4099).subarray(1)
  const orig = native.copyInto
  let calls = 0
  let bytes = 0
  native.copyInto = (dst, at, src) => {
    calls++
    const n = orig(dst, at, src)
    bytes += n
    return n
  }
  try {
    const ws = createWriteStream(file, { chunkSize: 2 * MiB })
    await writeOdd(ws, data)
    t.true(fs.readFileSync(file).equals(data), 'node stream')
    const copied = bytes
    t.true(calls > 0 && copied > 0, 'the large pieces were copied natively')
    const w = writableWebStream(file).getWriter()
    for (let off = 0; off < data.length; off += 1_000_003) await w.write(data.subarray(off, off + 1_000_003))
    await w.close()
    t.true(fs.readFileSync(file).equals(data), 'web stream')
    t.true(bytes > copied, 'the web stream too')
  } finally {
    native.copyInto = orig
  }
})
