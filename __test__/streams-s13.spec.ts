// Streams, thirteenth session: a write stream that extends its file reserves the space ahead of
// its writes (src/streams/core.ts ALLOCATE_AHEAD, opt-in with ODIRECT_STREAM_ALLOCATE_AHEAD=1),
// so its direct writes land inside the file's size. On ext4 a direct write past the end is
// synchronous (the size must be updated): io_uring cannot issue it without blocking and hands
// it to an io-wq worker, one at a time per inode. Counted through the kernel's
// io_uring:io_uring_queue_async_work tracepoint, in a trace instance of the child's own,
// filtered to the child (the switch is read once at load, so each case runs in a child).
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { scratchDirs } from './helpers/scratch.ts'
import { tracefsReason } from './helpers/tracefs.ts'
import { testIf } from './helpers/skips.ts'

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.js')
const TRACE_EVENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'trace-event.cjs')
const scratch = scratchDirs('streams-s13')
const MiB = 1024 * 1024

function fsType(dir: string): string {
  return execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim()
}

function why(): string | undefined {
  const reason = tracefsReason('io_uring_queue_async_work')
  if (reason !== undefined) return reason
  // The synchronous extending direct write is ext4's (ext4_dio_write_iter: IOMAP_DIO_FORCE_WAIT).
  const t = fsType('/var/tmp')
  if (t !== 'ext2/ext3') return `/var/tmp is ${t}, not ext4 (the case is ext4's)`
  return undefined
}
const WHY = why()

/**
 * In a child (its own copy of the switches): a write stream of `size` bytes to a new file, 1 MiB
 * blocks, writeBehind 4, datasync, with io_uring_queue_async_work traced for the child's own
 * threads. Prints [io-wq hand-overs, size on disk, bytes that differ from the source].
 */
const CHILD = `
const fs = require('node:fs')
const { Readable } = require('node:stream'), { pipeline } = require('node:stream/promises')
const { createWriteStream } = require(${JSON.stringify(DIST)})
const { traceEvent } = require(${JSON.stringify(TRACE_EVENT)})
const [file, size] = [process.argv[1], Number(process.argv[2])]
const src = Buffer.alloc(size)
for (let i = 0; i < size; i += 512) src[i] = (i / 512) % 251 + 1
;(async () => {
  // The stream's ops are submitted, and handed to io-wq, by the JS thread (the main thread).
  const trace = await traceEvent('io_uring/io_uring_queue_async_work', process.pid, async () => {
    const pieces = []
    for (let o = 0; o < size; o += 3 * 65536 + 512) pieces.push(src.subarray(o, Math.min(size, o + 3 * 65536 + 512)))
    await pipeline(Readable.from(pieces), createWriteStream(file, { chunkSize: ${MiB}, writeBehind: 4, datasync: true }))
  })
  const punts = (trace.match(/io_uring_queue_async_work:/g) || []).length
  const got = fs.readFileSync(file)
  let diff = Math.abs(got.length - size)
  for (let i = 0; i < Math.min(got.length, size); i++) if (got[i] !== src[i]) diff++
  console.log(JSON.stringify([punts, fs.statSync(file).size, diff]))
})().catch((e) => { console.error(e); process.exit(1) })
`

function run(env: Record<string, string>, file: string, size: number): [number, number, number] {
  const out = execFileSync(process.execPath, ['-e', CHILD, file, String(size)], { encoding: 'utf8', env: { ...process.env, ...env } })
  return JSON.parse(out.trim().split('\n').pop() as string) as [number, number, number]
}

// 48 MiB + 5000 bytes: 49 one-MiB writes, the last one partial (padded, then the file truncated
// to its exact length), all inside the first reservation (at least 64 MiB ahead).
const SIZE = 48 * MiB + 5000

testIf(WHY, 'write stream to a new ext4 file: with ODIRECT_STREAM_ALLOCATE_AHEAD=1 its writes are not handed to io-wq (without: about one per write)', (t) => {
  const dir = scratch()
  const [ahead, aheadSize, aheadDiff] = run({ ODIRECT_STREAM_ALLOCATE_AHEAD: '1' }, path.join(dir, 'ahead.bin'), SIZE)
  const [plain, plainSize, plainDiff] = run({ ODIRECT_STREAM_ALLOCATE_AHEAD: '0' }, path.join(dir, 'plain.bin'), SIZE)
  t.log(`io-wq hand-overs: ${ahead} reserving ahead, ${plain} without (49 writes)`)
  // Both files: exactly the source, the exact length (the reservation truncated away).
  t.deepEqual([aheadSize, aheadDiff], [SIZE, 0])
  t.deepEqual([plainSize, plainDiff], [SIZE, 0])
  // Without: every extending write goes through io-wq (49; a few more for the fsync/ftruncate).
  t.true(plain >= 40, `without reserving ahead: ${plain} hand-overs`)
  // With: the fallocates (the first, and the next one taken early, past half of the first),
  // the ftruncate and the fdatasync (io_uring runs those in io-wq), and the writes issued while
  // the early fallocate held the inode (at most the stream's 2 x writeBehind blocks): 9 here.
  t.true(ahead <= 20, `reserving ahead: ${ahead} hand-overs`)
})

