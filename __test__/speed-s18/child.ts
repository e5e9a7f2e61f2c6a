// Child of speed-s18-seq.spec.ts (a process of its own: an ava worker's IPC channel is an event
// source of its loop, and the in-call disk wait looks at the loop):
//   node --import @oxc-node/core/register child.ts <device> delivery
// - delivery: four reads of one loop device staged together (with a signal: none is lone) and
//   submitted; the JS thread stays in this macrotask until the device has completed all four
//   (its /sys/block/<dev>/stat read count, and nothing in flight there), so one wake-up
//   delivers them together. The
//   continuation of each starts a lone read (no signal) while that delivery is under way. Prints
//   `done <json>`: the engine's counters' change over the continuations' reads (callStats[0]:
//   reads completed inside their own call; waitStats[0]: in-call waits; waitStats[8]: lone
//   disk reads that did not wait because other completions were being delivered) and whether
//   every read brought the device's bytes.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { open } from '../../dist/index.js'
import { getEngine } from '../../dist/src/engine.js'

const [device, scenario] = process.argv.slice(2) as [string, string]
const UNIT = 4096
/** Far apart, so that the block layer merges none of them into one request. */
const GAP = 256 * 1024
const counters = (): { waitStats: number[]; callStats: number[] } => ({ waitStats: getEngine().native.waitStats, callStats: getEngine().native.callStats })
const stat = path.join('/sys/block', path.basename(device), 'stat')
const inflight = path.join('/sys/block', path.basename(device), 'inflight')
/** Read requests the device completed so far (field 1 of its stat). */
const readsDone = (): number => Number(fs.readFileSync(stat, 'utf8').trim().split(/\s+/)[0])
/** Nothing in flight at the device (a reader of its own, e.g. udev's probe, counts too). */
const idle = (): boolean => fs.readFileSync(inflight, 'utf8').trim().split(/\s+/).every((x) => x === '0')

if (scenario === 'delivery') {
  const fh = await open(device, 'r', { backend: 'io_uring' })
  const bufs = [0, 1, 2, 3].map(() => fh.alloc(UNIT))
  // The engine and its ring exist and have read once.
  await fh.read(bufs[0] as Buffer, 0, UNIT, 0)
  const ac = new AbortController()
  const done0 = readsDone()
  const first = bufs.map((b, i) => fh.read(b, { position: (i + 1) * GAP, signal: ac.signal }))
  getEngine().native.flush()
  // The JS thread waits here, in this macrotask, for the device's own count of the four.
  while (readsDone() < done0 + 4 || !idle()) {
    /* spin: the event is the device's counter */
  }
  let before: ReturnType<typeof counters> | undefined
  const second = first.map((p, i) =>
    p.then(() => {
      before ??= counters()
      return fh.read(bufs[i] as Buffer, { position: (i + 5) * GAP })
    }),
  )
  const results = await Promise.all(second)
  const after = counters()
  const b = before as ReturnType<typeof counters>
  const ok = results.every((r) => r.bytesRead === UNIT) && bufs.every((x, i) => x.every((v) => v === ((i + 5) * GAP / UNIT) % 251))
  process.stdout.write(
    `done ${JSON.stringify({
      doneInCall: (after.callStats[0] ?? NaN) - (b.callStats[0] ?? NaN),
      waits: (after.waitStats[0] ?? NaN) - (b.waitStats[0] ?? NaN),
      deliverySkips: (after.waitStats[8] ?? NaN) - (b.waitStats[8] ?? NaN),
      ok,
    })}\n`,
  )
  await fh.close()
}
