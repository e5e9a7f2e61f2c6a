// A write stream attacked as a user's program would meet it, run in Node, Bun and Deno from an
// installed package: `<odirect module path> <mode> <file>`, mode one of
//   short    the file's server acknowledges half of every write (faultfs --short-writes)
//   enospc   the file's filesystem fills up mid-stream
//   destroy  writes held in the kernel by the file's server when the stream is destroyed (the
//            parent holds them, waits for them to be held after 'ready', sends a line, then
//            lets them go once the child says 'destroyed')
// Every block is 64 KiB of byte (block index + 1). Prints one line: RESULT {json} with the
// stream's error, bytesWritten and the engine's chains and ops in flight once it closed and
// every write was reaped.
'use strict'
const path = require('node:path')

const [mod, mode, file] = process.argv.slice(2)
const od = require(mod)
const { getEngine } = require(path.join(path.dirname(require.resolve(mod)), 'src', 'engine.js'))
const BLOCK = 64 << 10
const blocks = mode === 'enospc' ? 256 : 8

function until(cond) {
  return new Promise((resolve) => {
    const check = () => (cond() ? resolve() : setTimeout(check, 5))
    check()
  })
}

;(async () => {
  const native = getEngine().native
  const chains0 = native.chainStats[1]
  const ws = od.createWriteStream(file, { flags: mode === 'enospc' ? 'w' : 'r+', chunkSize: BLOCK, writeBehind: 2 })
  let error
  ws.on('error', (e) => (error = e))
  const closed = new Promise((r) => ws.once('close', r))
  for (let i = 0; i < blocks; i++) ws.write(Buffer.alloc(BLOCK, (i + 1) & 0xff))
  if (mode === 'destroy') {
    console.log('ready')
    await new Promise((r) => process.stdin.once('data', r))
    ws.destroy()
    process.stdin.pause()
    console.log('destroyed')
  } else ws.end()
  await closed
  // The stream is closed; its writes still in the kernel complete when the server answers.
  await until(() => native.inflight === 0)
  const [, chains, held] = native.chainStats
  console.log(
    'RESULT ' +
      JSON.stringify({
        code: error && error.code,
        name: error && error.name,
        hint: error && typeof error.hint === 'string' && error.hint.length > 0,
        position: error && error.position,
        bytesWritten: ws.bytesWritten,
        chains: chains - chains0,
        held,
        inflight: native.inflight,
      }),
  )
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
