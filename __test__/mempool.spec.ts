// The process-wide memory pool (crates/core/src/mempool.rs) under attack from JS: blocks are
// reused without a memset where the caller overwrites them (bounce buffers, stream chunks), so
// these tests make dirty blocks on purpose (a bounced write copies a pattern into a pool block
// and frees it at its completion) and then check that nothing shown to JS as zeroed, and nothing
// past the bytes a read returned, ever holds those old bytes; and that buffers made, filled, used
// for I/O and transferred by several threads at once never share memory.
// Backend: the default, or ODIRECT_BACKEND (aio, threadpool).
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { addressOf, allocAligned, createReadStream, open } from '../dist/index.js'
import { scratchDirs } from './helpers/scratch.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const KiB = 1024
const MiB = 1024 * KiB
const STALE = 0xee
const scratch = scratchDirs('mempool')

/** JS-heap memory (never odirect's), so every op on it goes through a bounce buffer. */
function heapBuffer(size: number, fill: number): Buffer {
  // One byte in: not page aligned either.
  return Buffer.alloc(size + 1, fill).subarray(1)
}

/**
 * Leaves dirty pool blocks of `size` bytes behind: bounced writes of `STALE` bytes (each bounce
 * buffer is a pool block of that size class, freed when the write completes).
 */
async function dirty(dir: string, size: number, times = 2): Promise<void> {
  const fh = await open(path.join(dir, 'stale'), 'w+')
  try {
    const len = Math.ceil(size / 4096) * 4096
    const src = heapBuffer(len, STALE)
    await Promise.all(Array.from({ length: times }, (_, i) => fh.write(src, 0, len, i * len)))
  } finally {
    await fh.close()
  }
}

function firstNot(b: Uint8Array, v: number, from = 0, to = b.byteLength): number {
  for (let i = from; i < to; i++) if (b[i] !== v) return i
  return -1
}

const SIZES = [32 * KiB, 64 * KiB, 1 * MiB, 2 * MiB, 3 * MiB]

/** Reads of `size` bytes at `pos` into `n` fresh JS-heap views, all in flight at once (so most land in dirty blocks). */
async function bouncedReads(fh: Awaited<ReturnType<typeof open>>, size: number, pos: number, n: number): Promise<Array<{ view: Buffer; bytesRead: number }>> {
  return await Promise.all(Array.from({ length: n }, async () => {
    const view = heapBuffer(size, 0)
    return { view, bytesRead: (await fh.read(view, 0, size, pos)).bytesRead }
  }))
}

const N = 16

// On a disk filesystem (iomap) the kernel zero-fills a direct read's memory past the end of file;
// tmpfs copies only the bytes the file has, leaving the rest of the bounce buffer as it was.
for (const [fsName, root] of [['disk', '/var/tmp'], ['tmpfs', '/dev/shm']] as const) test(`bounced reads cut short by the end of file (${fsName}) copy back only the bytes read: never a bounce buffer's old bytes`, async (t) => {
  const dir = scratch(root)
  for (const size of SIZES) {
    const file = path.join(dir, `short-${size}`)
    const have = size / 2 + 100 // not a whole block: the read ends mid-block
    fs.writeFileSync(file, Buffer.alloc(have, 0x11))
    const fh = await open(file, 'r')
    try {
      await dirty(dir, size, N)
      for (const { view, bytesRead } of await bouncedReads(fh, size, 0, N)) {
        t.is(bytesRead, have)
        t.is(firstNot(view, 0x11, 0, have), -1, `${size}: the bytes read`)
        t.is(firstNot(view, 0, have), -1, `${size}: past the end of file the view is as it was`)
      }
      // readv: two views, the second one partly filled, then one not reached at all.
      const half = size / 2
      await dirty(dir, half, 3 * N)
      await Promise.all(Array.from({ length: N }, async () => {
        const views = [heapBuffer(half, 0), heapBuffer(half, 0), heapBuffer(half, 0)]
        const r = await fh.readv(views, 0)
        t.is(r.bytesRead, have)
        t.is(firstNot(views[0], 0x11), -1)
        t.is(firstNot(views[1], 0x11, 0, 100), -1)
        t.is(firstNot(views[1], 0, 100), -1, `${size}: readv's partly filled view`)
        t.is(firstNot(views[2], 0), -1, `${size}: readv's view past the end`)
      }))
      // Past the end of file: nothing read, nothing copied.
      await dirty(dir, size, N)
      for (const { view, bytesRead } of await bouncedReads(fh, size, 64 * MiB, N)) {
        t.is(bytesRead, 0)
        t.is(firstNot(view, 0), -1, `${size}: a read at the end of file`)
      }
    } finally {
      await fh.close()
    }
  }
})

