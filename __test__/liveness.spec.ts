// Liveness (issue 16): the JS thread never sleeps in the kernel, exit and termination never wait
// on something that may never come, a terminated worker leaves nothing behind, and readMany's
// window bounds memory. Each runtime (Node 20, Node 22, Bun, Deno) runs the loop checks as a
// child process (__test__/liveness/loop-child.mjs), so one frozen runtime cannot freeze ava.
import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'
import type { ExecutionContext } from 'ava'

import { fxTest, must } from './helpers/fxtest.js'
import { limiter } from './helpers/limit.ts'

import { probe } from '../dist/index.js'
import { type FaultFs, faultFs, patternBuffer, type Requirement } from './helpers/fixtures.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(__dirname, '..')
const CHILD = path.join(__dirname, 'liveness', 'loop-child.mjs')
const LOCK_CHILD = path.join(__dirname, 'liveness', 'lock-child.mjs')
delete process.env.ODIRECT_BACKEND

type Backend = 'io_uring' | 'aio' | 'threadpool'
const BACKENDS: readonly Backend[] = ['io_uring', 'aio', 'threadpool']
const FAULT: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']
const where = await probe('/var/tmp')
const backendSkip = (b: Backend): string | undefined => (where.backends[b].available ? undefined : `backend ${b} unavailable here: ${where.backends[b].reason}`)

/** How each runtime runs a plain ESM file: [binary, args before the file], or why not. */
function runtimeCmd(name: 'node20' | 'node22' | 'bun' | 'deno'): { cmd: string; pre: string[] } | { skip: string } {
  if (name === 'node20') return { cmd: process.execPath, pre: [] }
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'runtime-bin.cjs'), '--path', name], { encoding: 'utf8' })
  if (r.status !== 0) return { skip: `no ${name} binary: ${r.stderr.trim().split('\n')[0]}` }
  const cmd = r.stdout.trim()
  return { cmd, pre: name === 'deno' ? ['run', '--allow-all', '--no-check', '--no-lock', '--node-modules-dir=manual'] : [] }
}
const RUNTIMES = ['node20', 'node22', 'bun', 'deno'] as const
const runtimes = Object.fromEntries(RUNTIMES.map((r) => [r, runtimeCmd(r)]))

type Runtime = { cmd: string; pre: string[] }

/** A case run in runtime `rt` on `backend` (skipped with the reason where either is missing) over a faultfs file whose reads the daemon holds until released. */
function heldFuseTest(rt: Runtime | { skip: string }, backend: Backend, title: string, body: (t: ExecutionContext, rt: Runtime, fx: FaultFs) => Promise<void>): void {
  fxTest(
    title,
    FAULT,
    async (t) => {
      if ('skip' in rt) return
      const fx = must(faultFs({ size: 1 << 20, hold: 'held' }))
      t.teardown(() => fx.cleanup())
      await body(t, rt, fx)
    },
    'skip' in rt ? rt.skip : backendSkip(backend),
  )
}

interface ChildOut {
  ticks: number
  maxHeld: number
  sums: Array<[number, number]>
  backend: string
}

/**
 * Runs the loop child and resolves with what it printed. `rescue` lets the I/O finish should the
 * child never do it itself (its JS thread asleep in the kernel: the failure this test catches);
 * it runs only if the child has not exited after a generous bound, never in a passing run.
 */
function runChild<R = ChildOut>(t: ExecutionContext, rt: { cmd: string; pre: string[] }, cfg: object, rescue: () => void, script = CHILD, onResult?: () => void): Promise<R> {
  return children(() => runChildNow<R>(t, rt, cfg, rescue, script, onResult))
}
const children = limiter(3)
function runChildNow<R>(t: ExecutionContext, rt: { cmd: string; pre: string[] }, cfg: object, rescue: () => void, script: string, onResult?: () => void): Promise<R> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, ...(cfg as { env?: Record<string, string> }).env }
    const c = spawn(rt.cmd, [...rt.pre, script, JSON.stringify(cfg)], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    c.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      if (onResult !== undefined && out.includes('\n')) onResult()
    })
    c.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const stuck = setTimeout(() => {
      t.log('the child did not finish: its JS thread is asleep in the kernel or its exit waits; releasing it')
      rescue()
      setTimeout(() => c.kill('SIGKILL'), 5000).unref()
    }, 60_000)
    // 'close', not 'exit': only then has all of the child's output been read.
    c.on('close', (code) => {
      clearTimeout(stuck)
      const line = out.trim().split('\n').pop() ?? ''
      if (code !== 0) return reject(new Error(`child exited with ${code}: ${err}${out}`))
      try {
        resolve(JSON.parse(line) as R)
      } catch {
        reject(new Error(`child printed no result: ${err}${out}`))
      }
    })
  })
}

