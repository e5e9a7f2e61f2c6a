// Worker terminated mid-batch (adversary-s21b): the main thread starts a worker that runs typed
// writeMany / readMany batches with { window: WINDOW } (a BatchWindow shared by two when SHARED)
// on FILE forever and says 'running' after its first; the main thread terminates it then, ROUNDS
// times, then runs one checked batch itself. Prints one JSON line: rounds, ok (its own batch's
// bytes read back right).
'use strict'
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads')
const N = 256
const UNIT = 4096
if (isMainThread) {
  const [dist, file, windowArg, shared, roundsArg] = process.argv.slice(2)
  const rounds = Number(roundsArg)
  ;(async () => {
    for (let i = 0; i < rounds; i++) {
      const w = new Worker(__filename, { workerData: { dist, file: `${file}.${i}`, window: Number(windowArg), shared: shared === '1' } })
      await new Promise((resolve, reject) => {
        w.once('message', resolve)
        w.once('error', reject)
      })
      await w.terminate()
    }
    const { open } = require(dist)
    const fh = await open(file, 'w+')
    const mem = fh.alloc(N * UNIT)
    for (let i = 0; i < N; i++) mem.fill((i % 251) + 1, i * UNIT, (i + 1) * UNIT)
    const offsets = new Uint32Array(N).map((_, i) => i * UNIT)
    const lengths = new Uint32Array(N).fill(UNIT)
    const positions = new Float64Array(N).map((_, i) => ((i * 97) % N) * UNIT)
    const w = await fh.writeMany({ memory: mem, offsets, lengths, positions }, { window: Number(windowArg) })
    const back = fh.alloc(N * UNIT).fill(0)
    const r = await fh.readMany({ memory: back, offsets, lengths, positions }, { window: Number(windowArg) })
    const ok = [...w, ...r].every((x) => x === UNIT) && back.equals(mem)
    await fh.close()
    for (let i = 0; i < rounds; i++) require('node:fs').rmSync(`${file}.${i}`, { force: true })
    process.stdout.write(JSON.stringify({ rounds, ok }) + '\n')
  })().catch((e) => {
    console.error(e)
    process.exit(1)
  })
} else {
  const { open, BatchWindow } = require(workerData.dist)
  ;(async () => {
    const fh = await open(workerData.file, 'w+')
    const mem = fh.alloc(N * UNIT).fill(7)
    const offsets = new Uint32Array(N).map((_, i) => i * UNIT)
    const lengths = new Uint32Array(N).fill(UNIT)
    const positions = new Float64Array(N).map((_, i) => i * UNIT)
    const ops = { memory: mem, offsets, lengths, positions }
    let said = false
    for (;;) {
      const win = workerData.shared ? new BatchWindow(workerData.window) : workerData.window
      const ps = [fh.writeMany(ops, { window: win }), fh.readMany(ops, { window: win })]
      if (workerData.shared) ps.push(fh.readMany(ops, { window: win }))
      // Not awaited when `said`: batches pile up, the worker is terminated with many in flight.
      if (!said) {
        await Promise.all(ps)
        parentPort.postMessage('running')
        said = true
      } else await Promise.race([Promise.all(ps), new Promise((r) => setImmediate(r))])
    }
  })()
}
