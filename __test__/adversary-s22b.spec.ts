// Adversary "advb" of the twenty-second session: a second pass on this session's new code.
// Faults found and fixed (each with a test that fails on the old code):
// 1. crates/napi/src/mayblock.rs: the may-block ring's thread put every op of a turn in before
//    every cancel of that turn, so a cancel of key K asked as K completed (a timeout or an abort
//    firing then), followed by K's reap and a new op taking the freed key K at once (the engine's
//    free list is LIFO), cancelled the new op: it failed ECANCELED though nobody cancelled it.
//    Now the thread does what it was asked in the order asked. Test: the Rust unit test
//    `a_cancel_asked_before_its_key_was_reused_does_not_cancel_the_new_op` (the ordering needs
//    the thread held between the asks; from JS it is a race that cannot be made to happen on
//    demand).
// 2. crates/napi/src/paths.rs: a child forked without exec (an addon's fork(), a daemonizing
//    module) inherits the atexit handler and the list of live temp files: its exit(3) removed
//    the temp files its parent was still writing (the parent's rename then failed ENOENT). Each
//    entry now keeps the pid that made it. Test: the Rust unit test
//    `a_forked_childs_exit_leaves_the_parents_temp_files`.
// 3. src/files.ts: writeFile(path, buffer, options) whose options getter transferred the buffer
//    (options are read first): refused ERR_ODIRECT_DETACHED only after the 'w' open had emptied
//    the file. Now refused before the open (checkWriteData).
// 4. src/files.ts, src/fileops.ts: writeFile({ atomic }) and copyFile held their temp file (for
//    removal at exit) only once its open had resumed: process.exit() while the open was in flight
//    (the file made, the promise not resumed) left it, as large as the reservation (24 concurrent
//    copies, process.exit() at 3 ms: 12 temp files of 3 MiB). Now held before the open; an open
//    that finds another's file (EEXIST) lets the name go.
// Attacked without a fault (the two may-block cases below pass on main's code too):
// - the may-block thread: a worker's FUSE + tmpfs engine answers as the main thread's (held
//   reads, abort and timeout of held reads, close while held, typed and array batches, bytes);
//   six workers terminated at once with held reads (reaper, threads, rings, eventfds all end);
//   a BatchWindow shared by a FUSE batch and a tmpfs batch in a worker (5 rounds, bytes: by hand).
// - buffers transferred by option getters (read, write, writeMany, readMany, writeFile atomic):
//   ERR_ODIRECT_DETACHED, nothing written (by hand).
// - probe() as root and as uid 65534 (setpriv): a file without read permission, a symlink to it,
//   a dangling symlink, a directory without read permission, a socket, a FIFO, /proc/self/status,
//   /proc/1/mem, a sysfs attribute, /dev/null, /proc/self/fd/0, a loop device, /dev/shm: each
//   answers as the old probe did for that inode (EACCES where not readable), none hangs, no
//   probe temp file left (by hand).
// - Bun: process.exit() with the temp file's open in flight leaves no temp file (by hand, the
//   exit-open.cjs child; after the fix).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import * as od from '../dist/index.js'
import { native } from '../dist/src/native.js'
import { until } from './helpers/events.js'
import { anonFds } from './helpers/fds.cjs'
import { type FaultFs, faultFs, isSkip, patternBuffer } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'

delete process.env.ODIRECT_BACKEND
delete process.env.ODIRECT_MAY_BLOCK_THREAD
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const CHILDREN = path.join(here, 'adversary-s22b')
const U = 4096
const THREAD = 'odirect-mayblk'
const io = (await od.probe('/var/tmp')).backends.io_uring
const IO_URING = io.available ? undefined : `io_uring is not available here: ${io.reason}`
const scratch = scratchDirs('advb22')

/** The may-block rings' threads of this process, less the io-wq workers they make (see live-s22). */
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

function reaper(): { engines: number; freed: number } {
  const [engines, freed] = native.reaperStats()
  return { engines, freed }
}

let held: FaultFs | undefined
test.before(() => {
  if (FAULTFS_REASON !== undefined) return
  const f = faultFs({ size: 1 << 20 << 1, hold: true, threads: 16 })
  if (isSkip(f)) throw new Error(f.skip)
  held = f
})
test.after.always(() => {
  held?.release()
  held?.cleanup()
})

// ---------------------------------------------------------------------------------------
// The may-block ring's thread: a worker's answers are the main thread's

type Out = Record<string, unknown>
const { run } = createRequire(import.meta.url)(path.join(CHILDREN, 'held-mix.cjs')) as { run: (o: typeof od, files: { fuse: string; tmp: string }, ready: () => Promise<void>) => Promise<Out> }

