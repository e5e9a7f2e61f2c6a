// ODIRECT_AUTO_FIXED=1 (opt-in, with the automatic table off: ODIRECT_AUTO_REG=0; crates/napi/src/engine.rs `Inner::auto_fixed`): the one odirect
// buffer a depth-1 loop keeps using on a block device's file is registered with the ring after
// 8 lone reads/writes in a row, and its ops go as READ_FIXED / WRITE_FIXED from then on, as
// those of `fh.registerBuffers` memory do (README "Depth 1 on the disk"). Counted, never timed:
// the opcodes of the child's submissions (io_uring:io_uring_submit_req, in a trace instance of
// this test's own filtered to the child) and the engine's callStats[7] (registrations made). Each
// case runs in a child process of its own (the switch is read when the engine is made; an ava
// worker's IPC channel is an event source of its loop).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.js'
import { scratchDirs } from './helpers/scratch.js'
import { testIf } from './helpers/skips.js'
import { traceGo, tracefsReason } from './helpers/tracefs.ts'

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'speed-s19-qd1', 'child.ts')
const scratch = scratchDirs('speed-s19-qd1')
const OPS = 40
/** callStats index: registrations the engine made of a depth-1 loop's buffer. */
const AUTO_FIXED = 7
/** Lone ops in a row on one buffer before it is registered (engine.rs AUTO_FIXED_AFTER). */
const AFTER = 8

interface Line {
  callStats: number[]
  before?: number[]
  backend?: string
  direct?: boolean
  wrong?: number
}
const parse = (l: string): Line => JSON.parse(l.slice(l.indexOf(' ') + 1)) as Line

/** A 256 KiB file on the disk (/var/tmp), block i filled with i & 255. */
function patterned(): string {
  const file = path.join(scratch(), 'data')
  const b = Buffer.alloc(64 * 4096)
  for (let i = 0; i < 64; i++) b.fill(i & 255, i * 4096, (i + 1) * 4096)
  fs.writeFileSync(file, b)
  return file
}

const REASON = fs.statfsSync('/var/tmp').type === 0x01021994 ? '/var/tmp is a tmpfs (no device: lone ops there are made inline)' : tracefsReason('io_uring_submit_req')

interface Run {
  /** Opcodes of the child's reads/writes, in submission order. */
  ops: string[]
  done: Line
  verified?: Line
}

/** Runs the child's `scenario` with `env`, its submissions traced; undefined when it has no O_DIRECT ring file. */
async function traced(t: import('ava').ExecutionContext, scenario: string, env: Record<string, string>): Promise<Run | undefined> {
  const c = childLines(process.execPath, ['--import', '@oxc-node/core/register', CHILD, patterned(), scenario, String(OPS)], { ...process.env, ...env }, true)
  const ready = parse(await c.line('ready'))
  if (ready.backend !== 'io_uring' || ready.direct !== true) {
    c.child.stdin?.end('go\nend\n')
    await c.exited
    t.log(`backend ${ready.backend}, direct ${ready.direct}: no lone disk op to observe`)
    return undefined
  }
  const { done, trace } = await traceGo(c, 'io_uring/io_uring_submit_req')
  c.child.stdin?.end('end\n')
  const verified = scenario === 'write' ? parse(await c.line('verified')) : undefined
  t.is(await c.exited, 0, c.err())
  const ops = [...trace.matchAll(/opcode (\w+)/g)].map((m) => m[1]).filter((o) => /^(READ|WRITE)/.test(o))
  return { ops, done: parse(done), verified }
}

const count = (ops: string[], op: string): number => ops.filter((o) => o === op).length
const traceTest = (title: string, fn: Parameters<typeof test>[1]): void => testIf(REASON, title, fn, true)

