// The hybrid wait of a lone disk op (crates/core/src/io/ring.rs `Hybrid`, `ODIRECT_WAIT_HYBRID`):
// the in-call wait of a lone read on a block device's file sleeps in the kernel with a timeout
// shorter than the op's device time (learned per file, direction and size), then spins on the
// ring's flags until the completion arrives, bounded, then sleeps again for the rest of the
// wait. Counted, never timed: the engine's waitStats (indices 9-15: hybrid waits, woken during
// their sleep, found by spinning, spins that reached their bound, spun from the start, plain
// waits of a lone disk op, the sleep learned last in ns) and the child's io_uring_enter calls
// (the syscall tracepoint in a trace instance of this test's own, filtered to the child; and
// /proc/PID/syscall, the call the child's JS thread sleeps in). Each case runs in a child process
// of its own (the switch is read when the ring is made; an ava worker's IPC channel is an event
// source of its loop).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.js'
import { skipReason } from './helpers/fixtures.js'
import { heldDevice } from './helpers/held-device.js'
import { scratchDirs } from './helpers/scratch.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'
import { enterCalls, enterTraceReason, traceGo } from './helpers/tracefs.ts'

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'speed-s18-qd1', 'child.ts')
const scratch = scratchDirs('speed-s18-qd1')
const READS = 200

// waitStats indices.
const TRIES = 0
const LOOP_ENDED = 3
const REWAITS = 5
const HYBRID = 9
const LATE = 10
const SPUN = 11
const BOUNDED = 12
const SPIN_ONLY = 13
const PLAIN = 14

interface Line {
  waitStats: number[]
  before?: number[]
  backend?: string
  direct?: boolean
  wrong?: number
  bytesRead?: number
  ok?: boolean
  order?: string[]
}
const parse = (l: string): Line => JSON.parse(l.slice(l.indexOf(' ') + 1)) as Line
const delta = (a: number[], b: number[]): number[] => a.map((x, i) => x - (b[i] ?? NaN))

function child(file: string, scenario: string, env: Record<string, string>, extra: string[] = []): ReturnType<typeof childLines> {
  return childLines(process.execPath, ['--import', '@oxc-node/core/register', CHILD, file, scenario, ...extra], { ...process.env, ODIRECT_WAIT_SPIN_US: '0', ...env }, true)
}

/** A 256 KiB file on the disk (/var/tmp), block i filled with i & 255. */
function patterned(): string {
  const file = path.join(scratch(), 'data')
  const b = Buffer.alloc(64 * 4096)
  for (let i = 0; i < 64; i++) b.fill(i & 255, i * 4096, (i + 1) * 4096)
  fs.writeFileSync(file, b)
  return file
}

function diskReason(): string | undefined {
  if (fs.statfsSync('/var/tmp').type === 0x01021994) return '/var/tmp is a tmpfs (a lone op there is made inline, no device wait)'
  return undefined
}

const TRACE_REASON =
  diskReason() ?? enterTraceReason()

/** The child's reads with io_uring_enter traced: (to_submit, min_complete) of each call, and the `done` line. */
async function tracedLoop(t: import('ava').ExecutionContext, env: Record<string, string>): Promise<{ calls: [number, number][]; done: Line } | undefined> {
  const c = child(patterned(), 'loop', env, [String(READS)])
  const ready = parse(await c.line('ready'))
  if (ready.backend !== 'io_uring' || ready.direct !== true) {
    c.child.stdin?.end('go\nend\n')
    await c.exited
    t.log(`backend ${ready.backend}, direct ${ready.direct}: no in-call disk wait to observe`)
    return undefined
  }
  const { done, trace } = await traceGo(c, 'syscalls/sys_enter_io_uring_enter')
  c.child.stdin?.end('end\n')
  t.is(await c.exited, 0, c.err())
  return { calls: enterCalls(trace), done: parse(done) }
}

