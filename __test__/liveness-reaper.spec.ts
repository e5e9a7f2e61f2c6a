// The reaper: a worker terminated (or calling process.exit()) while a stalled FUSE server holds
// its reads leaves those ops in the kernel. Its engine hands them, their memory, the backend
// running them and its eventfd to a process-wide reaper thread instead of keeping them for the
// life of the process: once the server answers, the reaper reaps the completions, frees the
// memory (the engine's counters: bytes held back to what they were), closes the io_uring ring
// and the eventfd (/proc/self/fd), and ends (/proc/self/task). On every backend. io_uring twice:
// with the default ring (a worker's is DEFER_TASKRUN, whose completions are posted only when its
// dead submitter thread asks: the FUSE reads go to a second, COOP_TASKRUN ring made for
// may-block files, which the reaper can drain; with ODIRECT_MAY_BLOCK_RING=0 they stay on the
// DEFER_TASKRUN ring and the engine is kept, as before) and with ODIRECT_URING_SETUP=coop (the
// thread's own ring is COOP_TASKRUN). The variables are read when the worker makes its ring
// (the native getenv sees process.env).
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker, type WorkerOptions } from 'node:worker_threads'

import type { ExecutionContext } from 'ava'

import { anonFds } from './helpers/fds.cjs'
import { type FaultFs, faultFs } from './helpers/fixtures.js'
import { threadStates, until } from './helpers/events.js'
import { fxTest, must } from './helpers/fxtest.js'

import { probe } from '../dist/index.js'
import { native } from '../dist/src/native.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const workerFile = path.join(here, 'conformance', 'worker.cjs')

interface Reaper {
  engines: number
  enginesFreed: number
  ops: number
  opsFreed: number
  heldBytes: number
}
function reaper(): Reaper {
  const [engines, enginesFreed, ops, opsFreed, heldBytes] = native.reaperStats()
  return { engines, enginesFreed, ops, opsFreed, heldBytes }
}

/** A worker on `source` whose exit code `exited` gives; at the end of the test the server is released and the worker terminated. */
function heldWorker(t: ExecutionContext, fx: FaultFs, source: string, options: WorkerOptions): { worker: Worker; exited: Promise<number> } {
  const worker = new Worker(source, options)
  const exited = new Promise<number>((resolve, reject) => {
    worker.on('error', reject)
    worker.on('exit', resolve)
  })
  t.teardown(() => {
    fx.release()
    return worker.terminate().then(() => undefined)
  })
  return { worker, exited }
}

const BACKENDS = ['io_uring', 'aio', 'threadpool'] as const
const available = await probe('/var/tmp').then((p) => BACKENDS.filter((b) => p.backends[b].available))

type Case = { backend: (typeof BACKENDS)[number]; setup: 'default' | 'coop' }
const CASES: Case[] = BACKENDS.flatMap((backend): Case[] => (backend === 'io_uring' ? [{ backend, setup: 'default' }, { backend, setup: 'coop' }] : [{ backend, setup: 'default' }]))

for (const { backend, setup } of CASES) {
  for (const mode of ['terminate', 'exit'] as const) {
    const why = available.includes(backend) ? undefined : `${backend} is not available here`
    const label = setup === 'coop' ? `${backend}, ODIRECT_URING_SETUP=coop` : backend
    fxTest(
      `[${label}] worker ${mode === 'exit' ? 'calling process.exit()' : 'terminated'} with 2 reads held by FUSE: once the server answers, the reaper frees their memory, the backend and the eventfd`,
      ['root', 'fuse', 'cargo', 'cmd:umount'],
      async (t) => {
        const fx = must(faultFs({ size: 1 << 20, hold: 'held' }))
        t.teardown(() => fx.cleanup())
        await until(() => threadStates('odirect-reaper').length === 0, 'no reaper thread left by an earlier test')
        const before = reaper()
        const fds = { ring: anonFds('io_uring'), eventfd: anonFds('eventfd') }
        if (setup === 'coop') process.env.ODIRECT_URING_SETUP = 'coop'
        else delete process.env.ODIRECT_URING_SETUP
        t.teardown(() => delete process.env.ODIRECT_URING_SETUP)
        const { worker, exited } = heldWorker(t, fx, workerFile, { workerData: { dist, mode, file: fx.file, reads: 2, size: 4096, backend } })
        const first = await new Promise<Record<string, unknown>>((resolve) => worker.once('message', resolve))
        t.is(first.inflight, 2, JSON.stringify(first))
        await fx.waitForHeld(2)
        worker.postMessage('go')
        await new Promise((resolve) => worker.once('message', resolve))
        if (mode === 'terminate') await worker.terminate()
        t.is(await exited, mode === 'exit' ? 7 : 1)

        // The worker is gone, its reads are still held by the server: handed to the reaper.
        t.is(fx.stats().held, 2, 'reads still held by the server')
        const orphaned = reaper()
        t.is(orphaned.engines - before.engines, 1, 'one engine handed to the reaper')
        t.is(orphaned.ops - before.ops, 2, 'its two reads')
        t.log(`meanwhile: ${orphaned.opsFreed - before.opsFreed} reads freed, ${orphaned.heldBytes - before.heldBytes} bytes held, ${anonFds('io_uring') - fds.ring} rings kept, reaper threads ${threadStates('odirect-reaper').length}`)

        // The server answers: the reaper reaps both completions and frees everything.
        fx.release()
        await fx.waitFor((s) => s.inflight === 0, 'faultfs answered')
        await until(() => reaper().enginesFreed > before.enginesFreed, 'the reaper freeing the engine')
        const after = reaper()
        t.is(after.opsFreed - before.opsFreed, 2, 'both reads reaped')
        t.is(after.heldBytes, before.heldBytes, 'their memory freed')
        t.is(anonFds('io_uring'), fds.ring, 'the ring closed')
        t.is(anonFds('eventfd'), fds.eventfd, 'the eventfd closed')
        await until(() => threadStates('odirect-reaper').length === 0, 'the reaper thread ending with nothing left')
      },
      why,
      'serial',
    )
  }
}


