// A worker terminated while its native batch's reads are held by the FUSE server (adversary-s21b):
// the worker starts a typed readMany of N blocks of FILE with { window: 64 } (a BatchWindow(64)
// shared by two when SHARED) and says 'started'; the parent waits until the server holds reads
// (the test's stdin line 'held'), terminates the worker, says 'terminated', and once the test let
// the reads go (stdin 'released') reads every block itself, checked against the faultfs pattern.
// Prints 'done <ok>'. ADVB_WINDOW: the window (64); ADVB_FORM: `typed` (default), `array` (the
// array form), `single` (one fh.read), `loneN` (N lone fh.read calls): the forms compared when
// the terminate() that waits for the server was found (spec's section 3).
'use strict'
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads')
const N = 256
const UNIT = 4096
/** The batches' window (ADVB_WINDOW, 64 by default). */
const WINDOW = Number(process.env.ADVB_WINDOW ?? 64)
function patternByte(o) {
  const s = Math.floor(o / 256) >>> 0
  const h = Math.imul(s, 0x9e3779b1) >>> 24
  return ((o % 256) * 31 + 7 + h) & 0xff
}
const typed = (memory) => ({
  memory,
  offsets: new Uint32Array(N).map((_, i) => i * UNIT),
  lengths: new Uint32Array(N).fill(UNIT),
  positions: new Float64Array(N).map((_, i) => i * UNIT),
})
if (isMainThread) {
  const [dist, file, shared] = process.argv.slice(2)
  const lines = require('node:readline').createInterface({ input: process.stdin })
  const next = () => new Promise((resolve) => lines.once('line', resolve))
  ;(async () => {
    const w = new Worker(__filename, { workerData: { dist, file, shared: shared === '1' } })
    w.on('error', (e) => console.error('worker error', e))
    await new Promise((resolve) => w.once('message', resolve))
    process.stdout.write('started\n')
    await next() // held
    await w.terminate()
    process.stdout.write('terminated\n')
    await next() // released
    const { open } = require(dist)
    const fh = await open(file, 'r')
    const mem = fh.alloc(N * UNIT).fill(0)
    const r = await fh.readMany(typed(mem), { window: 64 })
    let ok = [...r].every((x) => x === UNIT)
    for (let o = 0; o < N * UNIT && ok; o++) ok = mem[o] === patternByte(o)
    await fh.close()
    lines.close()
    process.stdout.write(`done ${ok}\n`)
  })().catch((e) => {
    console.error(e)
    process.exit(1)
  })
} else {
  const { open, BatchWindow } = require(workerData.dist)
  ;(async () => {
    const fh = await open(workerData.file, 'r')
    const win = workerData.shared ? new BatchWindow(WINDOW) : WINDOW
    const mems = [fh.alloc(N * UNIT), fh.alloc(N * UNIT)]
    if (process.env.ADVB_FORM === 'single') fh.read(mems[0], 0, UNIT, 0).catch(() => {})
    else if (process.env.ADVB_FORM?.startsWith('lone')) for (let i = 0; i < Number(process.env.ADVB_FORM.slice(4)); i++) fh.read(mems[0], i * UNIT, UNIT, i * UNIT).catch(() => {})
    else if (process.env.ADVB_FORM === 'array') fh.readMany(Array.from({ length: N }, (_, i) => ({ buffer: mems[0].subarray(i * UNIT, (i + 1) * UNIT), position: i * UNIT })), { window: 64 }).catch(() => {})
    else fh.readMany(typed(mems[0]), { window: win }).catch(() => {})
    if (workerData.shared) fh.readMany(typed(mems[1]), { window: win }).catch(() => {})
    parentPort.postMessage('started')
  })()
}