const sumOf = (b: Uint8Array): number => b.reduce((a, x) => a + x, 0)

// 1. Submission never sleeps on the JS thread.
for (const rtName of RUNTIMES) {
  const rt = runtimes[rtName]
  for (const backend of BACKENDS) {
    const title = `[${rtName}] [${backend}] FUSE holding replies, 24 O_DIRECT reads (> max_background 16): timers keep firing while every read is held`
    heldFuseTest(rt, backend, title, async (t, rt, fx) => {
      const n = 24
      // io_uring issues all 24 (punted to io-wq): the daemon sees max_background of them.
      // aio's and the pool's ops run on the 4 pool threads: the daemon sees 4.
      const minHeld = backend === 'io_uring' ? 16 : 4
      const r = await runChild(t, rt, { mode: 'fuse', file: fx.file, backend, n, statsFile: fx.statsFile, holdFile: fx.holdFile, minHeld }, () => fx.release())
      t.is(r.ticks, 20, `timer ticks seen while the daemon held >= ${minHeld} reads and none had settled (max held ${r.maxHeld})`)
      t.true(r.maxHeld >= minHeld)
      t.is(r.backend, backend)
      t.deepEqual(
        r.sums,
        Array.from({ length: n }, (_, i) => [4096, sumOf(patternBuffer(i * 4096, 4096))]),
        'each read returned its own block',
      )
    })
  }
  for (const backend of BACKENDS) {
    const title = `[${rtName}] [${backend}] a read of a FIFO nobody writes to (direct: 'off') leaves the loop turning`
    const skip = 'skip' in rt ? rt.skip : backendSkip(backend)
    ;(skip ? test.skip : test)(title, async (t) => {
      if ('skip' in rt) return
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-fifo-'))
      t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
      const fifo = path.join(dir, 'fifo')
      const mk = spawnSync('mkfifo', [fifo])
      if (mk.status !== 0) throw new Error(`mkfifo failed: ${mk.stderr}`)
      const r = await runChild(t, rt, { mode: 'fifo', file: fifo, backend }, () => {
        const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
        fs.writeSync(w, 'rescue')
        fs.closeSync(w)
      })
      t.is(r.ticks, 20, 'timer ticks seen while the FIFO read was pending')
      t.deepEqual(r.sums, [[8, sumOf(Buffer.from('liveness'))]])
    })
    if (skip) console.log(`skipping "${title}": ${skip}`)
  }
}

// 4. `window` bounds memory; `signal` aborts a batch; `bounced` counts ops.
const status = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024
let peakResetSkip: string | undefined
try {
  fs.writeFileSync('/proc/self/clear_refs', '5')
} catch (e) {
  peakResetSkip = `cannot reset the peak RSS (/proc/self/clear_refs): ${(e as Error).message}`
}
;(peakResetSkip ? test.skip : test.serial)('readMany of 100k x 512 B plain-buffer ops with { window: 8 }: peak RSS grows by tens of MiB at most (not a bounce buffer per op)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-window-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'f')
  const content = Buffer.alloc(64 * 512)
  for (let i = 0; i < 64; i++) content.fill(i + 1, i * 512, (i + 1) * 512)
  fs.writeFileSync(file, content)
  const { open } = await import('../dist/index.js')
  const fh = await open(file, 'r', { direct: 'off' })
  t.teardown(() => fh.close())
  const n = 100_000
  const buf = Buffer.alloc(512) // plain memory: every op goes through an aligned bounce buffer
  const ops = Array.from({ length: n }, (_, i) => ({ buffer: buf, position: (i % 64) * 512 }))
  ;(globalThis as { gc?: () => void }).gc?.()
  const before = status('VmRSS')
  fs.writeFileSync('/proc/self/clear_refs', '5') // VmHWM := VmRSS
  const r = await fh.readMany(ops, { window: 8 })
  const growth = status('VmHWM') - before
  t.log(`peak RSS growth ${(growth / 2 ** 20).toFixed(1)} MiB for ${n} ops (a bounce buffer per op would be ${((n * 4096) / 2 ** 20).toFixed(0)} MiB)`)
  t.true(growth < 64 * 2 ** 20, `peak RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB`)
  t.is(r.length, n)
  t.true(r.every((x) => x === 512))
  t.is(buf[0], ((n - 1) % 64) + 1, 'the last read landed in the buffer')
  t.is(fh.stats().bounced, n, 'bounced counts ops, not batches')
})

