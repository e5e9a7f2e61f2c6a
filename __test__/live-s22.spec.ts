// Helper "live" of the twenty-second session: a worker's exit that waited for a FUSE server, and
// three loose ends of the twenty-first.
// 1. A worker thread's exit waits in the kernel for the io-wq workers of the rings it submitted to
//    (do_exit -> io_uring_cancel_generic -> io_wq_put_and_exit), and on a FUSE file those sleep
//    killably in fuse_get_req once max_background requests are out (the cancel's notify signal
//    does not end that sleep): worker.terminate() with more reads in flight than the server takes
//    waited for the server. Now a worker's ops on may-block files go to a ring made and driven by
//    a thread of its own (crates/napi/src/mayblock.rs), which outlives the worker until they end.
//    adversary-s21b's two failing cases pass (flipped in place, with a third for 40 lone reads);
//    here: process.exit() with held reads (main thread and worker), the thread's life, and every
//    kind of op through it.
// 2. Deno ended by an uncaught exception mid-copy left the temp file (no JS listener runs): the
//    temp files are removed natively at exit(3) too (crates/napi/src/paths.rs TEMPS); a Deno
//    'error' listener that cancels the exit lets the copy finish (adversary-s21's case un-skipped).
// 3. fh.stats()'s latency histogram held a linked chain's cancelled ops the counts left out.
// 4. probe() of a path a FIFO is renamed over between its type check and its open hung.
import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import * as od from '../dist/index.js'
import { native } from '../dist/src/native.js'
import { bytes } from './helpers/crashbed.js'
import { childLines } from './helpers/child-lines.ts'
import { threadStates, until } from './helpers/events.js'
import { anonFds } from './helpers/fds.cjs'
import { type FaultFs, faultFs, isSkip, loopDevice, patternBuffer } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { runtimes } from './helpers/runtimes.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'

delete process.env.ODIRECT_BACKEND
delete process.env.ODIRECT_MAY_BLOCK_THREAD
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const CHILDREN = path.join(here, 'live-s22')
const UNIT = 4096
const THREAD = 'odirect-mayblk'
/**
 * The may-block rings' threads of this process: threads named THREAD, less the io-wq workers they
 * are making (a new io-wq worker bears its maker's name until it first runs and renames itself
 * iou-wrk-N: PF_IO_WORKER, 0x10, in /proc's flags field).
 */
function mayblkThreads(): number {
  let n = 0
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      const close = stat.lastIndexOf(')')
      const flags = Number(stat.slice(close + 2).split(' ')[6])
      if (stat.slice(stat.indexOf('(') + 1, close) === THREAD && (flags & 0x10) === 0) n++
    } catch {
      // the thread ended meanwhile
    }
  }
  return n
}
const io = (await od.probe('/var/tmp')).backends.io_uring
const IO_URING = io.available ? undefined : `io_uring is not available here: ${io.reason}`
// After the await: it registers its cleanup hook, and every hook and test must come after it.
const scratch = scratchDirs('live22')

// ---------------------------------------------------------------------------------------
// 1. Ops on may-block files from a worker: a thread of their own

/** A FUSE file whose reads the test holds (faultfs --hold-file), 4 MiB of its pattern. */
let held: FaultFs | undefined
test.before(() => {
  if (FAULTFS_REASON !== undefined) return
  const f = faultFs({ size: 4 << 20, hold: true, threads: 16 })
  if (isSkip(f)) throw new Error(f.skip)
  held = f
})
test.after.always(() => {
  held?.release()
  held?.cleanup()
})

for (const where of ['main', 'worker'] as const) {
  testIf(
    FAULTFS_REASON,
    `process.exit() on the main thread while a FUSE server holds more reads than it takes (a typed batch of window 64 and 40 lone reads, from ${where === 'main' ? 'the main thread: it ended so before too' : "a worker, its may-block ring's thread: was, the process waited for the server (Node joins the worker, whose exit waited for its io-wq workers)"}): the process ends while they are held`,
    async (t) => {
      const fx = held as FaultFs
      fx.hold()
      const c = childLines(process.execPath, [path.join(CHILDREN, 'exit-held.cjs'), DIST, fx.file, where], { ...process.env }, true)
      try {
        await c.line('started')
        await fx.waitForHeld(12)
        c.child.stdin?.write('exit\n')
        // Only bounds a failure (an exit that waits for the server): a passing run never waits for it.
        const guard = setTimeout(() => c.child.kill('SIGKILL'), 30_000)
        let code: number | null
        try {
          code = await c.exited
        } finally {
          clearTimeout(guard)
        }
        t.is(code, 3, c.err())
        t.true(fx.stats().held >= 12, 'the process ended while its reads were held')
      } finally {
        fx.release()
        c.child.kill('SIGKILL')
      }
      await fx.waitFor((s) => s.inflight === 0, 'faultfs answered')
    },
    true,
  )
}