async function heldMix(where: 'main' | 'worker', fx: FaultFs, tmp: string): Promise<Out> {
  // 6 lone + 8 typed (window 4) + 4 array + 1 on the second handle: 15 at least held at once.
  const HELD = 12
  fx.hold()
  try {
    if (where === 'main') {
      return await run(od, { fuse: fx.file, tmp }, async () => {
        await fx.waitForHeld(HELD)
        fx.release()
      })
    }
    const w = new Worker(path.join(CHILDREN, 'held-mix.cjs'), { workerData: { heldMix: true, dist: DIST, fuse: fx.file, tmp } })
    try {
      const msg = await new Promise<unknown>((resolve, reject) => {
        w.once('error', reject)
        w.on('message', (m) => {
          if (m !== 'held') return resolve(m)
          void fx.waitForHeld(HELD).then(
            () => {
              fx.release()
              w.postMessage('go')
            },
            reject,
          )
        })
      })
      const { out, error } = msg as { out?: Out; error?: string }
      if (error !== undefined) throw new Error(error)
      return out as Out
    } finally {
      await w.terminate()
    }
  } finally {
    fx.release()
  }
}

testIf(
  FAULTFS_REASON ?? IO_URING,
  'one engine, a FUSE file whose server holds its reads and a tmpfs file: in a worker (FUSE ops on the may-block ring\'s thread) every op answers as on the main thread: lone reads (one aborted, one timed out while held), a typed readMany (window 4), an array readMany, a second handle closed while its read is held; the tmpfs writes, reads and a writeMany({ datasync }) answer while the FUSE reads are held; bytes checked',
  async (t) => {
    const fx = held as FaultFs
    const dir = scratch('/dev/shm')
    const tmp = path.join(dir, 'tmpfs-file')
    fs.writeFileSync(tmp, Buffer.alloc(16 * U))
    const main = await heldMix('main', fx, tmp)
    await fx.waitFor((s) => s.inflight === 0, 'faultfs answered')
    const worker = await heldMix('worker', fx, tmp)
    await fx.waitFor((s) => s.inflight === 0, 'faultfs answered')
    t.log(JSON.stringify({ ...main, mem: undefined, mem2: undefined }))
    t.deepEqual({ ...worker, mem: undefined }, { ...main, mem: undefined }, 'the worker answered as the main thread')
    t.is(main.tmpOk, true)
    t.deepEqual(main.tmpMany, [U, U])
    const mem = Buffer.from(main.mem as string, 'base64')
    const wmem = Buffer.from(worker.mem as string, 'base64')
    const lone = main.lone as unknown[]
    for (const k of [0, 3, 4, 5]) {
      t.is(lone[k], U, `lone read ${k}`)
      t.true(mem.subarray(k * U, (k + 1) * U).equals(patternBuffer(k * U, U)) && wmem.subarray(k * U, (k + 1) * U).equals(patternBuffer(k * U, U)), `lone read ${k}'s bytes`)
    }
    t.deepEqual(main.typed, Array(8).fill(U))
    t.deepEqual(main.arr, Array(4).fill(U))
    for (let i = 0; i < 8; i++) t.true(wmem.subarray((8 + i) * U, (9 + i) * U).equals(patternBuffer((100 + i) * U, U)), `typed op ${i}'s bytes`)
    for (let i = 0; i < 4; i++) t.true(wmem.subarray((20 + i) * U, (21 + i) * U).equals(patternBuffer((200 + i) * U, U)), `array op ${i}'s bytes`)
  },
  true,
)