for (const backend of BACKENDS) {
  fxTest(
    `[${backend}] readMany { window: 8, signal }: abort mid-window cancels what is in the kernel, never starts the rest, error.results says which`,
    FAULT,
    async (t) => {
      const fx = must(faultFs({ size: 1 << 20, hold: 'held' }))
      t.teardown(() => fx.cleanup())
      const { open } = await import('../dist/index.js')
      const fh = await open(fx.file, 'r', { backend })
      t.teardown(() => fh.close())
      const n = 40
      const w = backend === 'io_uring' ? 8 : 4 // the pool's 4 threads reach the daemon at most
      const ac = new AbortController()
      const p = fh.readMany(
        Array.from({ length: n }, (_, i) => ({ buffer: fh.alloc(4096), position: i * 4096 })),
        { window: w, signal: ac.signal },
      )
      p.catch(() => undefined)
      await fx.waitForHeld(w)
      const reads0 = fx.stats().reads
      ac.abort(new Error('stop'))
      fx.release()
      const e = (await t.throwsAsync(p, { code: 'ABORT_ERR' })) as Error & { results: ReadonlyArray<number | { code: string }> }
      t.is(e.results.length, n)
      // The ops in the kernel completed (the daemon had them) or were cancelled; none after them started.
      for (let i = 0; i < w; i++) t.true(e.results[i] === 4096 || (typeof e.results[i] === 'object' && ['ABORT_ERR', 'EINTR'].includes((e.results[i] as { code: string }).code)), `op ${i}: ${String(e.results[i])}`)
      for (let i = w; i < n; i++) t.is((e.results[i] as { code: string }).code, 'ABORT_ERR', `op ${i} never started`)
      t.is(fx.stats().reads, reads0, 'nothing reached the filesystem after the abort')
      t.is(reads0, w)
      t.is(fh.stats().inflight, 0)
    },
    backendSkip(backend),
    // Serial: on aio and the pool the held reads occupy all 4 pool threads of this process.
    'serial',
  )
}

// 2. Exit, termination and other I/O never wait on a lock() that may never be granted.
for (const rtName of RUNTIMES) {
  const rt = runtimes[rtName]
  for (const mode of ['exit', 'terminate', 'starve'] as const) {
    const what = {
      exit: 'process.exit() while a lock() waits exits at once',
      terminate: 'worker.terminate() while the worker waits in lock() returns; the parent keeps its lock',
      starve: 'six waiting lock()s leave open() and node:fs working; close() ends each wait',
    }[mode]
    ;('skip' in rt ? test.skip : test)(`[${rtName}] ${what}`, async (t) => {
      if ('skip' in rt) return
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-lockx-'))
      t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
      const file = path.join(dir, 'locked')
      const other = path.join(dir, 'other')
      fs.writeFileSync(file, Buffer.alloc(4096))
      fs.writeFileSync(other, 'still served')
      // No rescue can free a child stuck in exit: the parent kills it, and the test fails.
      const r = await runChild<Record<string, unknown>>(t, rt, { mode, file, other }, () => undefined, LOCK_CHILD)
      if (mode === 'exit') t.deepEqual(r, { exiting: true })
      if (mode === 'terminate') t.deepEqual(r, { terminated: true, stillHeld: true })
      if (mode === 'starve') t.deepEqual(r, { text: 'still served', bytesRead: 12, outcomes: new Array(6).fill('ERR_ODIRECT_CLOSED') })
    })
    if ('skip' in rt) console.log(`skipping "[${rtName}] ${what}": ${rt.skip}`)
  }
}

test('lock({ signal }): abort ends the wait with ABORT_ERR; the lock can be taken later', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-locka-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'f')
  fs.writeFileSync(file, '')
  const { open } = await import('../dist/index.js')
  const a = await open(file, 'r+', { direct: 'prefer' })
  const b = await open(file, 'r+', { direct: 'prefer' })
  await a.lock()
  const ac = new AbortController()
  const waiting = b.lock({ signal: ac.signal })
  t.is(b.inflight, 1, 'the wait counts in flight')
  ac.abort()
  await t.throwsAsync(waiting, { code: 'ABORT_ERR' })
  t.is(b.inflight, 0)
  await t.throwsAsync(b.lock({ signal: AbortSignal.abort() }), { code: 'ABORT_ERR' })
  a.unlock()
  t.true(b.tryLock(), 'nothing of the aborted wait holds the lock')
  await a.close()
  await b.close()
})

