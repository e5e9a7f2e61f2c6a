// Write streams with `transferChunks` (src/streams/core.ts BlockWriter #takeOver, crates/napi/src/
// stream.rs takeOver / releaseTaken): a chunk that is odirect memory, all of its ArrayBuffer,
// whole blocks, at a block boundary of the stream's data, is taken from the caller (its
// ArrayBuffer detached) and written in place; anything else is copied as without the option.
// No copy is counted natively (transferStats: chunks taken, their bytes, released) and by the
// blocks the stream allocates for its copies (none in a pipeline of whole chunks), never timed.
// Runs in Node, Bun and Deno children (their detaching of external ArrayBuffers differs).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { allocAligned, createWriteStream, DirectIoError, open, writableWebStream } from '../dist/index.js'
import { native } from '../dist/src/native.js'
import { childLines } from './helpers/child-lines.ts'
import { closeEvent, expectError } from './helpers/events.ts'
import { faultFs, fullFs, patternBuffer } from './helpers/fixtures.js'
import { must } from './helpers/fxtest.js'
import { runtimes } from './helpers/runtimes.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, FULLFS_REASON, testIf } from './helpers/skips.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const dist = path.join(here, '..', 'dist', 'index.js')
const child = path.join(here, 'streams-transfer', 'child.mjs')
const scratch = scratchDirs('streams-transfer')
const KiB = 1024
const MiB = 1024 * KiB

/** Runs the child under `argv` (a runtime) and returns its RESULT. */
function result<T>(argv: string[], ...args: string[]): T {
  const r = spawnSync(argv[0] as string, [...argv.slice(1), child, dist, ...args], { encoding: 'utf8', timeout: 120_000 })
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('RESULT '))
  if (r.status !== 0 || line === undefined) throw new Error(`child ${args.join(' ')} failed (${r.status} ${r.signal}): ${r.stdout} ${r.stderr}`)
  return JSON.parse(line.slice(7)) as T
}

interface Mix {
  unit: number
  detached: boolean[]
  transferred: number | undefined
  stats: number[]
  allocs: number
  same: boolean
  size: number
  want: number
}

// The child's chunks, 128 KiB blocks: A odirect 64 KiB (taken), B a Buffer (copied), C odirect
// after B's half block (copied), D odirect 12 KiB at a boundary (taken), E part of an odirect
// ArrayBuffer (copied), F a 100-byte odirect chunk (copied), G and H odirect after it (copied).
const TAKEN = [true, false, false, true, false, false, false, false]
const TAKEN_BYTES = 64 * KiB + 12 * KiB

for (const [name, argv] of runtimes()) {
  for (const kind of ['node', 'web'] as const) {
    test(`${name}, ${kind} stream: transferChunks takes exactly the odirect chunks that are whole blocks at a block boundary (detached, written in place), copies the others (left attached); the file is right; without the option nothing is detached`, (t) => {
      const dir = scratch()
      const on = result<Mix>(argv, 'mix', path.join(dir, 'on'), kind, '1')
      t.true(on.unit <= 4096, `block size ${on.unit}`)
      t.true(on.same, `file content (${on.size} bytes, want ${on.want})`)
      t.deepEqual(on.detached, TAKEN, 'chunks detached (taken) after the stream finished')
      t.deepEqual(on.stats, [2, TAKEN_BYTES, 2], 'native [taken, bytes, released]')
      if (kind === 'node') t.is(on.transferred, TAKEN_BYTES, 'bytesTransferred')
      const off = result<Mix>(argv, 'mix', path.join(dir, 'off'), kind, '0')
      t.true(off.same, 'file content without the option')
      t.deepEqual(off.detached, TAKEN.map(() => false), 'nothing detached without the option')
      t.deepEqual(off.stats, [0, 0, 0])
      if (kind === 'node') t.is(off.transferred, 0)
    })

    test(`${name}, ${kind} streams: a read stream piped into a transferring write stream copies the file with no copy of any whole chunk (the write stream allocates only the last, partial block); start aligned or not; the data is right`, (t) => {
      const dir = scratch()
      const size = 4 * MiB + 5000
      const src = path.join(dir, 'src')
      const data = patternBuffer(7, size)
      fs.writeFileSync(src, data)
      const chunk = 256 * KiB
      for (const start of [0, 8192, 100]) {
        const dst = path.join(dir, `dst-${start}`)
        const r = result<{ transferred: number | undefined; allocs: number; stats: number[] }>(argv, 'pipe', src, dst, kind, '1', String(start))
        t.true(fs.readFileSync(dst).equals(data.subarray(start)), `copy from ${start}`)
        // An unaligned start makes every chunk land off a block boundary: all copied.
        const whole = start % 4096 === 0 ? Math.floor((size - start) / chunk) : 0
        t.deepEqual(r.stats, [whole, whole * chunk, whole], `start ${start}: native [taken, bytes, released]`)
        if (kind === 'node') t.is(r.transferred, whole * chunk)
        if (whole > 0) t.is(r.allocs, 1, `start ${start}: blocks the write stream allocated (the partial tail's)`)
      }
      const plain = result<{ allocs: number; stats: number[] }>(argv, 'pipe', src, path.join(dir, 'plain'), kind, '0', '0')
      t.true(fs.readFileSync(path.join(dir, 'plain')).equals(data))
      t.deepEqual(plain.stats, [0, 0, 0])
      t.true(plain.allocs > 1, `without the option the stream allocates its blocks (${plain.allocs})`)
    })
  }
}

