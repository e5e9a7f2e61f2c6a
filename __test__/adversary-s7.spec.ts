// Adversary of the sixth session's work (issue 19, third pass): the process-wide huge-page pool
// (crates/core/src/mempool.rs) under workers that come and go with I/O and streams in flight,
// streams refilled from completions under destroy / ENOSPC / EIO, and the engine's quiet
// wake-ups under many handles whose completions come from io-wq (FUSE) beside inline ones.
// Every check waits on an event (a worker's exit, a stream's close, faultfs's counters); a hang
// is a failure (ava's timeout), never a sleep.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test, { type ExecutionContext } from 'ava'

import { allocAligned, createReadStream, createWriteStream, DirectIoError, open } from '../dist/index.js'
import { faultFs, fullFs, patternBuffer, type Requirement, type FaultFs } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { runtimePath } from './helpers/runtimes.ts'
import { scratchDirs } from './helpers/scratch.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const KiB = 1024
const MiB = 1024 * KiB
const LOOP: Requirement[] = ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4']
const FAULT: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']
const scratch = scratchDirs('adv-s7')

function firstNot(b: Uint8Array, v: number, from = 0, to = b.byteLength): number {
  for (let i = from; i < to; i++) if (b[i] !== v) return i
  return -1
}

/** Descriptors of this process open on files under `dir` (other tests' files do not count). */
function fdsUnder(dir: string): number {
  let n = 0
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir + '/')) n++
    } catch {
      // closed between readdir and readlink
    }
  }
  return n
}

/** What this process's descriptors under `dir` point to. */
function openUnder(dir: string): string[] {
  const out: string[] = []
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const l = fs.readlinkSync(`/proc/self/fd/${fd}`)
      if (l.startsWith(dir + '/')) out.push(`${fd} -> ${l}`)
    } catch {
      // closed meanwhile
    }
  }
  return out
}

const rssMiB = (): number => (Number(fs.readFileSync('/proc/self/statm', 'utf8').split(' ')[1]) * 4096) / MiB

/** Resolves with the error a stream emits, or undefined once it closes without one. */
function streamOutcome(s: NodeJS.EventEmitter): Promise<unknown> {
  return new Promise((resolve) => {
    let err: unknown
    s.once('error', (e) => (err = e))
    s.once('close', () => resolve(err))
  })
}

// ---------------------------------------------------------------------------------------
// 1. Workers that die with pool memory in flight

/**
 * Each worker puts all kinds of pool memory in flight on a tmpfs file: reads into fh.alloc
 * buffers, bounced reads and writes (JS-heap memory), a read stream that has chunks in flight
 * (reuseChunks in every other worker) and a write stream with blocks queued, then says 'go'
 * and dies: worker.terminate() from the main thread, or process.exit() inside the worker.
 */
const dyingWorker = `
const { parentPort, workerData: w } = require('node:worker_threads')
const od = require(w.dist)
;(async () => {
  const fh = await od.open(w.file, 'r+')
  const ops = []
  for (let i = 0; i < 24; i++) ops.push(fh.read(fh.alloc(1 << 20), 0, 1 << 20, (i % 8) << 20))
  for (let i = 0; i < 8; i++) ops.push(fh.write(Buffer.alloc((64 << 10) + 1, 0x5a).subarray(1), 0, 64 << 10, i << 16))
  for (let i = 0; i < 8; i++) ops.push(fh.read(Buffer.alloc((64 << 10) + 1).subarray(1), 0, 64 << 10, i << 16))
  for (const p of ops) p.catch(() => {})
  const rs = od.createReadStream(w.file, { reuseChunks: w.i % 2 === 0, chunkSize: 1 << 20 })
  rs.on('error', () => {})
  rs.once('readable', () => {})
  const ws = od.createWriteStream(w.file + '.' + w.i, { chunkSize: 1 << 20 })
  ws.on('error', () => {})
  for (let i = 0; i < 6; i++) ws.write(Buffer.alloc(1 << 20, i))
  parentPort.postMessage('go')
  if (w.exit) setImmediate(() => process.exit(3))
})().catch((e) => parentPort.postMessage('failed: ' + (e && e.stack || e)))
`

