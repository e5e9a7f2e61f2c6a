// The array form's first window on a device's file (src/many.ts ManyBatch, engine.rs
// `Inner::rw_many`, `ODIRECT_MANY_SUBMIT_EVERY`): the ops `readMany`/`writeMany` of
// `[{ buffer, position }]` stage in their call go to the kernel 8 at a time as they are staged,
// as a native batch's do, instead of in one io_uring_enter at the flush (io_uring issues the block
// requests of one enter back to back only once all are issued: the device got none of a call of
// 32 writes until all 32 were). Counted, never timed: the kernel's
// syscalls:sys_enter_io_uring_enter tracepoint (its to_submit argument) in a trace instance of
// this test's own, filtered to a child's JS thread (the switch is read once per process). The
// ops' RWF_* flags are set natively before any is submitted: a dsync batch resolves as before
// (the crash tests of durability.spec / durability-s16 check that such writes are durable).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.js'
import { enterCalls, enterTraceReason, traceGo } from './helpers/tracefs.ts'

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist')
const BACKEND = process.env.ODIRECT_BACKEND || 'auto'
const disk = fs.mkdtempSync('/var/tmp/odirect-speed-s19-')
const shm = fs.existsSync('/dev/shm') ? fs.mkdtempSync('/dev/shm/odirect-speed-s19-') : undefined
test.after.always(() => {
  fs.rmSync(disk, { recursive: true, force: true })
  if (shm !== undefined) fs.rmSync(shm, { recursive: true, force: true })
})

const UNIT = 4096
/** Ops per call, all in the call's first window (window N). */
const N = 32

interface Run {
  backend: string
  direct: boolean
  /** The bytes written were read back, every op moved UNIT bytes (the dsync call too). */
  ok: boolean
  /** to_submit of each io_uring_enter the child's JS thread made that submitted entries. */
  submits: number[]
}

/**
 * A child (env `env`): an array-form writeMany of N blocks with { window: N } on `file`, the same
 * again with { dsync: true }, then a readMany of them checked byte for byte; its io_uring_enter
 * calls traced from here.
 */
async function childRun(file: string, env: NodeJS.ProcessEnv): Promise<Run> {
  const script = `
    const { open } = require(${JSON.stringify(path.join(DIST, 'index.js'))})
    ;(async () => {
      const fh = await open(process.argv[1], 'w+', { backend: process.argv[2] })
      const ops = Array.from({ length: ${N} }, (_, i) => ({ buffer: fh.alloc(${UNIT}).fill(i % 251 + 1), position: (${N} - 1 - i) * ${UNIT} }))
      // The engine and its ring exist before the traced part.
      await fh.write(fh.alloc(${UNIT}), { position: ${N} * ${UNIT} })
      process.stdout.write('ready\\n')
      await new Promise((resolve) => process.stdin.once('data', resolve))
      const w = await fh.writeMany(ops, { window: ${N} })
      const d = await fh.writeMany(ops, { window: ${N}, dsync: true })
      for (const o of ops) o.buffer.fill(0)
      const r = await fh.readMany(ops, { window: ${N} })
      let ok = [...w, ...d, ...r].length === ${3 * N} && [...w, ...d, ...r].every((x) => x === ${UNIT})
      ops.forEach((o, i) => { ok &&= o.buffer[0] === i % 251 + 1 && o.buffer[${UNIT} - 1] === i % 251 + 1 })
      process.stdout.write('done ' + fh.backend + ' ' + fh.direct + ' ' + ok + '\\n')
      await fh.close()
      process.stdin.destroy()
    })()`
  const c = childLines(process.execPath, ['-e', script, file, BACKEND], env, true)
  await c.line('ready')
  const { done, trace } = await traceGo(c, 'syscalls/sys_enter_io_uring_enter')
  const code = await c.exited
  if (code !== 0) throw new Error(`child exited ${code}: ${c.err()}`)
  const [, backend, direct, ok] = done.split(' ')
  const submits = enterCalls(trace).map(([n]) => n).filter((n) => n > 0)
  return { backend, direct: direct === 'true', ok: ok === 'true', submits }
}

/** The env of a child: this process's, without the switch under test, plus `extra`. */
function envWith(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.ODIRECT_MANY_SUBMIT_EVERY
  delete env.ODIRECT_MANY_NATIVE
  return { ...env, ...extra }
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0)

{
  const why = enterTraceReason()
  const title = `array-form readMany/writeMany on a disk file: the ${N} ops of a call's first window go to the kernel 8 per io_uring_enter as they are staged (ODIRECT_MANY_SUBMIT_EVERY=0: all ${N} in one), with their dsync flag; on tmpfs in one; the bytes are right either way${why ? ` (skipped: ${why})` : ''}`
  if (why !== undefined) console.log(`skipped: ${title}`)
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const on = await childRun(path.join(disk, 'on.bin'), envWith({}))
    t.true(on.ok, 'the bytes written are read back, every op moved a block (default)')
    if (on.backend !== 'io_uring' || !on.direct) {
      t.log(`backend ${on.backend}, direct ${on.direct}: no io_uring submissions of a device's file to count`)
      return
    }
    t.log(`default: ${on.submits.length} submitting io_uring_enter calls for ${3 * N} ops: ${JSON.stringify(on.submits)}`)
    t.true(sum(on.submits) >= 3 * N, `every op submitted (${sum(on.submits)} SQEs)`)
    t.true(
      on.submits.every((n) => n <= 8),
      `no submission of more than 8: ${JSON.stringify(on.submits)}`,
    )
    t.true(on.submits.filter((n) => n === 8).length >= 3 * 3, `groups of 8 as the ops were staged: ${JSON.stringify(on.submits)}`)

    const off = await childRun(path.join(disk, 'off.bin'), envWith({ ODIRECT_MANY_SUBMIT_EVERY: '0' }))
    t.true(off.ok, 'the bytes written are read back (ODIRECT_MANY_SUBMIT_EVERY=0)')
    t.log(`ODIRECT_MANY_SUBMIT_EVERY=0: ${JSON.stringify(off.submits)}`)
    t.is(off.submits.filter((n) => n >= N).length, 3, `each call's ${N} ops in one submission: ${JSON.stringify(off.submits)}`)

    // A tmpfs/ramfs file's ops copy in microseconds on an io-wq worker: no early groups there.
    if (shm !== undefined) {
      const mem = await childRun(path.join(shm, 'shm.bin'), envWith({}))
      t.true(mem.ok, 'the bytes written are read back (tmpfs)')
      t.log(`tmpfs: ${JSON.stringify(mem.submits)}`)
      t.true(mem.submits.includes(N), `each call's ${N} ops in one submission on tmpfs: ${JSON.stringify(mem.submits)}`)
    }
  })
}
