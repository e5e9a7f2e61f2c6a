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
import { isDeepStrictEqual } from 'node:util'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test, { type ExecutionContext } from 'ava'

import { BatchWindow, copyFile, createReadStream, createWriteStream, DirectIoError, type FileHandle, open, readFile, type ReadStreamOptions } from '../dist/index.js'
import { faultFs, findCommand, fullFs, loopDevice, patternBuffer, type Requirement } from './helpers/fixtures.js'
import { until } from './helpers/events.ts'
import { fxTest, must } from './helpers/fxtest.js'
import { runtimePath } from './helpers/runtimes.ts'
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

/** This process's descriptors by what they are (numbers in the link masked): anon_inode:[io_uring] 3, pipe:[N] 9... */
function descriptorKinds(): Record<string, number> {
  const m: Record<string, number> = {}
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let l: string
    try {
      l = fs.readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      continue
    }
    const k = l.startsWith('/') ? 'file' : l.replace(/\d+/g, 'N')
    m[k] = (m[k] ?? 0) + 1
  }
  return m
}

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
    // A getter of the options that throws: the caller's own error, the same object (as fs and
    // README's compatibility table say), nothing started.
    const mine = new Error('from a getter')
    const g = await t.throwsAsync(
      fh.readMany(ops(fh, 4, 0), {
        get window(): BatchWindow {
          throw mine
        },
      }),
    )
    t.is(g, mine)
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

test.serial(`[${BACKEND}] workers terminated or exiting with window batches in flight over two handles (and opens in flight): no descriptor left, the main thread's window unaffected`, async (t) => {
  const dir = scratch('/dev/shm')
  const file = path.join(dir, 'f')
  const data = patterned(file, 2048)
  const body = `
const { parentPort, workerData: w } = require('node:worker_threads')
const od = require(w.dist)
;(async () => {
  const fh = await od.open(w.file, w.i % 2 ? 'r+' : 'r', { backend: w.backend })
  const fh2 = await od.open(w.file, 'r', { backend: w.backend })
  const win = new od.BatchWindow(1 + (w.i % 7))
  const n = 64, U = 1 << 16
  const mk = (h) => ({ memory: h.alloc(n * U), offsets: new Uint32Array(n).map((_, i) => i * U), lengths: new Uint32Array(n).fill(U), positions: new Float64Array(n).map((_, i) => i * U) })
  const ac = new AbortController()
  for (let k = 0; k < 4; k++) (k % 2 ? fh2 : fh).readMany(mk(k % 2 ? fh2 : fh), { window: win, signal: k === 2 ? ac.signal : undefined }).catch(() => {})
  if (w.i % 2) { const m = mk(fh); fh.readMany(m, { window: win }).then(() => fh.writeMany(m, { window: win })).catch(() => {}) }
  for (let k = 0; k < 8; k++) od.open(w.file, 'r').catch(() => {})
  fh2.close().catch(() => {})
  ac.abort()
  parentPort.postMessage('go')
  // Exit by itself (5) or stay alive until terminated (1): without the timer a worker whose I/O
  // is done could end by itself (0) before the main thread, descheduled, calls terminate().
  if (w.i % 3 === 0) setImmediate(() => process.exit(5))
  else setInterval(() => {}, 1 << 30)
})().catch((e) => parentPort.postMessage('failed: ' + (e && e.stack || e)))
`
  const main = await open(file, 'r', { backend: BACKEND })
  const w = new BatchWindow(4)
  const mine = ops(main, 256, 0)
  // The main thread's window batch runs while the workers come and go.
  const pending = main.readMany(mine, { window: w })
  let kinds: Record<string, number> = {}
  for (let i = 0; i < 24; i++) {
    // After two workers (Node's own descriptors for workers exist by then): what every kind of
    // descriptor (rings, eventfds, aio contexts, pipes) numbers; each dead worker's engine must
    // have closed its own.
    if (i === 2) kinds = descriptorKinds()
    const worker = new Worker(body, { eval: true, workerData: { dist, file, i, backend: BACKEND } })
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve))
    const errors: unknown[] = []
    worker.on('error', (e) => errors.push(e))
    const msg = await new Promise<unknown>((resolve) => worker.once('message', resolve))
    t.is(msg, 'go', String(msg))
    if (i % 3 !== 0) await worker.terminate()
    t.is(await exited, i % 3 === 0 ? 5 : 1, `worker ${i}`)
    t.deepEqual(errors, [])
  }
  // A dead worker's teardown can end just after its 'exit' (an open that completed in a pool
  // thread meanwhile, closed by the reaper), and this process may hold a file of its own for a
  // moment: counted once the kinds match again or 10 s passed (a leak stays, and fails below).
  // CI saw 'file' 3 vs 2 once under load (aio); it passed alone every time.
  await until(() => isDeepStrictEqual(descriptorKinds(), kinds), 'the dead workers\' descriptors closed', 10_000).catch(() => {})
  t.deepEqual(descriptorKinds(), kinds, 'no ring, eventfd or other descriptor left by the dead workers')
  t.deepEqual(Array.from(await pending), new Array(256).fill(U))
  t.true(mine.memory.equals(data.subarray(0, 256 * U)))
  await main.close()
  t.deepEqual(openUnder(dir), [], 'descriptors of dead workers are closed')
})

