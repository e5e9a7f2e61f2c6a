// Child of adversary-s13.spec.ts (Node, Bun, Deno): process.exit() called from inside a
// completion callback while other ops of the same engine are held by a FUSE server.
// argv: <odirect module> <FUSE file> <plain file> <mode>; mode: where exit is called from:
//   then    a read's promise callback
//   batch   a typed readMany's promise callback
//   stream  a read stream's 'data' listener
//   write   a write's promise callback (the held ops are writes too)
// Prints 'ready' once the held ops are started; on a stdin line, starts the op whose callback
// exits. Exits with status 7 from that callback; anything else is a failure.
'use strict'
const od = require(process.argv[2])
const [fuseFile, plainFile, mode] = process.argv.slice(3)

;(async () => {
  const held = await od.open(fuseFile, 'r+')
  const plain = await od.open(plainFile, 'r+')
  // Reads (or writes) the server holds; their promises never settle before the exit.
  for (let i = 0; i < 4; i++) {
    const b = held.alloc(4096)
    const p = mode === 'write' ? held.write(b.fill(i + 1), 0, 4096, i * 4096) : held.read(b, 0, 4096, i * 4096)
    p.then(() => console.log(`held op ${i} settled before the exit`), () => undefined)
  }
  console.log('ready')
  process.stdin.once('data', () => {
    process.stdin.pause()
    const b = plain.alloc(64 * 1024)
    if (mode === 'then') plain.read(b, 0, b.length, 0).then(() => process.exit(7))
    else if (mode === 'write') plain.write(b.fill(9), 0, b.length, 0).then(() => process.exit(7))
    else if (mode === 'batch')
      plain.readMany({ memory: b, offsets: new Uint32Array([0, 4096]), lengths: new Uint32Array([4096, 4096]), positions: new Float64Array([0, 4096]) }).then(() => process.exit(7))
    else if (mode === 'stream') plain.createReadStream({ start: 0, highWaterMark: 4096 }).once('data', () => process.exit(7))
    else throw new Error(`unknown mode ${mode}`)
  })
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