test.serial('60 workers die (terminate, process.exit) with reads, bounced ops and both streams in flight: RSS and descriptors stay bounded, new memory is zero', async (t) => {
  const dir = scratch('/dev/shm')
  const file = path.join(dir, 'f')
  fs.writeFileSync(file, Buffer.alloc(8 * MiB, 0x5a))
  const WORKERS = 60
  const WARM = 10
  let warm = 0
  for (let i = 0; i < WORKERS; i++) {
    const exit = i % 2 === 1
    const w = new Worker(dyingWorker, { eval: true, workerData: { dist, file, i, exit } })
    const exited = new Promise<number>((resolve) => w.once('exit', resolve))
    const errors: unknown[] = []
    w.on('error', (e) => errors.push(e))
    const msg = await new Promise<unknown>((resolve) => w.once('message', resolve))
    t.is(msg, 'go', String(msg))
    if (!exit) await w.terminate()
    const code = await exited
    t.is(code, exit ? 3 : 1, `worker ${i}`)
    t.deepEqual(errors, [], `worker ${i}`)
    if (i === WARM - 1) warm = rssMiB()
  }
  const grown = rssMiB() - warm
  t.log(`RSS ${warm.toFixed(1)} MiB after ${WARM} workers, ${grown.toFixed(1)} MiB more after ${WORKERS - WARM} more`)
  // Each worker has ~38 MiB of pool memory in flight when it dies: a leak of any of its kinds
  // (one stream's chunks: 4-5 MiB) over 50 workers is far above this.
  t.true(grown < 64, `RSS grew by ${grown.toFixed(1)} MiB over ${WORKERS - WARM} workers`)
  t.is(fdsUnder(dir), 0, `descriptors of dead workers are closed: ${openUnder(dir).join(', ')}`)
  // What the dead workers left in the pool (bounce buffers of 0x5a, chunks, blocks) is zero
  // when handed out zeroed, at every size they used.
  for (const size of [32 * KiB, 64 * KiB, MiB, 2 * MiB, 3 * MiB]) {
    const bufs = Array.from({ length: 8 }, () => allocAligned(size))
    for (const b of bufs) t.is(firstNot(b, 0), -1, `allocAligned(${size})`)
  }
  const fh = await open(file, 'r')
  try {
    for (const size of [64 * KiB, MiB]) {
      const b = fh.alloc(size)
      t.is(firstNot(b, 0), -1, `fh.alloc(${size})`)
    }
  } finally {
    await fh.close()
  }
})

test('workers terminated with open() calls in flight leave no descriptor open (the open completes after the worker stopped running JS)', async (t) => {
  const dir = scratch('/dev/shm')
  const file = path.join(dir, 'f')
  fs.writeFileSync(file, Buffer.alloc(4096))
  const body = `
const { parentPort, workerData: w } = require('node:worker_threads')
const od = require(w.dist)
// The engine exists (a first open done), then 64 opens are left in flight on libuv's pool.
od.open(w.file, 'r').then(() => {
  for (let i = 0; i < 64; i++) od.open(w.file, 'r').catch(() => {})
  parentPort.postMessage('go')
})
`
  for (let i = 0; i < 20; i++) {
    const w = new Worker(body, { eval: true, workerData: { dist, file } })
    const exited = new Promise<number>((resolve) => w.once('exit', resolve))
    t.is(await new Promise<unknown>((resolve) => w.once('message', resolve)), 'go')
    await w.terminate()
    await exited
  }
  const left = openUnder(dir)
  t.is(left.length, 0, `descriptors left open by terminated workers: ${left.slice(0, 5).join(', ')}...`)
})

// ---------------------------------------------------------------------------------------
// 2. Streams: ENOSPC, EIO, destroy with reads held in the kernel

/** faultfs's file pattern (helpers/fixtures.ts) over the first 16 MiB, made once (it is slow to make per check). */
let patCache: Buffer | undefined
function pat(offset: number, length: number): Buffer {
  patCache ??= patternBuffer(0, 16 * MiB)
  return patCache.subarray(offset, offset + length)
}

