// BatchWindow: typed-array readMany/writeMany batches sharing one window, run by the engine. The
// batches start their ops in call order, a later one as soon as the earlier ones leave room, so
// a queue of batches never drains the device queue between them; the window bounds what all of
// them have in the kernel together. Checked on real files (disk and tmpfs, O_DIRECT) from
// ODIRECT_DEBUG's submit/complete lines, plus abort of a queued batch and validation.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { BatchWindow, type FileHandle, open } from '../dist/index.js'
import { scratchDirs } from './helpers/scratch.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(__dirname, '..', 'dist', 'index.js')
const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const scratch = scratchDirs('bwindow')
const UNIT = 4096

/** `n` one-block ops: op i at offset i * UNIT in memory, at file block `first + i`. */
function arrays(n: number, first: number): { offsets: Uint32Array; lengths: Uint32Array; positions: Float64Array } {
  return {
    offsets: new Uint32Array(n).map((_, i) => i * UNIT),
    lengths: new Uint32Array(n).fill(UNIT),
    positions: new Float64Array(n).map((_, i) => (first + i) * UNIT),
  }
}

/** A file of `blocks` blocks, block b filled with b & 0xff and starting with b (u32). */
function patterned(dir: string, blocks: number): string {
  const file = path.join(dir, 'data')
  const b = Buffer.alloc(blocks * UNIT)
  for (let i = 0; i < blocks; i++) {
    b.fill(i & 0xff, i * UNIT, (i + 1) * UNIT)
    b.writeUInt32LE(i, i * UNIT)
  }
  fs.writeFileSync(file, b)
  return file
}

function checkBlocks(t: import('ava').ExecutionContext, memory: Buffer, n: number, first: number): void {
  let bad = 0
  for (let i = 0; i < n; i++) if (memory.readUInt32LE(i * UNIT) !== first + i || memory[(i + 1) * UNIT - 1] !== ((first + i) & 0xff)) bad++
  t.is(bad, 0, `blocks ${first}..${first + n - 1} read back`)
}

for (const where of ['disk', 'tmpfs'] as const) {
  test(`[${BACKEND}] ${where}: two batches queued in one window of 4: at most 4 in the kernel, the second starts before the first resolves`, (t) => {
    if (where === 'tmpfs' && !fs.existsSync('/dev/shm')) return t.fail('no /dev/shm')
    const file = patterned(scratch(where === 'tmpfs' ? '/dev/shm' : undefined), 256)
    const script = `
      const { open, BatchWindow } = require(${JSON.stringify(DIST)});
      (async () => {
        const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
        const w = new BatchWindow(4);
        const n = 32;
        const mk = (first) => ({ memory: fh.alloc(n * ${UNIT}), offsets: new Uint32Array(n).map((_, i) => i * ${UNIT}), lengths: new Uint32Array(n).fill(${UNIT}), positions: new Float64Array(n).map((_, i) => (first + i) * ${UNIT}) });
        const a = mk(0), b = mk(100);
        const pa = fh.readMany(a, { window: w }).then((r) => { console.error('A resolved'); return r });
        const pb = fh.readMany(b, { window: w });
        const [ra, rb] = await Promise.all([pa, pb]);
        const ok = (m, first) => { for (let i = 0; i < n; i++) if (m.readUInt32LE(i * ${UNIT}) !== first + i) return false; return true };
        console.log(ra.every((x) => x === ${UNIT}), rb.every((x) => x === ${UNIT}), ok(a.memory, 0), ok(b.memory, 100), fh.inflight);
        await fh.close();
      })();`
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ODIRECT_DEBUG: '1' }, timeout: 60_000 })
    t.is(r.status, 0, r.stderr)
    t.is(r.stdout.trim(), 'true true true true 0')
    const lines = r.stderr.split('\n')
    let outstanding = 0
    let max = 0
    let firstB = -1
    let lastASubmit = -1
    for (const [i, line] of lines.entries()) {
      const m = /^odirect: (submit|complete) id=\d+ op=read fd=\d+ offset=(\d+) /.exec(line)
      if (m === null) continue
      if (m[1] === 'complete') {
        outstanding--
        continue
      }
      max = Math.max(max, ++outstanding)
      const block = Number(m[2]) / UNIT
      if (block >= 100 && firstB < 0) firstB = i
      if (block < 100) lastASubmit = i
    }
    const resolvedA = lines.indexOf('A resolved')
    t.true(max <= 4, `at most 4 in the kernel over both batches, saw ${max}`)
    t.true(max >= 2, `the window was used (saw ${max})`)
    t.true(firstB > lastASubmit, 'the second batch starts after every op of the first started (call order)')
    t.true(resolvedA > 0 && firstB < resolvedA, 'the second batch was in the kernel before the first resolved (no drain between them)')
  })
}

