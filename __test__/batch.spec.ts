// readMany / writeMany in the typed-array form ({ memory, offsets, lengths, positions, results }):
// a native batch over one fh.alloc region whose window the engine refills at reap time. Real
// files with O_DIRECT (disk and tmpfs), a loop device (4096-byte sectors: alignment, and ENOSPC past
// its end), the window checked from ODIRECT_DEBUG's submit/complete lines, abort, and the memory
// rule: the region outlives its batch whatever JS does (GC, transfer, worker terminated).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { type FileHandle, open } from '../dist/index.js'
import { loopDevice, type Requirement } from './helpers/fixtures.js'
import { inKernel } from './helpers/debuglog.js'
import { fxTest, must } from './helpers/fxtest.js'
import { scratchDirs } from './helpers/scratch.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(__dirname, '..', 'dist', 'index.js')
const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const scratch = scratchDirs('batch')
const UNIT = 4096

/** `n` ops of one block each: op i at offset i * UNIT in memory, at block `blocks[i]` of the file. */
function arrays(blocks: readonly number[]): { offsets: Uint32Array; lengths: Uint32Array; positions: Float64Array } {
  const n = blocks.length
  return {
    offsets: new Uint32Array(n).map((_, i) => i * UNIT),
    lengths: new Uint32Array(n).fill(UNIT),
    positions: new Float64Array(blocks.map((b) => b * UNIT)),
  }
}

const shuffled = (n: number): number[] => Array.from({ length: n }, (_, i) => i).sort(() => Math.random() - 0.5)

async function roundTrip(t: import('ava').ExecutionContext, fh: FileHandle, n: number, window?: number): Promise<void> {
  const options = window === undefined ? undefined : { window }
  const order = shuffled(n)
  const memory = fh.alloc(n * UNIT)
  for (let i = 0; i < n; i++) {
    memory.fill(order[i] & 0xff, i * UNIT, (i + 1) * UNIT)
    memory.writeUInt32LE(order[i], i * UNIT)
  }
  const a = arrays(order)
  const wrote = await fh.writeMany({ memory, ...a }, options)
  t.true(wrote instanceof Int32Array)
  t.deepEqual([...wrote], order.map(() => UNIT))
  const back = fh.alloc(n * UNIT)
  const results = new Int32Array(n + 3).fill(-1)
  const read = await fh.readMany({ memory: back, ...a, results }, options)
  t.is(read, results, 'resolves with the results array it was given')
  t.deepEqual([...results.subarray(0, n)], order.map(() => UNIT))
  t.deepEqual([...results.subarray(n)], [-1, -1, -1], 'past n untouched')
  for (let i = 0; i < n; i++) {
    t.is(back.readUInt32LE(i * UNIT), order[i], `block ${order[i]}`)
    t.is(back[(i + 1) * UNIT - 1], order[i] & 0xff)
  }
  t.is(fh.inflight, 0)
}

test(`[${BACKEND}] typed writeMany then readMany of 600 ops, window 8, disk file: every block lands and reads back`, async (t) => {
  const fh = await open(path.join(scratch(), 'data'), 'w+', { backend: BACKEND })
  t.true(fh.direct)
  const before = fh.stats()
  await roundTrip(t, fh, 600, 8)
  const st = fh.stats()
  t.is(st.ops - before.ops, 1200)
  t.is(st.writes, 600)
  t.is(st.reads, 600)
  t.is(st.bytesRead, 600 * UNIT)
  t.is(st.bytesWritten, 600 * UNIT)
  t.is(st.bounced, 0, 'fh.alloc memory goes to the kernel as is')
  await fh.close()
})

test(`[${BACKEND}] fh.stats() latency of a typed batch is per op: its histogram holds each op's latency, not n copies of the batch's mean`, async (t) => {
  const file = path.join(scratch(), 'lat')
  fs.writeFileSync(file, Buffer.alloc(256 * UNIT, 3))
  const fh = await open(file, 'r', { backend: BACKEND })
  const memory = fh.alloc(256 * UNIT)
  await fh.readMany({ memory, ...arrays(shuffled(256)) }, { window: 8 })
  const lat = fh.stats().latencyUs
  // One batch: with the mean recorded 256 times, max === mean === every percentile's bucket.
  t.true(lat.max > lat.mean, `max ${lat.max} > mean ${lat.mean}`)
  t.true(lat.p50 <= lat.p99 && lat.p99 <= lat.max)
  t.true(lat.mean > 0)
  await fh.close()
})