// ---------------------------------------------------------------------------------------
// 3. BatchWindow: ENOSPC and EIO mid-window, error attribution

fxTest(`[${BACKEND}] writeMany batches in one window on a full 8 MiB ext4 (loop, 4096-byte sectors): the batch that fits resolves, the others reject ENOSPC at their first failed op; every op reported written is on disk`, LOOP, async (t) => {
  const fx = must(fullFs(8, { kind: 'loop-ext4' }))
  t.teardown(() => fx.cleanup())
  const file = path.join(fx.dir, 'f')
  const fh = await open(file, 'w+', { backend: BACKEND })
  try {
    const LEN = 64 * KiB
    const total = Math.floor(fx.freeBytes / LEN)
    const half = Math.floor(total / 2)
    // A: half the free space; B: the rest and 16 ops more; C: all past the end of the space.
    const sizes = [half, total - half + 16, 32]
    let first = 0
    const w = new BatchWindow(4)
    const batches = sizes.map((n) => {
      const a = ops(fh, n, first, LEN)
      for (let i = 0; i < n; i++) a.memory.set(block(first + i, LEN), i * LEN)
      first += n
      return a
    })
    const outs = await Promise.all(batches.map((a) => outcome(fh.writeMany(a, { window: w }))))
    t.true(outs[0].ok, `A fits: ${outs[0].ok ? '' : outs[0].error.message}`)
    const disk = fs.readFileSync(file)
    let failures = 0
    for (const [k, o] of outs.entries()) {
      const a = batches[k]
      const rs: Results = o.ok ? Array.from(o.value) : (o.error as unknown as { results: Results }).results
      t.is(rs.length, a.offsets.length)
      let firstFailed = -1
      for (const [i, r] of rs.entries()) {
        const at = a.positions[i]
        if (typeof r === 'number') {
          t.true(r > 0 && r <= LEN, `batch ${k} op ${i}: ${r}`)
          t.true(disk.subarray(at, at + r).equals(a.memory.subarray(i * LEN, i * LEN + r)), `batch ${k} op ${i}: reported written, is on disk`)
        } else {
          failures++
          t.is(r.code, 'ENOSPC', `batch ${k} op ${i}`)
          t.is(r.position, at)
          if (firstFailed < 0) firstFailed = i
        }
      }
      if (!o.ok) {
        t.is(o.error.code, 'ENOSPC', `batch ${k}`)
        t.is(o.error.position, a.positions[firstFailed], `batch ${k}: the error names its first failed op in op order`)
        t.regex(o.error.hint ?? '', /error\.results/)
      }
    }
    t.true(failures >= 16, `ops that did not fit failed (${failures})`)
    t.false(outs[2].ok, 'C, all past the space, rejects')
    t.is(fh.inflight, 0)
  } finally {
    await fh.close()
  }
  t.deepEqual(openUnder(fx.dir), [])
})

fxTest(`[${BACKEND}] readMany batches in one window over faultfs with EIO inside the second: only it rejects (EIO at the op holding the bad byte), the others resolve with the file's bytes`, FAULT, async (t) => {
  const LEN = 64 * KiB
  const size = 8 * MiB
  const bad = 2 * MiB + 3 * LEN + 100
  const fx = must(faultFs({ size, eioAt: [bad], threads: 4 }))
  t.teardown(() => fx.cleanup())
  const want = patternBuffer(0, size)
  const fh = await open(fx.file, 'r', { backend: BACKEND })
  try {
    const w = new BatchWindow(3)
    const bs = [0, 32, 64].map((first) => ops(fh, 32, first, LEN))
    const outs = await Promise.all(bs.map((a) => outcome(fh.readMany(a, { window: w }))))
    t.true(outs[0].ok && outs[2].ok, 'the first and third batches resolve')
    t.true(bs[0].memory.equals(want.subarray(0, 32 * LEN)))
    t.true(bs[2].memory.equals(want.subarray(64 * LEN, 96 * LEN)))
    const o = outs[1]
    t.false(o.ok)
    if (!o.ok) {
      t.is(o.error.code, 'EIO')
      t.is(o.error.position, 2 * MiB + 3 * LEN)
      t.is(o.error.path, fx.file)
      const rs = (o.error as unknown as { results: Results }).results
      for (const [i, r] of rs.entries()) {
        if (i === 3) t.is((r as DirectIoError).code, 'EIO')
        else t.true(r === LEN && bs[1].memory.subarray(i * LEN, (i + 1) * LEN).equals(want.subarray((32 + i) * LEN, (33 + i) * LEN)), `op ${i}`)
      }
    }
    t.is(fx.stats().eio, 1)
  } finally {
    await fh.close()
  }
})

// ---------------------------------------------------------------------------------------
// 4. Early submission: the fs checks at open, odd ODIRECT_SUBMIT_EVERY, a 4096-sector device