traceTest(`ODIRECT_AUTO_FIXED=1: ${OPS} lone disk reads into one fh.alloc buffer go as READ_FIXED from the ${AFTER}th on (one registration), their bytes right`, async (t) => {
  const r = await traced(t, 'read', { ODIRECT_AUTO_FIXED: '1', ODIRECT_AUTO_REG: '0' })
  if (r === undefined) return
  t.log(`opcodes ${JSON.stringify(r.ops)}; callStats ${JSON.stringify(r.done.callStats)}`)
  t.is(r.done.wrong, 0, 'every read brought its block')
  t.is(r.ops.length, OPS)
  t.is(count(r.ops, 'READ'), AFTER - 1, 'the first reads of the buffer go plain')
  t.is(count(r.ops, 'READ_FIXED'), OPS - AFTER + 1, 'the rest from the registered buffer')
  t.is(r.ops.indexOf('READ_FIXED'), AFTER - 1, 'none plain after the first fixed one')
  t.is(r.done.callStats[AUTO_FIXED] - (r.done.before?.[AUTO_FIXED] ?? NaN), 1, 'one registration')
})

traceTest(`ODIRECT_AUTO_FIXED=1: ${OPS} lone disk writes from one fh.alloc buffer go as WRITE_FIXED from the ${AFTER}th on, every block on disk as written`, async (t) => {
  const r = await traced(t, 'write', { ODIRECT_AUTO_FIXED: '1', ODIRECT_AUTO_REG: '0' })
  if (r === undefined) return
  t.log(`opcodes ${JSON.stringify(r.ops)}; callStats ${JSON.stringify(r.done.callStats)}`)
  t.is(count(r.ops, 'WRITE'), AFTER - 1)
  t.is(count(r.ops, 'WRITE_FIXED'), OPS - AFTER + 1)
  t.is(r.done.callStats[AUTO_FIXED] - (r.done.before?.[AUTO_FIXED] ?? NaN), 1)
  t.is(r.verified?.wrong, 0, 'every block read back as written')
})

traceTest(`ODIRECT_AUTO_REG=0 and no ODIRECT_AUTO_FIXED: ${OPS} lone disk reads into one fh.alloc buffer all go as plain READ, no registration`, async (t) => {
  const r = await traced(t, 'read', { ODIRECT_AUTO_REG: '0' })
  if (r === undefined) return
  t.is(r.done.wrong, 0)
  t.deepEqual([count(r.ops, 'READ'), count(r.ops, 'READ_FIXED')], [OPS, 0])
  t.is(r.done.callStats[AUTO_FIXED], 0, 'the engine registered nothing')
})

// The default since the twentieth session: the automatic sparse table (pins.rs AutoTable,
// speed-s20-arrays.spec) registers the buffer at its second op; ODIRECT_AUTO_FIXED's dense
// registration stays off beside it.
traceTest(`the default: ${OPS} lone disk reads into one fh.alloc buffer go as READ_FIXED from the second on (the automatic table: one registration)`, async (t) => {
  const r = await traced(t, 'read', {})
  if (r === undefined) return
  t.is(r.done.wrong, 0)
  t.deepEqual([count(r.ops, 'READ'), count(r.ops, 'READ_FIXED')], [1, OPS - 1])
  t.is(r.done.callStats[AUTO_FIXED], 0, 'no dense registration')
  t.is(r.done.callStats[8] - (r.done.before?.[8] ?? NaN), 1, 'one automatic registration')
})

traceTest('ODIRECT_AUTO_FIXED=1 never replaces a registration of the caller: its loop on another buffer stays plain, the caller\'s buffer stays fixed', async (t) => {
  const r = await traced(t, 'caller', { ODIRECT_AUTO_FIXED: '1', ODIRECT_AUTO_REG: '0' })
  if (r === undefined) return
  t.log(`opcodes ${JSON.stringify(r.ops)}; callStats ${JSON.stringify(r.done.callStats)}`)
  t.is(r.done.wrong, 0)
  t.deepEqual(r.ops, [...Array(OPS).fill('READ'), ...Array(4).fill('READ_FIXED')])
  t.is(r.done.callStats[AUTO_FIXED], 0)
})
