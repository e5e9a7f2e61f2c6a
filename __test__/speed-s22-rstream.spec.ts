// Read streams' ring of reads for their copies (issue 19 item 1, twenty-second session). Counted,
// never timed.
//
// While a default-mode read stream copies (`ODIRECT_STREAM_READ_COPY=cpu` windows that copy,
// `=always`), its reads are 1 MiB into a ring of its own buffers of that size (at most
// `readAhead` + 2 of them), and each chunk of `chunkSize` bytes is gathered by copy from
// consecutive ring reads (src/streams/core.ts READ_RING): the device fills 5-6 MiB of memory, where
// the twenty-first session's copy read 2 MiB chunks into 6 buffers of its own (12 MiB) and the
// default mode into whatever the consumer's dropped chunks left behind. Counted in child processes
// (the switches are read when the module loads: speed-s22-rstream/pass.cjs), on a real file on
// the disk (/var/tmp, ext4 with O_DIRECT) and on a FUSE file whose server answers each read 50 ms
// late (crates/faultfs), with every read's address traced: distinct buffers the device filled,
// bytes copied, the chunks' lengths, and every chunk's bytes checked against the file, for
// consumers that drop, keep, overwrite or transfer (detach) what they get.
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { childRunner } from './helpers/child-result.ts'
import { type FaultFs, faultFs, isSkip } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const runChild = childRunner(path.join(HERE, 'speed-s22-rstream'))
const scratch = scratchDirs('s22rs')
const MiB = 1 << 20
const CHUNK = 2 * MiB
const SIZE = 24 * MiB
const CHUNKS = SIZE / CHUNK
/** The ring's buffers at most: readAhead 4 in the kernel or held, + 1 completed, + 1 being copied. */
const RING_MAX = 6

interface Pass {
  bytes: number
  size: number
  same: boolean
  keptSame: boolean
  kept: number
  lens: number[]
  error?: { code?: string; message: string }
  copies: number
  handed: number
  copyWindows: number
  plainWindows: number
  ringReads: number
  ringBuffers: number
  copiedBytes: number
  addresses: number
  collections: number
}

let file = ''
let odd = ''
/** A file whose size is not a multiple of the block: 5 MiB and 1000 bytes. */
const ODD = 5 * MiB + 1000
test.before(() => {
  const d = scratch()
  file = path.join(d, 'data')
  fs.writeFileSync(file, randomBytes(SIZE))
  odd = path.join(d, 'odd')
  fs.writeFileSync(odd, randomBytes(ODD))
})

const SWITCHES = ['ODIRECT_STREAM_COPY_FIRST', 'ODIRECT_STREAM_COPY_STOP', 'ODIRECT_STREAM_COPY_STOP_BUSY', 'ODIRECT_STREAM_READ_COPY', 'ODIRECT_STREAM_READ_RING', 'ODIRECT_STREAM_RING_KIB', 'ODIRECT_STREAM_RING_GC', 'ODIRECT_STREAM_COPY_WAIT_US', 'ODIRECT_STREAM_COPY_BUSY', 'ODIRECT_STREAM_COPY_WAIT_SHARE']

async function pass(f: string, api: 'node' | 'web', consumer: string, env: Record<string, string>, args: string[] = []): Promise<Pass> {
  const e: NodeJS.ProcessEnv = { ...process.env }
  for (const k of SWITCHES) delete e[k]
  const p = await runChild<Pass>('pass.cjs', [f, api, consumer, String(CHUNK), ...args], { env: { ...e, ...env } })
  return p
}

const ALWAYS = { ODIRECT_STREAM_READ_COPY: 'always' }

for (const api of ['node', 'web'] as const) {
  test(`${api}: ODIRECT_STREAM_READ_COPY=always reads 1 MiB at a time into at most readAhead + 2 buffers of the stream's own, and gathers 2 MiB chunks from them: every byte copied once, each chunk the file's`, async (t) => {
    const p = await pass(file, api, 'drop', ALWAYS)
    t.log(JSON.stringify({ ...p, lens: p.lens.length }))
    t.true(p.same, "every chunk holds the file's bytes at its place")
    t.is(p.bytes, SIZE)
    t.deepEqual(p.lens, Array(CHUNKS).fill(CHUNK), 'chunks of chunkSize, each gathered from two reads')
    t.is(p.copies, CHUNKS)
    t.is(p.handed, 0)
    t.is(p.copiedBytes, SIZE, 'each byte copied once')
    t.true(p.ringReads >= SIZE / MiB, `${p.ringReads} reads into the ring`)
    t.true(p.ringBuffers <= RING_MAX, `${p.ringBuffers} ring buffers made`)
    t.true(p.addresses <= RING_MAX, `the reads went into ${p.addresses} distinct buffers`)
  })
}