testIf(
  FAULTFS_REASON ?? IO_URING,
  'six workers, each with a FUSE file whose server holds its 20 reads and a tmpfs file on one engine, all terminated at once: every terminate() ends while the reads are held, each worker\'s may-block thread keeps its ring, six engines go to the reaper; once the server answers, every engine is freed, every thread ends, every ring and eventfd is closed',
  async (t) => {
    const fx = held as FaultFs
    await until(() => mayblkThreads() === 0, 'no may-block thread left by an earlier test')
    const before = reaper()
    const fds = { ring: anonFds('io_uring'), eventfd: anonFds('eventfd') }
    const dir = scratch('/dev/shm')
    fx.hold()
    const body = `
const { parentPort, workerData } = require('node:worker_threads')
const od = require(workerData.dist)
;(async () => {
  const U = 4096
  const fh = await od.open(workerData.fuse, 'r', { backend: 'io_uring' })
  const th = await od.open(workerData.tmp, 'w+', { backend: 'io_uring' })
  const m = fh.alloc(20 * U)
  for (let i = 0; i < 20; i++) fh.read(m, i * U, U, (workerData.k * 20 + i) * U).catch(() => {})
  const t = th.alloc(2 * U).fill(workerData.k + 1)
  await th.write(t, 0, 2 * U, 0)
  const back = th.alloc(2 * U).fill(0)
  const n = (await th.read(back, 0, 2 * U, 0)).bytesRead
  parentPort.postMessage(n === 2 * U && Buffer.from(back).every((b) => b === workerData.k + 1))
})().catch((e) => parentPort.postMessage(String(e && e.stack)))
`
    const workers = Array.from({ length: 6 }, (_, k) => new Worker(body, { eval: true, workerData: { dist: DIST, fuse: fx.file, tmp: path.join(dir, `f${k}`), k } }))
    try {
      const said = await Promise.all(workers.map((w) => new Promise((resolve, reject) => {
        w.once('message', resolve)
        w.once('error', reject)
      })))
      t.deepEqual(said, Array(6).fill(true), 'each worker\'s tmpfs write and read answered while its FUSE reads were held')
      await fx.waitForHeld(12)
      t.is(mayblkThreads(), 6, 'one may-block thread per worker')
      // Only bounds a failure (a terminate() that waits for the server): a passing run never waits for it.
      const guard = setTimeout(() => fx.release(), 60_000)
      try {
        t.deepEqual(await Promise.all(workers.map((w) => w.terminate())), Array(6).fill(1))
      } finally {
        clearTimeout(guard)
      }
      t.true(fx.stats().held >= 12, 'every terminate() ended while the reads were held')
      t.is(mayblkThreads(), 6, 'each thread keeps its ring while the server holds its reads')
      t.is(reaper().engines - before.engines, 6, 'six engines handed to the reaper')
      fx.release()
      await fx.waitFor((s) => s.inflight === 0, 'faultfs answered')
      await until(() => reaper().freed - before.freed === 6, 'the reaper freeing the six engines')
      await until(() => mayblkThreads() === 0, 'every may-block thread ending')
      t.is(anonFds('io_uring'), fds.ring, 'every ring closed')
      t.is(anonFds('eventfd'), fds.eventfd, 'every eventfd closed')
    } finally {
      fx.release()
      await Promise.all(workers.map((w) => w.terminate()))
    }
  },
  true,
)

// ---------------------------------------------------------------------------------------
// Options read by property access

test("writeFile(path, buffer, options) whose options getter transfers the buffer's ArrayBuffer (detached before writeFile looks at the data): refused ERR_ODIRECT_DETACHED before the open, the file keeps its bytes (was: refused after the 'w' open had emptied it); atomic: the file and its directory as they were", async (t) => {
  const dir = scratch('/dev/shm')
  for (const atomic of [false, true]) {
    const file = path.join(dir, `keep-${atomic}`)
    const old = Buffer.alloc(5000, 9)
    fs.writeFileSync(file, old)
    const data = Buffer.alloc(8192, 1)
    const options = {
      atomic,
      get flag(): string {
        structuredClone(data.buffer, { transfer: [data.buffer] })
        return 'w'
      },
    }
    await t.throwsAsync(od.writeFile(file, data, options), { code: 'ERR_ODIRECT_DETACHED' })
    t.true(fs.readFileSync(file).equals(old), `atomic ${atomic}: the file kept its bytes`)
    t.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith(`keep-${atomic}`) || n.startsWith('.')), [`keep-${atomic}`], 'no temp file left')
  }
})

// ---------------------------------------------------------------------------------------
// Temp files at exit

for (const form of ['write', 'copy'] as const) {
  test(`process.exit() while ${form === 'write' ? "writeFile({ atomic })'s" : "copyFile's"} temp file's open is in flight (the file made, its promise not resumed: the child spins in a wrapper of the native open): no temp file left (was: it was held only once the open resumed, and stayed), the destination as it was`, (t) => {
    const dir = scratch('/dev/shm')
    fs.writeFileSync(path.join(dir, 'src'), Buffer.alloc(1 << 20, 3))
    fs.writeFileSync(path.join(dir, 'dst'), 'old')
    const r = spawnSync(process.execPath, [path.join(CHILDREN, 'exit-open.cjs'), DIST, dir, form], { encoding: 'utf8', timeout: 60_000 })
    t.is(r.status, 0, `${r.stdout}\n${r.stderr}`)
    t.is(r.stdout.trim(), 'exit', 'the exit came with the open in flight')
    t.deepEqual(fs.readdirSync(dir).sort(), ['dst', 'src'], 'files left')
    t.is(fs.readFileSync(path.join(dir, 'dst'), 'utf8'), 'old')
  })
}
