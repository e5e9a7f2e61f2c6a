// A copyFile or writeFile({ atomic }) in Deno whose process an uncaught exception ends mid-way,
// once the temp file exists and holds data (live-s22). HOW=cancel: a globalThis 'error' listener,
// added after the copy started, cancels the exit (prints 'exit cancelled'): the copy goes on and
// ends in place ('in place').
// argv: <dist/index.js> <dir> <copy|atomic> <throw|cancel>
const [dist, dir, form, how] = process.argv.slice(2)
const od = require(dist)
const path = require('node:path')

const MiB = 1 << 20
const end = () => {
  if (how === 'cancel') {
    globalThis.addEventListener('error', (e) => {
      e.preventDefault()
      console.log('exit cancelled')
    })
  }
  setImmediate(() => {
    throw new Error('uncaught, mid-copy')
  })
}
const src = path.join(dir, 'src')
const dst = path.join(dir, 'dst')
const done = () => console.log(how === 'cancel' ? 'in place' : 'the copy ended before the exit')
let calls = 0
if (form === 'copy') {
  od.copyFile(src, dst, {
    chunkSize: MiB,
    onProgress: () => {
      if (++calls === 2) end()
    },
  }).then(done)
} else {
  od.writeFile(
    dst,
    (async function* () {
      for (let i = 0; i < 16; i++) {
        if (i === 2) {
          end()
          // After the throw (queued first): it ends the process (or, cancelled, the write goes on).
          await new Promise((resolve) => setImmediate(resolve))
        }
        yield Buffer.alloc(MiB, i)
      }
    })(),
    { atomic: true },
  ).then(done)
}
