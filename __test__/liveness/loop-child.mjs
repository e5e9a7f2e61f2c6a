// Child of __test__/liveness.spec.ts, run by Node 20, Node 22, Bun and Deno alike (plain ESM, the
// package loaded as a CommonJS consumer loads it). It starts I/O that the kernel cannot finish
// (replies held by faultfs, or a FIFO nobody writes to) and counts timer ticks that fire while
// all of it is still pending: with the JS thread asleep in the kernel there would be none. Once
// enough ticks have fired it lets the I/O finish itself (removes the hold file / writes to the
// FIFO) and prints what it saw as one JSON line.
//
// argv[2]: JSON { mode: 'fuse' | 'fifo', file, backend, n?, statsFile?, holdFile?, minHeld? }
import * as fs from 'node:fs'
import { createRequire } from 'node:module'

const od = createRequire(import.meta.url)('../../dist/index.js')
const cfg = JSON.parse(process.argv[2])
const WANT_TICKS = 20

const heldNow = () => {
  const m = /held=(\d+)/.exec(fs.readFileSync(cfg.statsFile, 'utf8'))
  return m ? Number(m[1]) : 0
}

let fifoWriter
const fh =
  cfg.mode === 'fuse'
    ? await od.open(cfg.file, 'r', { backend: cfg.backend })
    : // A read-write descriptor of our own keeps the FIFO open, so open() and read() do not wait
      // for a writer at open time, and lets us write the data once the ticks are counted.
      ((fifoWriter = fs.openSync(cfg.file, 'r+')), await od.open(cfg.file, 'r', { backend: cfg.backend, direct: 'off' }))

const n = cfg.mode === 'fuse' ? cfg.n : 1
let settled = 0
const reads = []
for (let i = 0; i < n; i++) {
  const p = cfg.mode === 'fuse' ? fh.read(fh.alloc(4096), 0, 4096, i * 4096) : fh.read(Buffer.alloc(64), 0, 64, null)
  reads.push(
    p.then((r) => {
      settled++
      return r
    }),
  )
}

let ticks = 0
let maxHeld = 0
await new Promise((resolve) => {
  const iv = setInterval(() => {
    let pendingInKernel = settled === 0
    if (cfg.mode === 'fuse') {
      const h = heldNow()
      maxHeld = Math.max(maxHeld, h)
      pendingInKernel &&= h >= cfg.minHeld
    }
    if (pendingInKernel) ticks++
    if (ticks >= WANT_TICKS || settled === n) {
      clearInterval(iv)
      resolve()
    }
  }, 1)
})
if (cfg.mode === 'fuse') fs.rmSync(cfg.holdFile, { force: true })
else fs.writeSync(fifoWriter, 'liveness')
const results = await Promise.all(reads)
const sums = results.map((r) => {
  let s = 0
  for (let i = 0; i < r.bytesRead; i++) s += r.buffer[i]
  return [r.bytesRead, s]
})
await fh.close()
if (fifoWriter !== undefined) fs.closeSync(fifoWriter)
console.log(JSON.stringify({ ticks, maxHeld, sums, backend: fh.backend }))
