// Child of adversary-s13.spec.ts (Node, Bun, Deno): worker threads that die in the middle of
// their writes, by an uncaught exception (thrown at once after the writes are started, or from
// the first write's callback) or by process.exit() inside the worker. Each worker writes its own
// 64 KiB blocks (block i of worker w: bytes w * 16 + i + 1) to its own region of one file, from
// fh.alloc memory that its death frees. The parent then checks every block: whole or untouched
// (zeros), never other bytes (memory freed, reused and written while the kernel still read it),
// and that its own I/O is right and its descriptors are back.
// argv: <odirect module> <file> <mode: throw | throw-in-callback | exit> <workers>
// Prints one line: RESULT { ended, bad, written (whole blocks), fdsBefore, fdsAfter, mainOk }.
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

const [mod, file, mode, count] = process.argv.slice(2)
const N = Number(count)
const BLOCKS = 16
const BLOCK = 64 * 1024
const od = createRequire(import.meta.url)(mod)
const fds = () => fs.readdirSync('/proc/self/fd').length

const body = `
const { workerData } = require('node:worker_threads')
const od = require(${JSON.stringify(mod)})
;(async () => {
  const { file, w, mode } = workerData
  const fh = await od.open(file, 'r+')
  const ps = []
  for (let i = 0; i < ${BLOCKS}; i++) {
    const b = fh.alloc(${BLOCK}).fill(w * 16 + i + 1)
    ps.push(fh.write(b, 0, ${BLOCK}, (w * ${BLOCKS} + i) * ${BLOCK}))
  }
  if (mode === 'throw') throw new Error('worker dies with its writes in flight')
  if (mode === 'exit') process.exit(3)
  ps[0].then(() => {
    throw new Error('worker dies in a completion callback')
  })
})()
`
const workerFile = `${file}.worker.cjs`
fs.writeFileSync(workerFile, body)

fs.writeFileSync(file, Buffer.alloc(N * BLOCKS * BLOCK))
// The main thread's engine (its ring and eventfd) and a warm-up worker (the runtime's own
// per-worker descriptors) are made before the count.
const warm = await od.open(file, 'r')
await warm.read(warm.alloc(BLOCK), 0, BLOCK, 0)
await warm.close()
await new Promise((resolve) => {
  const w = new Worker(workerFile, { workerData: { file, w: 0, mode: 'exit' } })
  w.on('error', () => undefined)
  w.on('exit', resolve)
})
const fdsBefore = fds()
let ended = 0
for (let w = 0; w < N; w++) {
  await new Promise((resolve) => {
    const worker = new Worker(workerFile, { workerData: { file, w, mode } })
    worker.on('error', () => undefined) // the uncaught exception: expected
    worker.on('exit', () => {
      ended++
      resolve()
    })
  })
}
// Verified I/O on the main thread after the deaths.
const fh = await od.open(file, 'r')
const back = fh.alloc(N * BLOCKS * BLOCK)
await fh.read(back, 0, back.length, 0)
const bad = []
let written = 0
for (let w = 0; w < N; w++) {
  for (let i = 0; i < BLOCKS; i++) {
    const at = (w * BLOCKS + i) * BLOCK
    const blk = back.subarray(at, at + BLOCK)
    const want = (w * 16 + i + 1) & 0xff
    if (blk.every((x) => x === want)) written++
    else if (!blk.every((x) => x === 0)) bad.push(`worker ${w} block ${i}: ${blk[0]}..${blk[BLOCK - 1]}`)
  }
}
const check = Buffer.alloc(BLOCK, 0x5a)
const m = fh.alloc(BLOCK)
const g = await od.open(`${file}.main`, 'w+')
await g.write(m.fill(0x5a), 0, BLOCK, 0)
await g.read(m.fill(0), 0, BLOCK, 0)
const mainOk = m.equals(check)
await g.close()
await fh.close()
fs.rmSync(workerFile, { force: true })
fs.rmSync(`${file}.main`, { force: true })
console.log('RESULT ' + JSON.stringify({ ended, bad, written, fdsBefore, fdsAfter: fds(), mainOk }))
