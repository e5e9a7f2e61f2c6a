// Streams, twelfth session: read streams' reads chained natively (crates/napi/src/stream.rs,
// `Chain`; src/streams/core.ts READ_CHAIN): one read more than readAhead is staged and held in
// the engine, and the reap of a read hands it to the kernel before JS sees that completion.
// Never more than readAhead reads in the kernel (web streams: readAhead - 1, the held read counts
// inside readAhead); a failed read stops the chain; destroy cancels
// the held read (it never reaches the file system) and waits for those in the kernel.
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { once } from 'node:events'

import test from 'ava'

import { createReadStream, type FileHandle, open, readableWebStream } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { closeEvent, expectError } from './helpers/events.ts'
import { faultFs, isSkip, patternBuffer } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'
import { collect } from './helpers/rw.ts'
import { inKernel } from './helpers/wstream.ts'

const scratch = scratchDirs('streams-s12')
const KiB = 1024

const engine = () => getEngine().native
/** [reads/writes handed to the kernel at a reap by their chain, chains alive, ops held back]. */
const chainStats = (): number[] => engine().chainStats

test.serial('read stream: the held read goes to the kernel at the reap of the read before it, before JS learns of that completion', async (t) => {
  const file = path.join(scratch(), 'chain.bin')
  const data = randomBytes(8 * 64 * KiB)
  fs.writeFileSync(file, data)
  await using fh = await open(file, 'r')
  t.true(fh.direct)
  const [released0, chains0] = chainStats()
  // readAhead 1: the first read in the kernel, the second held in the engine.
  const seen: number[][] = []
  const read = fh.read.bind(fh) as (...a: unknown[]) => Promise<unknown>
  let first = true
  Object.defineProperty(fh, 'read', {
    value: (...a: unknown[]) => {
      const p = read(...a)
      // Where the first read's completion reaches JS (this callback runs before the stream's
      // own): the reap that took it already handed the held read to the kernel (one release,
      // nothing held, nothing staged), and the stream has not started another yet.
      if (first) p.then(() => seen.push([chainStats()[0] - released0, chainStats()[2], engine().staged, inKernel(fh)]))
      first = false
      return p
    },
  })
  const got = await collect(createReadStream(fh, { chunkSize: 64 * KiB, readAhead: 1 }))
  t.true(got.equals(data))
  t.deepEqual(seen, [[1, 0, 0, 1]])
  // Every read after the first went in from a reap (the one past the end included, or not).
  t.true(chainStats()[0] - released0 >= 7, `released ${chainStats()[0] - released0}`)
  // The chain is forgotten at the end; nothing held, nothing in flight.
  t.deepEqual(chainStats().slice(1), [chains0, 0])
  t.is(fh.stats().inflight, 0)
})

test.serial('read stream: a fast consumer has readAhead reads in the kernel and one more held (web: readAhead - 1 and one held, readAhead unfinished), never more; the bytes are the file\'s (Node and web streams)', async (t) => {
  const file = path.join(scratch(), 'fast.bin')
  // Not a multiple of the chunk nor of the block: the last read is short, at the end of file.
  const data = randomBytes(40 * 64 * KiB + 5000)
  fs.writeFileSync(file, data)
  await using fh = await open(file, 'r')
  const readAhead = 3
  const [, chains0] = chainStats()
  for (const kind of ['node', 'web'] as const) {
    let maxKernel = 0
    let maxHeld = 0
    let maxUnfinished = 0
    const parts: Buffer[] = []
    const take = (c: Uint8Array): void => {
      maxKernel = Math.max(maxKernel, inKernel(fh))
      maxHeld = Math.max(maxHeld, chainStats()[2])
      // In the kernel or held by the engine, not yet reaped.
      maxUnfinished = Math.max(maxUnfinished, fh.stats().inflight)
      parts.push(Buffer.from(c))
    }
    if (kind === 'node') {
      for await (const c of createReadStream(fh, { chunkSize: 64 * KiB, readAhead })) take(c as Buffer)
    } else {
      const r = readableWebStream(fh, { chunkSize: 64 * KiB, readAhead }).getReader()
      for (;;) {
        const { done, value } = await r.read()
        if (done) break
        take(value)
      }
    }
    t.true(Buffer.concat(parts).equals(data), kind)
    // Web streams count the held read inside readAhead (less memory for their default reader).
    const inKernelMost = kind === 'web' ? readAhead - 1 : readAhead
    t.true(maxKernel <= inKernelMost, `${kind}: ${maxKernel} reads in the kernel`)
    t.is(maxHeld, 1, kind)
    t.true(maxUnfinished <= inKernelMost + 1, `${kind}: ${maxUnfinished} reads unfinished`)
    t.deepEqual(chainStats().slice(1), [chains0, 0], kind)
    t.is(fh.stats().inflight, 0, kind)
  }
})