fxTest(`[${BACKEND}] open() of a FUSE file: the JS thread never fstat()s or fstatfs()es it (a stalled FUSE server would stall the JS thread; the open's own checks run on the pool)`, [...FAULT, 'cmd:strace'], async (t) => {
  const fx = must(faultFs({ size: MiB }))
  t.teardown(() => fx.cleanup())
  const trace = path.join(scratch(), 'strace.out')
  const script = `
const od = require(${JSON.stringify(dist)});
(async () => {
  const fh = await od.open(${JSON.stringify(fx.file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
  const b = fh.alloc(4096);
  await fh.read(b, 0, 4096, 0);
  console.log(process.pid, fh.fd);
  await fh.close();
})();`
  const r = spawnSync(findCommand('strace') as string, ['-f', '-qq', '-o', trace, '-e', 'trace=openat,fstat,newfstatat,statx,fstatfs,statfs,close', process.execPath, '-e', script], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const [pid, fd] = r.stdout.trim().split(' ').map(Number)
  const lines = fs.readFileSync(trace, 'utf8').split('\n')
  // From the open of the FUSE file (on a pool thread) to its close: the main thread's calls on it.
  const isOpen = (l: string): boolean => l.includes(`openat(AT_FDCWD, "${fx.file}"`)
  const gave = new RegExp(`= ${fd}$`)
  let opened = lines.findIndex((l) => isOpen(l) && gave.test(l))
  if (opened < 0) {
    // Under load strace splits a call that another thread's call interrupts: "openat(... <unfinished ...>"
    // on one line, "<... openat resumed>...) = fd" on a later one of the same thread.
    opened = lines.findIndex((l, i) => {
      if (!isOpen(l) || !l.endsWith('<unfinished ...>')) return false
      const tid = l.split(' ')[0]
      return lines.some((m, j) => j > i && m.startsWith(`${tid} `) && m.includes('<... openat resumed>') && gave.test(m))
    })
  }
  t.true(opened >= 0, `the open of ${fx.file} as fd ${fd} is traced`)
  const onIt = new RegExp(`^${pid} +(fstat|newfstatat|statx|fstatfs)\\(${fd}[,)]`)
  const main = lines.slice(opened).filter((l) => onIt.test(l))
  t.deepEqual(main, [], 'calls on the FUSE file from the JS thread')
})

/**
 * Runs, in a child with ODIRECT_SUBMIT_EVERY=`every` (undefined: unset) and ODIRECT_DEBUG, on
 * `target` (a file or a block device, opened r+): 9 reads started in one tick (how many the
 * io_uring SQ head shows taken before the tick ends), then writeMany and writev of 16 blocks
 * with { datasync } (each a linked chain on io_uring), read back with node:fs.
 */
function submitRun(t: ExecutionContext, target: string, every: string | undefined): { during: number; backend: string; linked: number[]; lines: string[] } {
  const script = `
const fs = require('node:fs')
const od = require(${JSON.stringify(dist)})
function sqHeads() {
  let sum = 0
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let link = ''
    try { link = fs.readlinkSync('/proc/self/fd/' + fd) } catch { continue }
    if (!link.includes('io_uring')) continue
    const m = /SqHead:\\s*(\\d+)/.exec(fs.readFileSync('/proc/self/fdinfo/' + fd, 'utf8'))
    if (m !== null) sum += Number(m[1])
  }
  return sum
}
;(async () => {
  const fh = await od.open(${JSON.stringify(target)}, 'r+', { backend: ${JSON.stringify(BACKEND)}, direct: 'require' })
  const U = fh.alignment.offset < 4096 ? 4096 : fh.alignment.offset
  const bufs = Array.from({ length: 9 }, () => fh.alloc(U))
  await fh.read(bufs[0], { position: 0 })
  const before = sqHeads()
  const ps = bufs.map((b, i) => fh.read(b, { position: i * U }))
  const during = sqHeads() - before
  await Promise.all(ps)
  const a = Array.from({ length: 16 }, (_, i) => fh.alloc(U).fill(0x30 + i))
  const b = Array.from({ length: 16 }, (_, i) => fh.alloc(U).fill(0x60 + i))
  console.error('MARK writeMany')
  await fh.writeMany(a.map((buffer, i) => ({ buffer, position: i * U })), { datasync: true })
  console.error('MARK writev')
  await fh.writev(b, 16 * U, { datasync: true })
  console.error('MARK end')
  const backend = fh.backend
  await fh.close()
  const back = Buffer.alloc(32 * U)
  const fd = fs.openSync(${JSON.stringify(target)}, 'r')
  fs.readSync(fd, back, 0, back.length, 0)
  fs.closeSync(fd)
  const same = back.equals(Buffer.concat([...a, ...b]))
  console.log(JSON.stringify({ during, same, backend }))
})().catch((e) => { console.error(e); process.exit(1) })`
  const env: NodeJS.ProcessEnv = { ...process.env, ODIRECT_DEBUG: '1' }
  delete env.ODIRECT_SUBMIT_EVERY
  if (every !== undefined) env.ODIRECT_SUBMIT_EVERY = every
  // The first read is alone: counted as submitted in its call, not completed there by the
  // loop-aware disk wait (the default in Node, loop-wait.spec), which would let the next start alone too.
  env.ODIRECT_RW_WAIT_DISK = '0'
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 60_000 })
  t.is(r.status, 0, `ODIRECT_SUBMIT_EVERY=${String(every)}: ${r.stderr.slice(-2000)}`)
  const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { during: number; same: boolean; backend: string }
  t.true(out.same, `ODIRECT_SUBMIT_EVERY=${String(every)}: the chains' data is on ${target}`)
  const lines = r.stderr.split('\n')
  // Each chain: its writes submitted with IOSQE_IO_LINK before its first completion.
  const linked = ['writeMany', 'writev'].map((what, k) => {
    const from = lines.indexOf(`MARK ${what}`)
    const to = lines.indexOf(k === 0 ? 'MARK writev' : 'MARK end')
    const part = lines.slice(from, to)
    const firstComplete = part.findIndex((l) => l.startsWith('odirect: complete'))
    return part.slice(0, firstComplete).filter((l) => / op=writev? .* link$/.test(l)).length
  })
  return { during: out.during, backend: out.backend, linked, lines }
}

