// Adversary of two changes of the ninth session (issue 19): typed readMany / writeMany that no
// longer copy their arrays (src/many.ts, crates/napi/src/batch.rs: the engine reads each element
// once into its ops and gives positions / lengths back only for errors and cache drops), and
// default-mode read streams that hand each chunk over as a new ArrayBuffer over the read's memory
// (crates/napi/src/stream.rs handOver). Each test either failed on the code before its fix (named
// "was: ...") or pins down an attack that found no fault. Every byte is checked; nothing sleeps.
import * as fs from 'node:fs'
import { spawnSync } from 'node:child_process'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test, { type ExecutionContext } from 'ava'

import { BatchWindow, createReadStream, type FileHandle, open, readableWebStream } from '../dist/index.js'
import { faultFs, fullFs, patternBuffer, ramfsDir, type Requirement } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'

const U = 4096
const FAULT: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']
const LOOP: Requirement[] = ['root', 'loop', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4']

/** A file of `blocks` blocks whose every byte says where it is (block number and offset). */
function patterned(dir: string, blocks: number): { file: string; data: Buffer } {
  const data = Buffer.alloc(blocks * U)
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i)
  const file = path.join(dir, 'f')
  fs.writeFileSync(file, data)
  return { file, data }
}

function tmp(t: ExecutionContext): string {
  const dir = fs.mkdtempSync('/var/tmp/odirect-adv-s9b-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** `open(...args)`, closed when the test ends. */
async function opened(t: ExecutionContext, ...args: Parameters<typeof open>): Promise<FileHandle> {
  const fh = await open(...args)
  t.teardown(() => fh.close())
  return fh
}

/** A `patterned` file of `blocks` blocks in a directory of its own, opened with `flags` (closed and removed when the test ends). */
async function patternedOpen(t: ExecutionContext, blocks: number, flags: Parameters<typeof open>[1] = 'r'): Promise<{ fh: FileHandle; file: string; data: Buffer; dir: string }> {
  const dir = tmp(t)
  const { file, data } = patterned(dir, blocks)
  return { fh: await opened(t, file, flags), file, data, dir }
}

/** Op i reads block perm[i] of the file into slot i of memory. */
const perm = (n: number, blocks: number): number[] => Array.from({ length: n }, (_, i) => (i * 7 + 3) % blocks)

// ---------------------------------------------------------------------------------------
// 1. Typed batches: the caller's arrays after the call

test('typed readMany with a window of 1: offsets / lengths / positions rewritten, then detached, right after the call and at every refill change nothing', async (t) => {
  const blocks = 64
  const { fh, data } = await patternedOpen(t, blocks)
  const n = 48
  const memory = fh.alloc(n * U)
  const want = perm(n, blocks)
  const offsets = new Uint32Array(want.map((_, i) => i * U))
  const lengths = new Uint32Array(n).fill(U)
  const positions = new Float64Array(want.map((b) => b * U))
  const p = fh.readMany({ memory, offsets, lengths, positions }, { window: 1 })
  // Valid but different ops: were the engine to read them later, bytes would land elsewhere.
  offsets.fill(0)
  lengths.fill(U)
  positions.fill(0)
  let detached = false
  // Between window refills (each settles on a later turn): detach all three.
  queueMicrotask(() => {
    structuredClone(offsets.buffer, { transfer: [offsets.buffer, lengths.buffer, positions.buffer] })
    detached = true
  })
  const results = await p
  t.true(detached)
  t.is(offsets.length, 0)
  t.deepEqual([...results], new Array<number>(n).fill(U))
  const got = Buffer.from(memory.buffer, memory.byteOffset, n * U)
  for (let i = 0; i < n; i++) t.true(got.subarray(i * U, (i + 1) * U).equals(data.subarray(want[i] * U, (want[i] + 1) * U)), `op ${i}`)
})

test('typed writeMany: positions in a resizable ArrayBuffer shrunk to 0 and offsets in a SharedArrayBuffer rewritten by a worker right after the call; every byte lands where the call said', async (t) => {
  const dir = tmp(t)
  const file = path.join(dir, 'w')
  const fh = await opened(t, file, 'w+')
  const n = 32
  const memory = fh.alloc(n * U)
  for (let i = 0; i < n; i++) memory.fill(i + 1, i * U, (i + 1) * U)
  const rab = new ArrayBuffer(n * 8, { maxByteLength: n * 8 }) as ArrayBuffer & { resize(n: number): void }
  const positions = new Float64Array(rab) // length-tracking
  for (let i = 0; i < n; i++) positions[i] = (n - 1 - i) * U
  const sab = new SharedArrayBuffer(n * 4)
  const offsets = new Uint32Array(sab)
  for (let i = 0; i < n; i++) offsets[i] = i * U
  const lengths = new Uint32Array(n).fill(U)
  // The worker rewrites offsets once the call has returned (it waits for `go`).
  const go = new Int32Array(new SharedArrayBuffer(4))
  const w = new Worker('const { workerData: { sab, go } } = require("node:worker_threads"); Atomics.wait(go, 0, 0); const a = new Uint32Array(sab); for (let k = 0; k < 2000; k++) a.fill(0)', { eval: true, workerData: { sab, go } })
  const exited = new Promise((resolve) => w.once('exit', resolve))
  const p = fh.writeMany({ memory, offsets, lengths, positions }, { window: 2 })
  Atomics.store(go, 0, 1)
  Atomics.notify(go, 0)
  rab.resize(0)
  t.is(positions.length, 0)
  const results = await p
  await exited
  t.deepEqual([...results], new Array<number>(n).fill(U))
  const back = fs.readFileSync(file)
  t.is(back.length, n * U)
  for (let i = 0; i < n; i++) t.true(back.subarray((n - 1 - i) * U, (n - i) * U).every((b) => b === i + 1), `op ${i}`)
})

test('typed readMany: positions as a Float64Array over the very memory the batch reads into (ops overwrite them) read from the positions at call time', async (t) => {
  const blocks = 32
  const { fh, data } = await patternedOpen(t, blocks)
  const n = 8
  const memory = fh.alloc((n + 1) * U)
  // positions live in the first block of memory, which op 0 reads over; the others follow.
  const positions = new Float64Array(memory.buffer, memory.byteOffset, n)
  const want = perm(n, blocks)
  for (let i = 0; i < n; i++) positions[i] = want[i] * U
  const offsets = new Uint32Array(want.map((_, i) => i * U))
  const results = await fh.readMany({ memory, offsets, lengths: new Uint32Array(n).fill(U), positions }, { window: 1 })
  t.deepEqual([...results], new Array<number>(n).fill(U))
  for (let i = 0; i < n; i++) t.true(Buffer.from(memory.buffer, memory.byteOffset + i * U, U).equals(data.subarray(want[i] * U, (want[i] + 1) * U)), `op ${i}`)
})

test('typed readMany with memory that is not odirect\'s own (the op-by-op path): a `length` the caller defined on offsets does not drop ops (was: viaOps counted offsets.length, so ops past it never ran and their results stayed 0)', async (t) => {
  const blocks = 16
  const { fh, data } = await patternedOpen(t, blocks)
  const n = 6
  const memory = new Uint8Array(n * U) // a plain buffer: bounced op by op
  const want = perm(n, blocks)
  const offsets = new Uint32Array(want.map((_, i) => i * U))
  Object.defineProperty(offsets, 'length', { value: 1 })
  const results = await fh.readMany({ memory, offsets, lengths: new Uint32Array(n).fill(U), positions: new Float64Array(want.map((b) => b * U)) })
  t.deepEqual([...results], new Array<number>(n).fill(U))
  for (let i = 0; i < n; i++) t.true(Buffer.from(memory.buffer, i * U, U).equals(data.subarray(want[i] * U, (want[i] + 1) * U)), `op ${i}`)
})

test('typed readMany / writeMany with plain memory in a resizable ArrayBuffer shrunk right after the call (window 1, op by op): the ops inside the new size complete, the others fail ERR_ODIRECT_DETACHED naming their position and length (was: no position, length, path or syscall on those errors); nothing lands out of bounds', async (t) => {
  const n = 8
  const { fh, file, data } = await patternedOpen(t, n, 'r+')
  for (const write of [false, true]) {
    const rab = new ArrayBuffer(n * U, { maxByteLength: n * U }) as ArrayBuffer & { resize(n: number): void }
    const memory = new Uint8Array(rab)
    if (write) memory.fill(0xee)
    const a = { memory, offsets: new Uint32Array(n).map((_, i) => i * U), lengths: new Uint32Array(n).fill(U), positions: new Float64Array(n).map((_, i) => i * U) }
    const p = write ? fh.writeMany(a, { window: 1 }) : fh.readMany(a, { window: 1 })
    rab.resize(2 * U)
    const e = (await t.throwsAsync(p)) as Error & { code: string; results: ReadonlyArray<number | { code: string; position: number }> }
    t.is(e.code, 'ERR_ODIRECT_DETACHED')
    t.deepEqual(
      e.results.map((r) => (typeof r === 'number' ? r : r.code)),
      [U, U, ...new Array<string>(n - 2).fill('ERR_ODIRECT_DETACHED')],
    )
    for (let i = 2; i < n; i++) t.like(e.results[i], { position: i * U, length: U, path: file, syscall: write ? 'write' : 'read' })
    const back = fs.readFileSync(file)
    if (write) {
      t.true(back.subarray(0, 2 * U).every((b) => b === 0xee))
      t.true(back.subarray(2 * U).equals(data.subarray(2 * U)))
    } else t.true(Buffer.from(rab).equals(data.subarray(0, 2 * U)))
  }
})

test('typed batches: BigInt64Array positions at and beyond 2^53 are refused before anything starts; 2^53 - U is accepted and reads nothing (attacked: no fault)', async (t) => {
  const { fh } = await patternedOpen(t, 2)
  const memory = fh.alloc(U)
  const one = (p: bigint) => fh.readMany({ memory, offsets: new Uint32Array([0]), lengths: new Uint32Array([U]), positions: new BigInt64Array([p]) })
  for (const p of [2n ** 53n, 2n ** 53n + 4096n, 2n ** 63n - 4096n, -4096n]) {
    const e = await t.throwsAsync(() => one(p))
    t.is((e as { code?: string }).code, 'ERR_OUT_OF_RANGE', String(p))
  }
  // A legal position past the end of a file (ext4 may refuse it as too large: EINVAL / EFBIG).
  const r = await one(2n ** 53n - 4096n).then(
    (x) => x[0],
    (e: { results?: unknown[] }) => e.results?.[0],
  )
  t.true(r === 0 || (typeof r === 'object' && r !== null), `result ${String(r)}`)
})

test('typed batches queued in one BatchWindow of 1: the arrays of a batch still waiting for room, rewritten and detached right after its call, change nothing (attacked: no fault)', async (t) => {
  const blocks = 48
  const { fh, data } = await patternedOpen(t, blocks)
  const w = new BatchWindow(1)
  const n = 12
  const batches = [0, 1, 2].map((k) => {
    const memory = fh.alloc(n * U)
    const want = Array.from({ length: n }, (_, i) => (i * 5 + k * 11) % blocks)
    const offsets = new Uint32Array(want.map((_, i) => i * U))
    const lengths = new Uint32Array(n).fill(U)
    const positions = new BigInt64Array(want.map((b) => BigInt(b * U)))
    const p = fh.readMany({ memory, offsets, lengths, positions }, { window: w })
    offsets.reverse()
    positions.fill(0n)
    structuredClone(lengths.buffer, { transfer: [lengths.buffer] })
    return { memory, want, p }
  })
  for (const b of batches) {
    t.deepEqual([...(await b.p)], new Array<number>(n).fill(U))
    for (let i = 0; i < n; i++) t.true(Buffer.from(b.memory.buffer, b.memory.byteOffset + i * U, U).equals(data.subarray(b.want[i] * U, (b.want[i] + 1) * U)))
  }
})

fxTest('typed batches on ramfs (buffered fallback, its cache dropped with the engine\'s ranges): arrays rewritten after the call; the bytes written and read back are those of the call (attacked: no fault)', ['root', 'cmd:mount'], async (t) => {
  const fx = must(ramfsDir())
  t.teardown(() => fx.cleanup())
  const file = path.join(fx.dir, 'r')
  const fh = await opened(t, file, 'w+', { direct: 'prefer' })
  if (fh.direct || fh.uncached || fh.fallbackReason === '') return t.fail(`ramfs took O_DIRECT or RWF_DONTCACHE here (direct ${String(fh.direct)}, uncached ${String(fh.uncached)}): no cache drop to attack`)
  const n = 16
  const memory = fh.alloc(n * U)
  for (let i = 0; i < n; i++) memory.fill(0x30 + i, i * U, (i + 1) * U)
  const offsets = new Uint32Array(n).map((_, i) => i * U)
  const lengths = new Uint32Array(n).fill(U)
  const positions = new Float64Array(n).map((_, i) => (n - 1 - i) * U)
  const pw = fh.writeMany({ memory, offsets, lengths, positions }, { window: 2 })
  positions.fill(2 ** 40)
  lengths.fill(1)
  t.deepEqual([...(await pw)], new Array<number>(n).fill(U))
  t.is(fs.statSync(file).size, n * U)
  const back = fh.alloc(n * U)
  for (let i = 0; i < n; i++) {
    positions[i] = i * U
    lengths[i] = U
  }
  const pr = fh.readMany({ memory: back, offsets, lengths, positions }, { window: 3 })
  positions.fill(0)
  t.deepEqual([...(await pr)], new Array<number>(n).fill(U))
  for (let i = 0; i < n; i++) t.true(Buffer.from(back.buffer, back.byteOffset + i * U, U).every((b) => b === 0x30 + (n - 1 - i)), `block ${i}`)
})

fxTest('typed readMany aborted while its ops are held in a FUSE server: each op\'s ABORT_ERR names the call-time position and length (the caller rewrote the arrays), the ops that completed hold the right bytes', FAULT, async (t) => {
  const blocks = 16
  const fx = must(faultFs({ size: blocks * U, hold: 'held', threads: 4 }))
  t.teardown(() => fx.cleanup())
  const fh = await opened(t, fx.file, 'r')
  const n = blocks
  const memory = fh.alloc(n * U)
  const want = perm(n, blocks)
  const offsets = new Uint32Array(want.map((_, i) => i * U))
  const lengths = new Uint32Array(n).fill(U)
  const positions = new Float64Array(want.map((b) => b * U))
  const ac = new AbortController()
  const p = fh.readMany({ memory, offsets, lengths, positions }, { window: 2, signal: ac.signal })
  positions.fill(U)
  lengths.fill(2 * U)
  offsets.fill(0)
  await fx.waitForHeld(1)
  ac.abort()
  fx.release()
  const e = (await t.throwsAsync(p)) as Error & { code: string; results: ReadonlyArray<number | { code: string; position: number; length: number }> }
  t.is(e.code, 'ABORT_ERR')
  let cancelled = 0
  const pattern = patternBuffer(0, blocks * U)
  for (let i = 0; i < n; i++) {
    const r = e.results[i]
    if (typeof r === 'number') {
      t.is(r, U)
      t.true(Buffer.from(memory.buffer, memory.byteOffset + i * U, U).equals(pattern.subarray(want[i] * U, (want[i] + 1) * U)), `op ${i}`)
      continue
    }
    cancelled++
    t.is(r.position, want[i] * U, `op ${i}`)
    t.is(r.length, U, `op ${i}`)
  }
  t.true(cancelled >= n - 2)
})

fxTest('typed writeMany on a full ext4: each failed op\'s error names the position and length given at the call, not what the caller wrote into the arrays afterwards', LOOP, async (t) => {
  const fx = must(fullFs(8, { kind: 'loop-ext4' }))
  t.teardown(() => fx.cleanup())
  const file = path.join(fx.dir, 'big')
  const fh = await opened(t, file, 'w+')
  const n = Math.ceil(fx.freeBytes / U) + 64
  const chunk = 64
  const memory = fh.alloc(chunk * U)
  memory.fill(0x5a)
  const offsets = new Uint32Array(n).map((_, i) => (i % chunk) * U)
  const lengths = new Uint32Array(n).fill(U)
  const positions = new Float64Array(n).map((_, i) => i * U)
  const p = fh.writeMany({ memory, offsets, lengths, positions }, { window: 16 })
  positions.fill(123 * U)
  lengths.fill(2 * U)
  const e = (await t.throwsAsync(p)) as Error & { code: string; results: ReadonlyArray<number | { code: string; position: number; length: number }> }
  t.is(e.code, 'ENOSPC')
  let failed = 0
  for (let i = 0; i < n; i++) {
    const r = e.results[i]
    if (typeof r === 'number') continue
    failed++
    t.is(r.position, i * U, `op ${i}`)
    t.is(r.length, U, `op ${i}`)
  }
  t.true(failed > 0)
  t.is((e as unknown as { position: number }).position % U, 0)
})

fxTest('typed readMany on FUSE with EIO at some blocks: the errors carry the call-time positions (the caller rewrote them, and results overwrite their memory), the other ops\' bytes are right', FAULT, async (t) => {
  const blocks = 32
  const bad = [5, 17]
  const fx = must(faultFs({ size: blocks * U, eioAt: bad.map((b) => b * U + 100) }))
  t.teardown(() => fx.cleanup())
  const fh = await opened(t, fx.file, 'r')
  const whole = await fs.promises.readFile(fx.file).catch(() => undefined) // EIO blocks unreadable here too
  const n = blocks
  const memory = fh.alloc(n * U)
  const want = perm(n, blocks)
  const offsets = new Uint32Array(want.map((_, i) => i * U))
  const positions = new Float64Array(want.map((b) => b * U))
  // results over the positions' own memory: written when the batch ends, before its errors are made.
  const results = new Int32Array(positions.buffer)
  const p = fh.readMany({ memory, offsets, lengths: new Uint32Array(n).fill(U), positions, results }, { window: 3 })
  positions.fill(0)
  const e = (await t.throwsAsync(p)) as Error & { code: string; results: ReadonlyArray<number | { code: string; position: number; length: number }> }
  t.is(e.code, 'EIO')
  for (let i = 0; i < n; i++) t.is(results[i], bad.includes(want[i]) ? -5 : U)
  t.is(whole, undefined)
  for (let i = 0; i < n; i++) {
    const r = e.results[i]
    if (bad.includes(want[i])) {
      t.is(typeof r, 'object', `op ${i}`)
      if (typeof r === 'object') {
        t.is(r.position, want[i] * U)
        t.is(r.length, U)
      }
    } else t.is(r, U, `op ${i}`)
  }
  const check = await open(fx.file, 'r')
  const b = check.alloc(U)
  for (let i = 0; i < n; i++) {
    if (bad.includes(want[i])) continue
    await check.read(b, { position: want[i] * U })
    t.true(Buffer.from(memory.buffer, memory.byteOffset + i * U, U).equals(b), `op ${i}`)
  }
  await check.close()
})

// ---------------------------------------------------------------------------------------
// 2. Read streams' hand-over

async function streamFile(t: ExecutionContext, blocks: number): Promise<{ file: string; data: Buffer }> {
  return patterned(tmp(t), blocks)
}

test('Node read stream (default mode): every chunk kept, some posted to a worker with their memory in the transfer list (Node 20 copies odirect memory, Node 22 refuses it), cloned and concatenated mid-stream; all bytes right at the end (attacked: no fault)', async (t) => {
  const { file, data } = await streamFile(t, 96)
  const kept: Buffer[] = []
  const clones: Array<{ at: number; c: Uint8Array }> = []
  const w = new Worker('const { parentPort } = require("node:worker_threads"); parentPort.on("message", (m) => parentPort.postMessage(Buffer.from(m.ab, m.off, m.len).toString("hex")))', { eval: true })
  t.teardown(() => w.terminate())
  let i = 0
  let at = 0
  for await (const c of createReadStream(file, { chunkSize: 8 * U, readAhead: 4 })) {
    const chunk = c as Buffer
    if (i % 5 === 1) {
      const hex = chunk.toString('hex')
      const echoed = new Promise<unknown>((resolve) => w.once('message', resolve))
      const len = chunk.length
      try {
        w.postMessage({ ab: chunk.buffer, off: chunk.byteOffset, len }, [chunk.buffer])
      } catch (e) {
        // Node 21+: external memory in a transfer list is refused (DataCloneError), nothing sent.
        t.is((e as Error).name, 'DataCloneError')
        w.postMessage({ ab: chunk.buffer, off: chunk.byteOffset, len })
      }
      t.is(await echoed, hex)
      // Node copies or refuses odirect's (external) memory instead of moving it: the chunk stays.
      kept.push(chunk.length === len ? chunk : Buffer.from(hex, 'hex'))
    } else {
      if (i % 3 === 0) clones.push({ at, c: structuredClone(chunk) })
      kept.push(chunk)
    }
    at += chunk.length
    i++
  }
  t.true(Buffer.concat(kept).equals(data))
  t.true(clones.length > 0)
  for (const { at: p, c } of clones) t.true(Buffer.from(c.buffer, c.byteOffset, c.byteLength).equals(data.subarray(p, p + c.byteLength)))
})

const RUNTIME_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'adversary-s9b', 'runtime.mjs')
const WORKER_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'adversary-s9b', 'worker-terminate.mjs')
const DIST_MJS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.mjs')
const runtimeBin = (name: string): string | undefined => {
  const r = spawnSync(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'runtime-bin.cjs'), '--path', name], { encoding: 'utf8' })
  const bin = r.stdout.trim()
  return r.status === 0 && bin !== '' && fs.existsSync(bin) ? bin : undefined
}
const RUNTIMES: Array<[string, string | undefined, string[]]> = [
  ['node', process.execPath, ['--expose-gc']],
  ['node22', runtimeBin('node22'), ['--expose-gc']],
  ['bun', runtimeBin('bun'), []],
  ['deno', runtimeBin('deno'), ['run', '-A', '--v8-flags=--expose-gc']],
]
for (const [name, bin, args] of RUNTIMES) {
  const run = bin === undefined ? test.skip : test
  if (bin === undefined) console.log(`adversary-s9b: ${name} is not installed here (scripts/runtime-bin.cjs)`)
  run(`${name}: hand-over chunks of Node and web read streams kept, transferred (ArrayBuffer#transfer / structuredClone), cloned, or delivered before a destroy stay right after collections and later streams reuse freed memory (attacked: no fault)`, (t) => {
    for (const env of [{}, { ODIRECT_STREAM_HANDOVER: '0' }]) {
      const r = spawnSync(bin as string, [...args, RUNTIME_SCRIPT], { encoding: 'utf8', env: { ...process.env, ...env, OD_DIST: DIST_MJS } })
      t.is(r.status, 0, r.stderr)
      const out = JSON.parse(r.stdout.trim().split('\n').pop() as string) as Record<string, unknown>
      t.like(out, { node: 'ok', web: 'ok', destroyed: 'ok', pipe: 'ok' }, JSON.stringify(env))
      if (name !== 'node') t.is(out.moved, 8, 'chunks whose memory moved (ArrayBuffer#transfer)')
    }
  })
  run(`${name}: workers reading hand-over Node / web streams, keeping every chunk, terminated mid-read; their posted chunks and later streams over the freed memory are right (attacked: no fault)`, (t) => {
    const r = spawnSync(bin as string, [...args, WORKER_SCRIPT], { encoding: 'utf8', env: { ...process.env, OD_DIST: DIST_MJS } })
    t.is(r.status, 0, r.stderr)
    t.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop() as string), { posted: 8, posts: 'ok', after0: 'ok', after1: 'ok', after2: 'ok' })
  })
}

