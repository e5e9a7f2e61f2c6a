// Worker-thread body for __test__/workers.spec.ts (plain CommonJS so any runtime's worker can run
// it as is). workerData: { dist, mode, file, seed, rounds, untilStopped, backend, reads, size, spin }.
//   mode 'io':        rounds of write + read back + verify on its own file (with untilStopped: on
//                     until the parent posts 'stop'); posts { done, verified, rounds }.
//   mode 'terminate': starts `reads` O_DIRECT reads of `size` bytes, lets one event-loop turn pass
//                     (so they were flushed to the backend), posts { inflight, fd }, waits for the
//                     parent's 'go' (sent once the parent saw the reads in the kernel), posts
//                     { going }, then (spin) blocks its JS thread or (idle) waits; the parent
//                     calls worker.terminate().
//   mode 'exit':      as 'terminate', but on 'go' calls process.exit(7) inside the worker.
'use strict'
const { parentPort, workerData } = require('node:worker_threads')
const crypto = require('node:crypto')
const od = require(workerData.dist)

const KiB = 1024

function pattern(size, seed) {
  const b = new Uint8Array(size)
  const dv = new DataView(b.buffer)
  for (let i = 0; i + 4 <= size; i += 4) dv.setUint32(i, (Math.imul(i + seed, 2654435761) ^ seed) >>> 0, true)
  return b
}

async function io() {
  const { file, seed, rounds, backend } = workerData
  const fh = await od.open(file, 'w+', { backend })
  let verified = 0
  try {
    const block = 64 * KiB
    const blocks = 16
    // At least `rounds` rounds, then on until the parent posts 'stop' (if it said it would).
    let stopped = !workerData.untilStopped
    const onMessage = (m) => {
      if (m === 'stop') stopped = true
    }
    if (!stopped) parentPort.on('message', onMessage)
    let r = 0
    for (; r < rounds || !stopped; r++) {
      const src = Array.from({ length: blocks }, (_, i) => {
        const b = fh.alloc(block)
        b.set(pattern(block, seed * 1000 + r * blocks + i))
        return b
      })
      await Promise.all(src.map((b, i) => fh.write(b, { position: i * block })))
      const dst = src.map(() => fh.alloc(block))
      await Promise.all(dst.map((b, i) => fh.read(b, { position: i * block })))
      for (let i = 0; i < blocks; i++) {
        const a = crypto.createHash('sha256').update(src[i]).digest('hex')
        const b = crypto.createHash('sha256').update(dst[i]).digest('hex')
        if (a !== b) throw new Error(`worker ${seed}: round ${r} block ${i} differs after read back`)
        verified++
      }
      // Leave the CPU to the others between rounds when running open-ended (2 cores in CI).
      if (workerData.untilStopped) await new Promise((resolve) => setTimeout(resolve, 10))
    }
    // The last round stays on disk for the parent to check: block i holds pattern(seed*1000 + (r-1)*16 + i).
    parentPort.off('message', onMessage)
    parentPort.postMessage({ done: true, verified, rounds: r, backend: fh.backend })
  } finally {
    await fh.close()
  }
}

async function inflight(then) {
  const { file, reads, backend } = workerData
  const fh = await od.open(file, 'r', { backend })
  const size = workerData.size || 64 * KiB
  const pending = []
  for (let i = 0; i < reads; i++) pending.push(fh.read(fh.alloc(size), { position: i * size }).catch(() => undefined))
  // Let the event loop turn once, so the per-turn flush has handed the reads to the backend:
  // otherwise the worker could die before any op reached the kernel, and the test would prove nothing.
  await new Promise((resolve) => setImmediate(resolve))
  then(fh.inflight, pending, fh.fd)
}

/** After reporting, wait for the parent's 'go' (it checks the kernel-side count first). */
function afterGo(fn) {
  parentPort.once('message', (m) => {
    if (m === 'go') fn()
  })
}

if (workerData.mode === 'io') {
  io().catch((e) => {
    parentPort.postMessage({ error: String(e && e.stack ? e.stack : e) })
  })
} else if (workerData.mode === 'terminate') {
  inflight((n, _pending, fd) => {
    parentPort.postMessage({ inflight: n, fd })
    afterGo(() => {
      parentPort.postMessage({ going: true })
      if (workerData.spin) {
        // Block this JS thread: completions can no longer be delivered to it.
        for (;;) {
          /* terminate() interrupts this */
        }
      }
    })
  }).catch((e) => parentPort.postMessage({ error: String(e && e.stack ? e.stack : e) }))
} else if (workerData.mode === 'exit') {
  inflight((n, _pending, fd) => {
    parentPort.postMessage({ inflight: n, fd })
    afterGo(() => {
      parentPort.postMessage({ going: true })
      process.exit(7)
    })
  }).catch((e) => parentPort.postMessage({ error: String(e && e.stack ? e.stack : e) }))
} else {
  throw new Error(`unknown mode ${workerData.mode}`)
}