const traced = (title: string, fn: Parameters<typeof test>[1]): void => testIf(TRACE_REASON, title, fn, true)

traced(`hybrid wait: ${READS} lone disk reads each wait in one of its ways (counted), their bytes right; the spins that ran out sleep again in a call that submits nothing`, async (t) => {
  // No cap from the tick-safe timeout or the device's speed (a loaded CI disk): the counts below
  // hold at any latency.
  const r = await tracedLoop(t, { ODIRECT_WAIT_HYBRID: '1', ODIRECT_RW_WAIT_DISK_MS: '120000', ODIRECT_WAIT_HYBRID_MAX_US: '60000000' })
  if (r === undefined) return
  const d = delta(r.done.waitStats, r.done.before ?? [])
  t.log(`waitStats deltas ${JSON.stringify(d)}; enters (to_submit, min_complete): ${JSON.stringify(r.calls.slice(0, 40))}...`)
  t.is(r.done.wrong, 0, 'every read brought its block')
  // The file's first 8 reads (before `go`) learned its sleep: each of these waits is hybrid.
  t.true(d[TRIES] > 0, 'the reads waited in their call')
  t.is(d[HYBRID] + d[PLAIN], d[TRIES], 'each in-call wait is a hybrid or a plain one')
  t.true(d[HYBRID] > 0, 'hybrid waits were made')
  t.is(d[LATE] + d[SPUN] + d[BOUNDED], d[HYBRID], 'each hybrid wait ended one way: woken in its sleep, found by spinning, or spun to its bound')
  t.true(d[SPIN_ONLY] <= d[HYBRID])
  // Each wait that sleeps first submits and sleeps in one call (and a wait made again after a
  // wake-up that was only the engine's own eventfd arms the loop's watch again in one); a wait
  // that spins from the start submits without waiting. A spin that reached its bound sleeps in
  // one more call that submits nothing: the only calls here with to_submit 0 and min_complete 1.
  t.is(r.calls.filter(([s, m]) => s > 0 && m === 1).length, d[TRIES] - d[SPIN_ONLY] + d[REWAITS])
  t.is(r.calls.filter(([s, m]) => s === 0 && m === 1).length, d[BOUNDED])
})

traced(`ODIRECT_WAIT_HYBRID=0: ${READS} lone disk reads wait plainly, one call each that submits and sleeps`, async (t) => {
  const r = await tracedLoop(t, { ODIRECT_WAIT_HYBRID: '0', ODIRECT_RW_WAIT_DISK_MS: '120000' })
  if (r === undefined) return
  const d = delta(r.done.waitStats, r.done.before ?? [])
  t.log(`waitStats deltas ${JSON.stringify(d)}`)
  t.is(r.done.wrong, 0)
  t.true(d[TRIES] > 0)
  t.deepEqual(d.slice(HYBRID, PLAIN + 1), [0, 0, 0, 0, 0, 0], 'no hybrid wait, and no lone disk wait counted as one')
  t.is(r.calls.filter(([s, m]) => s > 0 && m === 1).length, d[TRIES] + d[REWAITS])
  t.is(r.calls.filter(([s, m]) => s === 0 && m === 1).length, 0)
})

const HELD_REASON = FAULTFS_REASON ?? skipReason(['root', 'loop', 'fuse', 'cargo', 'cmd:umount'])
const hd = heldDevice(HELD_REASON)

/**
 * Resolves once the child's JS thread sleeps in an io_uring_enter that submits nothing and waits
 * for one completion (/proc/PID/syscall: `426 fd to_submit min_complete ...`; "running" while
 * it spins in user space). Polled: the state is only visible there.
 */