/**
 * Unset, and values a user might set by mistake: only a whole number is taken, anything else is
 * the default (4). The first of the 9 reads is alone (nothing in flight): it goes to the kernel
 * in its own call whatever the setting (engine.rs `Inner::rw`), then groups of `every` follow.
 */
const EVERY: Array<[string | undefined, number]> = [
  [undefined, 5],
  ['0', 1],
  ['1', 8],
  ['1000000000', 1],
  ['-1', 5],
  ['abc', 5],
  ['', 5],
  ['1e9', 5],
  [' 4', 5],
  ['18446744073709551616', 5],
]

function checkSubmit(t: ExecutionContext, target: string, values = EVERY): void {
  for (const [every, during] of values) {
    const r = submitRun(t, target, every)
    if (r.backend !== 'io_uring') continue
    t.is(r.during, during, `ODIRECT_SUBMIT_EVERY=${String(every)}: reads in the kernel before the tick ended`)
    t.deepEqual(r.linked, [16, 1], `ODIRECT_SUBMIT_EVERY=${String(every)}: writeMany's 16 writes linked in one submission, writev's one`)
  }
}

test(`[${BACKEND}] ODIRECT_SUBMIT_EVERY unset, 0, 1, huge, negative, not a number, empty: early submission as documented, linked datasync chains never split, data on disk`, (t) => {
  const file = path.join(scratch(), 'f')
  fs.writeFileSync(file, Buffer.alloc(64 * U, 1))
  checkSubmit(t, file)
})

fxTest(`[${BACKEND}] the same on a raw loop device of 4096-byte sectors (a device file: early submission applies)`, ['root', 'loop', 'cmd:blockdev'], (t) => {
  const dev = must(loopDevice(4096, 4))
  t.teardown(() => dev.cleanup())
  checkSubmit(t, dev.device)
})

fxTest(`[${BACKEND}] the same on a FUSE file (faultfs, O_DIRECT: its ops go to io-wq, submitted early in groups as on a disk)`, FAULT, (t) => {
  const fx = must(faultFs({ size: 64 * U, threads: 4 }))
  t.teardown(() => fx.cleanup())
  checkSubmit(t, fx.file, EVERY.slice(0, 3))
})

// ---------------------------------------------------------------------------------------
// 5. ODIRECT_DEBUG with stdio closed, on /dev/full, on a pipe whose reader is gone

