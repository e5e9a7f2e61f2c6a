// One default-mode read-stream pass over FILE (speed-s20-rstream.spec.ts): chunks of CHUNK bytes,
// readAhead 4, each compared with the file's bytes read through node:fs; prints one JSON line with
// the stream's counts over the pass (src/streams/core.ts readCopyStats). CONSUMER `fast` takes
// each chunk at once; `patient` lets every read of the handle settle before it asks for the next
// chunk (a consumer slower than the device); `idle` does the same asleep on a timer (its thread
// idle meanwhile: setImmediate spins it); `busy` hashes each chunk HASHES times before it asks for
// the next (CPU-bound; speed-s21-rstream.spec.ts). ODIRECT_STREAM_READ_COPY comes from the environment.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const root = path.join(__dirname, '..', '..', 'dist')
const { open } = require(path.join(root, 'index.js'))
const { readCopyStats } = require(path.join(root, 'src', 'streams', 'core.js'))

const crypto = require('node:crypto')
const [file, consumer, chunkArg, hashesArg] = process.argv.slice(2)
const chunkSize = Number(chunkArg)
const hashes = Number(hashesArg ?? 0)
;(async () => {
  const want = fs.readFileSync(file)
  const fh = await open(file, 'r')
  const s0 = readCopyStats()
  let at = 0
  let chunks = 0
  let same = true
  let whole = 0
  for await (const ch of fh.createReadStream({ chunkSize, readAhead: 4 })) {
    if (!ch.equals(want.subarray(at, at + ch.length))) same = false
    // A chunk over all of its own ArrayBuffer (offset 0, its whole length), as before the copy.
    if (ch.byteOffset === 0 && ch.buffer.byteLength === ch.length) whole++
    at += ch.length
    chunks++
    if (consumer === 'patient') {
      while (fh.inflight > 0) await new Promise((resolve) => setImmediate(resolve))
    } else if (consumer === 'idle') {
      while (fh.inflight > 0) await new Promise((resolve) => setTimeout(resolve, 2))
    } else if (consumer === 'busy') {
      for (let i = 0; i < hashes; i++) crypto.createHash('sha256').update(ch).digest()
    }
  }
  const s1 = readCopyStats()
  const d = s1.map((v, i) => v - s0[i])
  process.stdout.write(JSON.stringify({ chunks, bytes: at, size: want.length, same, whole, copies: d[0], handed: d[1], reused: d[2], fresh: d[3], copyWindows: d[4], plainWindows: d[5] }) + '\n')
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
