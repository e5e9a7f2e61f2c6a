// Adversarial pass over the s10 merges (write-stream chains, the lookup cache, native batches).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import test from 'ava'

import { addressOf, createWriteStream, open, writableWebStream } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { closeEvent, expectError } from './helpers/events.ts'
import { FAULTFS_REASON, FULLFS_REASON, testIf } from './helpers/skips.ts'
import { faultFs, fullFs, isSkip, skipReason } from './helpers/fixtures.js'


function readAt(file: string, pos: number, len: number): Buffer {
  const fd = fs.openSync(file, 'r')
  try {
    const b = Buffer.alloc(len)
    t_n(fs.readSync(fd, b, 0, len, pos), len)
    return b
  } finally {
    fs.closeSync(fd)
  }
}

function t_n(got: number, want: number): void {
  if (got !== want) throw new Error(`read ${got} bytes, expected ${want}`)
}

/**
 * Fills the filesystem of `dir` with a file, then frees `free` bytes of it (a write needing more
 * space than that stores what fits: a short write, then ENOSPC).
 */
function fillLeaving(dir: string, free: number): void {
  const filler = path.join(dir, 'filler')
  const fd = fs.openSync(filler, 'w')
  const chunk = Buffer.alloc(4096, 1)
  let size = 0
  try {
    for (;;) size += fs.writeSync(fd, chunk)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e
  }
  fs.fsyncSync(fd)
  fs.ftruncateSync(fd, size - free)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
}

for (const direct of ['require', 'off'] as const) {
  testIf(FULLFS_REASON, `write stream (direct ${direct}), writeBehind 1: a short write whose rest fails with ENOSPC starts no later block, and the chain is forgotten`, async (t) => {
    const block = 64 * 1024
    // tmpfs: its writes store what fits and return the count (ext4 fails them whole, O_DIRECT
    // or buffered, and FUSE turns a short direct write into EIO).
    const fx = fullFs(8, { kind: 'tmpfs' })
    if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
    try {
      const file = path.join(fx.dir, 'f')
      // Block 1 written (its overwrite needs no space), block 0 a hole; then the filesystem
      // full but for half a block.
      const fd = fs.openSync(file, 'w+')
      fs.writeSync(fd, Buffer.alloc(block, 9), 0, block, block)
      fs.closeSync(fd)
      fillLeaving(fx.dir, block / 2)
      const chains = getEngine().native.chainStats[1]
      const ws = createWriteStream(file, { flags: 'r+', chunkSize: block, writeBehind: 1, direct, datasync: false })
      const e = await expectError(t, pipeline(Readable.from(Array.from({ length: 4 }, (_, i) => Buffer.alloc(block, i + 1))), ws))
      t.is(e.code, 'ENOSPC')
      t.is(e.position, block / 2)
      t.is(ws.bytesWritten, 0)
      await closeEvent(ws)
      const got = fs.readFileSync(file)
      t.true(got.subarray(0, block / 2).equals(Buffer.alloc(block / 2, 1)), 'the half of block 0 that fitted')
      // With one write behind, block 1 never started while block 0 was not whole (as with
      // ODIRECT_STREAM_CHAIN=0): its old bytes are there, not the stream's.
      t.true(got.subarray(block, 2 * block).equals(Buffer.alloc(block, 9)), `block 1 was overwritten after the failure (byte ${got[block]})`)
      t.is(got.length, 2 * block)
      // The stopped chain, its short block included, is gone once the stream is.
      t.deepEqual(getEngine().native.chainStats.slice(1), [chains, 0])
    } finally {
      fx.cleanup()
    }
  }, true)
}