test(`[${BACKEND}] ODIRECT_DEBUG with stderr (and stdout, stdin) closed, on /dev/full, or a pipe whose reader closed: the program runs to the end, the files hold exactly their data (no trace line lands in them), in Node, Bun and Deno`, (t) => {
  const dir = scratch()
  const prog = path.join(dir, 'prog.cjs')
  fs.writeFileSync(
    prog,
    `const od = require(${JSON.stringify(dist)})
const fs = require('node:fs')
;(async () => {
  const [out, data, buffered] = process.argv.slice(-3)
  // A buffered file too: a trace written to its descriptor would land in it.
  const fb = await od.open(buffered, 'w+', { backend: ${JSON.stringify(BACKEND)}, direct: 'off' })
  const fh = await od.open(data, 'w+', { backend: ${JSON.stringify(BACKEND)} })
  const w = new od.BatchWindow(3)
  const n = 40
  const m = fh.alloc(n * 4096)
  for (let i = 0; i < n; i++) m.fill(i, i * 4096, (i + 1) * 4096)
  const arrays = { memory: m, offsets: new Uint32Array(n).map((_, i) => i * 4096), lengths: new Uint32Array(n).fill(4096), positions: new Float64Array(n).map((_, i) => i * 4096) }
  await Promise.all([fh.writeMany(arrays, { window: w }), fb.write(Buffer.alloc(10000, 0x62), 0, 10000, 0)])
  for (let i = 0; i < 100; i++) await fh.read(fh.alloc(4096), 0, 4096, (i % n) * 4096)
  await fh.writev([fh.alloc(4096).fill(0x77)], n * 4096, { datasync: true })
  await fh.close()
  await fb.close()
  fs.writeFileSync(out, 'done')
})().catch((e) => { require('node:fs').writeFileSync(process.argv.at(-3), 'failed: ' + (e && e.stack || e)) })
`,
  )
  const want = Buffer.concat([...Array.from({ length: 40 }, (_, i) => Buffer.alloc(4096, i)), Buffer.alloc(4096, 0x77)])
  const runtimes: Array<[string, string[]]> = [['node', [process.execPath]]]
  for (const [name, args] of [
    ['bun', []],
    ['deno', ['run', '--allow-all', '--no-check', '--no-lock']],
  ] as const) {
    const bin = runtimePath(name)
    if (bin === undefined) t.log(`${name}: no binary (scripts/runtime-bin.cjs --path ${name}), not run`)
    else runtimes.push([name, [bin, ...args]])
  }
  const sh = findCommand('bash') ?? '/bin/sh'
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`
  let k = 0
  for (const [rt, cmd] of runtimes) {
    for (const redir of ['2>&-', '0<&- 1>&- 2>&-', '2>/dev/full', '1>/dev/full 2>/dev/full', 'pipe']) {
      k++
      const what = `${rt} ${redir}`
      const out = path.join(dir, `out${k}`)
      const data = path.join(dir, `data${k}`)
      const buffered = path.join(dir, `buf${k}`)
      const line = `${cmd.map(q).join(' ')} ${q(prog)} ${q(out)} ${q(data)} ${q(buffered)}`
      // 'pipe': stderr is a pipe whose read end the shell closed before the program writes (EPIPE).
      const script = redir === 'pipe' ? `exec 3>&1; { ${line} 2>&1 1>&3 3>&-; } | true` : `exec ${line} ${redir}`
      const r = spawnSync(sh, ['-c', script], { encoding: 'utf8', env: { ...process.env, ODIRECT_DEBUG: '1', DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' }, timeout: 60_000 })
      t.is(r.signal, null, `${what}: ${r.stderr}`)
      t.is(fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : 'no outcome file', 'done', what)
      t.true(fs.existsSync(data) && fs.readFileSync(data).equals(want), `${what}: the O_DIRECT file holds its data`)
      t.true(fs.existsSync(buffered) && fs.readFileSync(buffered).equals(Buffer.alloc(10000, 0x62)), `${what}: the buffered file holds its data`)
    }
  }
})

// ---------------------------------------------------------------------------------------
// 6. Streams refilled at once: destroy, break, throw, abort, odd sizes, files that change

/** Resolves with the error a stream emits, or undefined once it closes without one. */
function closeOf(s: NodeJS.EventEmitter): Promise<unknown> {
  return new Promise((resolve) => {
    let err: unknown
    s.once('error', (e) => (err = e))
    s.once('close', () => resolve(err))
  })
}

test(`[${BACKEND}] read streams ended every way while reads are in flight (destroy after k chunks, break, throw, abort, destroy(err)): each closes once, the right error, no descriptor left`, async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'f')
  const data = patternBuffer(0, 3 * MiB + 5000)
  fs.writeFileSync(file, data)
  const opts = (readAhead: number, reuseChunks: boolean): ReadStreamOptions => ({ chunkSize: 64 * KiB, readAhead, reuseChunks, backend: BACKEND })
  for (const readAhead of [1, 4, 32]) {
    for (const reuseChunks of [false, true]) {
      const what = `readAhead ${readAhead}, reuseChunks ${reuseChunks}`
      for (const k of [0, 1, 3, 20]) {
        // destroy() from a 'data' listener after k chunks
        const rs = createReadStream(file, opts(readAhead, reuseChunks))
        const closed = closeOf(rs)
        let n = 0
        let pos = 0
        let wrong = -1
        rs.on('data', (c: Buffer) => {
          if (wrong < 0 && !c.equals(data.subarray(pos, pos + c.length))) wrong = pos
          pos += c.length
          if (n++ === k) rs.destroy()
        })
        t.is(await closed, undefined, `${what}: destroy after ${k}`)
        t.is(wrong, -1, `${what}: chunks before the destroy are the file's`)
        // break out of for-await after k chunks
        const rb = createReadStream(file, opts(readAhead, reuseChunks))
        const closedB = closeOf(rb)
        let m = 0
        for await (const c of rb as AsyncIterable<Buffer>) {
          void c
          if (m++ === k) break
        }
        // As node:fs's streams: leaving the loop early destroys the stream with an AbortError.
        t.is((await closedB as { code?: string } | undefined)?.code, 'ABORT_ERR', `${what}: break after ${k}`)
      }
      // the consumer throws
      const rt = createReadStream(file, opts(readAhead, reuseChunks))
      const closedT = closeOf(rt)
      const mine = new Error('consumer')
      const thrown = await t.throwsAsync(async () => {
        for await (const c of rt as AsyncIterable<Buffer>) {
          void c
          throw mine
        }
      })
      t.is(thrown, mine)
      await closedT
      // destroy(err): that very error, once
      const rd = createReadStream(file, opts(readAhead, reuseChunks))
      const errs: unknown[] = []
      rd.on('error', (e) => errs.push(e))
      const closedD = new Promise((resolve) => rd.once('close', resolve))
      rd.once('data', () => rd.destroy(mine))
      await closedD
      t.deepEqual(errs, [mine], `${what}: destroy(err)`)
      // abort mid-stream
      const ac = new AbortController()
      const ra = createReadStream(file, { ...opts(readAhead, reuseChunks), signal: ac.signal })
      let seen = 0
      const aborted = await t.throwsAsync(async () => {
        for await (const c of ra as AsyncIterable<Buffer>) {
          void c
          if (++seen === 2) ac.abort()
        }
      })
      t.is((aborted as { name?: string }).name, 'AbortError', what)
    }
  }
  t.deepEqual(openUnder(dir), [])
})

