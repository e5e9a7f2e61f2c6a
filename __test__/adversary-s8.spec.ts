// Adversary of the seventh session's work (issue 19, fourth pass): BatchWindow (src/many.ts,
// crates/napi/src/batch.rs) under hostile sizes and objects, handles closed and signals aborted
// with batches queued, workers dying with window batches in flight, ENOSPC and EIO mid-window;
// the engine's early submission (groups of 4 on device files, ODIRECT_SUBMIT_EVERY) with odd
// settings, on a 4096-byte-sector loop device and on FUSE (the fs checks at open must not run on
// the JS thread); the streams' immediate refill under destroy / break / throw; ODIRECT_DEBUG
// with stdout/stderr closed or on /dev/full. Every wait is on an event (a promise, a worker's
// exit, a stream's close, a child's exit); nothing sleeps.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test, { type ExecutionContext } from 'ava'

import { BatchWindow, createReadStream, createWriteStream, DirectIoError, type FileHandle, open } from '../dist/index.js'
import { faultFs, findCommand, fullFs, loopDevice, patternBuffer, type Requirement } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { scratchDirs } from './helpers/scratch.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const KiB = 1024
const MiB = 1024 * KiB
const U = 4 * KiB
const LOOP: Requirement[] = ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4']
const FAULT: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']
const scratch = scratchDirs('adv-s8')

/** What this process's descriptors under `dir` point to. */
function openUnder(dir: string): string[] {
  const out: string[] = []
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const l = fs.readlinkSync(`/proc/self/fd/${fd}`)
      if (l === dir || l.startsWith(dir + '/')) out.push(`${fd} -> ${l}`)
    } catch {
      // closed between readdir and readlink
    }
  }
  return out
}

/** `n` ops of `len` bytes: op i at i * len in memory, at file position (first + i) * len. */
function ops(fh: FileHandle, n: number, first: number, len = U): { memory: Buffer; offsets: Uint32Array; lengths: Uint32Array; positions: Float64Array } {
  return {
    memory: fh.alloc(n * len),
    offsets: new Uint32Array(n).map((_, i) => i * len),
    lengths: new Uint32Array(n).fill(len),
    positions: new Float64Array(n).map((_, i) => (first + i) * len),
  }
}

/** Block b of a patterned file: filled with b & 0xff, starting with b as a u32. */
function block(b: number, len = U): Buffer {
  const x = Buffer.alloc(len, b & 0xff)
  x.writeUInt32LE(b >>> 0, 0)
  return x
}

function patterned(file: string, blocks: number): Buffer {
  const all = Buffer.concat(Array.from({ length: blocks }, (_, b) => block(b)))
  fs.writeFileSync(file, all)
  return all
}

/** The outcome of a promise, as data: resolved value or rejection. */
function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: DirectIoError }> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: DirectIoError) => ({ ok: false as const, error }),
  )
}

type Results = ReadonlyArray<number | DirectIoError>

// ---------------------------------------------------------------------------------------
// 1. BatchWindow: sizes, objects that only look like one, threads