interface Reaper {
  engines: number
  enginesFreed: number
}
function reaper(): Reaper {
  const [engines, enginesFreed] = native.reaperStats()
  return { engines, enginesFreed }
}

testIf(
  FAULTFS_REASON ?? IO_URING,
  "worker terminated while FUSE holds 64 of its batch's reads: its may-block ring's thread stays (the ring with it) until the server answered, then the reaper frees the engine and the thread ends, closing its ring and eventfd",
  async (t) => {
    const fx = held as FaultFs
    await until(() => mayblkThreads() === 0 && threadStates('odirect-reaper').length === 0, 'no may-block thread or reaper left by an earlier test')
    const before = reaper()
    const fds = { ring: anonFds('io_uring'), eventfd: anonFds('eventfd') }
    fx.hold()
    const body = `
const { parentPort, workerData } = require('node:worker_threads')
const od = require(workerData.dist)
;(async () => {
  const fh = await od.open(workerData.file, 'r', { backend: 'io_uring' })
  const mem = fh.alloc(256 * 4096)
  const ops = { memory: mem, offsets: new Uint32Array(256).map((_, i) => i * 4096), lengths: new Uint32Array(256).fill(4096), positions: new Float64Array(256).map((_, i) => i * 4096) }
  fh.readMany(ops, { window: 64 }).catch(() => {})
  parentPort.postMessage('started')
})()
`
    const w = new Worker(body, { eval: true, workerData: { dist: DIST, file: fx.file } })
    const exited = new Promise<number>((resolve, reject) => {
      w.on('error', reject)
      w.on('exit', resolve)
    })
    try {
      await new Promise((resolve) => w.once('message', resolve))
      await fx.waitForHeld(12)
      t.is(mayblkThreads(), 1, "the worker's may-block ring's thread")
      // Only bounds a failure (a terminate() that waits for the server): a passing run never waits for it.
      const guard = setTimeout(() => fx.release(), 30_000)
      try {
        await w.terminate()
      } finally {
        clearTimeout(guard)
      }
      t.is(await exited, 1)
      t.true(fx.stats().held >= 12, 'terminate() ended while the reads were held')
      t.is(mayblkThreads(), 1, 'the thread keeps the ring while the server holds its reads')
      t.is(reaper().engines - before.engines, 1, 'the engine handed to the reaper')
      fx.release()
      await fx.waitFor((s) => s.inflight === 0, 'faultfs answered')
      await until(() => reaper().enginesFreed > before.enginesFreed, 'the reaper freeing the engine')
      t.is(mayblkThreads(), 0, 'the thread ended with the engine')
      t.is(anonFds('io_uring'), fds.ring, 'every ring closed')
      t.is(anonFds('eventfd'), fds.eventfd, 'every eventfd closed')
    } finally {
      fx.release()
      await w.terminate()
    }
  },
  true,
)

