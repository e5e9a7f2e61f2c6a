// readMany / writeMany closed or aborted mid-batch, in each of the three batch paths (typed arrays:
// the engine's native batch; array form op by op from JS; array form with ODIRECT_MANY_NATIVE=1),
// in a child with --expose-gc: close() or abort() comes once the first window is in the kernel
// (counted from ODIRECT_DEBUG's submit/complete lines before the child's own marker line), every
// JS reference to the memory is dropped and collected while the ops run, and what each op
// reports is checked against what reached the file (or the memory, for reads).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { inKernel } from './helpers/debuglog.js'
import { scratchDirs } from './helpers/scratch.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(__dirname, '..', 'dist', 'index.js')
const BACKEND = process.env.ODIRECT_BACKEND || 'auto'
const scratch = scratchDirs('batchclose')
const UNIT = 4096
const N = 512
const W = 8
const FORMS = ['typed', 'array', 'array-native'] as const
type Form = (typeof FORMS)[number]

/**
 * The child: `node --expose-gc -e CHILD <file> <form> <what>` (what: close-write, close-read,
 * abort-write). Block b of the file gets (b + 1) as a u32 at its start and b & 0xff in its last
 * byte; ops go in the order block (i * 37) % N (every block once). Prints one JSON line.
 */
const CHILD = `
  const fs = require('fs');
  const { open } = require(${JSON.stringify(DIST)});
  const [file, form, what] = process.argv.slice(1);
  if (form === 'array-native') process.env.ODIRECT_MANY_NATIVE = '1';
  const UNIT = ${UNIT}, N = ${N}, W = ${W};
  const blocks = Array.from({ length: N }, (_, i) => (i * 37) % N);
  const fill = (buf, at, b) => { buf.fill(b & 0xff, at, at + UNIT); buf.writeUInt32LE(b + 1, at); };
  const good = (buf, at, b) => buf.readUInt32LE(at) === b + 1 && buf[at + UNIT - 1] === (b & 0xff);
  const mark = (s) => process.stderr.write('odirect-test: ' + s + '\\n');
  const tick = () => new Promise((r) => setImmediate(r));
  (async () => {
    const fh = await open(file, 'r+', { backend: ${JSON.stringify(BACKEND)} });
    const write = what !== 'close-read';
    const ac = new AbortController();
    const options = { window: W, signal: ac.signal };
    let keep;
    // Every reference to the ops' memory lives in start() only (reads keep theirs to check it).
    const start = () => {
      if (form === 'typed') {
        const memory = fh.alloc(N * UNIT);
        if (write) blocks.forEach((b, i) => fill(memory, i * UNIT, b));
        else keep = (i) => [memory, i * UNIT];
        const a = { memory, offsets: new Uint32Array(N).map((_, i) => i * UNIT), lengths: new Uint32Array(N).fill(UNIT), positions: new Float64Array(blocks.map((b) => b * UNIT)) };
        return write ? fh.writeMany(a, options) : fh.readMany(a, options);
      }
      const ops = blocks.map((b) => {
        const buffer = fh.alloc(UNIT);
        if (write) fill(buffer, 0, b);
        return { buffer, position: b * UNIT };
      });
      if (!write) keep = (i) => [ops[i].buffer, 0];
      return write ? fh.writeMany(ops, options) : fh.readMany(ops, options);
    };
    const events = [];
    const p = start().then(
      (r) => { events.push('batch'); return [...r]; },
      (e) => { events.push('batch rejected ' + e.code); return e.results ? [...e.results].map((x) => (typeof x === 'number' ? x : x.code)) : [e.code]; },
    );
    // After the flush that submits the first window (queued by the batch's start).
    await new Promise((r) => queueMicrotask(() => queueMicrotask(r)));
    let c;
    if (what === 'abort-write') { mark('abort'); ac.abort(new Error('stop')); }
    else { mark('close'); c = fh.close().then(() => events.push('close')); }
    for (let i = 0; i < 4; i++) { globalThis.gc(); await tick(); }
    const results = await p;
    if (c) await c; else await fh.close();
    // What each op reports against what reached the file / the memory.
    const data = fs.readFileSync(file);
    let done = 0, cancelled = 0, mismatched = 0, other = [];
    results.forEach((r, i) => {
      const b = blocks[i];
      if (r === UNIT) {
        done++;
        const [buf, at] = write ? [data, b * UNIT] : keep(i);
        if (!good(buf, at, b)) mismatched++;
      } else if (r === 'ABORT_ERR' || r === -125) {
        cancelled++;
        // Never written: the block is still zeros.
        if (write && data.subarray(b * UNIT, (b + 1) * UNIT).some((x) => x !== 0)) mismatched++;
      } else other.push(r);
    });
    console.log(JSON.stringify({ events, n: results.length, done, cancelled, mismatched, other }));
  })().catch((e) => { console.error(e); process.exit(1); });`

interface Outcome {
  events: string[]
  n: number
  done: number
  cancelled: number
  mismatched: number
  other: unknown[]
}

