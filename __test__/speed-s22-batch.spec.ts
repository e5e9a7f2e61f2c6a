// Twenty-second session, the batch path (issue 19), counted, never timed:
// - A native batch with a window of 1 on a tmpfs file, nothing else in flight, makes its ops
//   inline in its start call (crates/napi/src/batch.rs `start_inline`), as a lone op is made
//   (engine.rs `rw_inline`: reads by default, all with ODIRECT_INLINE_TMPFS=all, within the
//   chain's 1 ms budget): the child's io_uring_submit_req tracepoints and pread64/pwrite64
//   system calls traced; the engine's batchInline counts; every byte checked. Not with a window
//   of 2, nor for writes by default, nor with ODIRECT_BATCH_INLINE=0 (the old way). A batch longer
//   than the budget sends one op through the ring when a chain's budget is spent (its completion
//   through the event loop, no in-kernel wait) and makes the next ones inline again. The array
//   form run from JS (the default) with a window of 1 sends each op as a lone op (src/many.ts
//   ManyBatch `#alone`): its reads inline too (ODIRECT_MANY_ALONE=0: staged for the flush). Failures made
//   inline reject the batch with each op's error in its place.
// - Memory: a batch whose tail runs on the ring while its region's ArrayBuffer is transferred
//   away, collected and its memory asked for again writes the bytes it was given; workers running
//   window-1 batches terminated mid-batch (adversary-s21b's child) leave the process well.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { open } from '../dist/index.js'
import { childLines } from './helpers/child-lines.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { traceGo, tracefsReason } from './helpers/tracefs.ts'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(HERE, '..', 'dist')
const CHILD = path.join(HERE, 'speed-s22-batch', 'inline.cjs')
const BACKEND = process.env.ODIRECT_BACKEND || 'auto'
const scratch = scratchDirs('s22-batch')
const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : undefined

/** The env of a child: this process's without the switches under test, plus `extra`. */
function envWith(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env }
  for (const k of ['ODIRECT_BATCH_INLINE', 'ODIRECT_MANY_ALONE', 'ODIRECT_INLINE_TMPFS', 'ODIRECT_MANY_NATIVE', 'ODIRECT_SUBMIT_ALONE', 'ODIRECT_WAIT_US']) delete env[k]
  return { ...env, ...extra }
}

interface Spec {
  n: number
  window: number
  write?: boolean
  form?: 'typed' | 'array'
  transfer?: boolean
}

interface Run {
  backend: string
  results: Array<number | string>
  all: Array<number | string>
  code?: string
  placed: boolean
  ok: boolean
  /** Batches made wholly inline, ops made inline (NativeEngine.batchInline). */
  batches: number
  ops: number
  /** io_uring_submit_req tracepoints (SQEs) and pread64/pwrite64 calls of the child while the batch ran. */
  sqes: number
  syscalls: number
}

const TRACE = ['io_uring/io_uring_submit_req', 'syscalls/sys_enter_pread64', 'syscalls/sys_enter_pwrite64']
const traceWhy = tracefsReason('io_uring_submit_req') ?? (fs.existsSync('/sys/kernel/tracing/events/syscalls/sys_enter_pread64') ? undefined : 'no syscall tracepoints (CONFIG_FTRACE_SYSCALLS)')

