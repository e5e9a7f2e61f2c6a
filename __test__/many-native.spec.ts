// readMany / writeMany in the array form ([{ buffer, position }, ...]) on odirect's own memory run
// as a native batch (NativeEngine.batchStart given the array of views): the engine refills the window at reap time
// and the batch completes once, instead of one JS staging call and one JS completion per op.
// Other memory (plain, misaligned) goes op by op as before. Opt-in (ODIRECT_MANY_NATIVE=1, read
// at each call; set here for this test worker only). Real files, a real loop device.
// Serial: the tests count the calls this thread's engine gets.
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { type FileHandle, open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { loopDevice, type Requirement } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { scratchDirs } from './helpers/scratch.js'

const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
process.env.ODIRECT_MANY_NATIVE = '1'
const scratch = scratchDirs('many-native')
const UNIT = 4096

type Each = ReadonlyArray<number | { code: string; position?: number; length?: number }>
const eachOf = (e: unknown): Each => (e as { results: Each }).results

/** Counts the engine's staging calls while `fn` runs: per-op (rw), all-at-once (rwMany), native batches of views (batchViews). */
async function staging<T>(fn: () => Promise<T>): Promise<{ value: T; rw: number; rwMany: number; batchViews: number }> {
  const e = getEngine() as unknown as Record<string, (...a: unknown[]) => unknown>
  const counts = { rw: 0, rwMany: 0, batchViews: 0 }
  const names = ['rw', 'rwMany', 'batchViews'] as const
  const saved = names.map((k) => e[k])
  for (const k of names) {
    const orig = e[k]
    e[k] = function (this: unknown, ...a: unknown[]) {
      counts[k]++
      return orig.apply(this, a)
    }
  }
  try {
    const value = await fn()
    return { value, ...counts }
  } finally {
    // Back to the prototype's methods (the own properties set above go).
    names.forEach((k, i) => (Object.prototype.hasOwnProperty.call(e, k) ? delete e[k] : (e[k] = saved[i])))
  }
}

/** `n` one-block buffers from fh.alloc, buffer i filled with a pattern of i. */
function patterned(fh: FileHandle, n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const b = fh.alloc(UNIT)
    b.fill(i & 0xff)
    b.writeUInt32LE(i, 0)
    return b
  })
}

test.serial(`[${BACKEND}] array form on fh.alloc buffers: one native batch per call, no per-op staging from JS; every block lands, reads back, and is counted per op`, async (t) => {
  const fh = await open(path.join(scratch(), 'native'), 'w+', { backend: BACKEND })
  t.teardown(() => fh.close().catch(() => {}))
  const n = 300
  const order = Array.from({ length: n }, (_, i) => (i * 37) % n)
  const bufs = patterned(fh, n)
  const w = await staging(() => fh.writeMany(bufs.map((buffer, i) => ({ buffer, position: order[i] * UNIT })), { window: 16 }))
  t.deepEqual(w.value, new Array<number>(n).fill(UNIT))
  t.true(Array.isArray(w.value))
  t.deepEqual([w.rw, w.rwMany, w.batchViews], [0, 0, 1], 'one batchViews call, nothing staged op by op')
  const back = Array.from({ length: n }, () => fh.alloc(UNIT))
  const r = await staging(() => fh.readMany(back.map((buffer, i) => ({ buffer, position: order[i] * UNIT })), { window: 16 }))
  t.deepEqual(r.value, new Array<number>(n).fill(UNIT))
  t.deepEqual([r.rw, r.rwMany, r.batchViews], [0, 0, 1])
  for (let i = 0; i < n; i++) t.true(back[i].equals(bufs[i]), `block ${i}`)
  // Several views of one allocation, no window (all at once).
  const region = fh.alloc(8 * UNIT)
  const views = Array.from({ length: 8 }, (_, i) => region.subarray(i * UNIT, (i + 1) * UNIT))
  const all = await staging(() => fh.readMany(views.map((buffer, i) => ({ buffer, position: order[i] * UNIT }))))
  t.deepEqual([all.rw, all.rwMany, all.batchViews], [0, 0, 1])
  for (let i = 0; i < 8; i++) t.true(views[i].equals(bufs[i]))
  const s = fh.stats()
  t.is(s.ops, 2 * n + 8)
  t.is(s.writes, n)
  t.is(s.reads, n + 8)
  t.is(s.bytesRead, (n + 8) * UNIT)
  t.is(s.bounced, 0)
  t.is(fh.inflight, 0)
})

