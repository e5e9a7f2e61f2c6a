// Adversary pass of the sixteenth session (second helper), on concurrency: close races and workers.
// Earlier passes closed a handle with ops in flight three times at once (adversary-s14), mid-batch
// (batch-close.spec), from a stream's 'data'; none closed it at each step of a form.
// 1. fh.close() at every engine call of each in-flight form (per-op reads and writes, readv/writev,
//    array and typed readMany/writeMany with a window, 2 lanes, a BatchWindow queue behind another
//    handle's batch, registered buffers, writeMany with datasync, read and write streams over the
//    handle, a read stream piped into a write stream), just before the call (what user code run
//    inside the call does) and just after it returns, on io_uring, aio and the thread pool; and
//    close() from a getter a call reads (an op's position, `results`, an array element, a signal).
//    A file opened as soon as close() resolves takes the freed descriptor number; it must stay
//    byte for byte as it was, reads must never return its bytes, every op settles (a hang is
//    reported) whole or ERR_ODIRECT_CLOSED / ECANCELED, never EBADF.
//    Found: close() looked at the handle's ops in flight at once, before the call it ran inside
//    had counted its ops (they are counted as each engine call returns): it closed the descriptor
//    under a windowed batch's later ops (array and typed forms, lanes, a BatchWindow queue,
//    registered buffers), which then wrote 1.3 MiB of the closed handle's data into the next file
//    opened, and read that file's bytes into the reads' memory; an fdatasync after writes failed
//    EBADF. Fixed in src/handle.ts close(): it lets the current job end, then waits until nothing
//    is in flight.
// 2. workers terminated at the Nth step of an allocation loop, registerBuffers, a BatchWindow
//    queue, a read stream piped to a write stream, per-op reads (found: a kill inside fh.alloc
//    turned every later allocation of the process into V8 memory; see section 2).
// Every check waits on an event (a promise, a child's exit); nothing is timed.
import { execFile } from 'node:child_process'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { scratchDirs } from './helpers/scratch.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const kids = path.join(here, 'adversary-s16b')
const scratch = scratchDirs('s16b')

interface Sweep {
  runs: number
  points: Record<string, number>
  bad: string[]
}

/** Runs `node <script> args` and resolves with its RESULT line's JSON. */
function runChild<T>(script: string, args: string[], env: NodeJS.ProcessEnv): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(kids, script), ...args], { encoding: 'utf8', env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '))
      if (line === undefined) return reject(new Error(`${script} printed no RESULT (${String(err)}):\n${stdout}\n${stderr}`))
      const o = JSON.parse(line.slice(7)) as T & { crash?: string }
      if (o.crash !== undefined) return reject(new Error(`${script} crashed: ${o.crash}\n${stderr}`))
      resolve(o)
    })
  })
}

const SWEPT = [
  'read',
  'write',
  'readMany array window 4',
  'writeMany array window 4',
  'writeMany array datasync',
  'read stream',
  'write stream',
  'read stream piped to a write stream',
  'registered',
  'writeMany typed 2 lanes',
  'readMany BatchWindow queue',
  'writeMany BatchWindow queue',
  'readv+writev',
  'readMany typed window 4',
  'writeMany typed window 4',
]

for (const backend of ['io_uring', 'aio', 'threadpool'] as const) {
  test(`[${backend}] fh.close() just before and just after each engine call of every in-flight form (per-op, readv/writev, array and typed batches with a window, 2 lanes, a BatchWindow queue, registered buffers, writeMany datasync, streams over the handle): the file that takes the freed descriptor number is never touched, no read returns its bytes, every op settles whole or ERR_ODIRECT_CLOSED / ECANCELED (never EBADF), blocks whole`, async (t) => {
    const r = await runChild<Sweep>('close-sweep.cjs', [scratch(), 'all'], { ...process.env, ODIRECT_BACKEND: backend })
    t.log(`${r.runs} runs; points: ${JSON.stringify(r.points)}`)
    t.deepEqual(r.bad, [])
    // Every form was swept to its end (a form with k engine calls has k points each way).
    for (const form of SWEPT) for (const m of ['before', 'after']) t.true((r.points[`${form} ${m}`] ?? 0) >= 1, `${form} ${m}: swept`)
    // The forms that make many calls were swept through all of them.
    for (const form of ['read', 'write', 'readMany array window 4', 'writeMany array window 4', 'read stream', 'write stream']) t.true((r.points[`${form} before`] ?? 0) >= 8, `${form}: ${r.points[`${form} before`]} points`)
  })

  test(`[${backend}] fh.close() from a getter the call reads (an op's position in readMany / writeMany with a window, a typed batch's results, alone and queued in a BatchWindow behind another handle, a writev element, a signal of write / datasync): was, the descriptor closed under the batch's later ops, which wrote the next file opened and read its bytes`, async (t) => {
    const r = await runChild<Sweep>('close-sweep.cjs', [scratch(), 'getters'], { ...process.env, ODIRECT_BACKEND: backend })
    t.deepEqual(r.bad, [])
    t.is(Object.keys(r.points).length, 10, 'every getter ran')
  })
}

// ---------------------------------------------------------------------------------------
// 2. Workers terminated at the Nth step of a form (an allocation loop, registerBuffers with fixed
//    writes and typed batches over the registration, typed batches of two handles queued in one
//    BatchWindow, a read stream piped to a write stream, 32 per-op reads), N = 1..6, while a
//    bystander worker and the main thread run verified I/O without pause.
//    Found: a worker terminated inside fh.alloc (its env refuses N-API calls then) was taken for a
//    runtime that refuses external ArrayBuffers (a V8 sandbox), a process-wide switch: every
//    later allocation of every thread came back as V8 memory, so typed batches in a BatchWindow
//    were refused ("needs odirect's own memory") and registerBuffers failed EINVAL (mlock /
//    io_uring_register), for the rest of the process. Fixed in crates/napi/src/memory.rs: only the
//    sandbox's own status (napi_no_external_buffers_allowed) turns the switch; any other failure
//    fails that one allocation.

interface WorkerSweep {
  runs: number
  killedAt: Record<string, number[]>
  errors: string[]
  wrong: number
  mainOps: number
  bystanderOps: number
  fdsBefore: number
  fdsAfter: number
  ringsBefore: number
  ringsAfter: number
}

for (const backend of ['io_uring', 'aio', 'threadpool'] as const) {
  test(`[${backend}] workers terminated at the Nth step of an fh.alloc loop, registerBuffers with fixed ops, a BatchWindow queue over two handles, a read stream piped to a write stream, 32 per-op reads: a bystander worker's and the main thread's verified I/O all right, the main thread's memory still odirect's (a BatchWindow batch, registerBuffers), descriptors and rings back (was: a kill inside fh.alloc made every later allocation V8 memory)`, async (t) => {
    const r = await runChild<WorkerSweep>('worker-sweep.cjs', [scratch()], { ...process.env, ODIRECT_BACKEND: backend })
    t.log(`killed at steps ${JSON.stringify(r.killedAt)}; main ops ${r.mainOps}, bystander ops ${r.bystanderOps}`)
    t.deepEqual(r.errors, [])
    t.is(r.runs, 30)
    t.is(r.wrong, 0, 'wrong results in the bystander or the main thread')
    t.true(r.mainOps > 0 && r.bystanderOps > 0)
    t.is(r.fdsAfter, r.fdsBefore, 'descriptors back')
    t.is(r.ringsAfter, r.ringsBefore, 'io_uring rings back')
  })
}