test('node: the ring puts the reads into fewer distinct bytes than the twenty-first session\'s copy (ODIRECT_STREAM_READ_RING=0: 2 MiB reads into the stream\'s reused buffers)', async (t) => {
  const ring = await pass(file, 'node', 'drop', ALWAYS)
  const old = await pass(file, 'node', 'drop', { ...ALWAYS, ODIRECT_STREAM_READ_RING: '0' })
  t.log(`distinct buffers read into: ring ${ring.addresses} x 1 MiB, old ${old.addresses} x 2 MiB`)
  t.true(old.same)
  t.is(old.ringReads, 0, 'no ring with ODIRECT_STREAM_READ_RING=0')
  t.is(old.copies, CHUNKS)
  t.true(ring.addresses * MiB < old.addresses * CHUNK, 'fewer distinct bytes under the reads')
})

for (const api of ['node', 'web'] as const) {
  for (const consumer of ['keep', 'overwrite', 'transfer'] as const) {
    test(`${api}: a consumer that ${consumer === 'keep' ? 'keeps every chunk sees none change' : consumer === 'overwrite' ? 'overwrites each chunk it got leaves the later ones right' : "transfers each chunk's ArrayBuffer away leaves the later ones right"} (ring copies, =always)`, async (t) => {
      const p = await pass(file, api, consumer, ALWAYS)
      t.true(p.same, "every chunk held the file's bytes when it came")
      t.is(p.bytes, SIZE)
      t.is(p.copies, CHUNKS)
      t.true(p.ringBuffers <= RING_MAX, `${p.ringBuffers} ring buffers made`)
      if (consumer === 'keep') {
        t.is(p.kept, CHUNKS)
        t.true(p.keptSame, 'the kept chunks are unchanged at the end of the pass')
      }
    })
  }
}

for (const api of ['node', 'web'] as const) {
  test(`${api}: a file whose size is not a block multiple ends in one gathered chunk of its last MiB and 1000 bytes (=always)`, async (t) => {
    const p = await pass(odd, api, 'keep', ALWAYS)
    t.true(p.same)
    t.true(p.keptSame)
    t.is(p.bytes, ODD)
    t.deepEqual(p.lens, [CHUNK, CHUNK, MiB + 1000])
    t.is(p.copiedBytes, ODD)
  })
}

test('node: a range that starts and ends inside blocks, gathered from the ring, is the file\'s bytes there', async (t) => {
  const start = 12_345
  const end = SIZE - 777
  const p = await pass(file, 'node', 'keep', ALWAYS, [String(start), String(end)])
  t.true(p.same)
  t.true(p.keptSame)
  t.is(p.bytes, end + 1 - start)
  t.is(p.copiedBytes, end + 1 - start)
  t.true(p.lens.every((n) => n > 0 && n <= CHUNK), `chunk lengths ${p.lens.join(',')}`)
})