test(`[${BACKEND}] typed batch on tmpfs with O_DIRECT, no window (all at once)`, async (t) => {
  if (!fs.existsSync('/dev/shm')) return t.fail('no /dev/shm')
  const fh = await open(path.join(scratch('/dev/shm'), 'data'), 'w+', { backend: BACKEND, direct: 'prefer' })
  t.log(`tmpfs direct: ${fh.direct} ${fh.fallbackReason}`)
  await roundTrip(t, fh, 200)
  await fh.close()
})

test(`[${BACKEND}] BigInt64Array positions, and each op reports its own short read at end of file`, async (t) => {
  const file = path.join(scratch(), 'short')
  fs.writeFileSync(file, Buffer.alloc(10 * UNIT + 100, 5))
  const fh = await open(file, 'r', { backend: BACKEND })
  const memory = fh.alloc(3 * UNIT)
  const r = await fh.readMany({ memory, offsets: new Uint32Array([0, UNIT, 2 * UNIT]), lengths: new Uint32Array(3).fill(UNIT), positions: new BigInt64Array([0n, 10n * 4096n, 20n * 4096n]) })
  t.deepEqual([...r], [UNIT, 100, 0])
  t.is(memory[UNIT + 99], 5)
  await fh.close()
})

test(`[${BACKEND}] the window bounds what is in the kernel (native refill): at most 4 submitted and not completed`, (t) => {
  const file = path.join(scratch(), 'debug')
  fs.writeFileSync(file, Buffer.alloc(256 * UNIT, 7))
  const script = `
    const { open } = require(${JSON.stringify(DIST)});
    (async () => {
      const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
      const n = 128, memory = fh.alloc(n * ${UNIT});
      const r = await fh.readMany({ memory, offsets: new Uint32Array(n).map((_, i) => i * ${UNIT}), lengths: new Uint32Array(n).fill(${UNIT}), positions: new Float64Array(n).map((_, i) => ((i * 7) % 256) * ${UNIT}) }, { window: 4 });
      console.log(r.length, r.every((x) => x === ${UNIT}), memory.every((x) => x === 7));
      await fh.close();
    })();`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ODIRECT_DEBUG: '1' }, timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), '128 true true')
  const { submits, max } = inKernel(r.stderr)
  t.is(submits, 128)
  t.true(max <= 4, `at most 4 in the kernel, saw ${max}`)
  t.true(max >= 2, `the window was used (saw ${max} at once)`)
})

test(`[${BACKEND}] ODIRECT_BATCH_WAIT=8: the reap waits in the kernel for the batches' ops (io_uring only); every block still reads back right`, (t) => {
  const file = path.join(scratch(), 'wait')
  const blocks = 512
  const data = Buffer.alloc(blocks * UNIT)
  for (let b = 0; b < blocks; b++) data.fill(b & 0xff, b * UNIT, (b + 1) * UNIT).writeUInt32LE(b, b * UNIT)
  fs.writeFileSync(file, data)
  // Two batches of 1024 reads in flight at once (window 64 each), then one of 256 without a window.
  const script = `
    const { open } = require(${JSON.stringify(DIST)});
    const { getEngine } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'src', 'engine.js'))});
    (async () => {
      const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
      const lane = async (seed, n, window) => {
        const memory = fh.alloc(n * ${UNIT});
        const positions = new Float64Array(n).map((_, i) => ((i * 37 + seed) % ${blocks}) * ${UNIT});
        const r = await fh.readMany({ memory, offsets: new Uint32Array(n).map((_, i) => i * ${UNIT}), lengths: new Uint32Array(n).fill(${UNIT}), positions }, window ? { window } : undefined);
        let wrong = 0;
        for (let i = 0; i < n; i++) {
          const b = positions[i] / ${UNIT};
          if (r[i] !== ${UNIT} || memory.readUInt32LE(i * ${UNIT}) !== b || memory[i * ${UNIT} + ${UNIT - 1}] !== (b & 0xff)) wrong++;
        }
        return wrong;
      };
      const wrong = (await Promise.all([lane(1, 1024, 64), lane(2, 1024, 64)])).concat(await lane(3, 256, 0));
      console.log(JSON.stringify({ backend: fh.backend, wrong, waits: getEngine().native.batchWaits, inflight: fh.inflight }));
      await fh.close();
    })().catch((e) => { console.error(e); process.exit(1); });`
  const run = (env: Record<string, string>): { backend: string; wrong: number[]; waits: number; inflight: number } => {
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 })
    t.is(r.status, 0, r.stderr)
    return JSON.parse(r.stdout.trim()) as { backend: string; wrong: number[]; waits: number; inflight: number }
  }
  const on = run({ ODIRECT_BATCH_WAIT: '8' })
  const off = run({ ODIRECT_BATCH_WAIT: '0' })
  t.deepEqual(on.wrong, [0, 0, 0])
  t.deepEqual(off.wrong, [0, 0, 0])
  t.is(on.inflight, 0)
  t.is(off.waits, 0, 'no waits unless asked for')
  t.log(`${on.backend}: ${on.waits} in-kernel waits for 2304 reads`)
  if (on.backend === 'io_uring') t.true(on.waits > 0, 'the reap waited in the kernel')
  else t.is(on.waits, 0, `${on.backend} has no ring to wait on`)
})