test(`[${BACKEND}] read streams of odd chunk sizes, starts and ends read exactly the file's bytes; a file growing while read is read to its new end, one shrinking gives a prefix of its old bytes`, async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'f')
  const size = 2 * MiB + 12345
  const data = patternBuffer(0, size)
  fs.writeFileSync(file, data)
  const readAll = async (o: ReadStreamOptions): Promise<Buffer> => {
    const out: Buffer[] = []
    for await (const c of createReadStream(file, { backend: BACKEND, ...o }) as AsyncIterable<Buffer>) out.push(Buffer.from(c))
    return Buffer.concat(out)
  }
  for (const o of [
    { chunkSize: 1 },
    { highWaterMark: 1, readAhead: 64 },
    { chunkSize: 4097, readAhead: 1 },
    { chunkSize: 3 * MiB },
    { chunkSize: 4096, start: 4095, end: 4096 },
    { start: size - 1 },
    { start: size },
    { start: size + 4096 },
    { chunkSize: 8192, start: 1, end: size + 100, reuseChunks: true },
  ]) {
    const start = o.start ?? 0
    const end = Math.min(size - 1, o.end ?? Infinity)
    t.true((await readAll(o)).equals(data.subarray(start, end + 1)), JSON.stringify(o))
  }
  // Growing: appended (by another writer) after the first chunk arrived; the stream reads on.
  const grown = patternBuffer(0, 4 * MiB)
  fs.writeFileSync(file, grown.subarray(0, MiB))
  const out: Buffer[] = []
  for await (const c of createReadStream(file, { chunkSize: 64 * KiB, readAhead: 2, backend: BACKEND }) as AsyncIterable<Buffer>) {
    if (out.length === 0) fs.appendFileSync(file, grown.subarray(MiB))
    out.push(Buffer.from(c))
  }
  t.true(Buffer.concat(out).equals(grown), 'read to the new end')
  // Shrinking under it: what arrives is a prefix of the old bytes, the end is clean.
  fs.writeFileSync(file, grown)
  const got: Buffer[] = []
  for await (const c of createReadStream(file, { chunkSize: 64 * KiB, readAhead: 2, backend: BACKEND }) as AsyncIterable<Buffer>) {
    got.push(Buffer.from(c))
    if (got.length === 2) fs.truncateSync(file, 200_000)
  }
  const all = Buffer.concat(got)
  t.true(all.length >= 128 * KiB && all.equals(grown.subarray(0, all.length)), `a prefix (${all.length} bytes)`)
  t.deepEqual(openUnder(dir), [])
})

// Buffered (direct: 'off'); the O_DIRECT variant follows.
fxTest(`[${BACKEND}] a buffered read stream over faultfs answering every read short (half): each short read's rest is read at once, the bytes are the file's`, FAULT, async (t) => {
  const size = 3 * MiB + 4096
  const fx = must(faultFs({ size, shortReads: true, threads: 4 }))
  t.teardown(() => fx.cleanup())
  const want = patternBuffer(0, size)
  for (const readAhead of [1, 4]) {
    const out: Buffer[] = []
    for await (const c of createReadStream(fx.file, { chunkSize: 256 * KiB, readAhead, backend: BACKEND, direct: 'off' }) as AsyncIterable<Buffer>) out.push(Buffer.from(c))
    t.true(Buffer.concat(out).equals(want), `readAhead ${readAhead}`)
  }
  t.deepEqual(openUnder(fx.dir), [])
})

// O_DIRECT (was: EIO "read returned no data" from the streams, and readFile/copyFile/`odirect cp`
// returned a file cut at the first short read that ended inside a block, silently). The rest of
// a short read is read again from its 4096-byte block; the server halves that read too and
// returns only the half block delivered already, which is not the end of the file: the block is
// asked for again with twice the length. The file ends inside a block (1000 bytes past one).
fxTest(`[${BACKEND}] O_DIRECT read streams over faultfs answering every read short (half): Node and web streams deliver every byte of the file, not EIO`, FAULT, async (t) => {
  const size = 3 * MiB + 4096 + 1000
  const fx = must(faultFs({ size, shortReads: true, threads: 4 }))
  t.teardown(() => fx.cleanup())
  const want = patternBuffer(0, size)
  t.true(fs.readFileSync(fx.file).equals(want), 'node:fs through the mount reads the pattern')
  const fh = await open(fx.file, 'r', { direct: 'require', backend: BACKEND })
  try {
    t.true(fh.direct)
    for (const o of [{ readAhead: 1 }, { readAhead: 4 }, { readAhead: 4, start: 2048, end: size - 2 }, { readAhead: 2, chunkSize: 4096 }]) {
      const out: Buffer[] = []
      for await (const c of fh.createReadStream({ chunkSize: 256 * KiB, ...o, autoClose: false }) as AsyncIterable<Buffer>) out.push(Buffer.from(c))
      t.true(Buffer.concat(out).equals(want.subarray(o.start ?? 0, (o.end ?? size - 1) + 1)), `stream ${JSON.stringify(o)}`)
    }
    const web: Uint8Array[] = []
    for await (const c of fh.readableWebStream({ chunkSize: 256 * KiB }) as unknown as AsyncIterable<Uint8Array>) web.push(Uint8Array.from(c))
    t.true(Buffer.concat(web).equals(want), 'web stream')
  } finally {
    await fh.close()
  }
  t.deepEqual(openUnder(fx.dir), [])
})

