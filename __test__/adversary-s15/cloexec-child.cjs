// `<odirect module> <dir>`, backend from ODIRECT_BACKEND: spawns a program that lists its own descriptors
// (/proc/self/fd of a `sh`) once before odirect is used (the baseline: what Node itself passes
// on), then again while a copyFile, a read stream, a write stream and a readMany are in flight on
// the chosen backend. The second child must hold exactly the baseline's descriptors: none of the
// engine's (io_uring ring, eventfds, epoll, pipes) nor any file odirect opened.
// Prints one line: RESULT {json}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { spawn } = require('node:child_process')

const [mod, dir] = process.argv.slice(2)

/** The descriptors a spawned shell holds: "fd -> target" lines (its own listing's excluded). */
function childFds() {
  return new Promise((resolve, reject) => {
    const p = spawn('/bin/sh', ['-c', 'for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink $f)"; done'], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    p.stdout.on('data', (c) => (out += c))
    p.on('error', reject)
    p.on('close', () => resolve(out.trim().split('\n').filter((l) => l && !l.endsWith(' ')).sort()))
  })
}

async function main() {
  const base = await childFds()
  const od = require(mod)
  const src = path.join(dir, 'src')
  const big = Buffer.alloc(32 * 1024 * 1024, 7)
  fs.writeFileSync(src, big)
  const fh = await od.open(src, 'r')
  const seen = []
  // Each of these is started and the listing taken once each has I/O in flight.
  let firstData
  const gotData = new Promise((r) => (firstData = r))
  const rs = od.createReadStream(src)
  const drained = (async () => {
    let n = 0
    for await (const c of rs) {
      if (n === 0) firstData()
      n += c.length
    }
    return n
  })()
  let firstProgress
  const progressed = new Promise((r) => (firstProgress = r))
  const copied = od.copyFile(src, path.join(dir, 'dst'), { onProgress: () => firstProgress() })
  const ws = od.createWriteStream(path.join(dir, 'ws'))
  const wrote = new Promise((res, rej) => {
    ws.on('error', rej)
    ws.on('close', res)
  })
  ws.write(big.subarray(0, 8 * 1024 * 1024))
  const bufs = Array.from({ length: 16 }, () => fh.alloc(1024 * 1024))
  const many = fh.readMany(bufs.map((buffer, i) => ({ buffer, position: i * 1024 * 1024 })))
  seen.push(await childFds())
  await gotData
  seen.push(await childFds())
  await progressed
  seen.push(await childFds())
  ws.end(big.subarray(0, 1024 * 1024))
  const [n] = await Promise.all([drained, copied, wrote, many])
  await fh.close()
  const info = od.engineInfo()
  console.log('RESULT ' + JSON.stringify({ base, seen, n, backend: fh.backend, info }))
}
main().catch((e) => {
  console.log('RESULT ' + JSON.stringify({ crash: String(e && e.stack) }))
  process.exitCode = 1
})
