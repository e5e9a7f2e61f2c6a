// Twenty-first session, the batch path (issue 19 items 2-4), counted, never timed:
// - A native batch's window refills at least ODIRECT_BATCH_REFILL (16) ops at a time while ops are
//   in flight (crates/napi/src/batch.rs `refill_min`), as fio's --iodepth_batch_submit does, and
//   on tmpfs the JS thread waits in the kernel for as many completions (`tmpfs_want`): the
//   child's io_uring_enter calls traced (syscalls:sys_enter_io_uring_enter, its to_submit) on a
//   tmpfs file, where no early groups split a submission; a typed batch with { window: 64 } and two
//   batches queued in one BatchWindow of 64; every byte read back.
// - The automatic fixed-buffer table registers at an adaptive number of uses
//   (crates/napi/src/pins.rs `AutoTable::need`, ODIRECT_AUTO_REG_ADAPT): fresh fh.alloc buffers
//   used by two ops each stop being registered once the slots let go show they served one op
//   each (=0: one registration per buffer, the twentieth session's rule); buffers used many times
//   still get slots. The engine's counts (callStats[8..13]) in child processes (the switches are
//   read once per process); every byte checked. Memory safety is the same code as
//   speed-s20-arrays.spec tries to break (an op names a slot only while it holds its allocation).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { enterCalls, enterTraceReason, traceGo } from './helpers/tracefs.ts'

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist')
const BACKEND = process.env.ODIRECT_BACKEND || 'auto'
const scratch = scratchDirs('s21-batch')
const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : undefined
const UNIT = 4096

/** The env of a child: this process's, without the switches under test, plus `extra`. */
function envWith(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env }
  for (const k of ['ODIRECT_BATCH_REFILL', 'ODIRECT_AUTO_REG', 'ODIRECT_AUTO_REG_ADAPT', 'ODIRECT_BATCH_WAIT', 'ODIRECT_BATCH_WAIT_TMPFS', 'ODIRECT_BATCH_SUBMIT_EVERY']) delete env[k]
  return { ...env, ...extra }
}

/** Ops per batch, and the window. */
const N = 512
const W = 64

/**
 * A child: on `file`, a typed writeMany of N blocks (block i filled with i % 251 + 1) with
 * { window: W } (`queue`: as two batches of N / 2 queued in one BatchWindow of W), then a typed
 * readMany of them into a zeroed region, checked byte for byte; its io_uring_enter calls traced.
 */
async function refillRun(file: string, queue: boolean, env: NodeJS.ProcessEnv): Promise<{ backend: string; ok: boolean; submits: number[]; waits: number; mins: number[] }> {
  const script = `
    const { open, BatchWindow } = require(${JSON.stringify(path.join(DIST, 'index.js'))})
    const { getEngine } = require(${JSON.stringify(path.join(DIST, 'src', 'engine.js'))})
    ;(async () => {
      const fh = await open(process.argv[1], 'w+', { backend: process.argv[2] })
      const mem = fh.alloc(${N * UNIT})
      for (let i = 0; i < ${N}; i++) mem.fill(i % 251 + 1, i * ${UNIT}, (i + 1) * ${UNIT})
      const offsets = new Uint32Array(${N}).map((_, i) => i * ${UNIT})
      const lengths = new Uint32Array(${N}).fill(${UNIT})
      // Blocks in a scattered order (op i at block (i * 97) % N).
      const positions = new Float64Array(${N}).map((_, i) => ((i * 97) % ${N}) * ${UNIT})
      const run = async (write, memory) => {
        if (!${queue}) return [...(await (write ? fh.writeMany : fh.readMany).call(fh, { memory, offsets, lengths, positions }, { window: ${W} }))]
        const win = new BatchWindow(${W})
        const h = ${N / 2}
        const part = (a, b) => ({ memory, offsets: offsets.slice(a, b), lengths: lengths.slice(a, b), positions: positions.slice(a, b) })
        const rs = await Promise.all([part(0, h), part(h, ${N})].map((p) => (write ? fh.writeMany(p, { window: win }) : fh.readMany(p, { window: win }))))
        return [...rs[0], ...rs[1]]
      }
      await fh.write(fh.alloc(${UNIT}), { position: ${N} * ${UNIT} }) // the ring exists before the traced part
      process.stdout.write('ready\\n')
      await new Promise((resolve) => process.stdin.once('data', resolve))
      const w = await run(true, mem)
      const back = fh.alloc(${N * UNIT})
      back.fill(0)
      const r = await run(false, back)
      let ok = [...w, ...r].every((x) => x === ${UNIT}) && back.equals(mem)
      process.stdout.write('done ' + fh.backend + ' ' + ok + ' ' + getEngine().native.batchWaits + '\\n')
      await fh.close()
      process.stdin.destroy()
    })()`
  const c = childLines(process.execPath, ['-e', script, file, BACKEND], env, true)
  await c.line('ready')
  const { done, trace } = await traceGo(c, 'syscalls/sys_enter_io_uring_enter')
  const code = await c.exited
  if (code !== 0) throw new Error(`child exited ${code}: ${c.err()}`)
  const [, backend, ok, waits] = done.split(' ')
  const calls = enterCalls(trace)
  return { backend, ok: ok === 'true', submits: calls.map(([n]) => n).filter((n) => n > 0), waits: Number(waits), mins: calls.map(([, m]) => m).filter((m) => m > 1) }
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)

