// worker_threads: the addon loads in several workers at once (one engine per JS environment),
// each worker does O_DIRECT I/O on its own handles, and workers that die with hundreds of reads
// in flight (worker.terminate(), process.exit() inside the worker) crash nothing and corrupt
// nobody else's data, while the main thread keeps doing I/O.
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { open, probe } from '../dist/index.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const workerFile = path.join(here, 'conformance', 'worker.cjs')
const KiB = 1024

const dirs: string[] = []
test.after.always(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
})
function scratch(): string {
  const d = fs.mkdtempSync('/var/tmp/odirect-workers-')
  dirs.push(d)
  return d
}

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
}

function start(data: Record<string, unknown>): Started {
  const worker = new Worker(workerFile, { workerData: { dist, ...data } })
  const messages: Array<Record<string, unknown>> = []
  let gotFirst!: (m: Record<string, unknown>) => void
  const first = new Promise<Record<string, unknown>>((r) => (gotFirst = r))
  worker.on('message', (m: Record<string, unknown>) => {
    messages.push(m)
    gotFirst(m)
  })
  const exited = new Promise<number>((resolve, reject) => {
    worker.on('error', reject)
    worker.on('exit', resolve)
  })
  return { worker, messages, exited, first }
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
        await Promise.all(src.map((b, i) => fh.write(b, i * 128 * KiB)))
        const dst = src.map(() => fh.alloc(128 * KiB))
        await Promise.all(dst.map((b, i) => fh.read(b, i * 128 * KiB)))
        for (let i = 0; i < 8; i++) if (sha(dst[i]) !== sha(src[i])) throw new Error(`main thread: round ${rounds} block ${i} differs`)
        rounds++
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
      t.is(await fh.read(b, i * 64 * KiB), 64 * KiB)
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

test('workers killed with 256 reads in flight (terminate, terminate while spinning, process.exit) crash nothing and corrupt no one', async (t) => {
  const dir = scratch()
  // A 16 MiB file for the doomed workers to read (256 reads of 64 KiB).
  const victim = path.join(dir, 'victim.bin')
  const victimData = pattern(16 * 1024 * KiB, 99)
  fs.writeFileSync(victim, victimData)
  const backends = (await probe(dir)).backends
  const available = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => backends[b].available)
  t.log(`backends: ${available.join(', ')}`)

  const main = mainThreadIo(dir)
  const rounds = 5
  const ws = [11, 12, 13, 14].map((seed) => ({ seed, file: path.join(dir, `w${seed}.bin`) }))
  // Healthy workers keep doing I/O until every doomed worker is gone.
  const healthy = ws.map(({ seed, file }, i) => start({ mode: 'io', seed, file, rounds, untilStopped: true, backend: available[i % available.length] }))

  const kills: Array<{ what: string; code: number; inflight: unknown }> = []
  for (const backend of available) {
    for (const variant of ['terminate', 'terminate-spin', 'exit'] as const) {
      const s = start({ mode: variant === 'exit' ? 'exit' : 'terminate', spin: variant === 'terminate-spin', file: victim, reads: 256, backend })
      const m = await Promise.race([s.first, s.exited.then((code) => ({ exitedEarly: code }))])
      t.is((m as { error?: unknown }).error, undefined, String((m as { error?: unknown }).error))
      if (variant !== 'exit') {
        t.is((m as { inflight?: number }).inflight, 256, `${backend} ${variant}: 256 reads in flight when terminated`)
        await s.worker.terminate()
      }
      const code = await s.exited
      kills.push({ what: `${backend} ${variant}`, code, inflight: (m as { inflight?: unknown }).inflight })
      t.is(code, variant === 'exit' ? 7 : 1, `${backend} ${variant} exit code`)
    }
  }
  t.log(kills.map((k) => `${k.what}: exit ${k.code}, ${String(k.inflight)} in flight`).join('; '))

  for (const h of healthy) h.worker.postMessage('stop')
  const done: number[] = []
  for (let i = 0; i < ws.length; i++) done.push(await checkIoWorker(t, healthy[i], ws[i].file, ws[i].seed, rounds))
  t.log(`healthy workers' verified rounds meanwhile: ${done.join(', ')}; main thread's: ${await main.stop()}`)
  // The file the doomed workers read is untouched (reads only), and this thread still reads it.
  const fh = await open(victim, 'r')
  try {
    const b = fh.alloc(1024 * KiB)
    t.is(await fh.read(b, 8 * 1024 * KiB), b.length)
    t.is(sha(b), sha(victimData.subarray(8 * 1024 * KiB, 9 * 1024 * KiB)))
  } finally {
    await fh.close()
  }
})
