// `<odirect module> <cgroup dir> <dir> <src> <sha256 of src>`: moves itself into the memory cgroup
// (its limit far below the file's size), then reads `src` through a hashed read stream (Node and
// web), copies it with copyFile, writes a file as large through a write stream, and pipes a read
// stream into a write stream; each result is hashed through an odirect read stream (no page cache
// charged). Prints RESULT {json}: each form's hash or error.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { pipeline } = require('node:stream/promises')

const [mod, cg, dir, src, want] = process.argv.slice(2)
fs.writeFileSync(path.join(cg, 'cgroup.procs'), String(process.pid))
const od = require(mod)

async function hashOf(file) {
  const h = crypto.createHash('sha256')
  for await (const c of od.createReadStream(file)) h.update(c)
  return h.digest('hex')
}

const out = {}
async function form(name, fn) {
  if (process.env.S15_TRACE) fs.writeSync(2, `form ${name} rss ${process.memoryUsage().rss >> 20} MiB\n`)
  try {
    out[name] = await fn()
  } catch (e) {
    out[name] = `error ${e && e.code}: ${String(e && e.message).slice(0, 200)}`
  }
}

async function main() {
  const size = fs.statSync(src).size
  await form('read stream', () => hashOf(src))
  await form('web read stream', async () => {
    const fh = await od.open(src, 'r')
    try {
      const h = crypto.createHash('sha256')
      for await (const c of fh.readableWebStream()) h.update(c)
      return h.digest('hex')
    } finally {
      await fh.close()
    }
  })
  await form('copyFile', async () => {
    const dst = path.join(dir, 'copy')
    await od.copyFile(src, dst)
    const r = await hashOf(dst)
    fs.rmSync(dst)
    return r
  })
  await form('pipeline', async () => {
    const dst = path.join(dir, 'piped')
    await pipeline(od.createReadStream(src), od.createWriteStream(dst))
    const r = await hashOf(dst)
    fs.rmSync(dst)
    return r
  })
  await form('write stream', async () => {
    // The same bytes as src, made here 1 MiB at a time from src's own chunks.
    const dst = path.join(dir, 'written')
    const ws = od.createWriteStream(dst)
    const done = new Promise((res, rej) => {
      ws.on('error', rej)
      ws.on('close', res)
    })
    for await (const c of od.createReadStream(src)) {
      if (!ws.write(Buffer.from(c))) await new Promise((r) => ws.once('drain', r))
    }
    ws.end()
    await done
    const r = await hashOf(dst)
    fs.rmSync(dst)
    return r
  })
  console.log('RESULT ' + JSON.stringify({ out, want, size }))
}
main().catch((e) => {
  console.log('RESULT ' + JSON.stringify({ crash: String(e && e.stack) }))
  process.exitCode = 1
})