for (const queue of [false, true]) {
  const why = enterTraceReason() ?? (shm === undefined ? 'no /dev/shm' : undefined)
  const form = queue ? `two typed batches of ${N / 2} queued in a BatchWindow of ${W}` : `a typed batch of ${N} with { window: ${W} }`
  const title = `${form} on tmpfs: after the first ${W}, refills go to the kernel at least 16 at a time (the tail excepted); every byte right${why ? ` (skipped: ${why})` : ''}`
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const on = await refillRun(path.join(scratch(shm), 'refill.bin'), queue, envWith({}))
    t.true(on.ok, 'every op moved a block, the bytes read back are the ones written')
    if (on.backend !== 'io_uring') {
      t.log(`backend ${on.backend}: no io_uring submissions to count`)
      return
    }
    t.log(`${on.submits.length} submitting io_uring_enter calls for ${2 * N} ops: ${JSON.stringify(on.submits)}`)
    // (+1: the close may reach the trace before it stops.)
    t.true(sum(on.submits) >= 2 * N && sum(on.submits) <= 2 * N + 1, `every op submitted once (${sum(on.submits)} SQEs)`)
    // Per pass (write, read): one submission of the first window, then refills of >= 16; the last
    // refill of a pass may be smaller (what is left); the close's one SQE.
    const small = on.submits.filter((n) => n < 16)
    t.true(small.length <= 3, `at most one refill under 16 per pass (its tail): ${JSON.stringify(on.submits)}`)
    t.true(on.submits.length <= 2 * (1 + (N - W) / 16 + 1), `at most ${2 * (2 + (N - W) / 16)} submissions: ${on.submits.length}`)
    // With them, the JS thread waits in the kernel for 16 completions at a time (the tmpfs wait,
    // the default since; never for more than are in flight).
    t.log(`${on.waits} batch waits; io_uring_enter waits for more than one: ${JSON.stringify(on.mins)}`)
    t.true(on.waits > 0 && on.mins.includes(16), 'waits for 16 completions made by default')
    t.true(on.mins.every((m) => m <= 16), 'no wait for more than 16')

    // The old rule (a refill at every reap, of what that reap made room for), for the log.
    const off = await refillRun(path.join(scratch(shm), 'refill1.bin'), queue, envWith({ ODIRECT_BATCH_REFILL: '1' }))
    t.true(off.ok, 'every byte right (ODIRECT_BATCH_REFILL=1)')
    t.log(`ODIRECT_BATCH_REFILL=1: ${off.submits.length} submissions: ${JSON.stringify(off.submits)}`)
    t.is(off.waits, 0, 'no batch wait with ODIRECT_BATCH_REFILL=1 (the old way)')
  })
}

/**
 * A child (env `env`, lone tmpfs ops not made inline so they reach the ring): `fresh` new fh.alloc
 * blocks, each written (a pattern) and read back into itself after zeroing, then dropped; then 64
 * blocks used `reuse` times each (a write, then reads); every byte checked. Prints the engine's
 * callStats[8..13] after each phase: [registered, swept, in use, need, let go, few].
 */
