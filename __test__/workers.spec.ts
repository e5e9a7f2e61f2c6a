// worker_threads: the addon loads in several workers at once (one engine per JS environment),
// each worker does O_DIRECT I/O on its own handles, and workers that die with reads provably in
// the kernel (held by a FUSE server; worker.terminate(), terminate() while the worker spins,
// process.exit() inside the worker) crash nothing, leak no descriptor and corrupt nobody else's
// data, while the main thread keeps doing I/O.
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test from 'ava'
import { scratchDirs } from './helpers/scratch.ts'

import { faultFs, patternBuffer, type Requirement } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'

import { open, probe } from '../dist/index.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const workerFile = path.join(here, 'conformance', 'worker.cjs')
const KiB = 1024

const scratch = scratchDirs('workers')

/** Same pattern as worker.cjs. */
function pattern(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size)
  const dv = new DataView(b.buffer)
  for (let i = 0; i + 4 <= size; i += 4) dv.setUint32(i, (Math.imul(i + seed, 2654435761) ^ seed) >>> 0, true)
  return b
}
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

interface Started {
  worker: Worker
  messages: Array<Record<string, unknown>>
  exited: Promise<number>
  /** Resolves with the first message. */
  first: Promise<Record<string, unknown>>
  /** Resolves with the first message (received already or to come) for which `pred` holds. */
  message(pred: (m: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
}

function start(data: Record<string, unknown>): Started {
  const worker = new Worker(workerFile, { workerData: { dist, ...data } })
  const messages: Array<Record<string, unknown>> = []
  let gotFirst!: (m: Record<string, unknown>) => void
  const first = new Promise<Record<string, unknown>>((r) => (gotFirst = r))
  const waiting: Array<{ pred: (m: Record<string, unknown>) => boolean; resolve: (m: Record<string, unknown>) => void }> = []
  worker.on('message', (m: Record<string, unknown>) => {
    messages.push(m)
    gotFirst(m)
    for (const w of waiting.splice(0)) {
      if (w.pred(m)) w.resolve(m)
      else waiting.push(w)
    }
  })
  const message = (pred: (m: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
    const m = messages.find(pred)
    return m !== undefined ? Promise.resolve(m) : new Promise((resolve) => waiting.push({ pred, resolve }))
  }
  const exited = new Promise<number>((resolve, reject) => {
    worker.on('error', reject)
    worker.on('exit', resolve)
  })
  return { worker, messages, exited, first, message }
}

/** The main thread's own I/O loop, run until `stop()`; returns the rounds verified. */
function mainThreadIo(dir: string): { stop: () => Promise<number> } {
  let running = true
  const done = (async () => {
    const fh = await open(path.join(dir, 'main.bin'), 'w+')
    let rounds = 0
    try {
      while (running || rounds < 3) {
        const src = Array.from({ length: 8 }, (_, i) => {
          const b = fh.alloc(128 * KiB)
          b.set(pattern(b.length, 0x1000 + rounds * 8 + i))
          return b
        })
        await Promise.all(src.map((b, i) => fh.write(b, { position: i * 128 * KiB })))
        const dst = src.map(() => fh.alloc(128 * KiB))
        await Promise.all(dst.map((b, i) => fh.read(b, { position: i * 128 * KiB })))
        for (let i = 0; i < 8; i++) if (sha(dst[i]) !== sha(src[i])) throw new Error(`main thread: round ${rounds} block ${i} differs`)
        rounds++
        // Pacing, not a wait for an event: leaves the 2 cores to the workers between rounds.
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    } finally {
      await fh.close()
    }
    return rounds
  })()
  return {
    stop: async () => {
      running = false
      return done
    },
  }
}

async function checkIoWorker(t: import('ava').ExecutionContext, s: Started, file: string, seed: number, minRounds: number): Promise<number> {
  const code = await s.exited
  const err = s.messages.find((m) => m.error)
  t.is(err, undefined, String(err?.error))
  t.is(code, 0)
  const last = s.messages.at(-1) as { done?: boolean; verified?: number; rounds?: number }
  t.true(last.done)
  const rounds = last.rounds ?? 0
  t.true(rounds >= minRounds, `worker ${seed} ran ${rounds} rounds`)
  t.is(last.verified, rounds * 16)
  // What the worker left on disk is exactly its last round.
  const fh = await open(file, 'r')
  try {
    for (let i = 0; i < 16; i++) {
      const b = fh.alloc(64 * KiB)
      t.is((await fh.read(b, { position: i * 64 * KiB })).bytesRead, 64 * KiB)
      t.is(sha(b), sha(pattern(64 * KiB, seed * 1000 + (rounds - 1) * 16 + i)), `worker ${seed} block ${i}`)
    }
  } finally {
    await fh.close()
  }
  return rounds
}

test('the addon loads in 4 worker threads at once; each does verified I/O on its own handles while the main thread does too', async (t) => {
  const dir = scratch()
  const main = mainThreadIo(dir)
  const rounds = 20
  const ws = [1, 2, 3, 4].map((seed) => ({ seed, file: path.join(dir, `w${seed}.bin`) }))
  const started = ws.map(({ seed, file }) => start({ mode: 'io', seed, file, rounds, backend: 'auto' }))
  for (let i = 0; i < ws.length; i++) await checkIoWorker(t, started[i], ws[i].file, ws[i].seed, rounds)
  t.true((await main.stop()) >= 3)
})

/** Descriptors of this process (all threads share them) whose target is `file`. */
function fdsOn(file: string): number {
  let n = 0
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === file) n++
    } catch {
      // closed meanwhile
    }
  }
  return n
}


// The doomed workers read a file on faultfs (FUSE) whose replies are held: their reads are
// provably in the kernel (the filesystem daemon has received them and not answered) when the
// worker dies, on every backend, instead of racing a fast disk.
const FAULT: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']

fxTest('21 workers killed (terminate, terminate while spinning, process.exit) with reads held in the kernel: the process survives, no descriptor leaks, nobody else is corrupted', FAULT, async (t) => {
  const dir = scratch()
  const fx = must(faultFs({ size: 1 << 20, hold: 'held' }))
  t.teardown(() => fx.cleanup())
  const backends = (await probe(dir)).backends
  const available = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => backends[b].available)
  t.log(`backends: ${available.join(', ')}`)

  const main = mainThreadIo(dir)
  const rounds = 3
  const ws = [11, 12, 13, 14].map((seed) => ({ seed, file: path.join(dir, `w${seed}.bin`) }))
  // Healthy workers keep doing I/O until every doomed worker is gone.
  const healthy = ws.map(({ seed, file }, i) => start({ mode: 'io', seed, file, rounds, untilStopped: true, backend: available[i % available.length] }))

  const fdsBefore = fdsOn(fx.file)
  const kills: string[] = []
  // faultfs can hold at most 16 requests at once (fuser's max_background): 7 workers x 2 reads
  // per backend stay under it, so every worker's reads are counted as held.
  const perBackend = 7
  const reads = 2
  const all: Started[] = []
  t.teardown(async () => {
    fx.release()
    await Promise.all([...all, ...healthy].map((s) => s.worker.terminate()))
    await main.stop().catch(() => undefined)
  })
  for (const backend of available) {
    const doomed: Array<{ s: Started; variant: string; term?: Promise<number> }> = []
    for (let k = 0; k < perBackend; k++) {
      const variant = (['terminate', 'terminate-spin', 'exit'] as const)[k % 3]
      const heldBefore = fx.stats().held
      const s = start({ mode: variant === 'exit' ? 'exit' : 'terminate', spin: variant === 'terminate-spin', file: fx.file, reads, size: 4096, backend })
      all.push(s)
      const m = await Promise.race([s.first, s.exited.then((code) => ({ exitedEarly: code }))])
      t.is((m as { error?: unknown }).error, undefined, String((m as { error?: unknown }).error))
      t.is((m as { exitedEarly?: number }).exitedEarly, undefined, `${backend} ${variant}: worker exited before reporting`)
      t.is((m as { inflight?: number }).inflight, reads, `${backend} ${variant}: ${reads} reads pending after a turn`)
      // The kernel-side count: this worker's reads reached the filesystem and are held there.
      await fx.waitFor((st) => st.held > heldBefore, `${backend} ${variant}: reads held by faultfs`)
      doomed.push({ s, variant })
    }
    const held = fx.stats().held
    t.true(held >= perBackend, `${backend}: ${held} reads held in the kernel when the workers die`)
    for (const d of doomed) {
      d.s.worker.postMessage('go')
      // Past 'go': spinning or idle (then terminate()d), or calling process.exit().
      await d.s.message((x) => x.going === true)
      if (d.variant !== 'exit') d.term = d.s.worker.terminate()
    }
    // Every doomed worker is dying or dead while its reads are still held: terminate() returns
    // without waiting for the kernel (liveness.spec.ts); process.exit() may wait for the replies.
    await Promise.all(doomed.map((d) => d.term))
    t.true(fx.stats().held > 0, `${backend}: reads still held while the workers die`)
    fx.release()
    for (const d of doomed) {
      const code = await d.s.exited
      kills.push(`${backend} ${d.variant}: exit ${code}`)
      t.is(code, d.variant === 'exit' ? 7 : 1, `${backend} ${d.variant} exit code`)
    }
    await fx.waitFor((st) => st.inflight === 0, `${backend}: faultfs idle after the workers died`)
    fx.hold()
  }
  fx.release()
  t.log(kills.join('; '))
  // Every descriptor the dead workers had open on the file was closed (as node:fs/promises does)
  // by the time their 'exit' was emitted: the engine's teardown closes them in the worker's
  // environment cleanup, which ends before the thread does.
  t.is(fdsOn(fx.file), fdsBefore, `descriptors on ${fx.file} left open by ${available.length * perBackend} dead workers`)

  for (const h of healthy) h.worker.postMessage('stop')
  const done: number[] = []
  for (let i = 0; i < ws.length; i++) done.push(await checkIoWorker(t, healthy[i], ws[i].file, ws[i].seed, rounds))
  t.log(`healthy workers' verified rounds meanwhile: ${done.join(', ')}; main thread's: ${await main.stop()}`)
  // The file the doomed workers read is intact, and this thread still reads it.
  const fh = await open(fx.file, 'r')
  try {
    const b = fh.alloc(64 * KiB)
    t.is((await fh.read(b, { position: 128 * KiB })).bytesRead, b.length)
    t.true(Buffer.from(b).equals(patternBuffer(128 * KiB, 64 * KiB)))
  } finally {
    await fh.close()
  }
})