test.serial('read stream: start/end inside the file and a file shorter than one chunk read right through the chain', async (t) => {
  const file = path.join(scratch(), 'ranges.bin')
  const data = randomBytes(9 * 64 * KiB + 123)
  fs.writeFileSync(file, data)
  const [, chains0] = chainStats()
  for (const [start, end] of [
    [0, undefined],
    [1, 64 * KiB],
    [4095, 5 * 64 * KiB + 7],
    [8 * 64 * KiB + 1, undefined],
  ] as const) {
    const got = await collect(createReadStream(file, { chunkSize: 64 * KiB, readAhead: 2, start, end }))
    t.true(got.equals(data.subarray(start, end === undefined ? undefined : end + 1)), `${start}-${end}`)
  }
  const small = path.join(scratch(), 'small.bin')
  fs.writeFileSync(small, data.subarray(0, 777))
  t.true((await collect(createReadStream(small, { readAhead: 4 }))).equals(data.subarray(0, 777)))
  t.deepEqual(chainStats().slice(1), [chains0, 0])
})

testIf(FAULTFS_REASON, 'read stream destroyed with reads held in the file system: the held read is cancelled and never reaches it, destroy waits for the reads in the kernel, nothing is left', async (t) => {
  const block = 64 * KiB
  const fx = faultFs({ size: 16 * block, hold: 'held' })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  try {
    const [, chains0] = chainStats()
    const readAhead = 2
    const rs = createReadStream(fx.file, { chunkSize: block, readAhead, direct: 'prefer' })
    const [fd] = (await once(rs, 'open')) as [number]
    t.true(fd >= 0)
    const fh = rs.handle as FileHandle
    rs.resume()
    // readAhead reads reach the file system (and wait there); the one more is held in the engine.
    await fx.waitFor((s) => s.held >= readAhead, `${readAhead} reads held by faultfs`)
    t.is(inKernel(fh), readAhead)
    t.is(chainStats()[2], 1)
    rs.destroy()
    // The held read is cancelled (it completes with ECANCELED at the next reap, never handed to
    // the kernel); the reads in the kernel keep the stream (and their chunks' memory) until
    // they are reaped: the handle stays open while the file system holds them.
    await fx.waitFor((s) => s.held >= readAhead, `${readAhead} reads still held by faultfs`)
    t.false(fh.closed)
    fx.release()
    await closeEvent(rs)
    t.true(fh.closed)
    t.is(fx.stats().reads, readAhead, 'the held read never reached the file system')
    t.deepEqual(chainStats().slice(1), [chains0, 0])
    t.is(engine().inflight, 0)
  } finally {
    fx.cleanup()
  }
}, true)

testIf(FAULTFS_REASON, 'read stream: a failed read stops its chain at the reap: the held read after it never reaches the file system; the failure is reported in file order (faultfs EIO)', async (t) => {
  const block = 64 * KiB
  const fx = faultFs({ size: 8 * block, eioAt: [2 * block + 100] })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  try {
    const [, chains0] = chainStats()
    const rs = createReadStream(fx.file, { chunkSize: block, readAhead: 1, direct: 'prefer' })
    const parts: Buffer[] = []
    const e = await expectError(
      t,
      (async () => {
        for await (const c of rs) parts.push(c as Buffer)
      })(),
    )
    t.is(e.code, 'EIO')
    t.is(e.position, 2 * block)
    t.is(rs.bytesRead, 2 * block)
    t.true(Buffer.concat(parts).equals(patternBuffer(0, 2 * block)))
    await closeEvent(rs)
    // Blocks 0 and 1 read, block 2 failed; block 3, held in the engine then (or staged after
    // the failure), was cancelled instead of being handed to the kernel.
    t.is(fx.stats().reads, 3)
    t.deepEqual(chainStats().slice(1), [chains0, 0])
  } finally {
    fx.cleanup()
  }
}, true)

test.serial('read stream: the chain is checked by a sha256 of a 24 MiB file read with the defaults, chunks kept (no reuse) and given back (reuseChunks)', async (t) => {
  const file = path.join(scratch(), 'sha.bin')
  const data = randomBytes(24 * 1024 * KiB + 512)
  fs.writeFileSync(file, data)
  const want = createHash('sha256').update(data).digest('hex')
  for (const reuseChunks of [false, true]) {
    const h = createHash('sha256')
    for await (const c of createReadStream(file, { reuseChunks })) h.update(c as Buffer)
    t.is(h.digest('hex'), want, `reuseChunks ${reuseChunks}`)
  }
})
