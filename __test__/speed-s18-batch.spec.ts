// The tmpfs batch wait (crates/napi/src/batch.rs `tmpfs_want`, `ODIRECT_BATCH_WAIT_TMPFS=k`;
// opt-in until the twenty-first session, the default since, k = 16 with refills of 16): while every op in flight is a native batch's op on a tmpfs/ramfs file, a reap that has
// nothing for JS waits in the kernel (io_uring_enter with min_complete k, a tick-safe timeout) for
// k more completions, its refills submitted by that same call, as fio's loop does, instead of
// going back to the event loop for every few. Counted, never timed: the kernel's
// syscalls:sys_enter_io_uring_enter tracepoint (its to_submit and min_complete arguments) in a
// trace instance of this test's own, filtered to a child's JS thread (the switch is read once per
// process), and `NativeEngine.batchWaits`.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.js'
import { enterCalls, enterTraceReason, traceGo } from './helpers/tracefs.ts'

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist')
const BACKEND = process.env.ODIRECT_BACKEND || 'auto'
const disk = fs.mkdtempSync('/var/tmp/odirect-speed-s18-')
const shm = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/odirect-speed-s18-') : undefined
test.after.always(() => {
  fs.rmSync(disk, { recursive: true, force: true })
  if (shm !== undefined) fs.rmSync(shm, { recursive: true, force: true })
})

const UNIT = 4096
/** Ops per batch and the batch's window. */
const N = 512
const W = 64
/** The k the test asks for. */
const K = 16

interface Run {
  backend: string
  /** The bytes written were read back. */
  ok: boolean
  /** NativeEngine.batchWaits over the batches. */
  waits: number
  /** min_complete of each io_uring_enter the child's JS thread made during the batches. */
  mins: number[]
  /** Of those with min_complete above 1, how many also submitted entries (to_submit > 0). */
  submittingWaits: number
}

/**
 * A child (env `env`): a typed writeMany of N blocks (window W) on `file`, then a readMany of them
 * (same window) checked byte for byte; its io_uring_enter calls traced from here.
 */
async function childRun(file: string, env: NodeJS.ProcessEnv): Promise<Run> {
  const script = `
    const { open } = require(${JSON.stringify(path.join(DIST, 'index.js'))})
    const { getEngine } = require(${JSON.stringify(path.join(DIST, 'src', 'engine.js'))})
    ;(async () => {
      const fh = await open(process.argv[1], 'w+', { backend: process.argv[2] })
      const memory = fh.alloc(${N} * ${UNIT})
      for (let i = 0; i < ${N}; i++) memory.fill(i % 251 + 1, i * ${UNIT}, (i + 1) * ${UNIT})
      const offsets = new Uint32Array(${N}).map((_, i) => i * ${UNIT})
      const lengths = new Uint32Array(${N}).fill(${UNIT})
      const positions = new Float64Array(${N}).map((_, i) => (${N} - 1 - i) * ${UNIT})
      // The engine and its ring exist before the traced part.
      process.stdout.write('ready\\n')
      await new Promise((resolve) => process.stdin.once('data', resolve))
      const w0 = getEngine().native.batchWaits
      const w = await fh.writeMany({ memory, offsets, lengths, positions }, { window: ${W} })
      memory.fill(0)
      const r = await fh.readMany({ memory, offsets, lengths, positions }, { window: ${W} })
      const waits = getEngine().native.batchWaits - w0
      let ok = [...w, ...r].every((x) => x === ${UNIT})
      for (let i = 0; i < ${N}; i++) ok &&= memory[i * ${UNIT}] === i % 251 + 1 && memory[(i + 1) * ${UNIT} - 1] === i % 251 + 1
      process.stdout.write('done ' + fh.backend + ' ' + ok + ' ' + waits + '\\n')
      await fh.close()
      process.stdin.destroy()
    })()`
  const c = childLines(process.execPath, ['-e', script, file, BACKEND], env, true)
  await c.line('ready')
  const { done, trace } = await traceGo(c, 'syscalls/sys_enter_io_uring_enter')
  const code = await c.exited
  if (code !== 0) throw new Error(`child exited ${code}: ${c.err()}`)
  const [, backend, ok, waits] = done.split(' ')
  const calls = enterCalls(trace).map(([submit, min]) => ({ submit, min }))
  const mins = calls.map((c) => c.min)
  const submittingWaits = calls.filter((c) => c.min > 1 && c.submit > 0).length
  return { backend, ok: ok === 'true', waits: Number(waits), mins, submittingWaits }
}

