// Child of adversary-s14.spec.ts (Node, Bun, Deno): process.exit() from a plain read's callback
// while a whole operation has its I/O held by a FUSE server: a copyFile reading from it, a write
// stream or an array writeMany (window 4) writing to it. The forms adversary-s13 did not cover
// (it held single reads, writes, a typed batch and a read stream).
// argv: <odirect module> <FUSE file> <plain file> <dir for copies> <mode: copy | wstream | many>
// Prints 'ready' once the operation is started; on a stdin line, exits with 7 from the callback.
'use strict'
const path = require('node:path')
const od = require(process.argv[2])
const [fuseFile, plainFile, dir, mode] = process.argv.slice(3)

;(async () => {
  const plain = await od.open(plainFile, 'r+')
  const note = (p) => p.then(() => console.log(`${mode} settled before the exit`), () => undefined)
  if (mode === 'copy') note(od.copyFile(fuseFile, path.join(dir, 'copy'), { chunkSize: 64 * 1024 }))
  else if (mode === 'wstream') {
    const ws = od.createWriteStream(fuseFile, { flags: 'r+', chunkSize: 64 * 1024, writeBehind: 2 })
    ws.on('error', () => undefined)
    for (let i = 0; i < 8; i++) ws.write(Buffer.alloc(64 * 1024, i + 1))
    note(new Promise((resolve) => ws.on('finish', resolve)))
    ws.end()
  } else if (mode === 'many') {
    const fh = await od.open(fuseFile, 'r+')
    const mem = fh.alloc(16 * 4096).fill(5)
    note(fh.writeMany(Array.from({ length: 16 }, (_, i) => ({ buffer: mem.subarray(i * 4096, (i + 1) * 4096), position: i * 4096 })), { window: 4 }))
  } else throw new Error(`unknown mode ${mode}`)
  console.log('ready')
  process.stdin.once('data', () => {
    process.stdin.pause()
    const b = plain.alloc(64 * 1024)
    plain.read(b, 0, b.length, 0).then(() => process.exit(7))
  })
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