let fx: FaultFs | undefined
let eio: FaultFs | undefined
const FUSE_SIZE = 64 * MiB
const FUSE_CHUNKS = FUSE_SIZE / CHUNK
/** A position inside the second MiB of the third chunk: that chunk's first ring read succeeds. */
const EIO_AT = 5 * MiB + 4096
test.before(() => {
  if (FAULTFS_REASON !== undefined) return
  const f = faultFs({ size: FUSE_SIZE, delayMs: 50, threads: 8 })
  if (isSkip(f)) throw new Error(f.skip)
  fx = f
  const g = faultFs({ size: 8 * MiB, eioAt: [EIO_AT], threads: 8 })
  if (isSkip(g)) throw new Error(g.skip)
  eio = g
})
test.after.always(() => {
  fx?.cleanup()
  eio?.cleanup()
})

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=cpu: a consumer that waits for the device gets 2 MiB copies gathered from the ring after its first window; a hashing one never reads into the ring', async (t) => {
  if (fx === undefined) throw new Error('no faultfs')
  const fast = await pass(fx.file, 'node', 'drop', { ODIRECT_STREAM_READ_COPY: 'cpu' })
  t.log('fast', JSON.stringify({ ...fast, lens: fast.lens.length }))
  t.true(fast.same)
  t.is(fast.bytes, FUSE_SIZE)
  t.true(fast.copyWindows >= 1)
  t.true(fast.ringReads >= 8, `${fast.ringReads} ring reads`)
  t.true(fast.copies >= 4, `${fast.copies} copies`)
  t.true(fast.ringBuffers <= RING_MAX, `${fast.ringBuffers} ring buffers made`)
  t.true(fast.lens.every((n) => n === CHUNK), 'every chunk 2 MiB, copies and handed over alike')
  const busy = await pass(fx.file, 'node', 'busy', { ODIRECT_STREAM_READ_COPY: 'cpu' }, ['0', '-1', '40'])
  t.log('busy', JSON.stringify({ ...busy, lens: busy.lens.length }))
  t.true(busy.same)
  t.is(busy.copyWindows, 0)
  t.is(busy.ringReads, 0)
  t.is(busy.copies, 0)
  t.is(busy.copiedBytes, 0)
  t.is(fast.collections + busy.collections, 0, 'no collections of its own without ODIRECT_STREAM_RING_GC')
})

testIf(FAULTFS_REASON, 'ODIRECT_STREAM_READ_COPY=ring: a waiting consumer gets copies from its first chunk, and the stream collects at its waits; a hashing one gets copies only until three windows in a row said no', async (t) => {
  if (fx === undefined) throw new Error('no faultfs')
  const fast = await pass(fx.file, 'node', 'drop', { ODIRECT_STREAM_READ_COPY: 'ring' })
  t.log('fast', JSON.stringify({ ...fast, lens: fast.lens.length }))
  t.true(fast.same)
  t.is(fast.bytes, FUSE_SIZE)
  t.is(fast.copies, FUSE_CHUNKS, 'every chunk a copy: the first window copies')
  t.is(fast.handed, 0)
  t.true(fast.ringBuffers <= RING_MAX, `${fast.ringBuffers} ring buffers made`)
  t.true(fast.addresses <= RING_MAX, `the reads went into ${fast.addresses} distinct buffers`)
  t.true(fast.collections >= 1, `${fast.collections} young collections at the stream's waits`)
  const busy = await pass(fx.file, 'node', 'busy', { ODIRECT_STREAM_READ_COPY: 'ring' }, ['0', '-1', '40'])
  t.log('busy', JSON.stringify({ ...busy, lens: busy.lens.length }))
  t.true(busy.same)
  t.true(busy.plainWindows >= 3, `${busy.plainWindows} windows said no`)
  t.true(busy.copies >= 4, `${busy.copies} copies (the first window's at least)`)
  t.true(busy.handed >= FUSE_CHUNKS / 4, `${busy.handed} chunks handed over once the copies stopped`)
  t.is(busy.copies + busy.handed, FUSE_CHUNKS)
})

for (const ring of ['1', '0']) {
  testIf(FAULTFS_REASON, `EIO inside a chunk's second MiB (=always): the bytes before the failed read are delivered, then the error, in order (ODIRECT_STREAM_READ_RING=${ring})`, async (t) => {
    if (eio === undefined) throw new Error('no faultfs')
    const p = await pass(eio.file, 'node', 'keep', { ...ALWAYS, ODIRECT_STREAM_READ_RING: ring })
    t.log(JSON.stringify(p))
    t.true(p.same)
    t.true(p.keptSame)
    t.is(p.error?.code, 'EIO')
    if (ring === '1') {
      t.is(p.bytes, 5 * MiB, 'every byte before the failed 1 MiB read delivered, in a chunk of its own')
      t.deepEqual(p.lens, [CHUNK, CHUNK, MiB])
    } else {
      // One 2 MiB read over [4, 6) MiB: the kernel fails it whole (io_uring on this FUSE file), or
      // answers it short with the first MiB.
      t.true(p.bytes === 4 * MiB || p.bytes === 5 * MiB, `${p.bytes} bytes before the error`)
    }
  })
}