// 3. A terminated worker leaves nothing: engine, eventfd, reaper, ring and results go with it.
const WORKERS_CHILD = path.join(__dirname, 'liveness', 'workers-child.mjs')
const HELD_CHILD = path.join(__dirname, 'liveness', 'held-child.mjs')
for (const rtName of RUNTIMES) {
  const rt = runtimes[rtName]
  const title = `[${rtName}] 100 workers terminated mid-I/O: descriptors back to the start, RSS near it`
  ;('skip' in rt ? test.skip : test)(title, async (t) => {
    if ('skip' in rt) return
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'odirect-workers-'))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    const file = path.join(dir, 'data')
    fs.writeFileSync(file, Buffer.alloc(1 << 20, 3))
    const withGc = rtName.startsWith('node') ? { cmd: rt.cmd, pre: ['--expose-gc'] } : rt
    const r = await runChild<{ before: { fds: number; rss: number }; after: { fds: number; rss: number } }>(t, withGc, { file, n: 100, warm: 5 }, () => undefined, WORKERS_CHILD)
    const grown = (r.after.rss - r.before.rss) / 2 ** 20
    t.log(`descriptors ${r.before.fds} -> ${r.after.fds}, RSS +${grown.toFixed(1)} MiB`)
    // Deno's own workers leave a few descriptors behind however they end (2-8 per 100 workers
    // without odirect loaded; their threads close them after terminate() resolves). The
    // engine's own were one (three on Deno) per worker.
    const slack = rtName === 'deno' ? 10 : 0
    t.true(r.after.fds - r.before.fds <= slack, `descriptors ${r.before.fds} -> ${r.after.fds}`)
    // Node frees what a worker had; Bun's and Deno's workers grow RSS by themselves (7-9 MiB per
    // 100 empty workers here), and Deno never finalizes a terminated worker's external buffers.
    t.true(grown < (rtName.startsWith('node') ? 5 : 32), `RSS grew ${grown.toFixed(1)} MiB`)
  })
  if ('skip' in rt) console.log(`skipping "${title}": ${rt.skip}`)
}

// 2b. Ops the kernel cannot cancel (a FUSE daemon that never answers) hold up neither worker
// termination (the engine waits 2 s, then hands them and their memory to the process-wide reaper,
// which frees them once the daemon answers; on io_uring a worker's reads on a FUSE file go to
// its COOP_TASKRUN may-block ring, which the reaper can drain, not to its DEFER_TASKRUN ring) on any
// backend, nor process exit on io_uring (its io-wq workers do not keep the process). On aio and
// the thread pool the reads are synchronous requests of odirect's pool threads, which the kernel
// keeps waiting (uninterruptibly) for the daemon's reply: there the process exits once it comes.
for (const rtName of RUNTIMES) {
  const rt = runtimes[rtName]
  for (const backend of BACKENDS) {
    for (const mode of backend === 'io_uring' ? (['terminate', 'exit'] as const) : (['terminate'] as const)) {
      const title = `[${rtName}] [${backend}] reads held forever by FUSE: ${mode === 'exit' ? 'process.exit() exits' : 'worker.terminate() returns'}`
      heldFuseTest(rt, backend, title, async (t, rt, fx) => {
        // The hold is released only once the child has said it is done (or by the rescue).
        // Default ring setup: ODIRECT_URING_SETUP and ODIRECT_MAY_BLOCK_RING from ava's
        // environment are not passed on.
        const env = { ODIRECT_URING_SETUP: '', ODIRECT_MAY_BLOCK_RING: '' }
        const r = await runChild<Record<string, unknown>>(t, rt, { mode, backend, file: fx.file, statsFile: fx.statsFile, env }, () => fx.release(), HELD_CHILD, () => {
          if (mode === 'terminate') fx.release()
        })
        if (mode === 'terminate') {
          t.is(r.terminated, true)
          // Once the daemon answered, the reaper freed what the worker left (the reads the
          // kernel held: 4 or 5, the pool may not have started the fifth), their memory and
          // the worker's eventfd. Deno may return from terminate() before its teardown (whose
          // wait then sees the reads complete): there nothing needs reaping.
          const [engines, freed, ops, opsFreed, heldBytes] = r.reaper as number[]
          t.true(r.eventfdsBack, "the worker's eventfd closed")
          t.deepEqual({ freed, opsFreed, heldBytes }, { freed: engines, opsFreed: ops, heldBytes: 0 }, `reaper: ${r.reaper}`)
          if (rtName !== 'deno') t.true(engines === 1 && ops >= 4, `reaper: ${r.reaper}`)
        } else t.is(r.exiting, true)
        t.true((r.held as number) >= 4, 'the reads were held by the daemon meanwhile')
      })
    }
  }
}