test(`[${BACKEND}] arguments are validated: typed errors, nothing started`, async (t) => {
  const fh = await open(path.join(scratch(), 'v'), 'w+', { backend: BACKEND })
  const memory = fh.alloc(4 * UNIT)
  const ok = { memory, offsets: new Uint32Array([0]), lengths: new Uint32Array([UNIT]), positions: new Float64Array([0]) }
  const bad = async (batch: Record<string, unknown>, code: string, options?: Record<string, unknown>, writeOnly = false): Promise<void> => {
    if (!writeOnly) await t.throwsAsync(fh.readMany(batch as never, options as never), { code }, JSON.stringify(Object.keys(batch)))
    else await t.throwsAsync(fh.writeMany(batch as never, options as never), { code }, JSON.stringify(Object.keys(batch)))
  }
  await bad({ ...ok, memory: 'x' }, 'ERR_INVALID_ARG_TYPE')
  await bad({ ...ok, memory: new Uint8Array(0) }, 'ERR_ODIRECT_DETACHED')
  await bad({ ...ok, offsets: [0] }, 'ERR_INVALID_ARG_TYPE')
  await bad({ ...ok, offsets: new Int32Array([0]) }, 'ERR_INVALID_ARG_TYPE')
  await bad({ ...ok, lengths: new Float64Array([UNIT]) }, 'ERR_INVALID_ARG_TYPE')
  await bad({ ...ok, positions: new Uint32Array([0]) }, 'ERR_INVALID_ARG_TYPE')
  await bad({ ...ok, positions: new Float64Array([0, UNIT]) }, 'ERR_INVALID_ARG_VALUE')
  await bad({ ...ok, results: new Int32Array(0) }, 'ERR_INVALID_ARG_TYPE')
  await bad({ ...ok, results: new Uint32Array(1) }, 'ERR_INVALID_ARG_TYPE')
  await bad({ ...ok, positions: new Float64Array([-UNIT]) }, 'ERR_OUT_OF_RANGE')
  await bad({ ...ok, positions: new Float64Array([0.5]) }, 'ERR_OUT_OF_RANGE')
  await bad({ ...ok, positions: new BigInt64Array([-4096n]) }, 'ERR_OUT_OF_RANGE')
  await bad({ ...ok, lengths: new Uint32Array([0]) }, 'ERR_OUT_OF_RANGE')
  await bad({ ...ok, offsets: new Uint32Array([3 * UNIT + 512]) }, 'ERR_OUT_OF_RANGE')
  await bad({ ...ok, offsets: new Uint32Array([100]) }, 'ERR_ODIRECT_ALIGNMENT')
  await bad({ ...ok, lengths: new Uint32Array([100]) }, 'ERR_ODIRECT_ALIGNMENT')
  // (A read at a misaligned position past the end of this empty file reads 0 bytes, as fh.read: adversary-s21c.)
  await bad({ ...ok, positions: new Float64Array([100]) }, 'ERR_ODIRECT_ALIGNMENT', undefined, true)
  await bad(ok, 'ERR_OUT_OF_RANGE', { window: 0 })
  await bad(ok, 'ERR_INVALID_ARG_VALUE', { datasync: true })
  const empty = await fh.readMany({ memory, offsets: new Uint32Array(0), lengths: new Uint32Array(0), positions: new Float64Array(0) })
  t.is(empty.length, 0)
  t.is(fh.stats().ops, 0, 'nothing reached the kernel')
  await fh.close()
  await t.throwsAsync(fh.readMany(ok), { code: 'ERR_ODIRECT_CLOSED' })
})

