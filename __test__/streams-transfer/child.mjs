// Child of streams-transfer.spec.ts (Node, Bun, Deno): write streams with `transferChunks`
// (src/streams/core.ts BlockWriter, crates/napi/src/stream.rs takeOver / releaseTaken).
// argv: <odirect module> <mode> ...; prints one line RESULT <json> (and, for 'gc', progress lines).
//   mix <file> <node|web> <0|1>: chunks of every kind written in one stream (see below).
//   pipe <src> <dst> <node|web> <0|1> <start>: a read stream piped into a write stream.
//   gc <file>: (FUSE file whose writes the parent holds) transferred chunks dropped, collections
//     and new allocations filled with 0xee while the writes are held; then the stream ends.
//   workers <file> <throw|exit> <count>: worker threads whose transferring streams die mid-write.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { createRequire } from 'node:module'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Worker } from 'node:worker_threads'

const [mod, mode, ...args] = process.argv.slice(2)
const req = createRequire(import.meta.url)
const od = req(mod)
const { native } = req(path.join(path.dirname(mod), 'src', 'native.js'))
const KiB = 1024
const stats = () => native.transferStats()
const delta = (a, b) => b.map((x, i) => x - a[i])
const fill = (b, seed) => {
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + seed * 7 + (i >> 12)) & 0xff
  return b
}
const out = (r) => console.log('RESULT ' + JSON.stringify(r))
const isDetached = (b) => b.byteLength === 0 && b.buffer.byteLength === 0
/** Counts the blocks `fh.alloc` hands out from now on (a write stream's copies: none when every chunk is taken); returns the count so far. */
const countAllocs = (fh) => {
  let n = 0
  const alloc = fh.alloc.bind(fh)
  fh.alloc = (size) => {
    n++
    return alloc(size)
  }
  return () => n
}

/** Writes `chunks` to a new stream of `kind` over `fh`; resolves once it finished. */
async function writeAll(kind, fh, chunks, opts) {
  if (kind === 'node') {
    const ws = fh.createWriteStream(opts)
    await pipeline(Readable.from(chunks), ws)
    return ws.bytesTransferred
  }
  const w = od.writableWebStream(fh, { ...opts, autoClose: true }).getWriter()
  for (const c of chunks) await w.write(c)
  await w.close()
  return undefined
}

async function mix(file, kind, transfer) {
  const fh = await od.open(file, 'w+')
  const unit = fh.alignment.offset
  const a = (n, seed) => fill(od.allocAligned(n, 4096), seed)
  // Planned with 128 KiB blocks (see the spec): [transferred?] in a stream with the option.
  const chunks = [
    a(64 * KiB, 1), // A: odirect, whole, at a block boundary: taken
    fill(Buffer.alloc(64 * KiB), 2), // B: an ordinary Buffer: copied (leaves half a block gathered)
    a(64 * KiB, 3), // C: odirect, but after a gathered part: copied (completes the block)
    a(3 * 4096, 4), // D: odirect, whole blocks, at a boundary: taken
    a(8192, 5).subarray(0, 4096), // E: part of an odirect ArrayBuffer: copied
    a(100, 6), // F: a partial block: copied
    a(64 * KiB, 7), // G: after the partial block: copied
    a(3 * 4096, 8).subarray(0), // H: copied (the stream is not at a block boundary any more)
  ]
  const want = Buffer.concat(chunks.map((c) => Buffer.from(c)))
  const allocs = countAllocs(fh)
  const s0 = stats()
  const transferred = await writeAll(kind, fh, chunks, { chunkSize: 128 * KiB, writeBehind: 2, transferChunks: transfer, autoClose: true })
  const got = fs.readFileSync(file)
  out({ unit, detached: chunks.map(isDetached), transferred, stats: delta(s0, stats()), allocs: allocs(), same: got.equals(want), size: got.length, want: want.length })
}

async function pipe(src, dst, kind, transfer, start) {
  const fh = await od.open(dst, 'w')
  const allocs = countAllocs(fh)
  const s0 = stats()
  const ro = { chunkSize: 256 * KiB, start }
  const wo = { chunkSize: 256 * KiB, transferChunks: transfer, autoClose: true }
  let transferred
  if (kind === 'node') {
    const ws = fh.createWriteStream(wo)
    await pipeline(od.createReadStream(src, ro), ws)
    transferred = ws.bytesTransferred
  } else {
    await od.readableWebStream(src, ro).pipeTo(od.writableWebStream(fh, wo))
  }
  out({ transferred, allocs: allocs(), stats: delta(s0, stats()) })
}

const gcNow = () => {
  if (typeof globalThis.Bun !== 'undefined') globalThis.Bun.gc(true)
  else globalThis.gc()
}