// Workers whose transferring streams die with writes in flight: the memory they took is freed
// only once the kernel is done with it (the engine's reaper keeps it), so no block gets other bytes.
for (const [name, argv] of runtimes()) {
  for (const how of ['throw', 'exit'] as const) {
    test(`${name}: 4 workers whose transferring write streams die mid-write (${how === 'throw' ? 'uncaught exception' : 'process.exit()'}): every block whole or untouched, the main thread's stream right`, (t) => {
      const r = result<{ ended: number; bad: string[]; written: number; mainOk: boolean }>(argv, 'workers', path.join(scratch(), 'f'), how, '4')
      t.log(`${r.written} of 64 blocks written before the workers died`)
      t.is(r.ended, 4)
      t.deepEqual(r.bad, [])
      t.true(r.mainOk)
    })
  }
}

test('a chunk written twice with transferChunks (detached by the first write) is refused with ERR_ODIRECT_DETACHED, Node and web; the bytes counted written are the first chunk\'s', async (t) => {
  const dir = scratch()
  const fh = await open(path.join(dir, 'n'), 'w+')
  const chunk = fh.alloc(64 * KiB).fill(3)
  const ws = fh.createWriteStream({ transferChunks: true, chunkSize: 64 * KiB })
  const failed = new Promise<unknown>((resolve) => ws.once('error', resolve))
  await new Promise<void>((resolve, reject) => ws.write(chunk, (e) => (e ? reject(e) : resolve())))
  t.is(chunk.byteLength, 0, 'detached after the first write was called back')
  const e = await expectError(t, new Promise((resolve, reject) => ws.write(chunk, (err) => (err ? reject(err) : resolve(undefined)))))
  t.is(e.code, 'ERR_ODIRECT_DETACHED')
  t.is(await failed, e, "the stream's 'error'")
  await closeEvent(ws)
  // The failure destroys the stream, which cancels the first block's write if it is still in
  // flight: what counts is that the bytes counted written are the first chunk's.
  const n = ws.bytesWritten
  t.true(n === 0 || n === 64 * KiB, `bytesWritten ${n}`)
  t.true(fs.readFileSync(path.join(dir, 'n')).subarray(0, n).equals(Buffer.alloc(n, 3)))

  const w = writableWebStream(path.join(dir, 'w'), { transferChunks: true, chunkSize: 64 * KiB }).getWriter()
  const c2 = allocAligned(64 * KiB).fill(4)
  await w.write(c2)
  t.is(c2.byteLength, 0)
  const e2 = await expectError(t, w.write(c2))
  t.is(e2.code, 'ERR_ODIRECT_DETACHED')
  // Without the option a chunk stays the caller's: written twice, both land.
  const plain = createWriteStream(path.join(dir, 'p'), { chunkSize: 64 * KiB })
  const c3 = fh.alloc(64 * KiB).fill(5)
  await pipeline(Readable.from([c3, c3]), plain)
  t.is(c3.byteLength, 64 * KiB)
  t.true(fs.readFileSync(path.join(dir, 'p')).equals(Buffer.alloc(128 * KiB, 5)))
})

