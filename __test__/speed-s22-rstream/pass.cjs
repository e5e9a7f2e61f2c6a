// One default-mode read-stream pass (speed-s22-rstream.spec.ts), counted: FILE read by API `node`
// (createReadStream, for await) or `web` (readableWebStream's default reader), chunks of CHUNK
// bytes, readAhead 4, from START to END (inclusive; -1: to the end of file). Every chunk is compared
// with the file's bytes at its place (read through node:fs). CONSUMER: `drop` takes each chunk and
// lets it go; `keep` keeps every chunk and compares them all again at the end (a chunk must never
// change once delivered); `overwrite` fills each chunk with 0xee once checked (the consumer owns
// it: later chunks must not see it); `transfer` transfers each chunk's ArrayBuffer away
// (structuredClone with transfer) and checks the moved bytes; `busy` hashes
// each chunk HASHES times (CPU-bound). Prints `RESULT <json>`: the stream's counts over the pass
// (src/streams/core.ts readCopyStats, with traceReadAddresses on: distinct addresses the reads
// went into) and the chunks' lengths. ODIRECT_STREAM_* switches come from the environment.
'use strict'
const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const root = path.join(__dirname, '..', '..', 'dist')
const { open, readableWebStream } = require(path.join(root, 'index.js'))
const { readCopyStats, traceReadAddresses } = require(path.join(root, 'src', 'streams', 'core.js'))

const [file, api, consumer, chunkArg, startArg, endArg, hashesArg] = process.argv.slice(2)
const chunkSize = Number(chunkArg)
const start = Number(startArg ?? 0)
const end = Number(endArg ?? -1)
const hashes = Number(hashesArg ?? 0)
const NAMES = ['copies', 'handed', 'reused', 'fresh', 'copyWindows', 'plainWindows', 'ringReads', 'ringBuffers', 'copiedBytes', 'addresses', 'collections']

async function* chunksOf(fh) {
  const opts = { chunkSize, readAhead: 4, start, ...(end >= 0 ? { end } : {}) }
  if (api === 'web') {
    const reader = readableWebStream(fh, opts).getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      yield value
    }
  }
  yield* fh.createReadStream(opts)
}

;(async () => {
  // The file's bytes through node:fs, up to its first unreadable MiB (a FUSE file failing EIO there).
  const pieces = []
  const fd = fs.openSync(file, 'r')
  try {
    for (let pos = 0; ; ) {
      const b = Buffer.alloc(1 << 20)
      let n
      try {
        n = fs.readSync(fd, b, 0, b.length, pos)
      } catch {
        break
      }
      if (n === 0) break
      pieces.push(b.subarray(0, n))
      pos += n
    }
  } finally {
    fs.closeSync(fd)
  }
  const all = Buffer.concat(pieces)
  const want = all.subarray(start, end >= 0 ? end + 1 : all.length)
  const fh = await open(file, 'r')
  traceReadAddresses(true)
  const s0 = readCopyStats()
  let at = 0
  let same = true
  const lens = []
  const kept = []
  let error
  try {
    for await (const ch of chunksOf(fh)) {
      const exp = want.subarray(at, at + ch.byteLength)
      if (!Buffer.from(ch.buffer, ch.byteOffset, ch.byteLength).equals(exp)) same = false
      lens.push(ch.byteLength)
      if (consumer === 'keep') kept.push([at, ch])
      else if (consumer === 'overwrite') ch.fill(0xee)
      else if (consumer === 'transfer') {
        const off = ch.byteOffset
        const moved = structuredClone(ch.buffer, { transfer: [ch.buffer] })
        if (!Buffer.from(moved, off, exp.length).equals(exp)) same = false
      } else if (consumer === 'busy') {
        for (let i = 0; i < hashes; i++) crypto.createHash('sha256').update(ch).digest()
      }
      at += exp.length
    }
  } catch (e) {
    error = { code: e.code, message: e.message }
  }
  const d = readCopyStats().map((v, i) => v - s0[i])
  d[9] = readCopyStats()[9]
  traceReadAddresses(false)
  const keptSame = kept.every(([o, ch]) => Buffer.from(ch.buffer, ch.byteOffset, ch.byteLength).equals(want.subarray(o, o + ch.byteLength)))
  await fh.close()
  const counts = Object.fromEntries(NAMES.map((n, i) => [n, d[i]]))
  process.stdout.write(`RESULT ${JSON.stringify({ bytes: at, size: want.length, same, keptSame, kept: kept.length, lens, error, ...counts })}\n`)
})().catch((e) => {
  process.stdout.write(`RESULT ${JSON.stringify({ crash: String(e && e.stack) })}\n`)
})