fxTest(`[${BACKEND}] O_DIRECT readFile, copyFile and odirect cp over faultfs answering every read short (half): the whole file, not the part before the first short read that ended inside a block`, FAULT, async (t) => {
  const size = 3 * MiB + 4096 + 1000
  const fx = must(faultFs({ size, shortReads: true, threads: 4 }))
  t.teardown(() => fx.cleanup())
  const want = patternBuffer(0, size)
  const got = await readFile(fx.file, { direct: 'require', backend: BACKEND })
  t.is(got.length, size, 'readFile: the whole file')
  t.true(got.equals(want), 'readFile: its bytes')
  const dir = scratch()
  const dst = path.join(dir, 'copy')
  const r = await copyFile(fx.file, dst, { direct: 'prefer', backend: BACKEND, verify: true })
  t.true(r.source.direct, 'copyFile read with O_DIRECT')
  t.true(fs.readFileSync(dst).equals(want), 'copyFile: the whole file')
  const cli = path.join(dir, 'cli-copy')
  const c = spawnSync(process.execPath, [path.join(here, '..', 'dist', 'cli.js'), 'cp', fx.file, cli], { encoding: 'utf8', timeout: 120_000 })
  t.is(c.status, 0, c.stderr)
  t.true(fs.readFileSync(cli).equals(want), 'odirect cp: the whole file')
  t.deepEqual(openUnder(fx.dir), [])
})

// A server that never returns more than 2048 bytes a read: with O_DIRECT no read of the second
// half of a 4096-byte block can succeed. A bounded number of reads of that block (each asking for
// twice as much) bring nothing new, then EIO says so; what was delivered is the file's. Buffered,
// every read is progress and the whole file arrives.
fxTest(`[${BACKEND}] O_DIRECT over faultfs returning at most 2048 bytes a read: the stream and readFile fail with an EIO that names the reads that brought nothing new, after delivering only the file's bytes; buffered reads get the whole file`, FAULT, async (t) => {
  const size = 64 * KiB + 1000
  const fx = must(faultFs({ size, readMax: 2048, threads: 2 }))
  t.teardown(() => fx.cleanup())
  const want = patternBuffer(0, size)
  const stuck = /^EIO: 5 reads from position 0 .*returned no byte past position 2048, before the end of file \(66536 bytes\)/
  const out: Buffer[] = []
  const err = await t.throwsAsync(async () => {
    for await (const c of createReadStream(fx.file, { chunkSize: 256 * KiB, direct: 'require', backend: BACKEND }) as AsyncIterable<Buffer>) out.push(Buffer.from(c))
  })
  t.true(err instanceof DirectIoError && err.code === 'EIO' && (err as DirectIoError).position === 2048, String(err))
  t.regex(err?.message ?? '', stuck)
  t.true(Buffer.concat(out).equals(want.subarray(0, 2048)), 'the stream delivered the first 2048 bytes, the file\'s')
  const e2 = await t.throwsAsync(readFile(fx.file, { direct: 'require', backend: BACKEND }))
  t.true(e2 instanceof DirectIoError && e2.code === 'EIO', String(e2))
  t.regex(e2?.message ?? '', stuck)
  const all: Buffer[] = []
  for await (const c of createReadStream(fx.file, { chunkSize: 256 * KiB, direct: 'off', backend: BACKEND }) as AsyncIterable<Buffer>) all.push(Buffer.from(c))
  t.true(Buffer.concat(all).equals(want), 'buffered: the whole file')
  t.true((await readFile(fx.file, { direct: 'off', backend: BACKEND })).equals(want), 'buffered readFile: the whole file')
  t.deepEqual(openUnder(fx.dir), [])
})

test(`[${BACKEND}] write streams ended mid-flight (destroy, destroy(err), abort, a source that throws): the error is the caller's or AbortError, the file closes, what was confirmed is on disk`, async (t) => {
  const dir = scratch()
  const src = patternBuffer(0, 4 * MiB)
  for (const writeBehind of [1, 4, 16]) {
    for (const how of ['destroy', 'destroy(err)', 'abort', 'source throws'] as const) {
      const what = `writeBehind ${writeBehind}, ${how}`
      const file = path.join(dir, `${writeBehind}-${how}`)
      const ac = new AbortController()
      const ws = createWriteStream(file, { chunkSize: 64 * KiB, writeBehind, signal: ac.signal, backend: BACKEND })
      const closed = closeOf(ws)
      const mine = new Error('mine')
      // 300001-byte pieces: the stream's blocks never line up with them.
      let off = 0
      const step = (): void => {
        while (off < 2 * MiB) {
          const piece = src.subarray(off, off + 300_001)
          off += piece.length
          if (!ws.write(piece)) return void ws.once('drain', step)
        }
        if (how === 'destroy') ws.destroy()
        else if (how === 'destroy(err)') ws.destroy(mine)
        else if (how === 'abort') ac.abort()
        else ws.destroy(mine)
      }
      step()
      const err = await closed
      if (how === 'destroy') t.is(err, undefined, what)
      else if (how === 'abort') t.is((err as { name?: string }).name, 'AbortError', what)
      else t.is(err, mine, what)
      const confirmed = ws.bytesWritten
      const disk = fs.readFileSync(file)
      t.true(disk.length >= confirmed && disk.subarray(0, confirmed).equals(src.subarray(0, confirmed)), `${what}: ${confirmed} bytes confirmed and on disk`)
    }
  }
  t.deepEqual(openUnder(dir), [])
})