test(`[${BACKEND}] BatchWindow: every bad size is a typed error; its size cannot be changed afterwards; objects that only look like a window are refused`, async (t) => {
  const throwing = {
    valueOf(): number {
      throw new Error('valueOf must not be called')
    },
  }
  for (const [v, code] of [
    [0, 'ERR_OUT_OF_RANGE'],
    [-1, 'ERR_OUT_OF_RANGE'],
    [NaN, 'ERR_OUT_OF_RANGE'],
    [Infinity, 'ERR_OUT_OF_RANGE'],
    [2 ** 53, 'ERR_OUT_OF_RANGE'],
    [2 ** 20 + 1, 'ERR_OUT_OF_RANGE'],
    [2.5, 'ERR_OUT_OF_RANGE'],
    ['4', 'ERR_INVALID_ARG_TYPE'],
    [4n, 'ERR_INVALID_ARG_TYPE'],
    [throwing, 'ERR_INVALID_ARG_TYPE'],
    [undefined, 'ERR_INVALID_ARG_TYPE'],
  ] as const) {
    const e = t.throws(() => new BatchWindow(v as unknown as number), { instanceOf: DirectIoError }, String(v))
    t.is(e?.code, code, String(v))
    t.regex(e?.hint ?? '', /integer from 1 to 1048576/)
  }
  t.is(new BatchWindow(2 ** 20).size, 2 ** 20)

  const file = path.join(scratch(), 'f')
  const data = patterned(file, 16)
  const fh = await open(file, 'r', { backend: BACKEND })
  try {
    // Was: `w.size = 'abc'` (or undefined, null) made the next batch throw napi's plain
    // "Failed to convert napi value String into rust type `u32`" Error; -1 / NaN / 2^40 ran
    // with a window other than the one the BatchWindow says.
    for (const v of ['abc', undefined, null, -1, NaN, 0, 2 ** 40, 1.5]) {
      const w = new BatchWindow(2)
      t.throws(
        () => {
          ;(w as { size: unknown }).size = v
        },
        { instanceOf: TypeError },
        `size = ${String(v)}`,
      )
      t.is(w.size, 2)
      const a = ops(fh, 8, 0)
      const r = await fh.readMany(a, { window: w })
      t.deepEqual(Array.from(r), new Array(8).fill(U))
      t.true(a.memory.equals(data.subarray(0, 8 * U)))
    }
    // Objects that pass `instanceof BatchWindow` but were not made by its constructor: the
    // engine has no window for them. Was: they ran as a plain window of `size` (or of 1).
    for (const [what, fake] of [
      ['Object.create(BatchWindow.prototype)', Object.create(BatchWindow.prototype) as BatchWindow],
      ['{ size: 2 } with BatchWindow.prototype', Object.setPrototypeOf({ size: 2 }, BatchWindow.prototype) as BatchWindow],
    ] as const) {
      const e = await t.throwsAsync(fh.readMany(ops(fh, 4, 0), { window: fake }), { instanceOf: DirectIoError }, what)
      t.is(e?.code, 'ERR_INVALID_ARG_TYPE', what)
    }
    // A subclass is a window.
    class Mine extends BatchWindow {}
    t.deepEqual(Array.from(await fh.readMany(ops(fh, 8, 8), { window: new Mine(3) })), new Array(8).fill(U))
    // A getter of the options that throws: typed, nothing started.
    const g = await t.throwsAsync(
      fh.readMany(ops(fh, 4, 0), {
        get window(): BatchWindow {
          throw new Error('from a getter')
        },
      }),
      { instanceOf: DirectIoError },
    )
    t.regex(g?.message ?? '', /from a getter/)
    // Typed arrays behind a Proxy pass `instanceof` but are not typed arrays: typed error.
    for (const key of ['offsets', 'lengths', 'positions'] as const) {
      const a = ops(fh, 4, 0)
      const e = await t.throwsAsync(fh.readMany({ ...a, [key]: new Proxy(a[key], {}) }, { window: new BatchWindow(2) }), { instanceOf: DirectIoError }, key)
      t.truthy(e?.code, key)
    }
    t.is(fh.inflight, 0)
  } finally {
    await fh.close()
  }
})

test(`[${BACKEND}] a BatchWindow posted to a worker arrives as a plain object and is refused there (ERR_INVALID_ARG_TYPE), never shared across engines`, async (t) => {
  const file = path.join(scratch('/dev/shm'), 'f')
  patterned(file, 4)
  const body = `
const { parentPort, workerData: w } = require('node:worker_threads')
const od = require(w.dist)
;(async () => {
  const fh = await od.open(w.file, 'r', { backend: w.backend })
  const n = 2
  const a = { memory: fh.alloc(n * 4096), offsets: new Uint32Array([0, 4096]), lengths: new Uint32Array([4096, 4096]), positions: new Float64Array([0, 4096]) }
  let out
  try { await fh.readMany(a, { window: w.window }); out = 'accepted' } catch (e) { out = e.code }
  await fh.close()
  parentPort.postMessage([out, w.window instanceof od.BatchWindow, JSON.stringify(w.window)])
})().catch((e) => parentPort.postMessage(['failed', String(e && e.stack || e)]))
`
  const worker = new Worker(body, { eval: true, workerData: { dist, file, backend: BACKEND, window: new BatchWindow(4) } })
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve))
  const msg = await new Promise<unknown>((resolve) => worker.once('message', resolve))
  t.deepEqual(msg, ['ERR_INVALID_ARG_TYPE', false, '{"size":4}'])
  t.is(await exited, 0)
})