test(`[${BACKEND}] memory that is not odirect's goes op by op through bounce buffers, same results`, async (t) => {
  const file = path.join(scratch(), 'plain')
  const data = Buffer.alloc(16 * UNIT)
  for (let i = 0; i < 16; i++) data.fill(i + 1, i * UNIT, (i + 1) * UNIT)
  fs.writeFileSync(file, data)
  const fh = await open(file, 'r+', { backend: BACKEND })
  const memory = new Uint8Array(new ArrayBuffer(4 * UNIT + 512), 512, 4 * UNIT)
  const r = await fh.readMany({ memory, ...arrays([3, 0, 15, 7]) }, { window: 2 })
  t.deepEqual([...r], [UNIT, UNIT, UNIT, UNIT])
  t.deepEqual([0, 1, 2, 3].map((i) => memory[i * UNIT]), [4, 1, 16, 8])
  t.is(fh.stats().bounced, 4)
  const ab = new ArrayBuffer(UNIT)
  new Uint8Array(ab).fill(99)
  t.deepEqual([...(await fh.writeMany({ memory: ab, ...arrays([1]) }))], [UNIT])
  t.is(fs.readFileSync(file)[UNIT], 99)
  await fh.close()
})

test(`[${BACKEND}] a registered region (fh.registerBuffers: fixed buffers on io_uring) reads and writes`, async (t) => {
  const fh = await open(path.join(scratch(), 'reg'), 'w+', { backend: BACKEND })
  let reg
  try {
    reg = fh.registerBuffers(1, 32 * UNIT)
  } catch (e) {
    return t.fail(`registerBuffers: ${(e as Error).message}`)
  }
  const memory = reg.buffers[0]
  for (let i = 0; i < 32; i++) memory.fill(i, i * UNIT, (i + 1) * UNIT)
  const a = arrays(shuffled(32))
  t.deepEqual([...(await fh.writeMany({ memory, ...a }, { window: 8, dsync: true }))], new Array(32).fill(UNIT))
  memory.fill(0)
  t.deepEqual([...(await fh.readMany({ memory, ...a }, { window: 8 }))], new Array(32).fill(UNIT))
  for (let i = 0; i < 32; i++) t.is(memory[i * UNIT + 5], i)
  t.is(fh.stats().bounced, 0)
  reg.unregister()
  await fh.close()
})

test(`[${BACKEND}] the arrays are captured at the call: changing them afterwards changes nothing`, async (t) => {
  const file = path.join(scratch(), 'capture')
  const data = Buffer.alloc(64 * UNIT)
  for (let i = 0; i < 64; i++) data.fill(i, i * UNIT, (i + 1) * UNIT)
  fs.writeFileSync(file, data)
  const fh = await open(file, 'r', { backend: BACKEND })
  const memory = fh.alloc(64 * UNIT)
  const a = arrays(Array.from({ length: 64 }, (_, i) => 63 - i))
  const p = fh.readMany({ memory, ...a }, { window: 4 })
  a.offsets.fill(0xfffff000)
  a.lengths.fill(0xfffff000)
  a.positions.fill(-1)
  const r = await p
  t.deepEqual([...r], new Array(64).fill(UNIT))
  for (let i = 0; i < 64; i++) t.is(memory[i * UNIT + 9], 63 - i)
  await fh.close()
})

