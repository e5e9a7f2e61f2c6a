// One read-stream pass over FILE with ODIRECT_STREAM_READ_COPY from the environment (adversary-s21b):
// the consumer takes each chunk at once (it waits for the device: the `=cpu` rule copies), checks it
// against node:fs's bytes, then MODE: `keep` keeps every chunk and checks them all again at the end
// (a chunk the stream read into again would differ); `scribble` overwrites each chunk with 0xA5 once
// checked (a buffer the stream read into later would show it); `detach` transfers each chunk's
// ArrayBuffer away (structuredClone with transfer: the stream must not read into it again);
// `webkeep`, `webscribble`, `webdetach`: the same through readableWebStream's default reader.
// Prints one JSON line: chunks, bytes, bad (chunks that differed when taken), badLater (kept chunks
// that differed at the end), copies (readCopyStats' copied chunks in the pass).
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const [dist, file, mode, chunkArg] = process.argv.slice(2)
const { open, readableWebStream } = require(dist)
const { readCopyStats } = require(path.join(path.dirname(dist), 'src', 'streams', 'core.js'))
const chunkSize = Number(chunkArg)
;(async () => {
  const want = fs.readFileSync(file)
  const fh = await open(file, 'r')
  const s0 = readCopyStats()
  let at = 0
  let chunks = 0
  let bad = 0
  let detached = 0
  const kept = []
  // `web*` modes: the same over a web ReadableStream (its default reader).
  const web = mode.startsWith('web')
  const source = web ? readableWebStream(fh, { chunkSize, readAhead: 4 }) : fh.createReadStream({ chunkSize, readAhead: 4 })
  for await (const c of source) {
    const ch = Buffer.from(c.buffer, c.byteOffset, c.byteLength)
    const len = ch.length
    if (!ch.equals(want.subarray(at, at + ch.length))) bad++
    if (mode === 'keep' || mode === 'webkeep') kept.push([at, ch])
    else if (mode === 'scribble' || mode === 'webscribble') ch.fill(0xa5)
    else if (mode === 'detach' || mode === 'webdetach') {
      structuredClone(ch.buffer, { transfer: [ch.buffer] })
      if (ch.buffer.byteLength === 0) detached++
    }
    at += len
    chunks++
  }
  let badLater = 0
  for (const [p, ch] of kept) if (!ch.equals(want.subarray(p, p + ch.length))) badLater++
  await fh.close()
  const s1 = readCopyStats()
  process.stdout.write(JSON.stringify({ chunks, bytes: at, size: want.length, bad, badLater, detached, copies: s1[0] - s0[0], copyWindows: s1[4] - s0[4] }) + '\n')
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
