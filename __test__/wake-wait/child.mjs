// The wake-up wait's child (see ../wake-wait.spec.ts): opens a file on a block device with
// O_DIRECT (so that its engine knows the CPUs of that device's interrupts), fills a FIFO, then
// puts `writes` 4 KiB writes to it in flight at once (each waits for a free pipe buffer), says
// `ready`, and once told on stdin takes one 4 KiB buffer out of the FIFO at a time: each frees
// room for one write, so each wake-up of the loop finds one completion with the others still in
// flight; `single` times, each after the write the last one let through has settled, then it
// drains the FIFO. Prints `done` with what the
// writes and the FIFO gave and its engine's waitStats deltas, then waits for stdin again before
// it closes (so that the parent's trace holds only the writes).
//
// argv[2]: JSON { disk, fifo, writes, single }
import * as fs from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const od = require('../../dist/index.js')
const { getEngine } = require('../../dist/src/engine.js')
const cfg = JSON.parse(process.argv[2])
const BLOCK = 4096

const disk = await od.open(cfg.disk, 'r')
// Our own reader keeps the FIFO open (no open waits for a peer) and drains it without blocking
// the thread (the writes complete through it).
const rd = fs.openSync(cfg.fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
const fill = fs.openSync(cfg.fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
let filled = 0
for (;;) {
  try {
    filled += fs.writeSync(fill, Buffer.alloc(BLOCK, 0))
  } catch (e) {
    if (e.code === 'EAGAIN') break
    throw e
  }
}
fs.closeSync(fill)
const fh = await od.open(cfg.fifo, 'r+', { backend: 'io_uring', direct: 'off' })
const w0 = getEngine().native.waitStats
const writes = []
// Settled writes so far, and who waits for the next one (the single takes wait on that event).
let done = 0
let onSettle = () => {}
const settledOne = () => {
  done++
  onSettle()
}
for (let i = 0; i < cfg.writes; i++) {
  const w = fh.write(Buffer.alloc(BLOCK, 1 + (i % 250)), 0, BLOCK, null)
  w.then(settledOne, settledOne)
  writes.push(w)
}
const nextSettle = (seen) => (done > seen ? Promise.resolve() : new Promise((resolve) => (onSettle = resolve)))
process.stdout.write(`ready ${fh.backend} ${disk.direct} ${getEngine().native.inflight}\n`)
await new Promise((resolve) => process.stdin.once('data', resolve))
const counts = new Array(256).fill(0)
let got = 0
const take = (n) => {
  const b = Buffer.alloc(n)
  let k = 0
  try {
    k = fs.readSync(rd, b, 0, n, null)
  } catch (e) {
    if (e.code !== 'EAGAIN') throw e
  }
  for (let i = 0; i < k; i++) counts[b[i]]++
  got += k
  return k
}
for (let i = 0; i < cfg.single; i++) {
  const seen = done
  take(BLOCK)
  // The room freed lets one write complete: wait for it (its wake-up), then free the next.
  await nextSettle(seen)
}
let settled = 0
const all = Promise.all(writes).finally(() => (settled = 1))
const total = filled + cfg.writes * BLOCK
while (got < total || !settled) {
  // An empty FIFO with writes pending: the next one to settle has put its bytes in it; with none
  // pending, what is left is `all` settling.
  if (take(1 << 16) === 0) await (done < cfg.writes ? nextSettle(done) : all)
}
const results = await all
const w1 = getEngine().native.waitStats
let right = results.filter((r) => r.bytesWritten === BLOCK).length
for (let v = 1; v <= 250; v++) {
  const want = BLOCK * Math.floor(cfg.writes / 250 + (v - 1 < cfg.writes % 250 ? 1 : 0))
  if (counts[v] !== want) right = -1
}
if (counts[0] !== filled) right = -1
process.stdout.write(`done ${JSON.stringify({ right, waits: w1[6] - w0[6], found: w1[7] - w0[7] })}\n`)
await new Promise((resolve) => process.stdin.once('data', resolve))
await fh.close()
await disk.close()
fs.closeSync(rd)
process.stdin.destroy()
