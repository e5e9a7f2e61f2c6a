// Deno moves odirect's external ArrayBuffers on transfer (Node copies them, Bun refuses): reads
// held in the kernel (faultfs), their fh.alloc buffers transferred to a worker that drops them
// and closes (freeing them on its thread), then fresh pool memory of the same size is made while
// the reads are still held. None of it may be the memory the kernel will write (the op keeps it),
// and none may change when the reads complete; once they did, that memory is free again.
// argv: <dist/index.js> <file on faultfs>. Lines on stdout: ISSUED, ALLOCATED, RESULT <json>;
// waits for a line on stdin after each of the first two.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const [dist, file] = Deno.args
const od = require(dist)
const N = 16
const SIZE = 64 << 10

const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader()
let pending = ''
async function line() {
  while (!pending.includes('\n')) {
    const { value, done } = await lines.read()
    if (done) throw new Error('stdin closed')
    pending += value
  }
  pending = pending.slice(pending.indexOf('\n') + 1)
}

const fh = await od.open(file, 'r')
const bufs = Array.from({ length: N }, () => fh.alloc(SIZE))
const addrs = new Set(bufs.map((b) => od.addressOf(b)))
const reads = bufs.map((b, i) => fh.read(b, 0, SIZE, i * SIZE).then((r) => ({ ok: true, n: r.bytesRead }), (e) => ({ ok: false, code: e.code })))
console.log('ISSUED')
await line()
const w = new Worker(new URL('./deno-sink.mjs', import.meta.url), { type: 'module' })
await new Promise((resolve) => {
  w.onmessage = resolve
  w.postMessage(bufs.map((b) => b.buffer), bufs.map((b) => b.buffer))
})
const detached = bufs.every((b) => b.byteLength === 0)
bufs.length = 0
const fresh = Array.from({ length: 256 }, () => od.allocAligned(SIZE))
const reused = fresh.filter((b) => addrs.has(od.addressOf(b))).length
console.log('ALLOCATED')
await line()
const settled = await Promise.all(reads)
const changed = fresh.filter((b) => b.some((x) => x !== 0)).length
const after = Array.from({ length: 256 }, () => od.allocAligned(SIZE)).filter((b) => addrs.has(od.addressOf(b))).length
await fh.close()
console.log('RESULT ' + JSON.stringify({ detached, reused, changed, settled, after }))
await lines.cancel()