/** Runs the child; returns its outcome and how many ops were in the kernel (submitted, not completed) at its marker line. */
function run(form: Form, what: 'close-write' | 'close-read' | 'abort-write'): { out: Outcome; atMarker: number; submits: number; stderr: string } {
  const file = path.join(scratch(), `${form}-${what}`)
  const blocks = Buffer.alloc(N * UNIT)
  // Reads find every block's pattern; writes start from zeros.
  if (what === 'close-read') for (let b = 0; b < N; b++) blocks.fill(b & 0xff, b * UNIT, (b + 1) * UNIT).writeUInt32LE(b + 1, b * UNIT)
  fs.writeFileSync(file, blocks)
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', CHILD, file, form, what], { encoding: 'utf8', env: { ...process.env, ODIRECT_DEBUG: '1' }, timeout: 120_000, maxBuffer: 64 << 20 })
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr.slice(-2000)}`)
  const op = what === 'close-read' ? 'read' : 'write'
  const submit = new RegExp(`^odirect: submit id=\\d+ op=${op} `)
  const complete = new RegExp(`^odirect: complete id=\\d+ op=${op} `)
  let outstanding = 0
  let atMarker = -1
  let submits = 0
  for (const line of r.stderr.split('\n')) {
    if (submit.test(line)) {
      submits++
      outstanding++
    } else if (complete.test(line)) outstanding--
    else if (line.startsWith('odirect-test: ') && atMarker < 0) atMarker = outstanding
  }
  return { out: JSON.parse(r.stdout.trim().split('\n').pop() as string) as Outcome, atMarker, submits, stderr: r.stderr }
}

for (const form of FORMS) {
  test(`[${BACKEND}] ${form}: close() with a window of writes in the kernel and the rest not started, memory collected: the batch completes first, every block reached the file`, (t) => {
    const { out, atMarker, submits } = run(form, 'close-write')
    t.true(atMarker > 0 && atMarker <= W, `writes in the kernel at close(): ${atMarker}`)
    t.is(submits, N, 'every write went to the kernel, after close() too')
    t.deepEqual(out.events, ['batch', 'close'], 'close() resolves after the batch')
    t.deepEqual({ n: out.n, done: out.done, mismatched: out.mismatched, other: out.other }, { n: N, done: N, mismatched: 0, other: [] })
  })

  test(`[${BACKEND}] ${form}: close() mid-readMany: the batch completes first, every block read lands in its memory`, (t) => {
    const { out, atMarker, submits } = run(form, 'close-read')
    t.true(atMarker > 0 && atMarker <= W, `reads in the kernel at close(): ${atMarker}`)
    t.is(submits, N)
    t.deepEqual(out.events, ['batch', 'close'])
    t.deepEqual({ n: out.n, done: out.done, mismatched: out.mismatched, other: out.other }, { n: N, done: N, mismatched: 0, other: [] })
  })

  test(`[${BACKEND}] ${form}: abort() with writes in the kernel, memory collected: each op's result says whether it reached the file`, (t) => {
    const { out, atMarker, submits } = run(form, 'abort-write')
    t.log(`in the kernel at abort(): ${atMarker}; submitted ${submits}, done ${out.done}, cancelled ${out.cancelled}`)
    t.true(atMarker > 0 && atMarker <= W, `writes in the kernel at abort(): ${atMarker}`)
    t.deepEqual(out.events, ['batch rejected ABORT_ERR'])
    t.is(out.n, N)
    t.deepEqual(out.other, [])
    t.is(out.done + out.cancelled, N)
    t.true(out.cancelled >= N - submits, `ops never submitted are cancelled (${out.cancelled} cancelled, ${submits} submitted)`)
    t.true(out.done <= submits, `no op reports bytes it did not submit (${out.done} done, ${submits} submitted)`)
    t.is(out.mismatched, 0, 'a written block holds its data, a cancelled one is untouched')
  })
}

test(`[${BACKEND}] array form, native (ODIRECT_MANY_NATIVE=1): the window bounds what is in the kernel over the whole batch: at most 4 submitted and not completed`, (t) => {
  const file = path.join(scratch(), 'window')
  fs.writeFileSync(file, Buffer.alloc(256 * UNIT, 7))
  const script = `
    const { open } = require(${JSON.stringify(DIST)});
    (async () => {
      const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(BACKEND)} });
      const ops = Array.from({ length: 128 }, (_, i) => ({ buffer: fh.alloc(${UNIT}), position: ((i * 7) % 256) * ${UNIT} }));
      const r = await fh.readMany(ops, { window: 4 });
      console.log(r.length, r.every((x) => x === ${UNIT}), ops.every((o) => o.buffer.every((x) => x === 7)), fh.stats().reads);
      await fh.close();
    })().catch((e) => { console.error(e); process.exit(1); });`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ODIRECT_DEBUG: '1', ODIRECT_MANY_NATIVE: '1' }, timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout.trim(), '128 true true 128')
  const { submits, max } = inKernel(r.stderr)
  t.is(submits, 128)
  t.true(max <= 4, `at most 4 in the kernel, saw ${max}`)
  t.true(max >= 2, `the window was used (saw ${max} at once)`)
})
