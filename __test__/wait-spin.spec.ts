// ODIRECT_WAIT_SPIN_US (opt-in, crates/core/src/io/ring.rs `submit_and_wait`): a lone op's
// in-call wait first spins in user space on the ring's flags, then posts the completion with a
// GETEVENTS that does not sleep; without it the op is submitted and waited for in one
// io_uring_enter (to_submit >= 1, min_complete 1). Observed through the kernel's
// syscalls:sys_enter_io_uring_enter tracepoint in a trace instance of this test's own, filtered to
// a child process (the switch is read when the ring is made) that reads a file on a block device
// one op at a time: with the spin no enter both submits and waits (whatever the load: a spin
// that runs out still submits first and sleeps in a second enter), while the ops still complete
// in their call (waitStats) with the file's bytes; without it the in-call waits submit and wait
// in one enter.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.js'
import { enterCalls, enterTraceReason, traceEvent } from './helpers/tracefs.ts'

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist')
const dir = fs.mkdtempSync('/var/tmp/odirect-wait-spin-')
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }))

const READS = 64

/** Runs `fn` with io_uring_enter's entry traced for `pid`; returns each call's (to_submit, min_complete). */
async function enters(pid: number, fn: () => Promise<void>): Promise<[number, number][]> {
  const trace = await traceEvent('syscalls/sys_enter_io_uring_enter', pid, fn)
  // e.g. `sys_io_uring_enter(fd: 0x14, to_submit: 1, min_complete: 1, flags: 9, ...)`
  return enterCalls(trace)
}

function reason(): string | undefined {
  const why = enterTraceReason()
  if (why !== undefined) return why
  // A lone op on tmpfs is made inline and never waits on a device.
  if (fs.statfsSync(dir).type === 0x01021994) return '/var/tmp is a tmpfs'
  return undefined
}
const WHY = reason()

// The child: opens the file, says `ready` (the ring exists), reads READS blocks one at a time once
// told to, prints how many came back right and its engine's waitStats deltas, and closes the file
// once told to again.
const SCRIPT = `
  const { open } = require(${JSON.stringify(path.join(ROOT, 'index.js'))})
  const { getEngine } = require(${JSON.stringify(path.join(ROOT, 'src', 'engine.js'))})
  ;(async () => {
    const fh = await open(process.argv[1], 'r', { backend: 'io_uring' })
    const buf = fh.alloc(4096)
    await fh.read(buf, { position: 0 })
    process.stdout.write('ready ' + fh.backend + ' ' + fh.direct + '\\n')
    await new Promise((resolve) => process.stdin.once('data', resolve))
    const w0 = getEngine().native.waitStats
    let right = 0
    for (let i = 0; i < ${READS}; i++) {
      const { bytesRead } = await fh.read(buf, { position: i * 4096 })
      if (bytesRead === 4096 && buf.every((x) => x === (i & 255))) right++
    }
    const w1 = getEngine().native.waitStats
    process.stdout.write('done ' + JSON.stringify({ right, waits: w1[0] - w0[0], found: w1[1] - w0[1], rewaits: w1[5] - w0[5] }) + '\\n')
    // Closed once the trace has stopped (told on stdin), so that only the reads are in it.
    await new Promise((resolve) => process.stdin.once('data', resolve))
    await fh.close()
    process.stdin.destroy()
  })()`

async function run(t: import('ava').ExecutionContext, env: Record<string, string>): Promise<{ calls: [number, number][]; done: { right: number; waits: number; found: number; rewaits: number } } | undefined> {
  const file = path.join(dir, 'data.bin')
  if (!fs.existsSync(file)) {
    const b = Buffer.alloc(READS * 4096)
    for (let i = 0; i < READS; i++) b.fill(i & 255, i * 4096, (i + 1) * 4096)
    fs.writeFileSync(file, b)
  }
  const { child, line, exited, err } = childLines(process.execPath, ['-e', SCRIPT, file], { ...process.env, ...env }, true)
  const ready = (await line('ready')).split(' ')
  if (ready[1] !== 'io_uring' || ready[2] !== 'true') {
    child.stdin?.end('go\n')
    t.is(await exited, 0, err())
    t.log(`backend ${ready[1]}, direct ${ready[2]}: no in-call disk wait to observe`)
    return undefined
  }
  let done = ''
  const calls = await enters(child.pid as number, async () => {
    child.stdin?.write('go\n')
    done = await line('done')
  })
  child.stdin?.write('end\n')
  t.is(await exited, 0, err())
  return { calls, done: JSON.parse(done.slice(5)) as { right: number; waits: number; found: number; rewaits: number } }
}

const serial = WHY === undefined ? test.serial : test.skip
if (WHY !== undefined) console.log(`wait-spin.spec: skipped: ${WHY}`)

serial(`ODIRECT_WAIT_SPIN_US: lone disk reads wait in their call with no io_uring_enter that both submits and waits${WHY ? ` (skipped: ${WHY})` : ''}`, async (t) => {
  const r = await run(t, { ODIRECT_WAIT_SPIN_US: '1000' })
  if (r === undefined) return
  t.log(`spin: ${JSON.stringify(r.done)}, enters (to_submit, min_complete): ${JSON.stringify(r.calls)}`)
  t.is(r.done.right, READS, 'every read brought its block')
  t.true(r.done.waits > 0, 'the reads waited in their call')
  t.true(r.done.found > 0, 'and found their completions there')
  t.true(r.calls.filter(([submit]) => submit > 0).length >= READS, 'every read was submitted by an io_uring_enter of the child')
  t.deepEqual(
    r.calls.filter(([submit, min]) => submit > 0 && min > 0),
    [],
    'every submission is an enter of its own (then the spin, then a GETEVENTS)',
  )
})

serial(`without ODIRECT_WAIT_SPIN_US lone disk reads are submitted and waited for in one io_uring_enter${WHY ? ` (skipped: ${WHY})` : ''}`, async (t) => {
  const r = await run(t, { ODIRECT_WAIT_SPIN_US: '0' })
  if (r === undefined) return
  t.log(`no spin: ${JSON.stringify(r.done)}, enters (to_submit, min_complete): ${JSON.stringify(r.calls)}`)
  t.is(r.done.right, READS, 'every read brought its block')
  t.true(r.done.waits > 0, 'the reads waited in their call')
  t.true(r.calls.filter(([submit]) => submit > 0).length >= READS, 'every read was submitted by an io_uring_enter of the child')
  // Each in-call wait is one enter that submits the read (and the loop's watch when it is armed
  // again) and waits for one completion; so is a wait made again after a wake-up of the watch
  // that was only the engine's own eventfd (it arms the watch again).
  t.is(r.calls.filter(([submit, min]) => submit > 0 && min === 1).length, r.done.waits + r.done.rewaits)
})
