// Read streams' copy rule `ODIRECT_STREAM_READ_COPY=cpu` (issue 19 item 1, twenty-first session).
// Counted, never timed.
//
// The device fills memory slower the more distinct memory its reads go into (this repository's VM:
// fio and a C reader slow down alike; README "What the read streams' device fills"), so a copy
// into a default-mode chunk from the stream's few reused buffers speeds up a consumer that waits
// for the device, and slows one that is CPU-bound (the copy is CPU on its thread). The `=cpu` rule
// (src/streams/core.ts COPY_BUSY_MAX) copies during a window of chunks only when, in the window
// before, the consumer waited for reads at least a quarter of the time and its thread (Node's
// event-loop utilization) was busy less than 45% of it. Counted in child processes (the switch is
// read when the module loads: speed-s20-rstream/pass.cjs) over a FUSE file whose server answers
// every read 50 ms late (crates/faultfs): a consumer that takes each chunk at once waits for the
// device at every batch of reads with its thread idle; one that hashes each chunk 200 times is
// busy for longer than a batch takes; one that lets every read settle before it asks never waits.
import { spawnSync } from 'node:child_process'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'
import type { ExecutionContext } from 'ava'

import { type FaultFs, faultFs, isSkip } from './helpers/fixtures.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(HERE, 'speed-s20-rstream', 'pass.cjs')
const CHUNK = 256 * 1024
const SIZE = 8 << 20
const CHUNKS = SIZE / CHUNK
/** readAhead 4 + the completed chunk a Node stream holds for a busy consumer (core.ts HELD_EXTRA). */
const HELD = 5
/** Hashes of each chunk by the `busy` consumer: 50 MiB of sha256 per chunk, 4 chunks per 50 ms batch of reads. */
const HASHES = 200

interface Pass {
  chunks: number
  bytes: number
  size: number
  same: boolean
  whole: number
  copies: number
  handed: number
  reused: number
  fresh: number
  copyWindows: number
  plainWindows: number
}

let fx: FaultFs | undefined
test.before(() => {
  if (FAULTFS_REASON !== undefined) return
  const f = faultFs({ size: SIZE, delayMs: 50, threads: 8 })
  if (isSkip(f)) throw new Error(f.skip)
  fx = f
})
test.after.always(() => fx?.cleanup())

function pass(t: ExecutionContext, consumer: 'fast' | 'idle' | 'busy', copy: string | undefined): Pass {
  if (fx === undefined) throw new Error('no faultfs')
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of ['ODIRECT_STREAM_READ_COPY', 'ODIRECT_STREAM_COPY_WAIT_US', 'ODIRECT_STREAM_COPY_BUSY', 'ODIRECT_STREAM_COPY_WAIT_SHARE']) delete env[k]
  if (copy !== undefined) env.ODIRECT_STREAM_READ_COPY = copy
  const r = spawnSync(process.execPath, [CHILD, fx.file, consumer, String(CHUNK), String(HASHES)], { encoding: 'utf8', env, timeout: 300_000 })
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`)
  const p = JSON.parse(r.stdout) as Pass
  t.log(consumer, copy ?? 'unset', JSON.stringify(p))
  t.true(p.same, 'every chunk holds the file bytes at its place')
  t.is(p.bytes, SIZE)
  t.is(p.chunks, CHUNKS)
  t.is(p.reused + p.fresh, CHUNKS + 1, 'one read per chunk, and one past the end (the end of file)')
  t.is(p.copies + p.handed, CHUNKS, 'every chunk a copy or the read\'s own memory')
  return p
}

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=cpu: a consumer that waits for the device with its thread idle gets copies after the first window, and the reads go into the stream\'s reused buffers', (t) => {
  const p = pass(t, 'fast', 'cpu')
  t.true(p.copyWindows >= 1, `${p.copyWindows} windows decided to copy`)
  // The first window (at least 4 chunks after the first) never copies; at least the next one does.
  t.true(p.copies >= 4, `${p.copies} copies`)
  t.is(p.whole, CHUNKS, 'a copy is a chunk over all of its own aligned memory, as a read is')
  t.true(p.reused >= p.copies - HELD - 1, `${p.reused} reads into reused buffers for ${p.copies} copies`)
})

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=cpu: a CPU-bound consumer (its thread busy hashing) never gets copies, and every read goes into new memory', (t) => {
  const p = pass(t, 'busy', 'cpu')
  t.true(p.plainWindows >= 1, `${p.plainWindows} windows decided not to copy`)
  t.is(p.copyWindows, 0)
  t.is(p.copies, 0)
  t.is(p.handed, CHUNKS)
  t.is(p.reused, 0)
})

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=cpu: a consumer slower than the device with its thread idle (its reads all settled when it asks) gets the reads\' own memory after the window of its start', (t) => {
  const p = pass(t, 'idle', 'cpu')
  // Only the window judged on the stream's start can copy: its pulls waited for the first reads.
  t.true(p.copyWindows <= 1, `${p.copyWindows} windows decided to copy`)
  t.true(p.plainWindows >= 5, `${p.plainWindows} windows decided not to copy`)
  t.true(p.handed >= CHUNKS - 8, `${p.handed} chunks handed over`)
})

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=0 (the default): no window is judged, no copy', (t) => {
  const p = pass(t, 'fast', '0')
  t.is(p.copyWindows + p.plainWindows, 0)
  t.is(p.copies, 0)
  t.is(p.fresh, CHUNKS + 1)
})
