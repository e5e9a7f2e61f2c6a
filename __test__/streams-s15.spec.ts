// Streams, fifteenth session: a write stream's depth counts bytes, not writes
// (src/streams/core.ts DEPTH_BYTES, crates/napi/src/stream.rs `Chain::bytes`): transferred chunks
// smaller than `chunkSize` (each its own write) keep `writeBehind` x `chunkSize` bytes in the
// kernel, not `writeBehind` writes, and the stream accepts 2 x that many bytes before its
// backpressure, never more (its memory stays bounded by its options).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { once } from 'node:events'
import type { Writable } from 'node:stream'

import test from 'ava'

import { type FileHandle, open, writableWebStream } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { patternBuffer } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'
import { endSamplingKernel, inKernel, refuseChain } from './helpers/wstream.ts'

const scratch = scratchDirs('streams-s15')
const KiB = 1024

/** `count` chunks of odirect memory (`fh.alloc`), `size` bytes each, holding `data` in order. */
function odirectChunks(fh: FileHandle, data: Buffer, size: number): Buffer[] {
  return Array.from({ length: data.length / size }, (_, i) => {
    const c = fh.alloc(size)
    c.set(data.subarray(i * size, (i + 1) * size))
    return c
  })
}

/** Lets 200 ticks run: no completion reaches JS before the loop's poll phase (see helpers/wstream.ts offerBlocks). */
async function ticks(): Promise<void> {
  for (let i = 0; i < 200; i++) await new Promise((r) => process.nextTick(r))
}

/**
 * Offers every chunk at once to a Node or a web write stream of `fh` (chunkSize 128 KiB,
 * writeBehind 2, transferChunks), then, before any completion reached JS: the writes in the
 * kernel, those the chain holds, and the chunks accepted (called back / resolved); then ends it.
 */
async function offer(kind: 'node' | 'web', fh: FileHandle, chunks: Buffer[], opts: Record<string, unknown> = {}): Promise<{ inKernel: number; held: number; accepted: number; taken: number }> {
  const size = (chunks[0] as Buffer).length
  const o = { chunkSize: 128 * KiB, writeBehind: 2, transferChunks: true, datasync: false, ...opts }
  let accepted = 0
  let early: { inKernel: number; held: number; accepted: number; taken: number }
  if (kind === 'node') {
    const ws: Writable & { bytesTransferred?: number } = fh.createWriteStream(o)
    await once(ws, 'ready')
    for (const c of chunks) ws.write(c, () => accepted++)
    await ticks()
    early = { inKernel: inKernel(fh), held: getEngine().native.chainStats[2] as number, accepted, taken: (ws.bytesTransferred as number) / size }
    ws.end()
    await once(ws, 'finish')
  } else {
    const w = writableWebStream(fh, o).getWriter()
    // Once open (its start() settled): an empty chunk writes nothing.
    await w.write(new Uint8Array(0))
    const all = chunks.map((c) => w.write(c).then(() => void accepted++))
    await ticks()
    early = { inKernel: inKernel(fh), held: getEngine().native.chainStats[2] as number, accepted, taken: 0 }
    await Promise.all(all)
    await w.close()
  }
  return early
}

for (const kind of ['node', 'web'] as const) {
  test.serial(`${kind} write stream, transferChunks: 64 KiB chunks with chunkSize 128 KiB, writeBehind 2: 4 writes (256 KiB) in the kernel, 6 accepted before backpressure, the file right`, async (t) => {
    const file = path.join(scratch(), `half-${kind}.bin`)
    await using fh = await open(file, 'w+')
    t.true(fh.direct)
    const data = patternBuffer(15, 16 * 64 * KiB)
    const early = await offer(kind, fh, odirectChunks(fh, data, 64 * KiB))
    // writeBehind x chunkSize = 256 KiB in the kernel: 4 chunks (counted in writes: 2). The
    // stream holds 2 x 256 KiB at most: the 7th chunk's 64 KiB went past 384 KiB (room for one
    // more block left), so it waits; 6 called back (counted in writes: 3).
    t.is(early.inKernel, 4, JSON.stringify(early))
    t.is(early.held, 3, JSON.stringify(early))
    t.is(early.accepted, 6, JSON.stringify(early))
    if (kind === 'node') t.is(early.taken, 7, 'chunks taken over (written in place)')
    t.is(fh.stats().inflight, 0)
    t.true(fs.readFileSync(file).equals(data))
  })
}

test.serial('write stream, transferChunks: 32 KiB chunks with chunkSize 4 MiB, writeBehind 4: at most 64 writes in the kernel (not 16 MiB of them), 127 accepted', async (t) => {
  const file = path.join(scratch(), 'small.bin')
  await using fh = await open(file, 'w+')
  const data = patternBuffer(16, 200 * 32 * KiB)
  const early = await offer('node', fh, odirectChunks(fh, data, 32 * KiB), { chunkSize: 4096 * KiB, writeBehind: 4 })
  // 16 MiB would be 512 writes of 32 KiB: the op cap (64) holds first, and 2 x 64 - 1 accepted
  // (the 128th waits).
  t.is(early.inKernel, 64, JSON.stringify(early))
  t.is(early.accepted, 127, JSON.stringify(early))
  t.true(fs.readFileSync(file).equals(data))
})

test.serial('write stream, copied blocks: writeBehind blocks in the kernel as before (bytes = writeBehind x chunkSize), 2 x writeBehind - 1 accepted', async (t) => {
  const file = path.join(scratch(), 'copied.bin')
  await using fh = await open(file, 'w+')
  const data = patternBuffer(17, 12 * 64 * KiB)
  // Ordinary Buffers (copied): each fills one 64 KiB block.
  const chunks = Array.from({ length: 12 }, (_, i) => Buffer.from(data.subarray(i * 64 * KiB, (i + 1) * 64 * KiB)))
  const early = await offer('node', fh, chunks, { chunkSize: 64 * KiB, writeBehind: 3, transferChunks: false })
  t.deepEqual([early.inKernel, early.accepted], [3, 5])
  t.true(fs.readFileSync(file).equals(data))
})

test.serial('write stream, its chain refusing every block (unchained count): transferred 64 KiB chunks, chunkSize 128 KiB, writeBehind 2: 4 writes in the kernel, never more', async (t) => {
  const file = path.join(scratch(), 'refused.bin')
  await using fh = await open(file, 'w+')
  const chain = refuseChain(t)
  const data = patternBuffer(18, 16 * 64 * KiB)
  const ws = fh.createWriteStream({ chunkSize: 128 * KiB, writeBehind: 2, transferChunks: true, datasync: false })
  await once(ws, 'ready')
  let accepted = 0
  for (const c of odirectChunks(fh, data, 64 * KiB)) ws.write(c, () => accepted++)
  await ticks()
  const early = { inKernel: inKernel(fh), accepted }
  const most = await endSamplingKernel(fh, ws, early.inKernel)
  chain.restore()
  t.true(chain.refused() >= 1)
  t.deepEqual(early, { inKernel: 4, accepted: 6 })
  t.true(most <= 4, `in the kernel: ${most}`)
  t.true(fs.readFileSync(file).equals(data))
})