for (const kind of ['tmpfs', 'loop-ext4'] as const) {
  fxTest(`write stream on a full filesystem (${kind}): ENOSPC typed at the first byte not written (the earliest failed block, not the first to fail), data before it intact`, kind === 'tmpfs' ? ['root', 'fs:tmpfs'] : LOOP, async (t) => {
    const fx = must(fullFs(8, { kind }))
    t.teardown(() => fx.cleanup())
    // 768 KiB blocks: the space runs out inside one, whose write is short and retried for its
    // rest while the writes of the next blocks (writeBehind > 1) already failed.
    const chunkSize = 768 * KiB
    for (const writeBehind of [1, 2, 4, 16]) {
      const what = `writeBehind ${writeBehind}`
      const file = path.join(fx.dir, `big${writeBehind}`)
      const total = fx.freeBytes + 4 * MiB
      let off = 0
      // Odd-sized source chunks: the stream's blocks never line up with them.
      const src = Readable.from((function* () {
        while (off < total) {
          const n = Math.min(300_001, total - off)
          yield pat(off, n)
          off += n
        }
      })())
      const ws = createWriteStream(file, { chunkSize, writeBehind })
      const e = await t.throwsAsync(pipeline(src, ws), { instanceOf: DirectIoError }, what)
      if (!(e instanceof DirectIoError)) continue
      t.is(e.code, 'ENOSPC', what)
      t.is(typeof e.hint, 'string', what)
      t.is(e.path, file, what)
      t.true(ws.destroyed, what)
      const confirmed = ws.bytesWritten
      t.is(confirmed % chunkSize, 0, `${what}: whole blocks confirmed (${confirmed})`)
      const at = e.position as number
      t.true(at >= confirmed && at < confirmed + chunkSize, `${what}: the error's position ${at} is in the first block not confirmed (from ${confirmed})`)
      const got = fs.readFileSync(file)
      t.true(got.length >= at, `${what}: the file (${got.length} bytes) holds everything before the error (${at})`)
      t.true(got.subarray(0, at).equals(pat(0, at)), `${what}: the bytes before the error are the data`)
      t.is(fdsUnder(fx.dir), 0, `${what}: the stream closed its file`)
      fs.rmSync(file)
    }
  })
}

/** faultfs with a pattern file of `size` bytes whose reads and writes covering `bad` fail with EIO. */
function eioFs(t: ExecutionContext, size: number, bad: number, extra: Parameters<typeof faultFs>[0] = {}): FaultFs {
  const fx = must(faultFs({ size, eioAt: [bad], ...extra }))
  t.teardown(() => fx.cleanup())
  return fx
}

fxTest('read stream over EIO in the middle (chunk sizes, reuseChunks): every chunk before it right, the error typed at its chunk, nothing after, file closed', FAULT, async (t) => {
  const size = 8 * MiB
  const bad = 5 * MiB + 12345
  const fx = eioFs(t, size, bad)
  for (const reuseChunks of [false, true]) {
    for (const chunkSize of [64 * KiB, MiB, 2 * MiB]) {
      const rs = createReadStream(fx.file, { chunkSize, readAhead: 4, reuseChunks })
      let pos = 0
      let wrong = -1
      const e = await t.throwsAsync(async () => {
        for await (const c of rs as AsyncIterable<Buffer>) {
          if (wrong < 0 && !pat(pos, c.length).equals(c)) wrong = pos
          pos += c.length
        }
      }, { instanceOf: DirectIoError })
      const what = `chunkSize ${chunkSize}, reuseChunks ${reuseChunks}`
      t.is(e?.code, 'EIO', what)
      // The failed read is the chunk holding the bad byte, or its rest when the kernel split
      // it (FUSE's max_read on aio) and returned the part before the bad request first.
      const at = (e as DirectIoError).position as number
      t.true(at >= Math.floor(bad / chunkSize) * chunkSize && at <= bad, `${what}: error at ${at}`)
      t.is(pos, at, `${what}: delivered up to the failed read, no further`)
      t.is(wrong, -1, `${what}: first wrong chunk at ${wrong}`)
      t.true(rs.destroyed, what)
      t.is(fdsUnder(fx.dir), 0, `${what}: file closed`)
    }
  }
})

