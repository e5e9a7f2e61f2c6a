// Adversarial use of this session's features (typed-array batches, reuseChunks streams): callers
// that change, transfer or disguise their arguments while a call runs. Real files with O_DIRECT.
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { PassThrough } from 'node:stream'

import test from 'ava'

import { createReadStream, DirectIoError, open } from '../dist/index.js'
import { scratchDirs } from './helpers/scratch.js'

const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const scratch = scratchDirs('adv19')
const UNIT = 4096

function arrays(n: number): { offsets: Uint32Array; lengths: Uint32Array; positions: Float64Array } {
  return {
    offsets: new Uint32Array(n).map((_, i) => i * UNIT),
    lengths: new Uint32Array(n).fill(UNIT),
    positions: new Float64Array(n).map((_, i) => i * UNIT),
  }
}

test('typed-array batch: arrays transferred after the call change nothing (the failure still reports each op)', async (t) => {
  const fh = await open(path.join(scratch(), 'data'), 'w+', { backend: BACKEND })
  t.teardown(() => fh.close())
  const memory = fh.alloc(4 * UNIT)
  const a = arrays(4)
  a.positions[1] = 2 ** 52 // past any file size ext4/xfs allow: EFBIG / EINVAL from the kernel
  const p = fh.writeMany({ memory, ...a })
  // The README: the arrays are copied at the call, changing them afterwards changes nothing.
  for (const arr of [a.offsets, a.lengths, a.positions]) structuredClone(arr.buffer, { transfer: [arr.buffer] })
  const e = await t.throwsAsync(p, { instanceOf: DirectIoError })
  t.true(e.code === 'EFBIG' || e.code === 'EINVAL', e.code)
  t.is(e.position, 2 ** 52, 'the failed op as it was started')
  t.is(e.length, UNIT)
  const results = (e as DirectIoError & { results: ReadonlyArray<number | DirectIoError> }).results
  t.is(results.length, 4)
  t.deepEqual([results[0], results[2], results[3]], [UNIT, UNIT, UNIT])
  t.is(fh.stats().ops, 4)
  t.is(fh.inflight, 0)
})

test('typed-array batch: a `length` shadowed on the arrays is not the number of ops', async (t) => {
  const fh = await open(path.join(scratch(), 'data'), 'w+', { backend: BACKEND })
  t.teardown(() => fh.close())
  const memory = fh.alloc(4 * UNIT)
  await fh.writeMany({ memory, ...arrays(4) })
  const a = arrays(4)
  for (const arr of [a.offsets, a.lengths, a.positions]) Object.defineProperty(arr, 'length', { value: 1 })
  a.positions[2] = 100 // validated like every other op, whatever `length` says
  const e = await t.throwsAsync(async () => fh.readMany({ memory, ...a }), { instanceOf: DirectIoError })
  t.is(e.code, 'ERR_ODIRECT_ALIGNMENT')
  t.is(fh.inflight, 0)
  const b = arrays(4)
  for (const arr of [b.offsets, b.lengths, b.positions]) Object.defineProperty(arr, 'length', { value: 1 })
  const small = new Int32Array(1)
  Object.defineProperty(small, 'length', { value: 4 })
  const e2 = await t.throwsAsync(async () => fh.readMany({ memory, ...b, results: small }), { instanceOf: DirectIoError })
  t.is(e2.code, 'ERR_INVALID_ARG_TYPE', 'a results array of 1 element for 4 ops is refused before any I/O')
  t.is(fh.stats().ops, 4, 'only the setup batch ran')
})

/** A file of `chunks` random 64 KiB chunks, and its bytes. */
function randomFile(chunks: number): { file: string; data: Buffer } {
  const file = path.join(scratch(), 'src')
  const data = crypto.randomBytes(chunks * 65536)
  fs.writeFileSync(file, data)
  return { file, data }
}

const reuse = { chunkSize: 65536, readAhead: 2, reuseChunks: true } as const

test('reuseChunks: a PassThrough piped to holds its chunks on its readable side: none is read into again', async (t) => {
  const { file, data } = randomFile(32)
  const src = createReadStream(file, reuse)
  const pt = new PassThrough({ highWaterMark: data.length * 2 })
  src.pipe(pt)
  // Nothing reads the PassThrough until the whole file went into it.
  await new Promise((resolve) => src.once('end', resolve))
  const parts: Buffer[] = []
  for await (const c of pt) parts.push(c as Buffer)
  t.true(Buffer.concat(parts).equals(data))
})

test('reuseChunks: iterator helpers that keep chunks (toArray, map with concurrency, take) get their own', async (t) => {
  const { file, data } = randomFile(32)
  const all = (await createReadStream(file, reuse).toArray()) as Buffer[]
  t.true(Buffer.concat(all).equals(data), 'toArray')
  const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
  const copied = (await createReadStream(file, reuse)
    .map(
      async (c: Buffer) => {
        await tick()
        return Buffer.from(c)
      },
      { concurrency: 4 },
    )
    .toArray()) as Buffer[]
  t.true(Buffer.concat(copied).equals(data), 'map with concurrency 4, copying after an await')
  const first = (await createReadStream(file, reuse).take(8).toArray()) as Buffer[]
  t.true(Buffer.concat(first).equals(data.subarray(0, 8 * 65536)), 'take(8).toArray()')
})

test('readMany/writeMany: a signal whose removeEventListener or reason getter throws still lets the batch settle', async (t) => {
  const fh = await open(path.join(scratch(), 'data'), 'w+', { backend: BACKEND })
  const memory = fh.alloc(4 * UNIT)
  await fh.writeMany({ memory, ...arrays(4) })
  for (const form of ['typed arrays', 'array of ops'] as const) {
    const batch = (signal: AbortSignal): Promise<unknown> =>
      form === 'typed arrays' ? fh.readMany({ memory, ...arrays(4) }, { signal, window: 1 }) : fh.readMany([0, 1, 2, 3].map((i) => ({ buffer: memory.subarray(i * UNIT, (i + 1) * UNIT), position: i * UNIT })), { signal, window: 1 })
    const rm = new AbortController()
    rm.signal.removeEventListener = () => {
      throw new Error('removeEventListener throws')
    }
    t.is(((await batch(rm.signal)) as ArrayLike<number>).length, 4, `${form}: resolves`)
    const reason = new AbortController()
    Object.defineProperty(reason.signal, 'reason', {
      get() {
        throw new Error('reason throws')
      },
    })
    const p = batch(reason.signal)
    reason.abort()
    const e = await t.throwsAsync(p, { instanceOf: DirectIoError })
    t.is(e.code, 'ABORT_ERR', `${form}: aborted`)
    t.is((e.cause as Error).message, 'reason throws')
  }
  t.is(fh.inflight, 0)
  await fh.close()
})

test('streams and readFile: a signal whose removeEventListener throws does not fail a read that completed', async (t) => {
  const { file, data } = randomFile(4)
  const signal = (): AbortSignal => {
    const ac = new AbortController()
    ac.signal.removeEventListener = () => {
      throw new Error('removeEventListener throws')
    }
    return ac.signal
  }
  const parts: Buffer[] = []
  for await (const c of createReadStream(file, { chunkSize: 65536, signal: signal() })) parts.push(c as Buffer)
  t.true(Buffer.concat(parts).equals(data), 'read stream')
  const fh = await open(file, 'r', { backend: BACKEND })
  t.teardown(() => fh.close())
  t.true((await fh.readFile({ signal: signal() })).equals(data), 'readFile')
})
