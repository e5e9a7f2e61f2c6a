// adversary-s20b.spec (run under a finite RLIMIT_MEMLOCK, without CAP_IPC_LOCK): this thread
// writes BUFS 64 KiB fh.alloc buffers twice each (the automatic table's case), keeps them, then a
// worker registers 48 x 64 KiB with fh.registerBuffers. Prints one JSON line:
// { auto: callStats[8..10] of this thread, worker: 'ok' or the worker's error code }.
'use strict'
const path = require('node:path')
const { Worker } = require('node:worker_threads')
const dist = path.join(__dirname, '..', '..', 'dist')
const { open } = require(path.join(dist, 'index.js'))
const { getEngine } = require(path.join(dist, 'src', 'engine.js'))
const [file, other, bufs] = process.argv.slice(2)
;(async () => {
  const fh = await open(file, 'w+')
  const K = 64 * 1024
  const held = Array.from({ length: Number(bufs) }, (_, i) => fh.alloc(K).fill(i & 0xff))
  const ops = held.map((buffer, i) => ({ buffer, position: i * K }))
  for (let k = 0; k < 2; k++) await fh.writeMany(ops)
  const auto = getEngine().native.callStats.slice(8, 11)
  const w = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads')
    const { open } = require(workerData.index)
    ;(async () => {
      const fh = await open(workerData.other, 'w+')
      try { fh.registerBuffers(48, 65536).unregister(); parentPort.postMessage('ok') } catch (e) { parentPort.postMessage(e.code || String(e)) }
      await fh.close()
    })()`,
    { eval: true, workerData: { index: path.join(dist, 'index.js'), other } },
  )
  const worker = await new Promise((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
  })
  await w.terminate()
  process.stdout.write(JSON.stringify({ auto, worker, backend: fh.backend, kept: held.length }) + '\n')
  await fh.close()
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