test('allocAligned and fh.alloc of odd sizes and alignments are aligned, exactly sized and zero after dirty blocks of their size were freed', async (t) => {
  const dir = scratch()
  const fh = await open(path.join(dir, 'f'), 'w+')
  try {
    const sizes = [1, 4095, 4097, 32 * KiB - 1, 32 * KiB, 32 * KiB + 1, 64 * KiB - 1, MiB - 1, MiB + 1, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1, 3 * MiB + 5, 9 * MiB]
    const aligns = [512, 4096, 8192, 64 * KiB, MiB, 2 * MiB, 4 * MiB]
    const held: Buffer[] = []
    for (const size of sizes) {
      await dirty(dir, size, 3)
      for (const align of aligns) {
        const b = allocAligned(size, align)
        t.is(b.byteLength, size)
        t.is(b.buffer.byteLength, size, 'the ArrayBuffer is exactly the size asked')
        t.is(addressOf(b) % align, 0, `${size} aligned to ${align}`)
        t.is(firstNot(new Uint8Array(b.buffer), 0), -1, `allocAligned(${size}, ${align}) is zero`)
        b.fill(0xdd)
        held.push(b)
      }
      const a = fh.alloc(size)
      t.is(firstNot(a, 0), -1, `fh.alloc(${size}) is zero`)
      a.fill(0xdd)
      held.push(a)
    }
    // No two held buffers share a byte.
    const spans = held.map((b) => [addressOf(b), addressOf(b) + b.byteLength]).sort((x, y) => x[0] - y[0])
    for (let i = 1; i < spans.length; i++) t.true(spans[i][0] >= spans[i - 1][1], 'buffers overlap')
    for (const b of held) t.is(firstNot(b, 0xdd), -1)
  } finally {
    await fh.close()
  }
})

for (const [fsName, root] of [['disk', '/var/tmp'], ['tmpfs', '/dev/shm']] as const) test(`stream chunks after a stream of other data (${fsName}): nothing past the bytes read is visible through a chunk or its ArrayBuffer`, async (t) => {
  const dir = scratch(root)
  const other = path.join(dir, 'other')
  fs.writeFileSync(other, Buffer.alloc(8 * MiB, STALE))
  const hash = createHash('sha256')
  for await (const c of createReadStream(other, { highWaterMark: MiB })) hash.update(c as Buffer)
  t.truthy(hash.digest('hex'))
  // The last read is of the file's tail rounded up to a block (300 KiB + 4 KiB: a 512 KiB block);
  // leave dirty blocks of that size class.
  await dirty(dir, 300 * KiB + 4096, N)
  await dirty(dir, MiB, N)
  const file = path.join(dir, 'short')
  const size = 2 * MiB + 300 * KiB + 123
  fs.writeFileSync(file, Buffer.alloc(size, 0x22))
  let seen = 0
  for await (const c of createReadStream(file, { highWaterMark: MiB })) {
    const chunk = c as Buffer
    const all = new Uint8Array(chunk.buffer)
    t.is(firstNot(chunk, 0x22), -1)
    t.is(firstNot(all, 0, 0, chunk.byteOffset), -1, 'before the chunk')
    t.is(firstNot(all, 0, chunk.byteOffset + chunk.byteLength), -1, 'after the chunk')
    seen += chunk.byteLength
  }
  t.is(seen, size)
})

const workerBody = `
'use strict'
const { parentPort, workerData } = require('node:worker_threads')
const od = require(workerData.dist)
const { file, id, rounds } = workerData
function check(b, v, what) {
  for (let i = 0; i < b.length; i++) if (b[i] !== v) throw new Error(what + ': byte ' + i + ' is ' + b[i] + ', not ' + v)
}
;(async () => {
  const fh = await od.open(file, 'w+')
  let x = id * 7919 + 1
  const rnd = (n) => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x % n }
  const kept = []
  try {
    for (let r = 0; r < rounds; r++) {
      const size = 4096 * (1 + rnd(700)) // 4 KiB .. 2.7 MiB
      const align = 4096 << rnd(6)
      const mark = 1 + ((id * 31 + r) % 250)
      const a = od.allocAligned(size, align)
      check(a, 0, 'new buffer')
      a.fill(mark)
      // I/O in flight on this buffer and on others while more buffers are made and dropped.
      const w = fh.write(a, 0, size, 0)
      const b = od.allocAligned(size, align)
      check(b, 0, 'buffer made while a write is in flight')
      await w
      const rd = fh.read(b, 0, size, 0)
      const junk = od.allocAligned(size, 4096)
      junk.fill(0xff)
      await rd
      check(b, mark, 'read back')
      check(a, mark, 'written buffer after the I/O')
      kept.push(b)
      if (kept.length > 4) {
        const old = kept.shift()
        // Transferred to the parent, which checks it and drops it (freed on the main thread).
        parentPort.postMessage({ buf: old.buffer, mark: old[0] }, [old.buffer])
      }
    }
    for (const b of kept) check(b, b[0], 'kept buffer')
    parentPort.postMessage({ done: true })
  } finally {
    await fh.close()
  }
})().catch((e) => { parentPort.postMessage({ error: String(e && e.stack || e) }) })
`