fxTest('write stream over EIO in the middle: the error typed at its block, bytesWritten stops before it, file closed', FAULT, async (t) => {
  const size = 8 * MiB
  const bad = 5 * MiB + 12345
  const fx = eioFs(t, size, bad)
  for (const writeBehind of [1, 4]) {
    const ws = createWriteStream(fx.file, { flags: 'r+', chunkSize: MiB, writeBehind })
    let n = 0
    const src = Readable.from((function* () {
      for (; n < size; n += MiB) yield Buffer.alloc(MiB, 0x33)
    })())
    const e = await t.throwsAsync(pipeline(src, ws), { instanceOf: DirectIoError })
    t.is(e?.code, 'EIO')
    t.is((e as DirectIoError).position, 5 * MiB)
    t.is(ws.bytesWritten, 5 * MiB, `writeBehind ${writeBehind}`)
    t.true(ws.destroyed)
    t.is(fdsUnder(fx.dir), 0, 'file closed')
  }
})

fxTest('a read stream nobody reads hits EIO, then is destroyed: closes without an error event or an unhandled rejection, file closed', FAULT, async (t) => {
  const fx = eioFs(t, 4 * MiB, 64 * KiB + 1)
  const unhandled: unknown[] = []
  const onUnhandled = (e: unknown): void => void unhandled.push(e)
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => process.off('unhandledRejection', onUnhandled))
  const rs = createReadStream(fx.file, { chunkSize: 64 * KiB, readAhead: 4 })
  const outcome = streamOutcome(rs)
  // Opening starts the reads (the stream pulls once to fill its buffer: with no consumer it
  // then waits); the second chunk's read fails in the kernel.
  rs.once('readable', () => {})
  await fx.waitFor((s) => s.eio >= 1, 'the read covering the bad byte to fail')
  rs.destroy()
  t.is(await outcome, undefined, 'destroy() without an error: no error event')
  await new Promise((resolve) => setImmediate(resolve))
  t.deepEqual(unhandled, [])
  t.is(fdsUnder(fx.dir), 0, 'file closed')
})

fxTest('destroy() while the reads are held in the kernel: their completions start no new read, the file closes once they are done', FAULT, async (t) => {
  const fx = must(faultFs({ size: 16 * MiB, hold: 'held', threads: 4 }))
  t.teardown(() => fx.cleanup())
  const readAhead = 4
  const rs = createReadStream(fx.file, { chunkSize: 64 * KiB, readAhead })
  const outcome = streamOutcome(rs)
  rs.once('readable', () => {})
  await fx.waitForHeld(readAhead)
  const before = fx.stats().reads
  rs.destroy()
  fx.release()
  t.is(await outcome, undefined)
  // 'close' comes once every read in flight completed (destroy waits for them) and the file
  // is closed: any read a completion started after destroy() would have reached faultfs.
  const after = fx.stats()
  t.is(after.reads, before, `reads before destroy ${before}, after ${after.reads}`)
  t.is(after.inflight, 0)
  t.is(fdsUnder(fx.dir), 0, 'file closed')
})

// ---------------------------------------------------------------------------------------
// 3. Engine liveness: quiet wake-ups with io-wq and inline completions on one engine