async function tableRun(file: string, fresh: number, reuse: number, env: NodeJS.ProcessEnv): Promise<{ ok: boolean; a: number[]; b: number[] }> {
  const script = `
    const { open } = require(${JSON.stringify(path.join(DIST, 'index.js'))})
    const { getEngine } = require(${JSON.stringify(path.join(DIST, 'src', 'engine.js'))})
    const stats = () => getEngine().native.callStats.slice(8, 14).join(',')
    ;(async () => {
      const fh = await open(process.argv[1], 'w+', { backend: process.argv[2] })
      let ok = true
      const check = (b, v) => { ok &&= b[0] === v && b[${UNIT} - 1] === v && b[${UNIT / 2}] === v }
      // 8 loops at once (ops in flight together, as a program's would be)
      await Promise.all(Array.from({ length: 8 }, async (_, l) => {
        for (let k = l; k < ${fresh}; k += 8) {
          const b = fh.alloc(${UNIT}).fill(k % 251 + 1)
          await fh.write(b, { position: (k % 256) * ${UNIT} })
          b.fill(0)
          await fh.read(b, { position: (k % 256) * ${UNIT} })
          check(b, k % 251 + 1)
        }
      }))
      process.stdout.write('fresh ' + stats() + '\\n')
      const set = Array.from({ length: 64 }, (_, i) => fh.alloc(${UNIT}).fill(i + 1))
      await Promise.all(set.map((b, i) => fh.write(b, { position: (300 + i) * ${UNIT} })))
      for (let r = 1; r < ${reuse}; r++) {
        for (const b of set) b.fill(0)
        await Promise.all(set.map((b, i) => fh.read(b, { position: (300 + i) * ${UNIT} })))
        set.forEach((b, i) => check(b, i + 1))
      }
      process.stdout.write('done ' + ok + ' ' + stats() + '\\n')
      await fh.close()
    })()`
  const c = childLines(process.execPath, ['-e', script, file, BACKEND], env)
  const a = (await c.line('fresh')).split(' ')[1].split(',').map(Number)
  const done = (await c.line('done')).split(' ')
  const code = await c.exited
  if (code !== 0) throw new Error(`child exited ${code}: ${c.err()}`)
  return { ok: done[1] === 'true', a, b: done[2].split(',').map(Number) }
}

{
  const why = shm === undefined ? 'no /dev/shm' : undefined
  ;(why === undefined ? test.serial : test.skip)(`fresh fh.alloc buffers used by two ops each: the automatic table stops registering them (ODIRECT_AUTO_REG_ADAPT=0: one registration each); 64 buffers used 12 times each still get slots; every byte right${why ? ` (skipped: ${why})` : ''}`, async (t) => {
    const FRESH = 1500
    const on = await tableRun(path.join(scratch(shm), 'table.bin'), FRESH, 12, envWith({ ODIRECT_INLINE_TMPFS: '0' }))
    t.true(on.ok, 'every byte right (adaptive)')
    t.log(`adaptive: after ${FRESH} fresh buffers [registered, swept, in use, need, let go, few] ${on.a}; after the reused set ${on.b}`)
    if (on.a[0] === 0 && on.b[0] === 0) {
      t.log('no automatic table here (not io_uring, no fixed buffers, or pinning is charged to RLIMIT_MEMLOCK)')
      return
    }
    t.true(on.a[3] > 2, `the uses an allocation needs went up (${on.a[3]})`)
    t.true(on.a[5] >= 32, `slots that served few ops were counted (${on.a[5]})`)
    t.true(on.a[0] < FRESH / 2, `fewer registrations than half the buffers (${on.a[0]} of ${FRESH})`)
    t.true(on.b[0] - on.a[0] >= 64, `the reused set got its slots (${on.b[0] - on.a[0]} registrations)`)

    const off = await tableRun(path.join(scratch(shm), 'table0.bin'), FRESH, 12, envWith({ ODIRECT_INLINE_TMPFS: '0', ODIRECT_AUTO_REG_ADAPT: '0' }))
    t.true(off.ok, 'every byte right (ODIRECT_AUTO_REG_ADAPT=0)')
    t.log(`ODIRECT_AUTO_REG_ADAPT=0: ${off.a}; ${off.b}`)
    t.is(off.a[3], 2, 'registered at the second use, always')
    t.true(off.a[0] >= FRESH * 0.9, `about one registration per fresh buffer (${off.a[0]} of ${FRESH})`)
  })
}