test('transferChunks must be a boolean, and is a write-stream option', (t) => {
  const dir = scratch()
  t.throws(() => createWriteStream(path.join(dir, 'x'), { transferChunks: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.false(fs.existsSync(path.join(dir, 'x')))
})

// The memory of chunks the caller dropped stays the kernel's while their writes are held in
// FUSE and collections run; new allocations meanwhile (filled with 0xee) would take it were it
// freed, and their bytes would reach the file.
for (const [name, argv] of runtimes()) {
  testIf(FAULTFS_REASON, `${name}: transferred chunks the caller dropped, collections and new allocations while their writes are held: the file gets the chunks' bytes`, async (t) => {
    const fx = must(faultFs({ size: 1 * MiB, hold: true, holdWrites: true, threads: 4 }))
    t.teardown(() => fx.cleanup())
    // Deno needs V8's flag for gc(); Node its own; Bun has Bun.gc.
    const args = name === 'deno' ? [argv[0] as string, argv[1] as string, '--v8-flags=--expose-gc', ...argv.slice(2)] : name === 'node' ? [argv[0] as string, '--expose-gc'] : argv
    const c = childLines(args[0] as string, [...args.slice(1), child, dist, 'gc', fx.file], process.env, true)
    try {
      await c.line('ready')
      fx.hold()
      c.child.stdin?.write('go\n')
      await c.line('written')
      // writeBehind 2: two writes reach the server and are held there.
      await fx.waitForHeld(2)
      c.child.stdin?.end('gc\n')
      const during = JSON.parse((await c.line('gced ')).slice(5)) as { liveDuring: number; taken: number[] }
      t.true(during.taken[0] >= 2, `chunks taken while held: ${JSON.stringify(during)}`)
      t.is(fx.stats().held, 2, 'still held through the collections')
      fx.release()
      t.is(await c.exited, 0, c.err().slice(-1500))
      const r = JSON.parse((await c.line('RESULT ')).slice(7)) as { bad: number[]; called: number; stats: number[] }
      t.deepEqual(r.bad, [], 'blocks with other bytes than their chunk')
      t.is(r.called, 6)
      t.deepEqual(r.stats, [6, 6 * 64 * KiB, 6])
    } finally {
      fx.release()
    }
  })
}

// A full file system: the stream fails with ENOSPC as without the option, bytesWritten counts
// only bytes on disk, and every chunk taken is released (none left in the engine or the stream).
testIf(FULLFS_REASON, 'transferChunks on a full ext4: ENOSPC typed as without the option, bytesWritten bytes are right, every taken chunk released', async (t) => {
  const fx = must(fullFs(8))
  try {
    const block = 256 * KiB
    const data = patternBuffer(11, 16 * MiB)
    const outcome = async (transferChunks: boolean): Promise<{ code: string; syscall: string | undefined; written: number; stats: number[] }> => {
      const file = path.join(fx.dir, `f-${transferChunks}`)
      const fh = await open(file, 'w+')
      const chunks = Array.from({ length: data.length / block }, (_, i) => {
        const c = fh.alloc(block)
        c.set(data.subarray(i * block, (i + 1) * block))
        return c
      })
      const s0 = native.transferStats()
      const ws = fh.createWriteStream({ chunkSize: block, writeBehind: 4, transferChunks })
      const e = await expectError(t, pipeline(Readable.from(chunks), ws))
      await closeEvent(ws)
      t.true(e instanceof DirectIoError)
      const got = fs.readFileSync(file)
      t.true(got.length >= ws.bytesWritten && got.subarray(0, ws.bytesWritten).equals(data.subarray(0, ws.bytesWritten)), `${transferChunks}: the ${ws.bytesWritten} bytes counted are the data`)
      const stats = native.transferStats().map((x, i) => x - (s0[i] as number))
      fs.rmSync(file)
      return { code: e.code, syscall: e.syscall, written: ws.bytesWritten, stats }
    }
    const copied = await outcome(false)
    const taken = await outcome(true)
    t.is(copied.code, 'ENOSPC')
    t.is(taken.code, copied.code)
    t.is(taken.syscall, copied.syscall)
    t.true(taken.written > 0 && copied.written > 0)
    t.deepEqual(copied.stats, [0, 0, 0])
    t.true((taken.stats[0] as number) > 0, `chunks taken: ${taken.stats}`)
    t.is(taken.stats[2], taken.stats[0], `every taken chunk released: ${taken.stats}`)
  } finally {
    fx.cleanup()
  }
}, true) // serial: the native counts are the process's (the other in-process case takes chunks too)