fxTest('one engine, 12 handles on tmpfs, a disk filesystem and FUSE (io-wq): rounds of 3000 mixed ops at once all settle with their byte counts and bytes', FAULT, async (t) => {
  const fx = must(faultFs({ size: 4 * MiB, threads: 4 }))
  t.teardown(() => fx.cleanup())
  const files = ['/dev/shm', '/var/tmp'].map((root) => {
    const f = path.join(scratch(root), 'f')
    fs.writeFileSync(f, pat(0, 4 * MiB))
    return f
  })
  const fhs: Array<Awaited<ReturnType<typeof open>>> = []
  t.teardown(async () => {
    for (const fh of fhs) await fh.close()
  })
  for (let i = 0; i < 4; i++) for (const f of [...files, fx.file]) fhs.push(await open(f, 'r+'))
  t.true(fhs.some((fh) => fh.fsType === 'fuse'))
  const sizes = [4 * KiB, 8 * KiB, 12 * KiB, 64 * KiB, 512 * KiB, MiB]
  for (let round = 0; round < 12; round++) {
    const ops: Array<Promise<{ n: number; want: number; buf: Uint8Array; pos: number; write: boolean }>> = []
    for (let i = 0; i < 3000; i++) {
      const fh = fhs[(i * 7 + round) % fhs.length]
      const size = sizes[(i * 13 + round) % sizes.length]
      const pos = Math.floor(((i * 20 * KiB) % (4 * MiB - size)) / (4 * KiB)) * 4 * KiB
      // A third bounced (JS-heap memory), the rest odirect memory; a quarter writes of the pattern.
      const buf = i % 3 === 0 ? Buffer.alloc(size + 1).subarray(1) : fh.alloc(size)
      const write = i % 4 === 0
      if (write) buf.set(pat(pos, size))
      const p = write ? fh.write(buf, 0, size, pos).then((r) => r.bytesWritten) : fh.read(buf, 0, size, pos).then((r) => r.bytesRead)
      ops.push(p.then((n) => ({ n, want: size, buf, pos, write })))
    }
    const done = await Promise.all(ops)
    let wrong = 0
    for (const d of done) {
      t.is(d.n, d.want)
      if (!d.write && !pat(d.pos, d.want).equals(d.buf)) wrong++
    }
    t.is(wrong, 0, `round ${round}: ${wrong} reads with wrong bytes`)
  }
  for (const fh of fhs) t.is(fh.stats().inflight, 0)
})

// ---------------------------------------------------------------------------------------
// 4. Memory freed by another thread's collector while the kernel still writes it (Deno)

const deno = runtimePath('deno')

fxTest('Deno: fh.alloc buffers with reads held in FUSE, transferred to a worker that closes (freeing them there): their memory is not handed out again until the reads complete', FAULT, async (t) => {
  const fx = must(faultFs({ size: 16 * 64 * KiB, hold: 'held', threads: 4 }))
  t.teardown(() => fx.cleanup())
  const child = spawn(deno as string, ['run', '--allow-all', '--no-check', '--no-lock', '--node-modules-dir=manual', path.join(here, 'adversary-s7', 'deno-transfer.mjs'), dist, fx.file], { stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => child.kill('SIGKILL'))
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  let result: Record<string, unknown> | undefined
  const steps: Array<Promise<void>> = []
  let buffered = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    buffered += d
    for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
      const l = buffered.slice(0, i)
      buffered = buffered.slice(i + 1)
      // io_uring has all 16 reads at faultfs; aio and the thread pool run 4 at a time (the rest
      // wait in odirect's queue, their memory captured all the same).
      if (l === 'ISSUED') steps.push(fx.waitForHeld(4).then(() => void child.stdin.write('GO\n')))
      else if (l === 'ALLOCATED') {
        fx.release()
        child.stdin.write('GO\n')
      } else if (l.startsWith('RESULT ')) result = JSON.parse(l.slice(7)) as Record<string, unknown>
    }
  })
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.once('close', (c, s) => resolve([c, s])))
  await Promise.all(steps)
  t.is(signal, null, stderr)
  t.is(code, 0, stderr)
  if (result === undefined) return t.fail(`no RESULT; stderr: ${stderr}`)
  t.true(result.detached, 'Deno moved the buffers to the worker (else this attack does not apply)')
  t.is(result.reused, 0, 'memory the kernel was still to write was handed out again')
  t.is(result.changed, 0, 'the reads wrote into memory handed out again')
  t.deepEqual(result.settled, Array.from({ length: 16 }, () => ({ ok: true, n: 64 * KiB })))
  t.true((result.after as number) > 0, 'once the reads completed their memory was free (the worker\'s collector did free it)')
}, deno === undefined ? 'no deno binary (scripts/runtime-bin.cjs --path deno)' : undefined)

// ---------------------------------------------------------------------------------------
// 5. Programs that end with streams open

const bun = runtimePath('bun')
/** [name, argv before the script] of each runtime found here. */
const runtimes: Array<[string, string[]]> = [['node', [process.execPath]]]
if (bun !== undefined) runtimes.push(['bun', [bun]])
if (deno !== undefined) runtimes.push(['deno', [deno, 'run', '--allow-all', '--no-check', '--no-lock', '--node-modules-dir=manual']])
const exitScript = path.join(here, 'adversary-s7', 'exit-open.cjs')
const holdThroughExit = !['aio', 'threadpool'].includes(process.env.ODIRECT_BACKEND ?? '')