testIf(
  FAULTFS_REASON ?? IO_URING,
  "every kind of op a worker makes on a FUSE file goes through its may-block ring's thread and answers as on the main thread: typed batches with EIO at 5 blocks (windows 5 and 64), lone reads, readv, a writeMany({ datasync }) chain, writev, truncate, sync; the thread ends with the worker",
  async (t) => {
    const N = 256
    const bad = [3, 40, 41, 100, 255].map((b) => b * UNIT + 100)
    const f = must(faultFs({ size: N * UNIT, eioAt: bad, threads: 8, delayMs: 1 }))
    t.teardown(() => f.cleanup())
    await until(() => mayblkThreads() === 0, 'no may-block thread left by an earlier test')
    const body = `
const { parentPort, workerData } = require('node:worker_threads')
const od = require(workerData.dist)
;(async () => {
  const out = {}
  const fh = await od.open(workerData.file, 'r+', { backend: 'io_uring' })
  const N = ${N}, U = 4096
  const typed = (mem) => ({ memory: mem, offsets: new Uint32Array(N).map((_, i) => i * U), lengths: new Uint32Array(N).fill(U), positions: new Float64Array(N).map((_, i) => ((i * 31) % N) * U) })
  for (const window of [5, 64]) {
    const mem = fh.alloc(N * U).fill(0)
    const r = await fh.readMany(typed(mem), { window }).then((x) => [...x], (e) => e.results.map((v) => typeof v === 'number' ? v : v.code))
    out['typed' + window] = { r, mem: Buffer.from(mem).toString('base64') }
  }
  // The parent counts the threads now, while this worker's ring is up.
  parentPort.postMessage('check')
  await new Promise((resolve) => parentPort.once('message', resolve))
  const lone = fh.alloc(8 * U)
  out.lone = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((b, k) => fh.read(lone, k * U, U, b * U).then((x) => x.bytesRead, (e) => e.code)))
  out.loneMem = Buffer.from(lone).toString('base64')
  const a = fh.alloc(U), b = fh.alloc(U)
  out.readv = (await fh.readv([a, b], 10 * U)).bytesRead
  out.readvMem = Buffer.concat([a, b]).toString('base64')
  const w = fh.alloc(3 * U)
  for (let i = 0; i < 3; i++) w.fill(0xa0 + i, i * U, (i + 1) * U)
  out.writeMany = await fh.writeMany([0, 1, 2].map((i) => ({ buffer: w.subarray(i * U, (i + 1) * U), position: (20 + i) * U })), { datasync: true })
  out.writev = (await fh.writev([w.subarray(0, U)], 30 * U, { datasync: true })).bytesWritten
  await fh.sync()
  await fh.truncate(N * U)
  const back = fh.alloc(3 * U)
  out.back = (await fh.read(back, 0, 3 * U, 20 * U)).bytesRead
  out.backOk = Buffer.from(back).equals(Buffer.from(w))
  out.stats = fh.stats()
  await fh.close()
  parentPort.postMessage(out)
})().catch((e) => parentPort.postMessage({ error: String(e && e.stack) }))
`
        const w = new Worker(body, { eval: true, workerData: { dist: DIST, file: f.file } })
    const next = (): Promise<unknown> =>
      new Promise((resolve, reject) => {
        w.once('message', resolve)
        w.once('error', reject)
      })
    const first = await next()
    t.is(first, 'check', JSON.stringify(first))
    const during = mayblkThreads()
    w.postMessage('go')
    const out = (await next()) as Record<string, unknown>
    t.falsy(out.error, String(out.error))
    for (const window of [5, 64]) {
      const { r, mem } = out[`typed${window}`] as { r: Array<number | string>; mem: string }
      const m = Buffer.from(mem, 'base64')
      for (let i = 0; i < N; i++) {
        const blk = (i * 31) % N
        const eio = bad.some((o) => Math.floor(o / UNIT) === blk)
        if (eio) t.is(r[i], 'EIO', `window ${window} op ${i}`)
        else t.true(r[i] === UNIT && m.subarray(i * UNIT, (i + 1) * UNIT).equals(patternBuffer(blk * UNIT, UNIT)), `window ${window} op ${i}: ${r[i]}`)
      }
    }
    t.deepEqual(out.lone, [UNIT, UNIT, UNIT, 'EIO', UNIT, UNIT, UNIT, UNIT])
    const lone = Buffer.from(out.loneMem as string, 'base64')
    for (const [k, b] of [0, 1, 2, 3, 4, 5, 6, 7].entries()) if (b !== 3) t.true(lone.subarray(k * UNIT, (k + 1) * UNIT).equals(patternBuffer(b * UNIT, UNIT)), `lone read of block ${b}`)
    t.is(out.readv, 2 * UNIT)
    t.true(Buffer.from(out.readvMem as string, 'base64').equals(patternBuffer(10 * UNIT, 2 * UNIT)))
    t.deepEqual(out.writeMany, [UNIT, UNIT, UNIT])
    t.is(out.writev, UNIT)
    t.is(out.back, 3 * UNIT)
    t.true(out.backOk, 'the chain wrote its blocks')
    t.is(during, 1, "one may-block thread while the worker's ops ran")
    await w.terminate()
    await until(() => mayblkThreads() === 0, 'the may-block thread ending with its worker')
  },
  true,
)

// ---------------------------------------------------------------------------------------
// 2. Deno ended by an uncaught exception mid-copy

const deno = runtimes().find(([rt]) => rt === 'deno')

