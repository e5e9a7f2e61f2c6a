// The in-call wait of a lone disk op waits like Node's event loop would (the default on Node:
// `engine::DiskWait::Loop`): not when the loop has work (uv_backend_timeout 0: a setImmediate
// pending), at most until the loop's next timer, and no longer than until the loop's epoll
// descriptor is readable (a poll on it is armed in the same ring). Each case runs in a child
// process of its own (an ava worker's IPC channel is an event source of its loop) on a loop
// device over faultfs's file, whose reads faultfs holds where a wait must not end by the read's
// completion; such children run with ODIRECT_RW_WAIT_DISK_MS=120000, so only the loop or a
// timer can end the wait. Counted by the engine (waitStats: [waits, woke with something to
// reap, skipped because the loop had work, ended by a loop event, bounded by a timer, waited
// again after a wake-up of the loop's descriptor that was only the engine's own eventfd or
// left nothing ready]), never by time.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.js'
import { skipReason } from './helpers/fixtures.js'
import { runtimes } from './helpers/runtimes.js'
import { heldDevice } from './helpers/held-device.js'
import { scratchDirs } from './helpers/scratch.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'loop-wait', 'child.ts')
const scratch = scratchDirs('loop-wait')
const REASON = FAULTFS_REASON ?? skipReason(['root', 'loop', 'fuse', 'cargo', 'cmd:umount'])

interface Line {
  waitStats: number[]
  callStats: number[]
  before?: { waitStats: number[]; callStats: number[] }
  bytesRead?: number
  ok?: boolean
  wrong?: number
  immediateRan?: boolean
  readPending?: boolean
}
const parse = (l: string): Line => JSON.parse(l.slice(l.indexOf(' ') + 1)) as Line

const hd = heldDevice(REASON)

function child(scenario: string, target: string, env: Record<string, string> = {}): ReturnType<typeof childLines> {
  return childLines(process.execPath, ['--import', '@oxc-node/core/register', CHILD, target, scenario], { ...process.env, ...env }, scenario === 'event' || scenario === 'timer')
}

const serial = (title: string, fn: Parameters<typeof test>[1]): void => testIf(REASON, title, fn, true)
if (REASON) console.log(`loop-wait.spec: skipped: ${REASON}`)

serial('a lone read held by FUSE ends its in-call wait when another descriptor of the loop becomes readable: that callback runs, the read completes when released', async (t) => {
  const f = hd.fx()
  const c = child('event', hd.device(), { ODIRECT_RW_WAIT_DISK_MS: '120000' })
  try {
    await c.line('ready')
    await hd.startHeld(c)
    // The child's JS thread sleeps in its read() call: this line is what wakes it.
    c.child.stdin?.write('event\n')
    const returned = parse(await c.line('returned'))
    const event = parse(await c.line('event'))
    const started = parse(await c.line('started'))
    const [waits0, , busy0, ended0] = started.before?.waitStats ?? []
    const [waits, found, busy, ended] = returned.waitStats
    t.log(`waitStats before ${JSON.stringify(started.before?.waitStats)}, after the read's call ${JSON.stringify(returned.waitStats)}`)
    t.is(waits - (waits0 ?? NaN), 1, 'the lone read waited in its call')
    t.is(ended - (ended0 ?? NaN), 1, 'the wait ended because the loop had an event')
    t.is(busy - (busy0 ?? NaN), 0)
    t.true(found <= waits)
    t.true(event.readPending, 'the stdin callback ran after the read was started')
    t.is(c.err().includes('read '), false)
    t.is(c.child.stdout?.readableEnded, false)
    f.release()
    const read = parse(await c.line('read '))
    t.is(read.bytesRead, 4096)
    t.true(read.ok, 'the held read brought the file bytes')
    t.deepEqual(read.waitStats.slice(0, 5), returned.waitStats.slice(0, 5), 'no wait after it')
    t.is(await c.exited, 0, c.err())
  } finally {
    f.release()
    c.child.kill()
  }
})

