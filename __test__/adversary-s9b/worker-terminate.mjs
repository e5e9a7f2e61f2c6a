// Run by __test__/adversary-s9b.spec.ts: workers read a file with default-mode (hand-over)
// streams, Node and web, keeping every chunk, and are terminated mid-read (reads in flight, chunks
// alive in the worker); then this thread reads the file with streams over the freed memory and
// checks every byte, and the chunks a worker posted before it died. Prints one JSON line.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Worker } from 'node:worker_threads'
const od = await import(process.env.OD_DIST)
const dir = fs.mkdtempSync('/var/tmp/odirect-adv-s9b-wt-')
const K = 65536
const data = Buffer.alloc(64 * K)
for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i)
const file = path.join(dir, 'f')
fs.writeFileSync(file, data)
const src = `
const { parentPort, workerData } = require('node:worker_threads')
import(workerData.dist).then(async (od) => {
  const kept = []
  let n = 0
  const chunks = workerData.web
    ? (async function* () { const r = od.readableWebStream(workerData.file, { chunkSize: ${K} }).getReader(); for (;;) { const { value, done } = await r.read(); if (done) return; yield value } })()
    : od.createReadStream(workerData.file, { chunkSize: ${K}, readAhead: 8 })
  for await (const c of chunks) {
    kept.push(c)
    if (++n === workerData.at) parentPort.postMessage({ n, chunk: c })
  }
  parentPort.postMessage({ n, done: true })
})`
const out = { posted: 0, posts: 'ok' }
for (let round = 0; round < 8; round++) {
  const w = new Worker(src, { eval: true, workerData: { dist: process.env.OD_DIST, file, at: 3 + round, web: round % 2 === 1 } })
  const m = await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject) })
  await w.terminate()
  if (m.done) throw new Error('the worker finished before it was terminated')
  const c = Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength)
  if (!c.equals(data.subarray((m.n - 1) * K, m.n * K))) out.posts = `round ${round}: the posted chunk differs`
  out.posted++
}
globalThis.gc?.()
for (let round = 0; round < 3; round++) {
  const parts = []
  for await (const c of od.createReadStream(file, { chunkSize: K, readAhead: 8 })) parts.push(c)
  out[`after${round}`] = Buffer.concat(parts).equals(data) ? 'ok' : 'differs'
  globalThis.gc?.()
}
fs.rmSync(dir, { recursive: true, force: true })
console.log(JSON.stringify(out))