for (const how of ['destroy', 'web abort'] as const) {
  testIf(FAULTFS_REASON, `write stream ${how} while a write is held by the server and the next block is held in the chain: that block never reaches the file`, async (t) => {
    const block = 64 * 1024
    const fx = faultFs({ size: 8 * block, hold: true, holdWrites: true, threads: 4 })
    if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
    try {
      const before = fs.readFileSync(fx.file)
      // From now on the server holds its replies (the stream's open and stat included).
      fx.hold()
      const engine = getEngine().native
      const held0 = engine.chainStats[2]
      const chains = engine.chainStats[1]
      const opts = { flags: 'r+', chunkSize: block, writeBehind: 1, datasync: false }
      const blocks = Array.from({ length: 3 }, (_, i) => Buffer.alloc(block, 0xa0 + i))
      let stop: () => Promise<unknown>
      if (how === 'destroy') {
        const ws = createWriteStream(fx.file, opts)
        for (const b of blocks) ws.write(b)
        stop = async () => {
          ws.destroy()
          await closeEvent(ws)
        }
      } else {
        const w = writableWebStream(fx.file, opts).getWriter()
        for (const b of blocks) void w.write(b).catch(() => {})
        stop = () => w.abort(new Error('stop')).catch(() => {})
      }
      // Block 0 in the server, block 1 (at least) held in the engine's chain.
      await fx.waitForHeld(1)
      while (engine.chainStats[2] - held0 < 1) await new Promise((r) => setImmediate(r))
      const stopped = stop()
      // The stop takes effect at once: the held block is cancelled while block 0 is still held
      // by the server (a web abort, too, though its sink's abort waits for the write in progress).
      await new Promise((r) => setImmediate(r))
      t.is(engine.chainStats[2], held0, 'the held block was cancelled at the stop')
      fx.release()
      await stopped
      t.is(engine.chainStats[1], chains, 'the chain is forgotten')
      // Only block 0 reached the server (it may have landed); nothing after it.
      t.is(fx.stats().writes, 1)
      const after = fs.readFileSync(fx.file)
      t.true(after.subarray(block).equals(before.subarray(block)), 'nothing after block 0 changed')
      t.true(after.subarray(0, block).equals(blocks[0]) || after.subarray(0, block).equals(before.subarray(0, block)))
    } finally {
      fx.cleanup()
    }
  }, true)
}

test.serial('memory reused at the address of a freed allocation the lookup cache last answered: reads and writes go to the new memory (every byte checked)', async (t) => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) return t.fail('needs --expose-gc (the ava config passes it)')
  const dir = fs.mkdtempSync('/dev/shm/odirect-adv10-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await using fh = await open(path.join(dir, 'f'), 'w+')
  const size = 16 * 1024
  const seen = new Map<number, number>()
  let reused = 0
  for (let i = 0; i < 200; i++) {
    {
      // Written from a new allocation (the cache then holds it), dropped and collected.
      const a = fh.alloc(size)
      a.fill(i & 0xff)
      a[0] = i >> 8
      const addr = addressOf(a)
      if (seen.has(addr)) reused++
      seen.set(addr, i)
      t.is((await fh.write(a, 0, size, i * size)).bytesWritten, size)
    }
    gc()
    await new Promise((r) => setImmediate(r))
    // A new allocation (often at the same address): its read lands in it, and a write from
    // it writes its own bytes.
    const b = fh.alloc(size)
    t.is((await fh.read(b, 0, size, i * size)).bytesRead, size)
    const want = Buffer.alloc(size, i & 0xff)
    want[0] = i >> 8
    if (!Buffer.from(b.buffer, b.byteOffset, size).equals(want)) return t.fail(`round ${i}: the read did not land in the new memory`)
    b.fill(0x5a)
    t.is((await fh.write(b, 0, size, (200 + i) * size)).bytesWritten, size)
  }
  const all = fs.readFileSync(path.join(dir, 'f'))
  for (let i = 0; i < 200; i++) {
    const want = Buffer.alloc(size, i & 0xff)
    want[0] = i >> 8
    if (!all.subarray(i * size, (i + 1) * size).equals(want)) return t.fail(`block ${i}`)
    if (!all.subarray((200 + i) * size, (201 + i) * size).equals(Buffer.alloc(size, 0x5a))) return t.fail(`block ${200 + i}`)
  }
  t.log(`${reused} allocations at an address seen before; lookup stats ${getEngine().native.lookupStats.join('/')}`)
  t.true(reused > 0, 'addresses were reused (the case under test happened)')
})
