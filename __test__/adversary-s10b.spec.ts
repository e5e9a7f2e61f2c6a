// Adversarial pass over the s10 merges (write-stream chains, the lookup cache, native batches).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import test from 'ava'

import { createWriteStream, type DirectIoError } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { closeEvent } from './helpers/events.ts'
import { fullFs, isSkip, skipReason } from './helpers/fixtures.js'

function testIf(reason: string | undefined, title: string, fn: Parameters<typeof test>[1]): void {
  if (reason === undefined) test.serial(title, fn)
  else {
    console.log(`skipped '${title}': ${reason}`)
    test.skip(`${title} (skipped: ${reason})`, fn)
  }
}
const FULLFS_REASON = skipReason(['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4'])

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

async function expectError(t: { fail: (m: string) => void }, p: Promise<unknown>): Promise<DirectIoError> {
  try {
    await p
  } catch (e) {
    return e as DirectIoError
  }
  t.fail('expected an error')
  throw new Error('unreachable')
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
  })
}