// ---------------------------------------------------------------------------------------
// 2. BatchWindow: closing, aborting, dying with batches queued

test(`[${BACKEND}] one window over two handles: a running batch aborted, the other handle closed with its batch queued, a third batch: each settles on its own, the data is the file's`, async (t) => {
  const dir = scratch()
  const fa = path.join(dir, 'a')
  const fb = path.join(dir, 'b')
  const da = patterned(fa, 256)
  const db = patterned(fb, 256)
  const ha = await open(fa, 'r+', { backend: BACKEND })
  try {
    for (const size of [1, 2, 5]) {
      const hb = await open(fb, 'r', { backend: BACKEND })
      const w = new BatchWindow(size)
      const a1 = ops(ha, 64, 0)
      const b1 = ops(hb, 64, 64)
      const a2 = ops(ha, 64, 128)
      const ac = new AbortController()
      const p1 = outcome(ha.readMany(a1, { window: w, signal: ac.signal }))
      const p2 = outcome(hb.readMany(b1, { window: w }))
      const p3 = outcome(ha.readMany(a2, { window: w }))
      // hb's batch is queued behind a1's: close() waits for it.
      const closed = hb.close()
      // a1 is running (its first `size` ops staged): cancelled.
      ac.abort(new Error('stop a1'))
      const [r1, r2, r3] = await Promise.all([p1, p2, p3])
      await closed
      t.false(r1.ok, `size ${size}: the aborted batch rejects`)
      if (!r1.ok) {
        t.is(r1.error.code, 'ABORT_ERR')
        const rs = (r1.error as unknown as { results: Results }).results
        t.is(rs.length, 64)
        // Each op: its bytes (it finished before the cancel) with the file's data, or ABORT_ERR.
        for (const [i, r] of rs.entries()) {
          if (typeof r === 'number') t.true(r === U && a1.memory.subarray(i * U, (i + 1) * U).equals(da.subarray(i * U, (i + 1) * U)), `size ${size}: a1 op ${i}`)
          else t.is(r.code, 'ABORT_ERR', `size ${size}: a1 op ${i}`)
        }
      }
      t.true(r2.ok && Array.from(r2.value).every((x) => x === U), `size ${size}: the closed handle's queued batch completed`)
      t.true(b1.memory.equals(db.subarray(64 * U, 128 * U)), `size ${size}: its data`)
      t.true(r3.ok && Array.from(r3.value).every((x) => x === U), `size ${size}: the batch after the aborted one`)
      t.true(a2.memory.equals(da.subarray(128 * U, 192 * U)), `size ${size}: its data`)
      const late = await t.throwsAsync(hb.readMany(ops(ha, 2, 0), { window: w }), { instanceOf: DirectIoError })
      t.is(late?.code, 'ERR_ODIRECT_CLOSED')
      // The window is still good for the live handle (writes this time), and an abort after
      // the end changes nothing.
      const ac2 = new AbortController()
      const wr = ops(ha, 16, 200)
      for (let i = 0; i < 16; i++) wr.memory.fill(0xe0 + size, i * U, (i + 1) * U)
      t.deepEqual(Array.from(await ha.writeMany(wr, { window: w, signal: ac2.signal })), new Array(16).fill(U))
      ac2.abort()
      t.true(fs.readFileSync(fa).subarray(200 * U, 216 * U).equals(wr.memory), `size ${size}: written through the window`)
    }
  } finally {
    await ha.close()
  }
  t.deepEqual(openUnder(dir), [])
})