// Many at once: workers on the default ring (each a DEFER_TASKRUN ring and a may-block ring),
// each with reads held by one server, all terminated together: every engine goes to the one
// reaper, and once the server answers every ring, eventfd and byte is freed.
fxTest(
  '[io_uring] 8 workers terminated together, each with 2 reads held by FUSE: once the server answers, all 8 engines, their rings and eventfds are freed',
  ['root', 'fuse', 'cargo', 'cmd:umount'],
  async (t) => {
    const n = 8
    const fx = must(faultFs({ size: 1 << 20, hold: 'held' }))
    t.teardown(() => fx.cleanup())
    await until(() => threadStates('odirect-reaper').length === 0, 'no reaper thread left by an earlier test')
    delete process.env.ODIRECT_URING_SETUP
    const before = reaper()
    const fds = { ring: anonFds('io_uring'), eventfd: anonFds('eventfd') }
    const workers = Array.from({ length: n }, () => new Worker(workerFile, { workerData: { dist, mode: 'terminate', file: fx.file, reads: 2, size: 4096, backend: 'io_uring' } }))
    t.teardown(async () => {
      fx.release()
      await Promise.all(workers.map((w) => w.terminate()))
    })
    const firsts = await Promise.all(workers.map((w) => new Promise<Record<string, unknown>>((resolve, reject) => {
      w.once('message', resolve)
      w.once('error', reject)
    })))
    t.deepEqual(firsts.map((m) => m.inflight), new Array<number>(n).fill(2))
    await fx.waitForHeld(2 * n)
    t.is(anonFds('io_uring') - fds.ring, 2 * n, 'each worker: its own ring and its may-block ring')
    await Promise.all(workers.map((w) => w.terminate()))
    t.is(fx.stats().held, 2 * n, 'reads still held by the server')
    const orphaned = reaper()
    t.is(orphaned.engines - before.engines, n)
    t.is(orphaned.ops - before.ops, 2 * n)
    t.is(anonFds('io_uring') - fds.ring, n, 'the DEFER_TASKRUN rings closed at termination, the may-block rings held')

    fx.release()
    await fx.waitFor((s) => s.inflight === 0, 'faultfs answered')
    await until(() => reaper().enginesFreed - before.enginesFreed === n, 'the reaper freeing every engine')
    const after = reaper()
    t.is(after.opsFreed - before.opsFreed, 2 * n)
    t.is(after.heldBytes, before.heldBytes)
    t.is(anonFds('io_uring'), fds.ring)
    t.is(anonFds('eventfd'), fds.eventfd)
    await until(() => threadStates('odirect-reaper').length === 0, 'the reaper thread ending with nothing left')
  },
  available.includes('io_uring') ? undefined : 'io_uring is not available here',
  'serial',
)

// A close is an op too: on FUSE it waits for the server's FLUSH reply. A worker terminated while
// a stalled server holds its close leaves that op in the kernel like a held read; it goes to the
// may-block ring with the descriptor's other ops (was: the worker's DEFER_TASKRUN ring, kept for
// the process's life: the close is routed after its descriptor left the engine's table).
fxTest(
  '[io_uring] worker terminated while FUSE holds its close (FLUSH): once the server answers, the reaper frees the engine, its ring and eventfd',
  ['root', 'fuse', 'cargo', 'cmd:umount'],
  async (t) => {
    const fx = must(faultFs({ size: 1 << 20, hold: true, holdFlush: true }))
    t.teardown(() => fx.cleanup())
    await until(() => threadStates('odirect-reaper').length === 0, 'no reaper thread left by an earlier test')
    delete process.env.ODIRECT_URING_SETUP
    const before = reaper()
    const fds = { ring: anonFds('io_uring'), eventfd: anonFds('eventfd') }
    const body = `
const { parentPort, workerData } = require('node:worker_threads')
const od = require(workerData.dist)
;(async () => {
  const fh = await od.open(workerData.file, 'r', { backend: 'io_uring' })
  const { bytesRead } = await fh.read(fh.alloc(4096), { position: 0 })
  parentPort.postMessage({ bytesRead })
  parentPort.once('message', () => {
    fh.close().catch(() => undefined)
    setImmediate(() => parentPort.postMessage({ inflight: fh.inflight }))
  })
})()
`
    const { worker, exited } = heldWorker(t, fx, body, { eval: true, workerData: { dist, file: fx.file } })
    const next = () => new Promise<Record<string, unknown>>((resolve) => worker.once('message', resolve))
    t.is((await next()).bytesRead, 4096)
    fx.hold()
    worker.postMessage('close')
    await next()
    await fx.waitForHeld(1)
    await worker.terminate()
    t.is(await exited, 1)
    t.is(fx.stats().held, 1, 'the FLUSH still held by the server')
    t.is(reaper().engines - before.engines, 1, 'the engine handed to the reaper')

    fx.release()
    await fx.waitFor((s) => s.inflight === 0, 'faultfs answered')
    await until(() => reaper().enginesFreed > before.enginesFreed, 'the reaper freeing the engine')
    t.is(reaper().heldBytes, before.heldBytes)
    t.is(anonFds('io_uring'), fds.ring, 'the rings closed')
    t.is(anonFds('eventfd'), fds.eventfd, 'the eventfd closed')
    await until(() => threadStates('odirect-reaper').length === 0, 'the reaper thread ending with nothing left')
  },
  available.includes('io_uring') ? undefined : 'io_uring is not available here',
  'serial',
)