// ---------------------------------------------------------------------------------------
// 7. Signals that are not quite AbortSignals

test(`[${BACKEND}] a signal-like object whose addEventListener throws is refused before anything starts (was: the call rejected, the op ran on, and its ENOSPC became an unhandled rejection that ended the process); one that throws only later leaves its op to settle normally`, (t) => {
  const dir = scratch()
  const script = `
const od = require(${JSON.stringify(dist)})
const fs = require('node:fs')
const hostile = { aborted: false, addEventListener() { throw new Error('no listeners here') }, removeEventListener() {} }
let calls = 0
const twoFaced = { aborted: false, addEventListener() { if (++calls > 1) throw new Error('not twice') }, removeEventListener() {} }
;(async () => {
  const out = {}
  // /dev/full: every write fails with ENOSPC (buffered: a character device has no O_DIRECT).
  const fh = await od.open('/dev/full', 'r+', { direct: 'off', backend: ${JSON.stringify(BACKEND)} })
  const b = fh.alloc(4096)
  const code = (p) => p.then(() => 'ok', (e) => e.code)
  out.write = await code(fh.write(b, { position: 0, signal: hostile }))
  out.typed = await code(fh.writeMany({ memory: b, offsets: new Uint32Array([0]), lengths: new Uint32Array([4096]), positions: new Float64Array([0]) }, { signal: hostile, window: new od.BatchWindow(1) }))
  out.array = await code(fh.writeMany([{ buffer: b, position: 0 }], { signal: hostile, window: 1 }))
  out.twoFaced = await code(fh.write(b, { position: 0, signal: twoFaced }))
  out.inflight = fh.inflight
  await fh.close()
  const file = ${JSON.stringify(path.join(dir, 'stream'))}
  try { od.createWriteStream(file, { signal: hostile }); out.stream = 'accepted' } catch (e) { out.stream = e.code }
  out.created = fs.existsSync(file)
  console.log(JSON.stringify(out))
})()
`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout.trim() || '{}'), {
    write: 'ERR_INVALID_ARG_TYPE',
    typed: 'ERR_INVALID_ARG_TYPE',
    array: 'ERR_INVALID_ARG_TYPE',
    twoFaced: 'ENOSPC',
    inflight: 0,
    stream: 'ERR_INVALID_ARG_TYPE',
    created: false,
  })
})

test(`[${BACKEND}] streams given a signal-like object that takes the first listener (the options check) and throws on the next: the stream fails with ERR_INVALID_ARG_TYPE and closes its file (was: the constructor threw after the open started, the descriptor leaked)`, async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'r')
  fs.writeFileSync(file, Buffer.alloc(100_000, 1))
  const twoFaced = (): AbortSignal => {
    let calls = 0
    return {
      aborted: false,
      addEventListener(): void {
        if (++calls > 1) throw new Error('not twice')
      },
      removeEventListener(): void {},
    } as unknown as AbortSignal
  }
  for (const make of [() => createReadStream(file, { signal: twoFaced(), backend: BACKEND }), () => createWriteStream(path.join(dir, 'w'), { signal: twoFaced(), backend: BACKEND })]) {
    const s = make()
    const err = await closeOf(s)
    t.is((err as DirectIoError | undefined)?.code, 'ERR_INVALID_ARG_TYPE')
    t.regex((err as Error).message, /not twice/)
  }
  t.deepEqual(openUnder(dir), [])
})

const canTransfer = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function'
const transferTitle = `[${BACKEND}] fh.alloc memory moved by ArrayBuffer#transfer() while its batches wait in a BatchWindow of 1: each batch completes, the moved ArrayBuffers hold the file's bytes, memory handed out meanwhile is untouched`
// Node 22+ (npm run test:node22 runs this file there).
if (!canTransfer) console.log(`skipping "${transferTitle}": ArrayBuffer.prototype.transfer is missing in Node ${process.versions.node} (Node 22+)`)
;(canTransfer ? test : test.skip)(transferTitle, async (t) => {
  const file = path.join(scratch(), 'f')
  const data = patterned(file, 64)
  const fh = await open(file, 'r', { backend: BACKEND })
  try {
    const w = new BatchWindow(1)
    const bs = [0, 1, 2].map(() => ops(fh, 64, 0))
    const ps = bs.map((a) => fh.readMany(a, { window: w }))
    const moved = bs.map((a) => (a.memory.buffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer())
    t.true(bs.every((a) => a.memory.byteLength === 0), 'the views are detached')
    const fresh = Array.from({ length: 24 }, () => fh.alloc(64 * U).fill(0xee))
    for (const r of await Promise.all(ps)) t.deepEqual(Array.from(r), new Array(64).fill(U))
    for (const [i, x] of moved.entries()) t.true(Buffer.from(x).equals(data), `moved memory ${i} holds the file's bytes`)
    t.true(fresh.every((b) => b.every((v) => v === 0xee)), 'memory handed out while the batches ran is untouched')
  } finally {
    await fh.close()
  }
})
