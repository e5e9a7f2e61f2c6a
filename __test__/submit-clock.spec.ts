// With `ODIRECT_SUBMIT_CLOCK=1` (opt-in, engine.rs `clock_at_submit`; a child) ops are timed
// from their submission with one clock read per submission, not one per op at its staging (the
// default); native batches' ops are timed from the reap that made room for them either way (no
// read of their own). Counted with `NativeEngine.callStats[5]` (clock reads made to time ops'
// starts), never timed.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'

const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : '/var/tmp', 'odirect-submit-clock-'))
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }))

const UNIT = 4096
const N = 64

/** A file of N blocks, block i all bytes i + 1. */
function patterned(): string {
  const file = path.join(dir, 'data')
  if (!fs.existsSync(file)) {
    const b = Buffer.alloc(N * UNIT)
    for (let i = 0; i < N; i++) b.fill(i + 1, i * UNIT, (i + 1) * UNIT)
    fs.writeFileSync(file, b)
  }
  return file
}

const clockReads = (): number => getEngine().native.callStats[5]

test.serial('by default each op of an array-form readMany reads the clock at its staging, and fh.stats() gets each op', async (t) => {
  const fh = await open(patterned(), 'r')
  try {
    const ops = Array.from({ length: N }, (_, i) => ({ buffer: fh.alloc(UNIT), position: ((i * 7) % N) * UNIT }))
    await fh.readMany(ops.slice(0, 1)) // the engine and the ring exist
    const ops0 = fh.stats().ops
    const c0 = clockReads()
    const results = await fh.readMany(ops)
    const reads = clockReads() - c0
    t.deepEqual(results, Array(N).fill(UNIT))
    for (const [i, o] of ops.entries()) t.true(o.buffer[0] === ((i * 7) % N) + 1 && o.buffer[UNIT - 1] === ((i * 7) % N) + 1, `op ${i}`)
    t.is(reads, N, `clock reads for ${N} ops`)
    const st = fh.stats()
    t.is(st.ops - ops0, N)
    t.true(Number.isFinite(st.latencyUs.max) && st.latencyUs.max >= 0 && st.latencyUs.p50 <= st.latencyUs.max, JSON.stringify(st.latencyUs))
  } finally {
    await fh.close()
  }
})

test.serial("a typed readMany's ops read no clock of their own (timed from the reaps)", async (t) => {
  const fh = await open(patterned(), 'r')
  try {
    const memory = fh.alloc(N * UNIT)
    const offsets = new Uint32Array(N).map((_, i) => i * UNIT)
    const lengths = new Uint32Array(N).fill(UNIT)
    const positions = new Float64Array(N).map((_, i) => ((N - 1 - i) % N) * UNIT)
    await fh.readMany({ memory: fh.alloc(UNIT), offsets: offsets.subarray(0, 1), lengths: lengths.subarray(0, 1), positions: new Float64Array(1) })
    const ops0 = fh.stats().ops
    const c0 = clockReads()
    const results = await fh.readMany({ memory, offsets, lengths, positions }, { window: 16 })
    t.is(clockReads() - c0, 0)
    t.deepEqual([...results], Array(N).fill(UNIT))
    for (let i = 0; i < N; i++) t.is(memory[i * UNIT], N - i, `op ${i}`)
    t.is(fh.stats().ops - ops0, N)
  } finally {
    await fh.close()
  }
})

test.serial('ODIRECT_SUBMIT_CLOCK=1: one clock read times all 64 ops of an array-form readMany staged in one call, and fh.stats() still gets each op (a child)', (t) => {
  const file = patterned()
  const script = `
    const { open } = require(${JSON.stringify(path.resolve('dist/index.js'))})
    const { getEngine } = require(${JSON.stringify(path.resolve('dist/src/engine.js'))})
    ;(async () => {
      const fh = await open(${JSON.stringify(file)}, 'r')
      const ops = Array.from({ length: ${N} }, (_, i) => ({ buffer: fh.alloc(${UNIT}), position: i * ${UNIT} }))
      await fh.readMany(ops.slice(0, 1))
      const ops0 = fh.stats().ops
      const c0 = getEngine().native.callStats[5]
      const results = await fh.readMany(ops)
      const reads = getEngine().native.callStats[5] - c0
      const st = fh.stats()
      await fh.close()
      const lat = st.latencyUs
      console.log(JSON.stringify({ reads, ok: results.every((r, i) => r === ${UNIT} && ops[i].buffer[0] === i + 1), ops: st.ops - ops0, latency: Number.isFinite(lat.max) && lat.max >= 0 && lat.p50 <= lat.max }))
    })()
  `
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ODIRECT_SUBMIT_CLOCK: '1' } })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout.trim()), { reads: 1, ok: true, ops: N, latency: true })
})