test(`[${BACKEND}] abort: ops not started never start, the batch rejects with ABORT_ERR and every op's result`, async (t) => {
  const file = path.join(scratch(), 'abort')
  fs.writeFileSync(file, Buffer.alloc(256 * UNIT, 1))
  const fh = await open(file, 'r', { backend: BACKEND })
  const n = 5000
  const memory = fh.alloc(8 * UNIT)
  const batch = { memory, offsets: new Uint32Array(n).map((_, i) => (i % 8) * UNIT), lengths: new Uint32Array(n).fill(UNIT), positions: new Float64Array(n).map((_, i) => (i % 256) * UNIT) }

  // Aborted before the call: nothing starts.
  await t.throwsAsync(fh.readMany(batch, { signal: AbortSignal.abort() }), { code: 'ABORT_ERR' })
  t.is(fh.stats().ops, 0)

  // Aborted in the same tick: the staged window never reaches the kernel.
  const ac = new AbortController()
  const p = fh.readMany(batch, { window: 4, signal: ac.signal })
  ac.abort(new Error('stop'))
  const e = await t.throwsAsync(p, { code: 'ABORT_ERR' })
  const results = (e as unknown as { results: ReadonlyArray<number | { code: string }> }).results
  t.is(results.length, n)
  t.true(results.every((r) => typeof r !== 'number' && r.code === 'ABORT_ERR'))
  t.is((e as Error & { cause?: Error }).cause?.message, 'stop')

  // Aborted once the window is in the kernel: each op has its bytes or ABORT_ERR; most never started.
  const ac2 = new AbortController()
  const out = new Int32Array(n)
  const p2 = fh.readMany({ ...batch, results: out }, { window: 4, signal: ac2.signal })
  queueMicrotask(() => queueMicrotask(() => ac2.abort()))
  const e2 = await t.throwsAsync(p2, { code: 'ABORT_ERR' })
  const r2 = (e2 as unknown as { results: ReadonlyArray<number | { code: string }> }).results
  t.true(r2.every((r) => r === UNIT || (typeof r !== 'number' && r.code === 'ABORT_ERR')))
  t.true(r2.filter((r) => typeof r !== 'number').length >= n - 8)
  t.true([...out].every((x, i) => (r2[i] === UNIT ? x === UNIT : x === -125)), 'results[i] is -ECANCELED where aborted')
  t.is(fh.inflight, 0)
  await fh.close()
})

test(`[${BACKEND}] a results array detached while the batch runs: ERR_ODIRECT_DETACHED, the data still moved`, async (t) => {
  const file = path.join(scratch(), 'resdetach')
  fs.writeFileSync(file, Buffer.alloc(64 * UNIT, 4))
  const fh = await open(file, 'r', { backend: BACKEND })
  const memory = fh.alloc(64 * UNIT)
  const results = new Int32Array(64)
  const p = fh.readMany({ memory, ...arrays(Array.from({ length: 64 }, (_, i) => i)), results }, { window: 8 })
  structuredClone(results.buffer, { transfer: [results.buffer] })
  t.is(results.length, 0)
  await t.throwsAsync(p, { code: 'ERR_ODIRECT_DETACHED' })
  t.true(memory.every((x) => x === 4))
  t.is(fh.inflight, 0)
  await fh.close()
})

test(`[${BACKEND}] the region outlives its batch: GC of every reference, transfer of its ArrayBuffer`, (t) => {
  const file = path.join(scratch(), 'gc')
  fs.writeFileSync(file, Buffer.alloc(1024 * UNIT, 6))
  const script = `
    const { open } = require(${JSON.stringify(DIST)});
    (async () => {
      const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
      const n = 20000;
      const a = { offsets: new Uint32Array(n).map((_, i) => (i % 64) * ${UNIT}), lengths: new Uint32Array(n).fill(${UNIT}), positions: new Float64Array(n).map((_, i) => (i % 1024) * ${UNIT}) };
      // Every JS reference to the region dropped while its ops run.
      let p = fh.readMany({ memory: fh.alloc(64 * ${UNIT}), ...a }, { window: 16 });
      for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
      const r1 = await p;
      // Its ArrayBuffer transferred away while its ops run.
      const mem = fh.alloc(64 * ${UNIT});
      p = fh.readMany({ memory: mem, ...a }, { window: 16 });
      // (Node 20 transfers odirect's external ArrayBuffers; Node 22 refuses, ArrayBuffer.prototype.transfer detaches.)
      try { structuredClone(mem.buffer, { transfer: [mem.buffer] }); } catch { mem.buffer.transfer?.(); }
      console.error('detached:', mem.byteLength === 0);
      globalThis.gc();
      const r2 = await p;
      console.log(r1.every((x) => x === ${UNIT}), r2.every((x) => x === ${UNIT}), fh.inflight);
      await fh.close();
    })().catch((e) => { console.error(e); process.exit(1); });`
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 120_000 })
  t.is(r.status, 0, r.stderr)
  t.log(r.stderr.trim())
  t.is(r.stdout.trim(), 'true true 0')
})