test(`[${BACKEND}] a queue of batches in one window reads every block; a queued batch aborted before it started rejects with ABORT_ERR, the others complete`, async (t) => {
  const file = patterned(scratch(), 512)
  const fh = await open(file, 'r', { backend: BACKEND })
  try {
    const w = new BatchWindow(8)
    const n = 64
    const mems = Array.from({ length: 4 }, () => fh.alloc(n * UNIT))
    const ac = new AbortController()
    const p0 = fh.readMany({ memory: mems[0], ...arrays(n, 0) }, { window: w })
    const p1 = fh.readMany({ memory: mems[1], ...arrays(n, 64) }, { window: w, signal: ac.signal })
    const p2 = fh.readMany({ memory: mems[2], ...arrays(n, 128) }, { window: w })
    ac.abort()
    const e = await t.throwsAsync(p1)
    t.is((e as { code?: string }).code, 'ABORT_ERR')
    const rs = (e as { results?: unknown[] }).results ?? []
    t.is(rs.length, n)
    t.true(rs.every((x) => (x as { code?: string }).code === 'ABORT_ERR'), 'none of its ops ran (it was queued behind the first)')
    const [r0, r2] = await Promise.all([p0, p2])
    t.true(r0.every((x) => x === UNIT) && r2.every((x) => x === UNIT))
    checkBlocks(t, mems[0], n, 0)
    checkBlocks(t, mems[2], n, 128)
    // The window keeps working after its batches ended (and the aborted one's slot was reused).
    t.true((await fh.readMany({ memory: mems[3], ...arrays(n, 192) }, { window: w })).every((x) => x === UNIT))
    checkBlocks(t, mems[3], n, 192)
    t.is(fh.inflight, 0)
  } finally {
    await fh.close()
  }
})

test(`[${BACKEND}] writes through a shared window land; two handles can share one window`, async (t) => {
  const dir = scratch()
  const fa = await open(path.join(dir, 'a'), 'w+', { backend: BACKEND })
  const fb = await open(path.join(dir, 'b'), 'w+', { backend: BACKEND })
  try {
    const w = new BatchWindow(3)
    const n = 40
    const fill = (fh: FileHandle, tag: number): Buffer => {
      const m = fh.alloc(n * UNIT)
      for (let i = 0; i < n; i++) {
        m.fill(tag, i * UNIT, (i + 1) * UNIT)
        m.writeUInt32LE(i, i * UNIT)
      }
      return m
    }
    const ma = fill(fa, 0xaa)
    const mb = fill(fb, 0xbb)
    const [ra, rb] = await Promise.all([fa.writeMany({ memory: ma, ...arrays(n, 0) }, { window: w }), fb.writeMany({ memory: mb, ...arrays(n, 0) }, { window: w })])
    t.true(ra.every((x) => x === UNIT) && rb.every((x) => x === UNIT))
    const da = fs.readFileSync(path.join(dir, 'a'))
    const db = fs.readFileSync(path.join(dir, 'b'))
    t.true(da.equals(ma) && db.equals(mb))
  } finally {
    await fa.close()
    await fb.close()
  }
})

test(`[${BACKEND}] BatchWindow is validated: typed errors with hints, nothing started`, async (t) => {
  t.throws(() => new BatchWindow(0), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new BatchWindow(1.5), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => new BatchWindow('4' as unknown as number), { code: 'ERR_INVALID_ARG_TYPE' })
  t.is(new BatchWindow(64).size, 64)
  const fh = await open(path.join(scratch(), 'v'), 'w+', { backend: BACKEND })
  try {
    const w = new BatchWindow(4)
    const buf = fh.alloc(UNIT)
    const arrayForm = await t.throwsAsync(fh.readMany([{ buffer: buf, position: 0 }], { window: w }))
    t.is((arrayForm as { code?: string }).code, 'ERR_INVALID_ARG_VALUE')
    t.regex((arrayForm as { hint?: string }).hint ?? '', /typed-array form/)
    // Not odirect's memory: the engine cannot run it.
    const plain = await t.throwsAsync(fh.readMany({ memory: Buffer.alloc(2 * UNIT), ...arrays(1, 0) }, { window: w }))
    t.is((plain as { code?: string }).code, 'ERR_INVALID_ARG_VALUE')
    t.regex((plain as { hint?: string }).hint ?? '', /fh\.alloc/)
    const other = await t.throwsAsync(fh.readMany({ memory: fh.alloc(UNIT), ...arrays(1, 0) }, { window: { size: 4 } as unknown as BatchWindow }))
    t.is((other as { code?: string }).code, 'ERR_INVALID_ARG_TYPE')
    t.is(fh.inflight, 0)
  } finally {
    await fh.close()
  }
})
