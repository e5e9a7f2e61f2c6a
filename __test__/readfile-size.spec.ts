// readFile stops at the size fstat gave when it started, as node:fs does (lib/internal/fs/promises.js
// readFileHandle): a regular file that grows under the read (an active log) is not chased.
// Deterministic, on FUSE (faultfs): the first read is held in the daemon (its data is taken when
// it arrives, before the append), the test appends to the file, then releases the read; any read
// made after that sees the appended bytes. Nothing is timed: each step waits on its event.
// A file whose size says 0 (/proc) is still read to its end: layer.spec.ts '/proc files'.
import * as fs from 'node:fs'

import type { ExecutionContext } from 'ava'

import * as od from '../dist/index.js'
import { type FaultFs, faultFs, patternBuffer } from './helpers/fixtures.js'
import { must } from './helpers/fxtest.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'

const APPENDED = 3 * 65536 + 77

/** A faultfs data file of `size` bytes (the pattern), reads held while `fx.hold()` is on. */
function heldFile(t: ExecutionContext, size: number, readMax?: number): FaultFs {
  const fx = must(faultFs({ size, hold: true, threads: 2, ...(readMax === undefined ? {} : { readMax }) }))
  t.teardown(() => fx.cleanup())
  return fx
}

/**
 * Holds reads, starts `read()`, waits until its first read is held in the daemon, appends
 * APPENDED bytes to the file, releases: resolves with what `read()` returned.
 */
async function readWhileAppended<T>(fx: FaultFs, read: () => Promise<T>): Promise<T> {
  const before = fx.stats().reads
  fx.hold()
  let result: Promise<T>
  try {
    result = read()
    result.catch(() => {})
    await fx.waitFor((s) => s.held >= 1 && s.reads > before, 'the first read held')
    await fs.promises.appendFile(fx.file, Buffer.alloc(APPENDED, 0xa5))
  } finally {
    fx.release()
  }
  return result
}

testIf(FAULTFS_REASON, 'readFile(path) of a file appended to while its first read is held: exactly the size it had at the start, as node:fs', async (t) => {
  // Block aligned: the old code's read of one block more came back short at the old end and
  // went on reading past it, then kept growing its buffer while reads came back full.
  const S = 16 * 4096
  const fx = heldFile(t, S)
  const got = await readWhileAppended(fx, () => od.readFile(fx.file))
  t.is(got.length, S, `odirect readFile returned ${got.length} bytes of a file of ${S} at the start`)
  t.true(got.equals(patternBuffer(0, S)))
  t.is(fs.statSync(fx.file).size, S + APPENDED, 'the file did grow under the read')
  // node:fs in the same situation (the file restored to S bytes first).
  fs.truncateSync(fx.file, S)
  fs.writeFileSync(fx.file, patternBuffer(0, S))
  const node = await readWhileAppended(fx, () => fs.promises.readFile(fx.file))
  t.is(fs.statSync(fx.file).size, S + APPENDED)
  t.is(node.length, S, 'node:fs readFile stops at the size too')
  t.true(got.equals(node), 'odirect and node:fs return the same bytes')
  // A string result: the same bytes decoded.
  fs.truncateSync(fx.file, S)
  const text = await readWhileAppended(fx, () => od.readFile(fx.file, 'latin1'))
  t.is(text, patternBuffer(0, S).toString('latin1'))
})

testIf(FAULTFS_REASON, 'readFile(fh) and fh.readFile() of a file appended to under reads that come back a few blocks at a time: up to the size at the start, from the position; the next call reads what was appended', async (t) => {
  // Not block aligned, and faultfs answers at most 16 KiB a read: several reads, the later ones
  // after the append, the last block read whole (past the old end) and cut at the size.
  const S = 100_000
  const fx = heldFile(t, S, 16384)
  const fh = await od.open(fx.file, 'r')
  t.teardown(() => fh.close())
  const first = await readWhileAppended(fx, () => fh.readFile())
  t.is(first.length, S, `fh.readFile() returned ${first.length} bytes of a file of ${S} at the start`)
  t.true(first.equals(patternBuffer(0, S)))
  // The position moved to S: the next call reads the appended bytes (the size is S + APPENDED now).
  const rest = await od.readFile(fh)
  t.is(rest.length, APPENDED)
  t.true(rest.equals(Buffer.alloc(APPENDED, 0xa5)))
  t.is((await od.readFile(fh)).length, 0, 'at the end: nothing')
  // From a position inside the file, appended to again: a direct handle (the position block
  // aligned, as its reads) and a buffered one (not aligned).
  const appended = Buffer.alloc(APPENDED, 0xa5)
  for (const [direct, skip] of [['require', 8192], ['off', 5000]] as const) {
    const fh2 = await od.open(fx.file, 'r', { direct })
    t.teardown(() => fh2.close())
    const size = fs.statSync(fx.file).size
    t.is((await fh2.read(fh2.alloc(8192), 0, skip)).bytesRead, skip)
    const second = await readWhileAppended(fx, () => od.readFile(fh2))
    t.is(second.length, size - skip, `readFile(fh) (direct: ${direct}) from ${skip} returned ${second.length} bytes of a file of ${size} at the start`)
    const expected = Buffer.concat([patternBuffer(0, S), appended, ...(direct === 'off' ? [appended] : [])]).subarray(skip)
    t.true(second.equals(expected))
    t.is(fs.statSync(fx.file).size, size + APPENDED)
  }
})

testIf(FAULTFS_REASON, 'readFile of a file that shrank after its size was taken: the short read ends it (what is there)', async (t) => {
  const S = 16 * 4096
  const fx = heldFile(t, S, 16384)
  fx.hold()
  let p: Promise<Buffer>
  try {
    p = od.readFile(fx.file)
    p.catch(() => {})
    await fx.waitFor((s) => s.held >= 1, 'the first read held')
    fs.truncateSync(fx.file, 20000)
  } finally {
    fx.release()
  }
  const got = await p
  t.is(got.length, 20000)
  t.true(got.equals(patternBuffer(0, 20000)))
})