test(`[${BACKEND}] a worker terminated mid-batch: the process carries on, nothing crashes`, (t) => {
  const file = path.join(scratch(), 'worker')
  fs.writeFileSync(file, Buffer.alloc(1024 * UNIT, 2))
  const script = `
    const { Worker } = require('node:worker_threads');
    const { open } = require(${JSON.stringify(DIST)});
    const code = \`
      const { parentPort } = require('node:worker_threads');
      const { open } = require(${JSON.stringify(DIST)});
      (async () => {
        const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
        const n = 1 << 20, memory = fh.alloc(64 * ${UNIT});
        const a = { offsets: new Uint32Array(n).map((_, i) => (i % 64) * ${UNIT}), lengths: new Uint32Array(n).fill(${UNIT}), positions: new Float64Array(n).map((_, i) => (i % 1024) * ${UNIT}) };
        const p = fh.readMany({ memory, ...a }, { window: 64 });
        parentPort.postMessage('started');
        await p;
        parentPort.postMessage('finished');
      })();\`;
    (async () => {
      for (let round = 0; round < 3; round++) {
        const w = new Worker(code, { eval: true });
        await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
        await w.terminate();
      }
      const fh = await open(${JSON.stringify(file)}, 'r');
      const b = fh.alloc(${UNIT});
      const { bytesRead } = await fh.read(b, 0, ${UNIT}, 0);
      console.log('alive', bytesRead, b[0]);
      await fh.close();
    })().catch((e) => { console.error(e); process.exit(1); });`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000 })
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), `alive ${UNIT} 2`)
})

const LOOP: Requirement[] = ['root', 'loop']

fxTest(`[${BACKEND}] loop device with 4096-byte sectors: 512-byte ops refused before any I/O; a write past the end fails alone (ENOSPC)`, LOOP, async (t) => {
  const fx = must(loopDevice(4096, 1))
  t.teardown(() => fx.cleanup())
  const fh = await open(fx.device, 'r+', { backend: BACKEND })
  t.teardown(() => fh.close().catch(() => {}))
  t.is(fh.alignment.offset, 4096)
  const memory = fh.alloc(4 * UNIT)
  memory.fill(0xab)
  await t.throwsAsync(fh.writeMany({ memory, offsets: new Uint32Array([0]), lengths: new Uint32Array([512]), positions: new Float64Array([0]) }), { code: 'ERR_ODIRECT_ALIGNMENT' })
  await t.throwsAsync(fh.writeMany({ memory, offsets: new Uint32Array([0]), lengths: new Uint32Array([UNIT]), positions: new Float64Array([512]) }), { code: 'ERR_ODIRECT_ALIGNMENT' })
  t.is(fh.stats().ops, 0)
  const end = fx.sizeBytes
  const results = new Int32Array(3)
  const arrays = { memory, offsets: new Uint32Array([0, UNIT, 2 * UNIT]), lengths: new Uint32Array(3).fill(UNIT), positions: new Float64Array([0, end, end - UNIT]), results }
  const pending = fh.writeMany(arrays)
  // The batch reports the ops it was given, whatever the caller does with its arrays after the call.
  arrays.positions.fill(0)
  arrays.lengths.fill(1)
  const e = await t.throwsAsync(pending, { code: 'ENOSPC' })
  type Each = ReadonlyArray<number | { code: string; position?: number; length?: number }>
  const each = (e as unknown as { results: Each }).results
  t.is(each[0], UNIT)
  t.is(typeof each[1] === 'object' && each[1].code, 'ENOSPC')
  t.is(typeof each[1] === 'object' && each[1].position, end)
  t.is(typeof each[1] === 'object' && each[1].length, UNIT)
  t.is(each[2], UNIT)
  t.deepEqual([...results], [UNIT, -28, UNIT])
  // BigInt64Array positions: the error's position is a number.
  const big = await t.throwsAsync(fh.writeMany({ memory, offsets: new Uint32Array([0]), lengths: new Uint32Array([UNIT]), positions: new BigInt64Array([BigInt(end) + 4096n]) }), { code: 'ENOSPC' })
  const bigEach = (big as unknown as { results: Each }).results
  t.is(typeof bigEach[0] === 'object' && bigEach[0].position, end + 4096)
  t.is(typeof bigEach[0] === 'object' && bigEach[0].length, UNIT)
  const back = fh.alloc(UNIT)
  const r = await fh.readMany({ memory: back, offsets: new Uint32Array([0]), lengths: new Uint32Array([UNIT]), positions: new Float64Array([end - UNIT]) })
  t.deepEqual([...r], [UNIT])
  t.is(back[100], 0xab)
  t.is(fh.stats().errors, 2)
})

