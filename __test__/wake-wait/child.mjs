// The wake-up wait's child (see ../wake-wait.spec.ts): opens a file on a block device with
// O_DIRECT (so that its engine knows the CPUs of that device's interrupts), then puts `reads`
// 1-byte reads of a FIFO in flight at once, says `ready`, and once told on stdin feeds the FIFO
// one byte at a time (a read completes per byte: each wake-up of the loop finds one completion
// with the others still in flight), `single` times 20 ms apart, then the rest at once. Prints
// `done` with what the reads brought and its engine's waitStats deltas, then waits for stdin
// again before it closes (so that the parent's trace holds only the reads).
//
// argv[2]: JSON { disk, fifo, reads, single }
import * as fs from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const od = require('../../dist/index.js')
const { getEngine } = require('../../dist/src/engine.js')
const cfg = JSON.parse(process.argv[2])

const disk = await od.open(cfg.disk, 'r')
// A read-write descriptor of our own keeps the FIFO open: neither open nor the reads wait for a
// writer, and it feeds them.
const feed = fs.openSync(cfg.fifo, 'r+')
const fh = await od.open(cfg.fifo, 'r', { backend: 'io_uring', direct: 'off' })
const w0 = getEngine().native.waitStats
const reads = []
for (let i = 0; i < cfg.reads; i++) reads.push(fh.read(Buffer.alloc(1), 0, 1, null))
process.stdout.write(`ready ${fh.backend} ${disk.direct} ${getEngine().native.inflight}\n`)
await new Promise((resolve) => process.stdin.once('data', resolve))
for (let i = 0; i < cfg.single; i++) {
  fs.writeSync(feed, 'x')
  await new Promise((resolve) => setTimeout(resolve, 20))
}
fs.writeSync(feed, 'x'.repeat(cfg.reads - cfg.single))
const got = await Promise.all(reads)
const w1 = getEngine().native.waitStats
const right = got.filter((r) => r.bytesRead === 1 && r.buffer[0] === 0x78).length
process.stdout.write(`done ${JSON.stringify({ right, waits: w1[6] - w0[6], found: w1[7] - w0[7] })}\n`)
await new Promise((resolve) => process.stdin.once('data', resolve))
await fh.close()
await disk.close()
fs.closeSync(feed)
process.stdin.destroy()
