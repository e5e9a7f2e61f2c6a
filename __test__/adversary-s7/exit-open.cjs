// A program that leaves odirect streams open and returns: it must exit by itself, as with
// fs's streams (nothing is in flight once a stream's read-ahead or write-behind is done: the
// engine must not hold the event loop). `held` mode: reads and writes held in the kernel by
// faultfs; the program calls process.exit(0) once told (a line on stdin) and must exit 0.
// argv: <dist/index.js> <dir> <mode> [file on faultfs]. Prints 'ready' when its I/O is started.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const [dist, dir, mode, held] = process.argv.slice(2)
const od = require(dist)
const f = path.join(dir, 'in')
const out = path.join(dir, `out-${mode}`)
if (mode !== 'held') fs.writeFileSync(f, Buffer.alloc(16 << 20, 1))

if (mode === 'read') {
  // One chunk taken, the rest never read.
  const rs = od.createReadStream(f)
  rs.once('readable', () => console.log('ready', rs.read().length))
} else if (mode === 'paused') {
  const rs = od.createReadStream(f, { reuseChunks: true, readAhead: 8, chunkSize: 1 << 20 })
  rs.once('data', (c) => {
    rs.pause()
    console.log('ready', c.length)
  })
} else if (mode === 'write') {
  // Blocks written, never ended.
  const ws = od.createWriteStream(out)
  for (let i = 0; i < 12; i++) ws.write(Buffer.alloc(1 << 20, i))
  console.log('ready')
} else if (mode === 'web-read') {
  od.readableWebStream(f).getReader().read().then((r) => console.log('ready', r.value.length))
} else if (mode === 'web-write') {
  od.writableWebStream(out).getWriter().write(new Uint8Array(5 << 20)).then(() => console.log('ready'))
} else if (mode === 'held') {
  const rs = od.createReadStream(held, { chunkSize: 64 << 10, readAhead: 4 })
  rs.on('error', () => {})
  rs.once('readable', () => {})
  const ws = od.createWriteStream(held, { flags: 'r+', chunkSize: 64 << 10, writeBehind: 2 })
  ws.on('error', () => {})
  for (let i = 0; i < 8; i++) ws.write(Buffer.alloc(64 << 10, i))
  console.log('ready')
  process.stdin.once('data', () => process.exit(0))
} else {
  throw new Error(`unknown mode ${mode}`)
}