test(`[${BACKEND}] getters run once, before anything is captured: one that detaches the memory is refused`, async (t) => {
  const fh = await open(path.join(scratch(), 'getters'), 'w+', { backend: BACKEND })
  const ab = new ArrayBuffer(2 * UNIT)
  let reads = 0
  const batch = {
    memory: new Uint8Array(ab),
    offsets: new Uint32Array([0]),
    lengths: new Uint32Array([UNIT]),
    get positions(): Float64Array {
      reads++
      structuredClone(ab, { transfer: [ab] })
      return new Float64Array([0])
    },
  }
  await t.throwsAsync(fh.writeMany(batch), { code: 'ERR_ODIRECT_DETACHED' })
  t.is(reads, 1)
  t.is(fh.stats().ops, 0)
  await fh.close()
})

test(`[${BACKEND}] fuzz: 3000 typed batches of random arrays and values: results or coded errors only, nothing in flight after`, async (t) => {
  const file = path.join(scratch(), 'fuzz')
  fs.writeFileSync(file, Buffer.alloc(64 * UNIT, 3))
  const fh = await open(file, 'r+', { backend: BACKEND })
  const memories: unknown[] = [fh.alloc(8 * UNIT), fh.alloc(UNIT), Buffer.alloc(8 * UNIT), new ArrayBuffer(2 * UNIT), new SharedArrayBuffer(2 * UNIT), new DataView(new ArrayBuffer(UNIT)), null, 7, 'x', {}]
  let seed = 12345
  const rnd = (n: number): number => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) % n
  }
  const value = (): number => (rnd(2) ? [0, UNIT, 2 * UNIT][rnd(3)] : [0, UNIT, 2 * UNIT, 7 * UNIT, 512, 1, 0xfffff000, 64 * UNIT, 100 * UNIT, 2 ** 31][rnd(10)])
  const typed = (n: number, likely: 0 | 1 | 2 = 0): unknown => {
    const vals = Array.from({ length: n }, value)
    switch (rnd(2) ? likely : rnd(8)) {
      case 0:
        return new Uint32Array(vals)
      case 1:
        return new Float64Array(vals)
      case 2:
        return new BigInt64Array(vals.map((v) => BigInt(v)))
      case 3:
        return new Uint32Array(new SharedArrayBuffer(4 * n)).map((_, i) => vals[i])
      case 4:
        return vals
      case 5:
        return new Int32Array(vals)
      case 6:
        return new Uint32Array(vals).subarray(rnd(2))
      default:
        return new Float64Array(vals.map((v) => (rnd(4) === 0 ? -v - 0.5 : v)))
    }
  }
  let resolved = 0
  for (let k = 0; k < 3000; k++) {
    const n = rnd(6)
    const batch: Record<string, unknown> = { memory: memories[rnd(2) ? 0 : rnd(memories.length)], offsets: typed(n), lengths: typed(n), positions: typed(n, 1) }
    if (rnd(3) === 0) batch.results = rnd(2) ? new Int32Array(rnd(8)) : typed(n)
    const options = rnd(2) ? { window: 1 + rnd(4) } : undefined
    try {
      const r = await (rnd(2) ? fh.readMany(batch as never, options) : fh.writeMany(batch as never, options))
      t.true(r instanceof Int32Array)
      resolved++
    } catch (e) {
      const code = (e as { code?: unknown }).code
      if (typeof code !== "string" || !(e instanceof Error)) return t.fail(`uncoded: ${String(e)}`)
    }
  }
  t.log(`${resolved} of 3000 resolved`)
  t.true(resolved > 0)
  t.is(fh.inflight, 0)
  await fh.close()
})