/**
 * In a child with ODIRECT_STREAM_ALLOCATE_AHEAD=1: a write stream to a new file gets 8 MiB (each
 * write waited for), then is destroyed with an error. Prints [size on disk, bytesWritten].
 */
const DESTROY_CHILD = `
const fs = require('node:fs')
const { once } = require('node:events')
const { createWriteStream } = require(${JSON.stringify(DIST)})
const file = process.argv[1]
;(async () => {
  const ws = createWriteStream(file, { chunkSize: ${MiB}, writeBehind: 2 })
  ws.on('error', () => {})
  const piece = Buffer.alloc(${MiB}, 7)
  for (let i = 0; i < 8; i++) if (!ws.write(piece)) await once(ws, 'drain')
  // Past the first reservation's start: the file's size was moved ahead (at least 64 MiB).
  const during = fs.statSync(file).size
  const closed = new Promise((resolve) => ws.once('close', resolve))
  ws.destroy(new Error('stop'))
  await closed
  console.log(JSON.stringify([during, fs.statSync(file).size, ws.bytesWritten]))
})().catch((e) => { console.error(e); process.exit(1) })
`

testIf(WHY, 'write stream reserving ahead (ODIRECT_STREAM_ALLOCATE_AHEAD=1), destroyed before its end: the file is cut back to the bytes written', (t) => {
  const file = path.join(scratch(), 'destroyed.bin')
  const out = execFileSync(process.execPath, ['-e', DESTROY_CHILD, file], { encoding: 'utf8', env: { ...process.env, ODIRECT_STREAM_ALLOCATE_AHEAD: '1' } })
  const [during, after, written] = JSON.parse(out.trim().split('\n').pop() as string) as [number, number, number]
  t.log(`size while writing ${during}, after destroy ${after}, bytesWritten ${written}`)
  t.true(during >= 64 * MiB, `the reservation moved the size ahead (${during})`)
  t.true(written > 0 && written <= 8 * MiB)
  t.is(after, written)
})

/**
 * In a child with ODIRECT_STREAM_ALLOCATE_AHEAD=1: a 16 KiB file, 4 KiB written in place at 4 KiB
 * (flags 'r+', start), with io_uring_submit_req traced. Prints [fallocates submitted, size after].
 */
const INPLACE_CHILD = `
const fs = require('node:fs')
const { Readable } = require('node:stream'), { pipeline } = require('node:stream/promises')
const { createWriteStream } = require(${JSON.stringify(DIST)})
const { traceEvent } = require(${JSON.stringify(TRACE_EVENT)})
const file = process.argv[1]
fs.writeFileSync(file, Buffer.alloc(16384, 1))
;(async () => {
  const trace = await traceEvent('io_uring/io_uring_submit_req', process.pid, () =>
    pipeline(Readable.from([Buffer.alloc(4096, 2)]), createWriteStream(file, { flags: 'r+', start: 4096 })),
  )
  const ops = [...trace.matchAll(/opcode (\\w+)/g)].map((m) => m[1])
  console.log(JSON.stringify([ops.filter((o) => o === 'FALLOCATE').length, fs.statSync(file).size, ops.length]))
})().catch((e) => { console.error(e); process.exit(1) })
`

testIf(WHY, 'write stream reserving ahead (ODIRECT_STREAM_ALLOCATE_AHEAD=1) that overwrites in place inside the file reserves nothing; the size stays', (t) => {
  const file = path.join(scratch(), 'inplace.bin')
  const out = execFileSync(process.execPath, ['-e', INPLACE_CHILD, file], { encoding: 'utf8', env: { ...process.env, ODIRECT_STREAM_ALLOCATE_AHEAD: '1' } })
  const [fallocates, size, ops] = JSON.parse(out.trim().split('\n').pop() as string) as [number, number, number]
  t.log(`${ops} ops submitted, ${fallocates} fallocate`)
  t.true(ops > 0, 'the trace saw the stream’s ops')
  t.is(fallocates, 0)
  t.is(size, 16384)
})