for (const direct of ['require', 'off'] as const) {
  fxTest(`Node and web read streams (default mode) over FUSE short reads (direct: '${direct}'): chunks of partial reads and of their re-reads handed over and all kept; every byte right (attacked: no fault)`, FAULT, async (t) => {
    const size = 40 * U + 777
    const fx = must(faultFs({ size, readMax: 3 * U + 512 }))
    t.teardown(() => fx.cleanup())
    const want = patternBuffer(0, size)
    const kept: Buffer[] = []
    for await (const c of createReadStream(fx.file, { chunkSize: 8 * U, readAhead: 3, direct })) kept.push(c as Buffer)
    t.true(Buffer.concat(kept).equals(want), 'Node stream')
    const r = readableWebStream(fx.file, { chunkSize: 8 * U, direct }).getReader()
    const parts: Uint8Array[] = []
    for (;;) {
      const { value, done } = await r.read()
      if (done) break
      parts.push(value)
    }
    t.true(Buffer.concat(parts).equals(want), 'web stream')
  })
}

fxTest('Node and web read streams (default mode) hitting EIO mid-file, and one aborted by its signal: the typed error comes after the chunks before it, which stay right while other streams read (attacked: no fault)', FAULT, async (t) => {
  const size = 64 * U
  const bad = 40 * U
  const fx = must(faultFs({ size, eioAt: [bad + 10] }))
  t.teardown(() => fx.cleanup())
  const want = patternBuffer(0, size)
  const kept: Buffer[] = []
  const e1 = (await t.throwsAsync(async () => {
    for await (const c of createReadStream(fx.file, { chunkSize: 4 * U, readAhead: 6 })) kept.push(c as Buffer)
  })) as { code?: string; position?: number }
  t.is(e1.code, 'EIO')
  t.is(e1.position, bad)
  const r = readableWebStream(fx.file, { chunkSize: 4 * U }).getReader()
  const parts: Uint8Array[] = []
  const e2 = (await t.throwsAsync(async () => {
    for (;;) {
      const { value, done } = await r.read()
      if (done) break
      parts.push(value)
    }
  })) as { code?: string }
  t.is(e2.code, 'EIO')
  const ac = new AbortController()
  const aborted: Buffer[] = []
  const e3 = (await t.throwsAsync(async () => {
    for await (const c of createReadStream(fx.file, { chunkSize: 4 * U, readAhead: 6, signal: ac.signal })) {
      aborted.push(c as Buffer)
      if (aborted.length === 3) ac.abort()
    }
  })) as { name?: string; code?: string }
  t.is(e3.code, 'ABORT_ERR')
  // More streams over the memory the dead ones gave back.
  for (let k = 0; k < 3; k++) for await (const c of createReadStream(fx.file, { chunkSize: 4 * U, readAhead: 6, end: bad - 1 })) void c
  t.true(Buffer.concat(kept).equals(want.subarray(0, bad)))
  t.true(Buffer.concat(parts).equals(want.subarray(0, bad)))
  t.true(aborted.length >= 3)
  t.true(Buffer.concat(aborted).equals(want.subarray(0, aborted.length * 4 * U)))
})