for (const form of ['copy', 'atomic'] as const) {
  fxTest(
    `deno: ${form === 'copy' ? 'copyFile' : 'writeFile({ atomic })'} in a process ended mid-way by an uncaught exception: no temp file left (removed at exit(3), natively: Deno runs no JS listener then), the destination as it was; with a globalThis 'error' listener that cancels the exit the copy goes on and ends in place`,
    [],
    (t) => {
      const [, argv] = deno as [string, string[]]
      for (const cancel of [false, true]) {
        const dir = scratch()
        const old = bytes(5000, 9)
        const src = bytes(16 << 20, 10)
        fs.writeFileSync(path.join(dir, 'src'), src)
        fs.writeFileSync(path.join(dir, 'dst'), old)
        const r = spawnSync(argv[0], [...argv.slice(1), path.join(CHILDREN, 'deno-throw.cjs'), DIST, dir, form, cancel ? 'cancel' : 'throw'], { encoding: 'utf8', timeout: 60_000 })
        if (!cancel) {
          t.is(r.status, 1, `${r.stdout}\n${r.stderr}`)
          t.notRegex(r.stdout, /before the exit/, 'the copy ended before the exit: the case proves nothing')
          t.deepEqual(fs.readdirSync(dir).sort(), ['dst', 'src'], 'files left in the directory')
          t.true(fs.readFileSync(path.join(dir, 'dst')).equals(old), 'the destination changed')
        } else {
          t.is(r.status, 0, `${r.stdout}\n${r.stderr}`)
          t.regex(r.stdout, /exit cancelled/)
          t.regex(r.stdout, /in place/, r.stdout)
          t.deepEqual(fs.readdirSync(dir).sort(), ['dst', 'src'], 'files left in the directory')
          t.true(fs.readFileSync(path.join(dir, 'dst')).equals(form === 'copy' ? src : Buffer.concat(Array.from({ length: 16 }, (_, i) => Buffer.alloc(1 << 20, i)))), 'the copy in place')
        }
      }
    },
    deno === undefined ? 'Deno is not installed here' : undefined,
  )
}

// ---------------------------------------------------------------------------------------
// 3. fh.stats()'s latency histogram and a linked chain's cancelled ops

fxTest(
  "fh.stats() after io_uring writeMany(ops, { datasync: true }) on a loop device with a short write in the middle, then at the end, then a failing write: the latency histogram covers the ops counted (was: also the chain's cancelled write and fdatasync)",
  ['root', 'loop'],
  async (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const size = dev.sizeBytes
    const run = async (ops: number[], want: number[] | string, ops_: number): Promise<void> => {
      const fh = await od.open(dev.device, 'r+', { backend: 'io_uring' })
      t.is(fh.backend, 'io_uring')
      const buf = fh.alloc(8192)
      try {
        const p = fh.writeMany(ops.map((position) => ({ buffer: buf, position })), { datasync: true })
        if (typeof want === 'string') await t.throwsAsync(p, { code: want })
        else t.deepEqual(await p, want)
      } finally {
        await fh.close()
      }
      const s = fh.stats()
      t.is(s.ops, ops_, JSON.stringify(s))
      t.is(s.latencyUs.count, s.ops, `${JSON.stringify(ops)}: ${JSON.stringify(s)}`)
    }
    await run([0, size - 4096, 8192], [8192, 4096, 8192], 4)
    await run([0, size - 4096], [8192, 4096], 3)
    await run([size], 'ENOSPC', 1)
    // A failing write, then one it cancelled: that one is not run again (the caller sees it fail
    // ECANCELED): counted, its latency with it.
    await run([size, 0], 'ENOSPC', 2)
    // A short write, then a write past the end and one more, both cancelled and run again (the
    // first fails ENOSPC then): the re-runs counted, not the cancelled ones.
    await run([size - 4096, size, 0], 'ENOSPC', 3)
  },
  IO_URING,
)

// ---------------------------------------------------------------------------------------
// 4. probe() racing a FIFO renamed over its path

test('probe() of a path a racing process keeps swapping between a regular file and a FIFO (rename loop): every probe answers, a FIFO said to be one, a file probed as a file (was: a FIFO renamed over the path between the type check and the open hung the probe)', async (t) => {
  const dir = scratch('/var/tmp')
  const p = path.join(dir, 'x')
  fs.writeFileSync(p, Buffer.alloc(8192, 1))
  const racer = spawn(process.execPath, [path.join(CHILDREN, 'swap.cjs'), dir], { stdio: ['pipe', 'pipe', 'inherit'] })
  const started = new Promise((resolve) => racer.stdout.once('data', resolve))
  const ended = new Promise((resolve) => racer.on('close', resolve))
  try {
    await started
    let fifo = 0
    let file = 0
    let hung = false
    // Only bounds a failure (a probe hung in the open of the FIFO: a writer's open ends it, and the
    // test fails); a passing run never waits for it.
    const unblock = (): void => {
      hung = true
      try {
        fs.closeSync(fs.openSync(path.join(dir, 'fifo0'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK))
      } catch {
        // no reader in the open: nothing hangs there
      }
    }
    for (let i = 0; i < 400 && !hung; i++) {
      const guard = setTimeout(unblock, 20_000)
      const r = await od.probe(p)
      clearTimeout(guard)
      if (/is a FIFO/.test(r.direct.reason)) fifo++
      else if (r.direct.works) file++
      else t.fail(`probe ${i}: ${r.direct.reason}`)
    }
    t.false(hung, 'a probe hung in the open of the FIFO')
    t.log(`${fifo} probes saw a FIFO, ${file} a file`)
    t.true(fifo > 0 && file > 0, 'the race had both kinds of file under the path')
  } finally {
    racer.stdin?.end()
    await ended
  }
})