async function gcMode(file) {
  const BLOCK = 64 * KiB
  const N = 6
  const fh = await od.open(file, 'r+')
  const ws = fh.createWriteStream({ chunkSize: BLOCK, writeBehind: 2, transferChunks: true, datasync: false })
  const done = new Promise((resolve, reject) => {
    ws.on('finish', resolve)
    ws.on('error', reject)
  })
  const lines = []
  let wake
  process.stdin.setEncoding('utf8').on('data', (d) => {
    lines.push(...d.split('\n').filter(Boolean))
    wake?.()
  })
  const nextLine = async () => {
    while (lines.length === 0) await new Promise((r) => (wake = r))
    return lines.shift()
  }
  // Open (and its stat) before the parent holds the server's replies.
  await new Promise((resolve) => ws.once('ready', resolve))
  console.log('ready')
  await nextLine()
  let called = 0
  const live0 = native.memoryStats()[0]
  const s0 = stats()
  // The chunks are made and written in a function: nothing of them stays reachable but the stream's.
  ;(() => {
    for (let i = 0; i < N; i++) ws.write(fill(fh.alloc(BLOCK), 10 + i), () => called++)
  })()
  ws.end()
  console.log('written')
  // The parent holds the writes in FUSE; it says 'gc' once they are held.
  await nextLine()
  const keep = []
  for (let r = 0; r < 8; r++) {
    gcNow()
    // Memory freed under a held write would be reused by these (odirect's pool hands freed
    // blocks out again) and its bytes reach the file as 0xee.
    for (let i = 0; i < 4; i++) keep.push(fh.alloc(BLOCK).fill(0xee))
    await new Promise((resolve) => setImmediate(resolve))
  }
  console.log('gced ' + JSON.stringify({ liveDuring: native.memoryStats()[0] - live0 - keep.length, taken: delta(s0, stats()) }))
  await done
  const got = fs.readFileSync(file).subarray(0, N * BLOCK)
  const bad = []
  for (let i = 0; i < N; i++) if (!got.subarray(i * BLOCK, (i + 1) * BLOCK).equals(fill(Buffer.alloc(BLOCK), 10 + i))) bad.push(i)
  keep.length = 0
  out({ bad, called, stats: delta(s0, stats()) })
  process.stdin.destroy()
}

async function workers(file, how, count) {
  const BLOCKS = 16
  const BLOCK = 64 * KiB
  const N = Number(count)
  const body = `
const { workerData } = require('node:worker_threads')
const od = require(${JSON.stringify(mod)})
;(async () => {
  const { file, w, how } = workerData
  const fh = await od.open(file, 'r+')
  const ws = fh.createWriteStream({ start: w * ${BLOCKS * BLOCK}, chunkSize: ${BLOCK}, writeBehind: 4, transferChunks: true, datasync: false })
  for (let i = 0; i < ${BLOCKS}; i++) ws.write(fh.alloc(${BLOCK}).fill(w * 16 + i + 1))
  if (how === 'throw') throw new Error('worker dies with its writes in flight')
  process.exit(3)
})()
`
  const workerFile = `${file}.worker.cjs`
  fs.writeFileSync(workerFile, body)
  fs.writeFileSync(file, Buffer.alloc(N * BLOCKS * BLOCK))
  let ended = 0
  for (let w = 0; w < N; w++) {
    await new Promise((resolve) => {
      const worker = new Worker(workerFile, { workerData: { file, w, how } })
      worker.on('error', () => undefined)
      worker.on('exit', () => {
        ended++
        resolve()
      })
    })
  }
  const back = fs.readFileSync(file)
  const bad = []
  let written = 0
  for (let w = 0; w < N; w++) {
    for (let i = 0; i < BLOCKS; i++) {
      const blk = back.subarray((w * BLOCKS + i) * BLOCK, (w * BLOCKS + i + 1) * BLOCK)
      const v = (w * 16 + i + 1) & 0xff
      if (blk.every((x) => x === v)) written++
      else if (!blk.every((x) => x === 0)) bad.push(`worker ${w} block ${i}: ${blk[0]}..${blk[BLOCK - 1]}`)
    }
  }
  // The main thread's own transferring stream afterwards.
  const fh = await od.open(`${file}.main`, 'w+')
  const chunk = fill(fh.alloc(BLOCK), 99)
  const copy = Buffer.from(chunk)
  const s0 = stats()
  await writeAll('node', fh, [chunk], { transferChunks: true, chunkSize: BLOCK })
  const mainOk = fs.readFileSync(`${file}.main`).equals(copy) && delta(s0, stats())[0] === 1
  fs.rmSync(workerFile, { force: true })
  fs.rmSync(`${file}.main`, { force: true })
  out({ ended, bad, written, mainOk })
}

const run = { mix: () => mix(args[0], args[1], args[2] === '1'), pipe: () => pipe(args[0], args[1], args[2], args[3] === '1', Number(args[4])), gc: () => gcMode(args[0]), workers: () => workers(args[0], args[1], args[2]) }[mode]
run().catch((e) => {
  console.error(e)
  process.exit(1)
})
