// Run under RLIMIT_FSIZE (prlimit --fsize=LIMIT, SIGXFSZ ignored: writes past the limit get EFBIG),
// in Node, Bun or Deno: `<odirect module path> <dir> <limit> <src-fits> <src-over>`.
// Every whole-file and stream form of odirect writes (a) data that fits under the limit although
// its last block, padded to the block size, would not, and (b) data that does not fit. Prints one
// line: RESULT {json}, one entry per case: what the call said (ok, or the error's code, name,
// position, bytesWritten, hint) and what the file holds afterwards (size, whether its bytes are
// the data's, temp files left in the directory).
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const [mod, dir, limitArg, srcFits, srcOver] = process.argv.slice(2)
const od = require(mod)
const limit = Number(limitArg)

/** The data every case writes: byte i of the whole. */
const pat = (i) => (i * 131 + (i >>> 11) + 7) & 0xff
function data(n) {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = pat(i)
  return b
}

/** Index of the first byte of `file` that is not the data's (its size if all are), within `n`. */
function firstWrong(file, n) {
  let b
  try {
    b = fs.readFileSync(file)
  } catch {
    return -1
  }
  const m = Math.min(n, b.length)
  for (let i = 0; i < m; i++) if (b[i] !== pat(i)) return i
  return m
}

const temps = () => fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))
const sizeOf = (f) => {
  try {
    return fs.statSync(f).size
  } catch {
    return -1
  }
}

function describe(e) {
  return {
    ok: false,
    code: e && e.code,
    name: e && e.name,
    direct: e instanceof od.DirectIoError,
    position: e && e.position,
    bytesWritten: e && e.bytesWritten,
    streamBytesWritten: e && e.streamBytesWritten,
    syscall: e && e.syscall,
    hint: !!(e && typeof e.hint === 'string' && e.hint.length > 0),
    message: e && String(e.message).slice(0, 300),
  }
}

async function attempt(file, n, fn) {
  let r
  try {
    const out = await fn()
    r = { ok: true, ...(out || {}) }
  } catch (e) {
    r = describe(e)
  }
  return { ...r, size: sizeOf(file), good: firstWrong(file, n), temps: temps().length }
}

/** A Node write stream of `n` bytes in 10 000-byte pieces; its error (or none) and bytesWritten. */
function nodeStream(file, n) {
  return new Promise((resolve, reject) => {
    const ws = od.createWriteStream(file, { chunkSize: 16384, writeBehind: 2 })
    const d = data(n)
    let failed
    ws.on('error', (e) => (failed = e))
    ws.on('close', () => {
      if (failed) {
        failed.streamBytesWritten = ws.bytesWritten
        reject(failed)
      } else resolve({ bytesWritten: ws.bytesWritten })
    })
    ;(async () => {
      for (let i = 0; i < n; i += 10000) {
        if (failed) break
        if (!ws.write(d.subarray(i, Math.min(n, i + 10000)))) await new Promise((r) => ws.once('drain', r).once('close', r))
      }
      ws.end()
    })()
  })
}

async function webStream(file, n) {
  const w = od.writableWebStream(file, { chunkSize: 16384, writeBehind: 2 }).getWriter()
  const d = data(n)
  for (let i = 0; i < n; i += 10000) await w.write(d.subarray(i, Math.min(n, i + 10000)))
  await w.close()
}

async function writeManyOver(file) {
  // 16 KiB ops from 0 to 4 x the limit, in one batch: the op that crosses the limit is short (or
  // fails), every op past it fails with EFBIG, every op before it is whole.
  const fh = await od.open(file, 'w+')
  try {
    const op = 16384
    const count = Math.ceil((limit * 2) / op)
    const mem = fh.alloc(op * count)
    mem.set(data(op * count))
    const ops = []
    for (let i = 0; i < count; i++) ops.push({ buffer: mem.subarray(i * op, (i + 1) * op), position: i * op })
    let results
    try {
      results = await fh.writeMany(ops)
    } catch (e) {
      results = e.results
    }
    return { results: (results || []).map((r) => (typeof r === 'number' ? r : r && r.code)) }
  } finally {
    await fh.close()
  }
}

;(async () => {
  const fits = fs.statSync(srcFits).size
  const over = fs.statSync(srcOver).size
  const out = {}
  const f = (name) => path.join(dir, name)
  // (a) fits
  out.copyFits = await attempt(f('copy-fits'), fits, () => od.copyFile(srcFits, f('copy-fits')).then((r) => ({ bytes: r.bytes })))
  out.writeFileFits = await attempt(f('wf-fits'), fits, () => od.writeFile(f('wf-fits'), data(fits)))
  out.atomicFits = await attempt(f('atomic-fits'), fits, () => od.writeFile(f('atomic-fits'), data(fits), { atomic: true }))
  out.streamFits = await attempt(f('stream-fits'), fits, () => nodeStream(f('stream-fits'), fits))
  out.webFits = await attempt(f('web-fits'), fits, () => webStream(f('web-fits'), fits))
  // (b) over
  fs.writeFileSync(f('atomic-over'), 'the old file\n')
  out.copyOver = await attempt(f('copy-over'), over, () => od.copyFile(srcOver, f('copy-over')))
  out.writeFileOver = await attempt(f('wf-over'), over, () => od.writeFile(f('wf-over'), data(over)))
  out.atomicOver = await attempt(f('atomic-over'), over, () => od.writeFile(f('atomic-over'), data(over), { atomic: true }))
  out.atomicOverOld = fs.readFileSync(f('atomic-over'), 'utf8') === 'the old file\n'
  out.streamOver = await attempt(f('stream-over'), over, () => nodeStream(f('stream-over'), over))
  out.webOver = await attempt(f('web-over'), over, () => webStream(f('web-over'), over))
  out.writeManyOver = await attempt(f('many-over'), limit * 2, () => writeManyOver(f('many-over')))
  console.log('RESULT ' + JSON.stringify(out))
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