serial('a lone read held by FUSE waits in its call only until the loop\'s next timer is due: the timer fires while the read is held', async (t) => {
  const f = hd.fx()
  const c = child('timer', hd.device(), { ODIRECT_RW_WAIT_DISK_MS: '120000' })
  try {
    await c.line('ready')
    f.hold()
    c.child.stdin?.write('go\n')
    // Printed by the timer's callback: without the bound, the read's call would not return
    // before the 120 s cap (the read stays held until this line is seen).
    const timer = parse(await c.line('timer'))
    t.true(f.stats().held >= 1, 'the read is still held when the timer fires')
    f.release()
    const read = parse(await c.line('read '))
    const started = parse(await c.line('started'))
    // waitStats deltas over the held read: [waits, woke with completions or the loop's watch,
    // loop busy, ended by a loop event, timer-bounded, waited again after a wake by the engine's
    // own eventfd or a loop wake-up that left nothing ready].
    const [waits, , busy, , bounded] = timer.waitStats.map((x, i) => x - (started.waitStats[i] ?? NaN))
    t.log(`waitStats before the held read ${JSON.stringify(started.waitStats)}, at the timer ${JSON.stringify(timer.waitStats)}, after the read ${JSON.stringify(read.waitStats)}`)
    // Its wait ran out at the timer, or ended sooner if another event of the child's loop came
    // first (its module loader's thread posts to the loop as it winds down): either way the read's
    // call returned while the read was held, before the 120 s cap.
    t.deepEqual([waits, busy, bounded], [1, 0, 1], 'the held read waited, bounded by the timer')
    t.is(read.bytesRead, 4096)
    t.true(read.ok)
    t.is(await c.exited, 0, c.err())
  } finally {
    f.release()
    c.child.kill()
  }
})

serial('a lone read does not wait in its call while a setImmediate is pending (the loop has work)', async (t) => {
  const file = path.join(scratch(), 'data')
  fs.writeFileSync(file, Buffer.alloc(64 << 10, 0x5a))
  const c = child('immediate', file)
  const read = parse(await c.line('read '))
  t.is(await c.exited, 0, c.err())
  const [waits, found, busy] = read.waitStats
  t.log(`waitStats ${JSON.stringify(read.waitStats)}`)
  // The child's first read (the engine's start) may have waited; the second had an immediate.
  t.true(busy >= 1, 'the read was skipped because the loop had work')
  t.true(waits <= 1 && found <= waits)
  t.is(read.bytesRead, 4096)
  t.true(read.ok)
})

serial('ordinary disk reads one at a time wait in their call by default, never with ODIRECT_RW_WAIT_DISK=0', async (t) => {
  const file = path.join(scratch(), 'data')
  fs.writeFileSync(file, Buffer.alloc(64 << 10, 0x5a))
  const on = child('plain', file)
  const off = child('plain', file, { ODIRECT_RW_WAIT_DISK: '0' })
  const [a, b] = [parse(await on.line('read ')), parse(await off.line('read '))]
  t.is(await on.exited, 0, on.err())
  t.is(await off.exited, 0, off.err())
  t.log(`default: waitStats ${JSON.stringify(a.waitStats)} callStats ${JSON.stringify(a.callStats)}; =0: ${JSON.stringify(b.waitStats)} ${JSON.stringify(b.callStats)}`)
  t.is(a.wrong, 0)
  t.is(b.wrong, 0)
  // A wait that runs out (a slow moment of the device) leaves its op to the loop: not all.
  t.true(a.waitStats[0] > 0 && a.callStats[0] > 0 && a.callStats[0] <= a.waitStats[0])
  t.deepEqual([b.waitStats[0], b.callStats[0]], [0, 0])
})

for (const [name, argv] of runtimes().filter(([n]) => n !== 'node')) {
  test.serial(`${name}: no loop to ask, so lone disk reads do not wait in their call by default; ODIRECT_RW_WAIT_DISK=1 waits`, async (t) => {
    const file = path.join(scratch(), 'data')
    fs.writeFileSync(file, Buffer.alloc(64 << 10, 0x5a))
    const [cmd, ...pre] = argv as [string, ...string[]]
    const run = (env: Record<string, string>) => childLines(cmd, [...pre, CHILD, file, 'plain'], { ...process.env, ...env })
    const dflt = run({})
    const always = run({ ODIRECT_RW_WAIT_DISK: '1' })
    const [a, b] = [parse(await dflt.line('read ')), parse(await always.line('read '))]
    t.is(await dflt.exited, 0, dflt.err())
    t.is(await always.exited, 0, always.err())
    t.log(`default: waitStats ${JSON.stringify(a.waitStats)}; =1: ${JSON.stringify(b.waitStats)}`)
    t.deepEqual([a.wrong, b.wrong], [0, 0])
    t.deepEqual([a.waitStats[0], a.callStats[0]], [0, 0])
    t.true(b.waitStats[0] > 0 && b.callStats[0] > 0)
  })
}
