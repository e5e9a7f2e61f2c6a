// process.exit() on the main thread while a FUSE server holds reads (live-s22): reads of FILE go
// out from the main thread (WHERE=main) or from a worker (WHERE=worker: on the worker's
// may-block ring, driven by its own thread): a typed readMany of 256 blocks with { window: 64 }
// and 40 lone fh.read calls, more than the server takes at once. Prints 'started' once they are
// all staged; on the stdin line 'exit' calls process.exit(3) on the main thread.
// argv: <dist/index.js> <file> <main|worker>
'use strict'
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads')
const N = 256
const UNIT = 4096

/** Starts the reads on this thread; nothing waits for them. */
async function start(dist, file) {
  const { open } = require(dist)
  const fh = await open(file, 'r')
  const mem = fh.alloc(N * UNIT)
  const lone = fh.alloc(40 * UNIT)
  const ops = {
    memory: mem,
    offsets: new Uint32Array(N).map((_, i) => i * UNIT),
    lengths: new Uint32Array(N).fill(UNIT),
    positions: new Float64Array(N).map((_, i) => i * UNIT),
  }
  fh.readMany(ops, { window: 64 }).catch(() => {})
  for (let i = 0; i < 40; i++) fh.read(lone, i * UNIT, UNIT, i * UNIT).catch(() => {})
}

if (isMainThread) {
  const [dist, file, where] = process.argv.slice(2)
  const lines = require('node:readline').createInterface({ input: process.stdin })
  lines.on('line', (l) => {
    if (l === 'exit') process.exit(3)
  })
  ;(async () => {
    if (where === 'worker') {
      const w = new Worker(__filename, { workerData: { dist, file } })
      w.on('error', (e) => console.error('worker error', e))
      await new Promise((resolve) => w.once('message', resolve))
    } else {
      await start(dist, file)
    }
    process.stdout.write('started\n')
  })().catch((e) => {
    console.error(e)
    process.exit(1)
  })
} else {
  start(workerData.dist, workerData.file).then(() => parentPort.postMessage('started'))
}