test('four workers make, fill, read into, write from and transfer buffers at once: none shares memory with another', async (t) => {
  const dir = scratch()
  const rounds = 60
  let checked = 0
  const runs = Array.from({ length: 4 }, (_, id) => new Promise<void>((resolve, reject) => {
    const w = new Worker(workerBody, { eval: true, workerData: { dist, file: path.join(dir, `w${id}`), id, rounds } })
    w.on('message', (m: { buf?: ArrayBuffer; mark?: number; done?: boolean; error?: string }) => {
      if (m.error !== undefined) reject(new Error(m.error))
      else if (m.buf !== undefined) {
        const b = new Uint8Array(m.buf)
        const bad = firstNot(b, m.mark as number)
        if (bad !== -1) reject(new Error(`transferred buffer changed at byte ${bad}`))
        checked++
      } else if (m.done === true) resolve()
    })
    w.on('error', reject)
    w.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker exited with ${code}`))))
  }))
  await Promise.all(runs)
  t.true(checked > 0)
  // Buffers made on the main thread after all that are zero too.
  for (const size of [64 * KiB, MiB, 3 * MiB]) t.is(firstNot(allocAligned(size), 0), -1)
})

test('registered buffers carved from one huge-page region (not at its start) read and write the right bytes, whole and through subarrays', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'reg')
  const total = 4 * MiB
  const want = Buffer.alloc(total)
  for (let i = 0; i < total; i += 4) want.writeUInt32LE((Math.imul(i, 2654435761) ^ 0x5a5a) >>> 0, i)
  fs.writeFileSync(file, want)
  const fh = await open(file, 'r+')
  try {
    await dirty(dir, 64 * KiB, 4)
    // Several sizes, so blocks sit at offsets 32 KiB, 64 KiB, ... inside their 2 MiB region.
    for (const [count, size] of [[7, 32 * KiB], [9, 64 * KiB], [3, 96 * KiB], [3, MiB]] as const) {
      const reg = fh.registerBuffers(count, size)
      try {
        const bufs = reg.buffers
        for (const b of bufs) t.is(firstNot(b, 0), -1, 'registered buffers start zeroed')
        // Whole-buffer reads at distinct positions, all in flight at once.
        const pos = (i: number): number => ((i * size * 3) % (total - size)) - (((i * size * 3) % (total - size)) % 4096)
        const got = await Promise.all(bufs.map((b, i) => fh.read(b, 0, size, pos(i))))
        got.forEach((r, i) => {
          t.is(r.bytesRead, size)
          t.true(bufs[i].equals(want.subarray(pos(i), pos(i) + size)), `${count} x ${size}: buffer ${i}`)
        })
        // A subarray 4 KiB into a buffer, and writes from one back to the file.
        const sub = bufs[count - 1].subarray(4096, size)
        sub.fill(0)
        t.is((await fh.read(sub, 0, sub.byteLength, 8192)).bytesRead, sub.byteLength)
        t.true(sub.equals(want.subarray(8192, 8192 + sub.byteLength)), `${size}: subarray read`)
        bufs[0].fill(0x77)
        t.is((await fh.write(bufs[0], 0, size, total - size)).bytesWritten, size)
        want.fill(0x77, total - size)
      } finally {
        reg.unregister()
      }
    }
    t.true(fs.readFileSync(file).equals(want))
  } finally {
    await fh.close()
  }
})

// Serial (ava runs serial tests before the concurrent ones): what the pool keeps is process-wide
// and bounded, so the other tests' allocations running beside it could push the dropped blocks out.
test.serial('fh.alloc and allocAligned reusing a block that a collected buffer left dirty are zero', async (t) => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) return t.fail('run with --expose-gc (the ava config passes it)')
  const fh = await open(path.join(scratch(), 'f'), 'w+')
  try {
    for (const size of [64 * KiB, MiB, 3 * MiB]) {
      const dropped = new Set<number>()
      ;(() => {
        for (let i = 0; i < 8; i++) {
          const b = allocAligned(size)
          b.fill(STALE)
          dropped.add(addressOf(b))
        }
      })()
      // Collect until a new buffer lands where a dropped one was (its finalizer gave the block back).
      // The new buffers are kept until then: a dropped new buffer would be freed by the next
      // collection and, if its block is the pool's first choice, handed out again every round.
      let reused: Buffer | undefined
      const kept: Buffer[] = []
      for (let round = 0; round < 200 && reused === undefined; round++) {
        gc()
        await new Promise<void>((r) => setImmediate(r))
        const b = round % 2 === 0 ? fh.alloc(size) : allocAligned(size)
        t.is(firstNot(b, 0), -1, `${size}: a new buffer is zero`)
        kept.push(b)
        if (dropped.has(addressOf(b))) reused = b
      }
      t.truthy(reused, `${size}: no dropped block came back in ${kept.length} collections and allocations`)
      kept.length = 0
    }
  } finally {
    await fh.close()
  }
})
