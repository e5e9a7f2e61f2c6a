// Read streams' copies (issue 19 item 1, twentieth session). Counted, never timed.
//
// ODIRECT_STREAM_READ_COPY=1 (opt-in, src/streams/core.ts READ_COPY): a default-mode read stream
// (chunks the consumer keeps or drops) delivers copies while its consumer keeps up with the
// device, and reads into its own few buffers, reused from read to read: the device then fills the
// same few MiB of memory, as fio's does, instead of whatever the dropped chunks left behind
// (README "What the read streams' device fills"). A consumer slower than the device gets the
// reads' memory itself; `=always` copies every chunk; unset or 0, the default, never. Counted in child
// processes (the switch is read when the module loads: speed-s20-rstream/pass.cjs) over a FUSE
// file whose server answers every read 50 ms late (crates/faultfs), so that a consumer that takes
// each chunk at once waits for the device at every batch of reads.
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
}

let fx: FaultFs | undefined
test.before(() => {
  if (FAULTFS_REASON !== undefined) return
  const f = faultFs({ size: SIZE, delayMs: 50, threads: 8 })
  if (isSkip(f)) throw new Error(f.skip)
  fx = f
})
test.after.always(() => fx?.cleanup())

function pass(t: ExecutionContext, consumer: 'fast' | 'patient', copy: string | undefined): Pass {
  if (fx === undefined) throw new Error('no faultfs')
  const env: NodeJS.ProcessEnv = { ...process.env }
  delete env.ODIRECT_STREAM_READ_COPY
  delete env.ODIRECT_STREAM_COPY_WAIT_US
  if (copy !== undefined) env.ODIRECT_STREAM_READ_COPY = copy
  const r = spawnSync(process.execPath, [CHILD, fx.file, consumer, String(CHUNK)], { encoding: 'utf8', env, timeout: 120_000 })
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`)
  const p = JSON.parse(r.stdout) as Pass
  t.log(consumer, copy ?? 'unset', JSON.stringify(p))
  t.true(p.same, 'every chunk holds the file bytes at its place')
  t.is(p.bytes, SIZE)
  t.is(p.chunks, CHUNKS)
  t.is(p.reused + p.fresh, CHUNKS + 1, 'one read per chunk, and one past the end (the end of file)')
  return p
}

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=always: every chunk is a copy, and the reads go into at most readAhead + 2 buffers of the stream, reused', (t) => {
  const p = pass(t, 'fast', 'always')
  t.is(p.copies, CHUNKS)
  t.is(p.handed, 0)
  t.is(p.whole, CHUNKS, 'a copy is a chunk over all of its own aligned memory, as the read was')
  t.true(p.fresh <= HELD + 1, `${p.fresh} reads into new memory`)
  t.true(p.reused >= CHUNKS + 1 - (HELD + 1), `${p.reused} reads into reused buffers`)
})

for (const copy of [undefined, '0']) {
  testIf(FAULTFS_REASON, `ODIRECT_STREAM_READ_COPY ${copy === undefined ? 'unset (the default)' : '=0'}: no copy, every read goes into new memory, which the consumer gets`, (t) => {
    const p = pass(t, 'fast', copy)
    t.is(p.copies, 0)
    t.is(p.handed, CHUNKS)
    t.is(p.fresh, CHUNKS + 1)
    t.is(p.reused, 0)
  })
}

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=1: a consumer that waits for the device gets copies (at least all the stream holds after its first wait), from reused buffers', (t) => {
  const p = pass(t, 'fast', '1')
  // The first chunk's read starts when the consumer asks for it: that wait is >= 50 ms, and
  // the chunks the stream holds then are copies whatever the machine's load does after.
  t.true(p.copies >= HELD, `${p.copies} copies`)
  t.is(p.copies + p.handed, CHUNKS)
  t.true(p.reused >= p.copies - HELD - 1, `${p.reused} reads into reused buffers for ${p.copies} copies`)
})

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=1: a consumer slower than the device (every read settled before it asks) gets the reads\' own memory after its first wait', (t) => {
  const p = pass(t, 'patient', '1')
  // Only the first two chunks' reads can be waited for: the first (nothing was read yet) and the
  // second, which the Readable asks for as the consumer takes the first, before the consumer's
  // wait; each wait makes the chunk and the ones held then copies: at most HELD + 1 in all.
  t.true(p.copies <= HELD + 1, `${p.copies} copies`)
  t.is(p.handed, CHUNKS - p.copies)
})