/** The env of a child: this process's, without the switches that make other waits, plus `extra`. */
function envWith(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.ODIRECT_BATCH_WAIT
  delete env.ODIRECT_BATCH_WAIT_TMPFS
  delete env.ODIRECT_BATCH_REFILL
  delete env.ODIRECT_WAKE_WAIT
  return { ...env, ...extra }
}

const TRACE_WHY = enterTraceReason()

{
  const why = TRACE_WHY ?? (shm === undefined ? 'no /dev/shm' : undefined)
  const title = `tmpfs batches: ODIRECT_BATCH_WAIT_TMPFS=${K} waits in the kernel for ${K} completions at a time (io_uring_enter min_complete ${K}, never more than are in flight), the refills submitted by the waiting call; with =0, and on a disk file, no wait for more than one; the bytes are right either way${why ? ` (skipped: ${why})` : ''}`
  if (why !== undefined) console.log(`skipped: ${title}`)
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const dir = shm as string
    const on = await childRun(path.join(dir, 'on.bin'), envWith({ ODIRECT_BATCH_WAIT_TMPFS: String(K) }))
    t.true(on.ok, `the bytes written are read back (ODIRECT_BATCH_WAIT_TMPFS=${K})`)
    if (on.backend !== 'io_uring') {
      t.log(`backend ${on.backend}: no io_uring waits to observe`)
      t.is(on.waits, 0)
      return
    }
    const waited = on.mins.filter((m) => m > 1)
    t.log(`ODIRECT_BATCH_WAIT_TMPFS=${K}: ${on.mins.length} io_uring_enter calls for ${2 * N} ops, ${waited.length} waits for more than one (${on.submittingWaits} of them submitting; ${on.waits} batch waits counted)`)
    t.true(on.waits > 0, 'batch waits made (batchWaits)')
    t.true(waited.includes(K), `a wait for ${K} completions: ${JSON.stringify(waited)}`)
    t.true(
      waited.every((m) => m <= K),
      `no wait for more than ${K}: ${JSON.stringify(waited)}`,
    )
    t.true(on.submittingWaits > 0, 'refills submitted by the waiting io_uring_enter itself')

    // (The wait is the default since the twenty-first session, with refills of 16: speed-s21-batch.)
    const off = await childRun(path.join(dir, 'off.bin'), envWith({ ODIRECT_BATCH_WAIT_TMPFS: '0' }))
    t.true(off.ok, 'the bytes written are read back (ODIRECT_BATCH_WAIT_TMPFS=0)')
    t.is(off.backend, 'io_uring')
    t.is(off.waits, 0, 'no batch wait with ODIRECT_BATCH_WAIT_TMPFS=0')
    t.deepEqual(
      off.mins.filter((m) => m > 1),
      [],
      'no io_uring_enter waits for more than one completion with ODIRECT_BATCH_WAIT_TMPFS=0',
    )

    // tmpfs/ramfs files only: a disk file's batches (O_DIRECT, /var/tmp) make no such wait.
    const disk1 = await childRun(path.join(disk, 'disk.bin'), envWith({ ODIRECT_BATCH_WAIT_TMPFS: String(K) }))
    t.true(disk1.ok, 'the bytes written are read back (disk)')
    t.is(disk1.waits, 0, 'no batch wait on a disk file')
    t.deepEqual(
      disk1.mins.filter((m) => m > 1),
      [],
      'no io_uring_enter waits for more than one completion on a disk file',
    )
  })
}
