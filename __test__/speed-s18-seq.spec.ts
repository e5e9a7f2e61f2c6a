// Large sequential I/O at the device's pace (issue 19 item 1, eighteenth session). Counted, never
// timed.
//
// A lone disk read or write waits for its completion inside its own call (engine.rs DiskWait),
// except while other completions are being delivered to JS: the continuations of those settled
// promises are about to start ops of their own on this thread, and a wait there held them back
// until the op completed, and the next one alone again after it (a per-op loop at depth 4 ran
// at depth 1 after every delivery that carried all four of its completions). Counted by the
// engine: callStats[0] (ops completed inside their own call), waitStats[8] (lone disk ops that
// did not wait because other completions were being delivered); `ODIRECT_RW_WAIT_DISK_DELIVERY=0`
// is the old behaviour.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childLines } from './helpers/child-lines.js'
import { isSkip, loopDevice, skipReason } from './helpers/fixtures.js'
import { testIf } from './helpers/skips.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(HERE, 'speed-s18', 'child.ts')
const UNIT = 4096
const LOOP_REASON = skipReason(['root', 'loop', 'cmd:blockdev'])
if (LOOP_REASON) console.log(`speed-s18-seq.spec: loop-device cases skipped: ${LOOP_REASON}`)

interface Delivery {
  doneInCall: number
  waits: number
  deliverySkips: number
  ok: boolean
}

/** The child's delivery scenario on `device` with `env`; its `done` line. */
async function delivery(device: string, env: Record<string, string>): Promise<Delivery> {
  const c = childLines(process.execPath, ['--import', '@oxc-node/core/register', CHILD, device, 'delivery'], { ...process.env, ...env })
  const line = await c.line('done ')
  if ((await c.exited) !== 0) throw new Error(`child failed: ${c.err()}`)
  return JSON.parse(line.slice(5)) as Delivery
}

testIf(LOOP_REASON, 'a lone disk read started while four completions are delivered does not wait in its call; the reads started beside it go to the device with it', async (t) => {
  const dev = loopDevice(512, 4)
  if (isSkip(dev)) return t.fail(dev.skip)
  try {
    // Each 4 KiB block of the device holds its index mod 251.
    const fd = fs.openSync(dev.backingFile, 'r+')
    const blk = Buffer.alloc(UNIT)
    for (let o = 0; o < dev.sizeBytes; o += UNIT) fs.writeSync(fd, blk.fill((o / UNIT) % 251), 0, UNIT, o)
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    const now = await delivery(dev.device, {})
    t.log(`default: ${JSON.stringify(now)}`)
    t.true(now.ok, 'every read brought the device bytes')
    t.true(now.deliverySkips >= 1, 'the first continuation read, alone in flight, skipped the in-call wait')
    t.true(now.doneInCall <= 1, 'no read started during the delivery completed inside its call')
    // The old behaviour: the first continuation's read waits in its call and completes there
    // (on a quiet machine so do the next ones, each alone in flight by then: 4 of 4; under load
    // the first wait can use up the turn's wait budget, and the rest go to the loop: 1 of 4 was
    // seen in CI at load ~10).
    const old = await delivery(dev.device, { ODIRECT_RW_WAIT_DISK_DELIVERY: '0' })
    t.log(`ODIRECT_RW_WAIT_DISK_DELIVERY=0: ${JSON.stringify(old)}`)
    t.true(old.ok)
    t.is(old.deliverySkips, 0)
    t.true(old.waits >= 1 && old.doneInCall >= 1, 'a read started during the delivery waited and completed in its call')
  } finally {
    dev.cleanup()
  }
}, true)