/** Runs inline.cjs with `spec` and `env`, tracing the batch; `fsize`: under RLIMIT_FSIZE of that many bytes, SIGXFSZ ignored (as adversary-s14). */
async function run(name: string, spec: Spec, env: NodeJS.ProcessEnv, fsize?: number): Promise<Run> {
  const file = path.join(scratch(shm), `${name}.bin`)
  const argv = ['--expose-gc', CHILD, DIST, file, JSON.stringify({ backend: BACKEND, form: 'typed', ...spec })]
  // bash ignores SIGXFSZ (an ignored signal stays ignored across exec) and exec's prlimit, which exec's node.
  const c = fsize === undefined ? childLines(process.execPath, argv, env, true) : childLines('bash', ['-c', `trap '' XFSZ; exec prlimit --fsize=${fsize} -- "$@"`, 'bash', process.execPath, ...argv], env, true)
  await c.line('ready')
  const { done, trace } = await traceGo(c, TRACE)
  const code = await c.exited
  if (code !== 0) throw new Error(`child exited ${code}: ${c.err()}`)
  fs.rmSync(file, { force: true })
  const out = JSON.parse(done.slice('done '.length)) as Omit<Run, 'sqes' | 'syscalls'>
  // (The close's one SQE may reach the trace before it stops.)
  return { ...out, sqes: (trace.match(/io_uring_submit_req:.*opcode (READ|WRITE)/g) ?? []).length, syscalls: (trace.match(/sys_p(read|write)64\(/g) ?? []).length }
}

/**
 * `n` window-1 ops made inline but where a chain spent its 1 ms budget (a loaded machine, the
 * tracing itself): then one op went through the backend and the next were inline again. Each op
 * once, by a pread64/pwrite64 or an SQE; at least as many inline as not.
 */
function mostlyInline(t: ExecutionContext, r: Run, n: number, native = true): void {
  // (A native batch counts its inline ops; the array form run from JS does not.)
  if (native) t.is(r.syscalls, r.ops, 'a pread64/pwrite64 per op made inline')
  if (r.backend === 'io_uring') t.is(r.syscalls + r.sqes, n, `each op once: ${r.syscalls} inline, ${r.sqes} SQEs`)
  t.true(r.syscalls >= n / 2, `most inline (${r.syscalls} of ${n})`)
}

const skip = traceWhy ?? (shm === undefined ? 'no /dev/shm' : undefined)
const serial = skip === undefined ? test.serial : test.skip
const why = skip === undefined ? '' : ` (skipped: ${skip})`

serial(`a typed readMany of 64 blocks with { window: 1 } on tmpfs: every op made inline in the call (64 pread64, no SQE); ODIRECT_BATCH_INLINE=0: 64 SQEs, no pread64; every byte right${why}`, async (t) => {
  const on = await run('inline', { n: 64, window: 1 }, envWith())
  t.log(JSON.stringify(on))
  t.true(on.ok, 'every block read into its place')
  t.deepEqual(on.results, [4096])
  // (All 64 in the call, but for a chain that spent its budget on a loaded machine.)
  t.is(on.batches, on.ops === 64 ? 1 : 0, 'made wholly inline in the call when all 64 were')
  mostlyInline(t, on, 64)
  const off = await run('inline-off', { n: 64, window: 1 }, envWith({ ODIRECT_BATCH_INLINE: '0' }))
  t.log(JSON.stringify(off))
  t.true(off.ok, 'every byte right (ODIRECT_BATCH_INLINE=0)')
  t.deepEqual([off.batches, off.ops, off.syscalls], [0, 0, 0], 'none inline (the old way)')
  if (off.backend === 'io_uring') t.true(off.sqes >= 64, `every op through the ring (${off.sqes} SQEs)`)
})

serial(`not inline: a window of 2, writes (unless ODIRECT_INLINE_TMPFS=all), ODIRECT_INLINE_TMPFS=0; writes with =all are, each landing in its block${why}`, async (t) => {
  const w2 = await run('w2', { n: 64, window: 2 }, envWith())
  t.true(w2.ok)
  t.deepEqual([w2.batches, w2.ops, w2.syscalls], [0, 0, 0], 'a window of 2: through the backend')
  const wr = await run('wr', { n: 64, window: 1, write: true }, envWith())
  t.true(wr.ok, 'every write in its block (node:fs)')
  t.deepEqual([wr.batches, wr.ops, wr.syscalls], [0, 0, 0], 'writes: through the backend by default (as lone writes)')
  const off = await run('reads-off', { n: 64, window: 1 }, envWith({ ODIRECT_INLINE_TMPFS: '0' }))
  t.true(off.ok)
  t.deepEqual([off.batches, off.ops, off.syscalls], [0, 0, 0], 'ODIRECT_INLINE_TMPFS=0: none inline')
  const all = await run('writes-all', { n: 64, window: 1, write: true }, envWith({ ODIRECT_INLINE_TMPFS: 'all' }))
  t.log(JSON.stringify(all))
  t.true(all.ok, 'every write in its block (node:fs)')
  t.is(all.batches, all.ops === 64 ? 1 : 0)
  mostlyInline(t, all, 64)
})

serial(`the array form run natively (ODIRECT_MANY_NATIVE=1) with { window: 1 }: inline too; its results as the typed form's${why}`, async (t) => {
  const a = await run('array', { n: 64, window: 1, form: 'array' }, envWith({ ODIRECT_MANY_NATIVE: '1' }))
  t.log(JSON.stringify(a))
  t.true(a.ok)
  t.deepEqual(a.results, [4096])
  t.is(a.batches, a.ops === 64 ? 1 : 0)
  mostlyInline(t, a, 64)
})

serial(`the array form run from JS (the default) with { window: 1 }: each op goes as a lone op, reads made inline (64 pread64, no SQE); ODIRECT_MANY_ALONE=0: staged for the flush (64 SQEs)${why}`, async (t) => {
  const on = await run('array-js', { n: 64, window: 1, form: 'array' }, envWith())
  t.log(JSON.stringify(on))
  t.true(on.ok)
  t.deepEqual(on.results, [4096])
  t.deepEqual([on.batches, on.ops], [0, 0], 'no native batch')
  mostlyInline(t, on, 64, false)
  const off = await run('array-js-off', { n: 64, window: 1, form: 'array' }, envWith({ ODIRECT_MANY_ALONE: '0' }))
  t.log(JSON.stringify(off))
  t.true(off.ok)
  t.is(off.syscalls, 0, 'none inline')
  if (off.backend === 'io_uring') t.true(off.sqes >= 64, `every op through the ring (${off.sqes} SQEs)`)
})

serial(`a window-1 batch of 8192 reads, longer than the chain's 1 ms budget: each chain ends with one op through the backend (its completion through the event loop, which turns), then inline again: most ops inline; every byte right${why}`, async (t) => {
  const n = 8192
  const r = await run('long', { n, window: 1 }, envWith())
  t.log(JSON.stringify(r))
  t.true(r.ok)
  t.deepEqual(r.results, [4096])
  t.is(r.batches, 0, 'not wholly inline in its start call')
  t.true(r.ops < n, `not all inline (${r.ops} of ${n})`)
  mostlyInline(t, r, n)
})

serial(`failures made inline are the backend's: 16 window-1 writes (ODIRECT_INLINE_TMPFS=all) under RLIMIT_FSIZE of 8 blocks: the 8 below it write 4096, the 8 past it fail EFBIG, each error in its place, as through the ring (ODIRECT_BATCH_INLINE=0)${why}`, async (t) => {
  const spec = { n: 16, window: 1, write: true }
  const on = await run('efbig', spec, envWith({ ODIRECT_INLINE_TMPFS: 'all' }), 8 * 4096)
  t.log(JSON.stringify(on))
  t.is(on.code, 'EFBIG')
  t.deepEqual(on.all, Array.from({ length: 16 }, (_, i) => (((i * 97) % 16) < 8 ? 4096 : 'EFBIG')), 'op i at block (i * 97) % 16: EFBIG from block 8 on')
  t.true(on.placed, "each error names its op's position and length")
  t.is(on.batches, on.ops === 16 ? 1 : 0)
  mostlyInline(t, on, 16)
  const off = await run('efbig-off', spec, envWith({ ODIRECT_INLINE_TMPFS: 'all', ODIRECT_BATCH_INLINE: '0' }), 8 * 4096)
  t.log(JSON.stringify(off))
  t.is(off.code, 'EFBIG')
  t.deepEqual(off.all, on.all, 'the same results through the backend')
  t.true(off.placed)
  t.deepEqual([off.batches, off.ops, off.syscalls], [0, 0, 0])
})

serial(`memory: a window-1 write batch (ODIRECT_INLINE_TMPFS=all) past the budget, its region's ArrayBuffer transferred away, collected and the memory asked for again and overwritten while the ring writes the rest: the file holds the bytes it was given${why}`, async (t) => {
  for (const round of [0, 1, 2]) {
    const r = await run(`transfer${round}`, { n: 8192, window: 1, write: true, transfer: true }, envWith({ ODIRECT_INLINE_TMPFS: 'all' }))
    t.log(JSON.stringify(r))
    t.deepEqual(r.results, [4096])
    t.true(r.ok, `round ${round}: every block as given (node:fs)`)
    t.true(r.ops < 8192, 'its tail ran on the backend after the call returned')
  }
})

;(shm === undefined ? test.skip : test.serial)(`workers running typed batches with { window: 1 } on tmpfs (reads inline when nothing else is in flight) terminated mid-batch 8 times: the process lives on and its own window-1 batches read back every byte${shm === undefined ? ' (skipped: no /dev/shm)' : ''}`, (t) => {
  const file = path.join(scratch(shm), 'term.bin')
  const r = spawnSync(process.execPath, [path.join(HERE, 'adversary-s21b', 'terminate.cjs'), DIST, file, '1', '0', '8'], { encoding: 'utf8', env: envWith(), timeout: 120_000 })
  t.is(r.status, 0, `${r.signal ?? ''} ${r.stderr}`)
  t.deepEqual(JSON.parse(r.stdout), { rounds: 8, ok: true })
})

;(shm === undefined ? test.skip : test.serial)(`the array form from JS with { window: 1 } on tmpfs: close() called right after waits for the batch, which reads every block; a plain buffer transferred away mid-batch fails its own op (ERR_ODIRECT_DETACHED), the others land${shm === undefined ? ' (skipped: no /dev/shm)' : ''}`, async (t) => {
  const file = path.join(scratch(shm), 'attack.bin')
  const n = 2000
  fs.writeFileSync(file, Buffer.alloc(n * 4096, 5))
  let fh = await open(file, 'r+')
  const ops = Array.from({ length: n }, (_, i) => ({ buffer: fh.alloc(4096), position: i * 4096 }))
  const order: string[] = []
  const p = fh.readMany(ops, { window: 1 }).then((r) => order.push(`batch ${r.every((x) => x === 4096)}`))
  const c = fh.close().then(() => order.push('close'))
  await Promise.all([p, c])
  t.deepEqual(order, ['batch true', 'close'])
  t.true(ops.every((o) => o.buffer.every((b) => b === 5)), 'every block read')
  fh = await open(file, 'r+')
  try {
    const plain = Array.from({ length: n }, (_, i) => ({ buffer: new Uint8Array(4096), position: i * 4096 }))
    const q = fh.readMany(plain, { window: 1 })
    // A few ops in (each a microtask or more), the last op's buffer moves away.
    for (let k = 0; k < 50; k++) await null
    const victim = plain[n - 1].buffer
    structuredClone(victim.buffer, { transfer: [victim.buffer] })
    const e = await t.throwsAsync(q, { code: 'ERR_ODIRECT_DETACHED' })
    const rs = (e as unknown as { results: Array<number | { code: string }> }).results
    t.deepEqual(rs.slice(0, n - 1), new Array(n - 1).fill(4096))
    t.true(plain.slice(0, n - 1).every((o) => o.buffer.every((b) => b === 5)), 'the others landed')
  } finally {
    await fh.close()
  }
})
