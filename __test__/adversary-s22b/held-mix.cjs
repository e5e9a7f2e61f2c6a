// adversary-s22b: one engine with a FUSE file whose reads the server holds and a tmpfs file, run on
// the main thread or in a worker (there the FUSE ops go to the may-block ring's own thread). Lone
// reads (one with a signal aborted while held, one with a 50 ms timeout), a second handle closed
// while its read is held, a typed readMany and an array readMany on the FUSE file, and tmpfs
// writes/reads that must answer meanwhile. `ready()` says the FUSE reads are out and resolves
// once the test let the server answer. Returns what every op answered (codes, bytes as base64).
'use strict'
const U = 4096

const settle = (p) =>
  p.then(
    (v) => (v && typeof v === 'object' && 'bytesRead' in v ? v.bytesRead : Array.isArray(v) || ArrayBuffer.isView(v) ? Array.from(v) : v === undefined ? 'ok' : v),
    (e) => (e && e.results ? { code: e.code, results: e.results.map((r) => (typeof r === 'number' ? r : r.code)) } : e.code || String(e)),
  )

async function run(od, files, ready) {
  const out = {}
  const fh = await od.open(files.fuse, 'r', { backend: 'io_uring' })
  const fh2 = await od.open(files.fuse, 'r', { backend: 'io_uring' })
  const th = await od.open(files.tmp, 'r+', { backend: 'io_uring' })
  const m = fh.alloc(40 * U).fill(0)
  const ac = new AbortController()
  const lone = [0, 1, 2, 3, 4, 5].map((k) => settle(fh.read(m, { offset: k * U, length: U, position: k * U, ...(k === 1 ? { signal: ac.signal } : {}), ...(k === 2 ? { timeout: 50 } : {}) })))
  const typed = settle(fh.readMany({ memory: m, offsets: new Uint32Array(8).map((_, i) => (8 + i) * U), lengths: new Uint32Array(8).fill(U), positions: new Float64Array(8).map((_, i) => (100 + i) * U) }, { window: 4 }))
  const arr = settle(fh.readMany([0, 1, 2, 3].map((i) => ({ buffer: m.subarray((20 + i) * U, (21 + i) * U), position: (200 + i) * U }))))
  const m2 = fh2.alloc(U).fill(0)
  const other = settle(fh2.read(m2, 0, U, 300 * U))
  // tmpfs ops on the same engine answer while the FUSE reads are held
  const t = th.alloc(4 * U).fill(7)
  out.tmpWrite = (await th.write(t, 0, 4 * U, 0)).bytesWritten
  const back = th.alloc(4 * U).fill(0)
  out.tmpRead = (await th.read(back, 0, 4 * U, 0)).bytesRead
  out.tmpOk = Buffer.from(back).every((b) => b === 7)
  out.tmpMany = await th.writeMany([0, 1].map((i) => ({ buffer: t.subarray(i * U, (i + 1) * U), position: (8 + i) * U })), { datasync: true })
  ac.abort()
  const closing = settle(fh2.close())
  await ready()
  out.lone = await Promise.all(lone)
  out.typed = await typed
  out.arr = await arr
  out.other = await other
  out.closing = await closing
  out.mem = Buffer.from(m).toString('base64')
  out.mem2 = Buffer.from(m2).toString('base64')
  await fh.close()
  await th.close()
  return out
}

module.exports = { run }

const { isMainThread, parentPort, workerData } = require('node:worker_threads')
if (!isMainThread && workerData && workerData.heldMix) {
  const od = require(workerData.dist)
  const ready = () => {
    parentPort.postMessage('held')
    return new Promise((resolve) => parentPort.once('message', resolve))
  }
  run(od, workerData, ready).then(
    (out) => parentPort.postMessage({ out }),
    (e) => parentPort.postMessage({ error: String(e && e.stack) }),
  )
}