test.serial(`[${BACKEND}] array form on other memory (plain Buffers, a misaligned view, a mix) goes op by op with the same results`, async (t) => {
  const fh = await open(path.join(scratch(), 'fallback'), 'w+', { backend: BACKEND })
  t.teardown(() => fh.close().catch(() => {}))
  const n = 12
  const src = patterned(fh, n)
  await fh.writeMany(src.map((buffer, i) => ({ buffer, position: i * UNIT })))
  const cases: Array<[string, () => Uint8Array[]]> = [
    ['plain', () => Array.from({ length: n }, () => Buffer.alloc(UNIT))],
    ['misaligned', () => Array.from({ length: n }, () => fh.alloc(2 * UNIT).subarray(8, 8 + UNIT))],
    ['mixed', () => Array.from({ length: n }, (_, i) => (i === n - 1 ? Buffer.alloc(UNIT) : fh.alloc(UNIT)))],
  ]
  for (const [name, make] of cases) {
    const bufs = make()
    const r = await staging(() => fh.readMany(bufs.map((buffer, i) => ({ buffer, position: i * UNIT })), { window: 4 }))
    t.deepEqual(r.value, new Array<number>(n).fill(UNIT), name)
    t.is(r.batchViews, 1, `${name}: the engine was asked first`)
    t.is(r.rwMany, 1, `${name}: then the first window staged from JS`)
    t.is(r.rw, n - 4, `${name}: and each later op`)
    for (let i = 0; i < n; i++) t.true(Buffer.from(bufs[i]).equals(src[i]), `${name} block ${i}`)
  }
  t.is(fh.inflight, 0)
})

test.serial(`[${BACKEND}] array form, native: a short read at end of file and a read past it report each op's bytes`, async (t) => {
  const file = path.join(scratch(), 'short')
  fs.writeFileSync(file, Buffer.alloc(4 * UNIT + 512, 3))
  const fh = await open(file, 'r', { backend: BACKEND })
  t.teardown(() => fh.close().catch(() => {}))
  const bufs = Array.from({ length: 6 }, () => fh.alloc(UNIT))
  const positions = [0, 4 * UNIT, UNIT, 8 * UNIT, 2 * UNIT, 3 * UNIT]
  const r = await staging(() => fh.readMany(bufs.map((buffer, i) => ({ buffer, position: positions[i] })), { window: 2 }))
  t.is(r.batchViews, 1)
  t.deepEqual(r.value, [UNIT, 512, UNIT, 0, UNIT, UNIT])
  t.is(bufs[1][511], 3)
})

test.serial(`[${BACKEND}] array form, native: aborted mid-batch, ops not started never start; each op has its bytes or ABORT_ERR with its position and length`, async (t) => {
  const file = path.join(scratch(), 'abort')
  fs.writeFileSync(file, Buffer.alloc(64 * UNIT, 1))
  const fh = await open(file, 'r', { backend: BACKEND })
  t.teardown(() => fh.close().catch(() => {}))
  const n = 3000
  const bufs = Array.from({ length: 8 }, () => fh.alloc(UNIT))
  const ops = Array.from({ length: n }, (_, i) => ({ buffer: bufs[i % 8], position: (i % 64) * UNIT }))
  const ac = new AbortController()
  const p = staging(() => fh.readMany(ops, { window: 4, signal: ac.signal }).catch((e: unknown) => e))
  queueMicrotask(() => queueMicrotask(() => ac.abort(new Error('stop'))))
  const { value: e, batchViews } = await p
  t.is(batchViews, 1)
  t.is((e as { code?: string }).code, 'ABORT_ERR')
  t.is((e as Error & { cause?: Error }).cause?.message, 'stop')
  const each = eachOf(e)
  t.is(each.length, n)
  t.true(each.every((r) => r === UNIT || (typeof r !== 'number' && r.code === 'ABORT_ERR')))
  const last = each[n - 1]
  t.true(typeof last !== 'number' && last.position === ((n - 1) % 64) * UNIT && last.length === UNIT)
  t.true(each.filter((r) => typeof r !== 'number').length >= n - 8)
  t.is(fh.inflight, 0)
})

const LOOP: Requirement[] = ['root', 'loop']

fxTest(`[${BACKEND}] array form, native, loop device: writes past the end fail alone (ENOSPC) mid-window, the others land`, LOOP, async (t) => {
  const fx = must(loopDevice(4096, 1))
  t.teardown(() => fx.cleanup())
  const fh = await open(fx.device, 'r+', { backend: BACKEND })
  t.teardown(() => fh.close().catch(() => {}))
  const end = fx.sizeBytes
  const bufs = patterned(fh, 6)
  const positions = [0, UNIT, end, 2 * UNIT, end + UNIT, end - UNIT]
  const r = await staging(() => fh.writeMany(bufs.map((buffer, i) => ({ buffer, position: positions[i] })), { window: 2 }).catch((e: unknown) => e))
  t.is(r.batchViews, 1)
  t.is((r.value as { code?: string }).code, 'ENOSPC')
  const each = eachOf(r.value)
  t.deepEqual(
    each.map((x) => (typeof x === 'number' ? x : `${x.code}@${x.position}+${x.length}`)),
    [UNIT, UNIT, `ENOSPC@${end}+${UNIT}`, UNIT, `ENOSPC@${end + UNIT}+${UNIT}`, UNIT],
  )
  const back = fh.alloc(UNIT)
  for (const i of [0, 1, 3, 5]) {
    await fh.read(back, { position: positions[i] })
    t.true(back.equals(bufs[i]), `op ${i} landed`)
  }
  t.is(fh.stats().errors, 2)
}, undefined, 'serial')