interface Ended {
  code: number | null
  signal: string | null
  stdout: string
  stderr: string
}

/**
 * Runs exit-open.cjs; `onReady` runs when it printed 'ready' and returns when to start the
 * kill timer (default: at once). A child that has not exited 60 s after that is killed
 * (SIGKILL): the hang shows as its signal. The timer covers the exit being tested, not the
 * child's start (a Deno child under a full CI run's load can take tens of seconds to start).
 */
function runExit(argv: readonly string[], args: readonly string[], onReady?: (c: ReturnType<typeof spawn>) => Promise<void> | void): Promise<Ended> {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const c = spawn(argv[0], [...argv.slice(1), exitScript, dist, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    let killer: NodeJS.Timeout | undefined
    const arm = (): void => {
      killer ??= setTimeout(() => c.kill('SIGKILL'), 60_000)
    }
    if (onReady === undefined) arm()
    c.stdout.setEncoding('utf8').on('data', (d: string) => {
      const first = !stdout.includes('ready')
      stdout += d
      if (first && stdout.includes('ready') && onReady !== undefined) {
        stderr += `[test: child ready after ${Date.now() - started} ms]\n`
        Promise.resolve(onReady(c)).then(arm, (e: unknown) => {
          stderr += `[test: ${String(e)}]\n`
          c.kill('SIGKILL')
        })
      }
    })
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    c.on('error', reject)
    c.on('close', (code, signal) => {
      clearTimeout(killer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

for (const [name, argv] of runtimes) {
  test(`${name}: a program that returns with read/write streams (Node and web) still open exits by itself`, async (t) => {
    for (const mode of ['read', 'paused', 'write', 'web-read', 'web-write']) {
      const r = await runExit(argv, [scratch('/dev/shm'), mode])
      t.is(r.signal, null, `${mode}: did not exit (killed); stdout ${r.stdout} stderr ${r.stderr.slice(-1500)}`)
      t.is(r.code, 0, `${mode}: stderr ${r.stderr.slice(-1500)}`)
      t.true(r.stdout.startsWith('ready'), `${mode}: ${r.stdout}`)
    }
  })

  fxTest(`${name}: process.exit(0) with a read stream's and a write stream's I/O held in FUSE exits 0`, FAULT, async (t) => {
    const fx = must(faultFs({ size: MiB, hold: 'held', holdWrites: true, threads: 4 }))
    t.teardown(() => fx.cleanup())
    let note = ''
    const r = await runExit(argv, [scratch('/dev/shm'), 'held', fx.file], async (c) => {
      // Reads (readAhead 4) and writes (writeBehind 2) held in the kernel (io_uring: all 6; aio
      // and the thread pool run 4 at a time), then the exit. Waited for as the server counts
      // them (fs.watch on its counters), ended early by the child's end; the bound is only ava's (3 min): under a full CI
      // run the Deno child once took more than 10 s from 'ready' to its fourth held request.
      const ready = Date.now()
      const gone = new Promise<'gone'>((resolve) => c.once('close', () => resolve('gone')))
      if ((await Promise.race([fx.waitForHeld(4, 170_000).then(() => 'held' as const), gone])) === 'gone') throw new Error(`the child ended before 4 requests were held (${JSON.stringify(fx.stats())})`)
      note = `4 requests held ${Date.now() - ready} ms after 'ready'`
      c.stdin?.write('exit\n')
      // A thread blocked in a FUSE request (the thread pool, aio's submission on FUSE) waits
      // for its reply uninterruptibly at exit, as node:fs's would: the replies go now.
      // io_uring's requests are cancelled or left to its io-wq workers: held to the end.
      if (!holdThroughExit) fx.release()
    })
    fx.release()
    t.is(r.signal, null, `did not exit (killed; ${note}); stderr ${r.stderr.slice(-1500)}`)
    t.is(r.code, 0, `${note}; stderr ${r.stderr.slice(-1500)}`)
  })
}