async function sleepsAgain(pid: number): Promise<string> {
  for (;;) {
    let s = ''
    try {
      s = fs.readFileSync(`/proc/${pid}/syscall`, 'utf8').trim()
    } catch {
      throw new Error(`child ${pid} is gone`)
    }
    const f = s.split(' ')
    if (f[0] === '426' && Number(f[2]) === 0 && Number(f[3]) === 1) return s
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

testIf(HELD_REASON, 'hybrid wait: a lone read held by FUSE is not spun on for long: its spin reaches the bound and the thread sleeps in the kernel again, until the read completes in its call when released', async (t) => {
  const f = hd.fx()
  // ODIRECT_RW_WAIT_DISK=1: the wait does not watch the loop (whose watch can fire on the
  // engine's own eventfd and make the wait wait again, plainly), so only the read ends it.
  const c = child(hd.device(), 'held', { ODIRECT_RW_WAIT_DISK: '1', ODIRECT_WAIT_HYBRID: '1', ODIRECT_RW_WAIT_DISK_MS: '120000', ODIRECT_WAIT_HYBRID_MAX_US: '60000000' })
  try {
    const ready = parse(await c.line('ready'))
    t.is(ready.backend, 'io_uring')
    await hd.startHeld(c)
    // The child's thread slept briefly and spun (its learned sleep is far shorter than the
    // hold), and now sleeps in a call that submitted nothing: the spin ended by its bound (a
    // spin without one would keep the thread running in user space until the release, and this
    // would never resolve).
    const call = await sleepsAgain(c.child.pid as number)
    t.true(f.stats().held >= 1, 'the read is still held')
    f.release()
    const started = parse(await c.line('started'))
    const returned = parse(await c.line('returned'))
    const read = parse(await c.line('read '))
    const d = delta(returned.waitStats, started.waitStats)
    t.log(`learned before: ${JSON.stringify(ready.waitStats)}; the child slept in ${call}; waitStats deltas over the held read's call ${JSON.stringify(d)}`)
    t.is(d[TRIES], 1, 'the read waited in its call')
    t.deepEqual([d[HYBRID], d[LATE], d[SPUN], d[BOUNDED], d[PLAIN]], [1, 0, 0, 1, 0], 'a hybrid wait whose spin reached its bound')
    t.is(d[1], 1, 'the sleep after the spin ended with the read, which completed in its call')
    t.is(read.bytesRead, 4096)
    t.true(read.ok, 'the held read brought the device bytes')
    t.is(await c.exited, 0, c.err())
  } finally {
    f.release()
    c.child.kill()
  }
}, true)

testIf(diskReason(), 'hybrid wait: an event the loop has not polled yet (a signal) ends a lone disk read\'s wait at once, before the read completes; the read is delivered by the loop', async (t) => {
  const c = child(patterned(), 'signal', { ODIRECT_WAIT_HYBRID: '1', ODIRECT_RW_WAIT_DISK_MS: '120000', ODIRECT_WAIT_HYBRID_MAX_US: '60000000' })
  const ready = parse(await c.line('ready'))
  c.child.stdin?.write('go\n')
  if (ready.backend !== 'io_uring' || ready.direct !== true) {
    t.is(await c.exited, 0, c.err())
    return t.log(`backend ${ready.backend}, direct ${ready.direct}: no in-call disk wait to observe`)
  }
  const returned = parse(await c.line('returned'))
  const read = parse(await c.line('read '))
  t.is(await c.exited, 0, c.err())
  const d = delta(returned.waitStats, returned.before ?? [])
  t.log(`waitStats deltas over the read's call ${JSON.stringify(d)}, order ${JSON.stringify(read.order)}`)
  t.is(d[TRIES], 1)
  t.is(d[HYBRID], 1, 'a hybrid wait')
  t.is(d[BOUNDED], 0, 'not spun to its bound')
  t.is(d[LATE] + d[SPUN], 1, 'ended in its sleep or its spin')
  t.is(d[LOOP_ENDED], 1, 'by the loop\'s event')
  t.is(read.order?.[0], 'returned', 'the call returned before the handler ran (and before the read settled)')
  t.is(read.bytesRead, 4096)
  t.true(read.ok)
}, true)
