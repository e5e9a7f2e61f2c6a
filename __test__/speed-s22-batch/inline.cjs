// One native batch on a tmpfs file, for speed-s22-batch.spec: node inline.cjs DIST FILE SPEC, SPEC a
// JSON object { n, window, write, form: 'typed' | 'array', backend, transfer }.
// Prepares N blocks (block (i * 97) % n holds i % 251 + 1, written through a windowed batch unless
// the batch under test writes them), prints 'ready', waits for a line on stdin (the parent traces
// from then on), runs the batch (op i: block (i * 97) % n <-> offset i of one fh.alloc region, or
// of its subarrays in the array form), and prints 'done ' + JSON: backend, results (their
// distinct values: bytes or error codes; all: each op's), code (the rejection's, if any), placed (each error
// names its op's position and length), ok (every byte where it
// belongs: the region read back, or the file through node:fs), batches / ops (the engine's
// batchInline counts made by this batch). `transfer`: the region's ArrayBuffer is moved away
// (structuredClone with transfer) right after the call, the old and new views dropped, gc() run
// and fresh regions of the same size allocated and overwritten while the batch runs (needs
// --expose-gc).
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const [dist, file, specArg] = process.argv.slice(2)
const spec = JSON.parse(specArg)
const { open } = require(path.join(dist, 'index.js'))
const { getEngine } = require(path.join(dist, 'src', 'engine.js'))
const UNIT = 4096
;(async () => {
  const n = spec.n
  const offsets = new Uint32Array(n).map((_, i) => i * UNIT)
  const lengths = new Uint32Array(n).fill(UNIT)
  const positions = new Float64Array(n).map((_, i) => ((i * 97) % n) * UNIT)
  const prep = await open(file, 'w+', { backend: spec.backend })
  const src = prep.alloc(n * UNIT)
  for (let i = 0; i < n; i++) src.fill((i % 251) + 1, i * UNIT, (i + 1) * UNIT)
  if (!spec.write) await prep.writeMany({ memory: src, offsets, lengths, positions }, { window: 64 })
  await prep.close()
  const fh = await open(file, 'r+', { backend: spec.backend })
  let mem = spec.write ? fh.alloc(n * UNIT) : fh.alloc(n * UNIT).fill(0)
  if (spec.write) src.copy(mem)
  const native = getEngine().native
  const before = native.batchInline
  process.stdout.write('ready\n')
  await new Promise((resolve) => process.stdin.once('data', resolve))
  const call = spec.write ? fh.writeMany : fh.readMany
  let p
  if (spec.form === 'array') {
    const ops = Array.from({ length: n }, (_, i) => ({ buffer: mem.subarray(i * UNIT, (i + 1) * UNIT), position: positions[i] }))
    p = call.call(fh, ops, { window: spec.window })
  } else p = call.call(fh, { memory: mem, offsets, lengths, positions }, { window: spec.window })
  if (spec.transfer) {
    const ab = mem.buffer
    structuredClone(ab, { transfer: [ab] })
    mem = undefined
    globalThis.gc()
    for (let k = 0; k < 4; k++) fh.alloc(n * UNIT).fill(0xee)
    globalThis.gc()
  }
  let results
  let code
  let placed = true
  try {
    results = [...(await p)]
  } catch (e) {
    code = e.code
    if (e.results === undefined) throw e
    results = e.results.map((r) => (typeof r === 'number' ? r : r.code))
    // Each failed op's error names its own position and length.
    placed = e.results.every((r, i) => typeof r === 'number' || (r.position === positions[i] && r.length === UNIT))
  }
  const after = native.batchInline
  let ok = results.length === n
  if (spec.write) {
    const got = fs.readFileSync(file)
    for (let i = 0; i < n && ok; i++) ok = got.subarray(positions[i], positions[i] + UNIT).equals(src.subarray(i * UNIT, (i + 1) * UNIT))
  } else if (mem !== undefined) ok &&= mem.equals(src)
  process.stdout.write(`done ${JSON.stringify({ backend: fh.backend, results: [...new Set(results)], all: n <= 64 ? results : undefined, code, placed, ok, batches: after[0] - before[0], ops: after[1] - before[1] })}\n`)
  await fh.close()
  process.stdin.destroy()
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