test('read streams over a FileHandle the caller closes afterwards (autoClose: false): the hand-over chunks kept outlive the handle and later streams (attacked: no fault)', async (t) => {
  const { file, data } = await streamFile(t, 48)
  const fh = await open(file, 'r')
  const kept: Buffer[] = []
  for await (const c of fh.createReadStream({ chunkSize: 4 * U, readAhead: 4, autoClose: false })) kept.push(c as Buffer)
  const r = readableWebStream(fh, { chunkSize: 4 * U, autoClose: false }).getReader()
  const parts: Uint8Array[] = []
  for (;;) {
    const { value, done } = await r.read()
    if (done) break
    parts.push(value)
  }
  await fh.close()
  for (let k = 0; k < 2; k++) for await (const c of createReadStream(file, { chunkSize: 4 * U, readAhead: 8 })) void c
  ;(globalThis as { gc?: () => void }).gc?.()
  t.true(Buffer.concat(kept).equals(data))
  t.true(Buffer.concat(parts).equals(data))
})

test('web read stream: default and BYOB readers taking turns on one stream, chunks kept; bytes right (attacked: no fault)', async (t) => {
  const { file, data } = await streamFile(t, 64)
  const rs = readableWebStream(file, { chunkSize: 4 * U })
  const parts: Uint8Array[] = []
  let total = 0
  for (let k = 0; total < data.length; k++) {
    if (k % 2 === 0) {
      const r = rs.getReader()
      const { value, done } = await r.read()
      r.releaseLock()
      if (done) break
      parts.push(value)
      total += value.byteLength
    } else {
      const r = rs.getReader({ mode: 'byob' })
      const { value, done } = await r.read(new Uint8Array(3 * U + 7))
      r.releaseLock()
      if (done || value === undefined) break
      parts.push(value)
      total += value.byteLength
    }
  }
  await rs.cancel()
  t.true(Buffer.concat(parts).equals(data))
})

test('Node read stream destroyed mid-read: the chunks delivered before stay right after later reads and GC (attacked: no fault)', async (t) => {
  const { file, data } = await streamFile(t, 128)
  const s = createReadStream(file, { chunkSize: 4 * U, readAhead: 8 })
  const kept: Buffer[] = []
  await new Promise<void>((resolve, reject) => {
    s.on('data', (c: Buffer) => {
      kept.push(c)
      if (kept.length === 10) {
        s.destroy()
        resolve()
      }
    })
    s.on('error', reject)
  })
  await new Promise((resolve) => s.once('close', resolve))
  // Another stream reads over memory freed meanwhile (its blocks go back to the pool).
  const again: Buffer[] = []
  for await (const c of createReadStream(file, { chunkSize: 4 * U, readAhead: 8, start: 64 * U })) again.push(c as Buffer)
  ;(globalThis as { gc?: () => void }).gc?.()
  t.true(Buffer.concat(kept).equals(data.subarray(0, 40 * U)))
  t.true(Buffer.concat(again).equals(data.subarray(64 * U)))
})
