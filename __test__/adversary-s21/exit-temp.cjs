// A copyFile or writeFile({ atomic }) whose process ends mid-way through process.exit() or an
// uncaught exception, once the temp file exists and holds data (from onProgress, or from the
// iterable writeFile pulls its data from).
// argv: <dist/index.js> <dir> <copy|atomic> <exit|throw>
const [dist, dir, form, how] = process.argv.slice(2)
const od = require(dist)
const fs = require('node:fs')
const path = require('node:path')

const MiB = 1 << 20
const end = () => {
  if (how === 'exit') process.exit(3)
  // Uncaught: the process ends with code 1 (its 'exit' listeners run).
  setImmediate(() => {
    throw new Error('uncaught, mid-copy')
  })
}
const src = path.join(dir, 'src')
const dst = path.join(dir, 'dst')
let calls = 0
if (form === 'copy') {
  od.copyFile(src, dst, {
    chunkSize: MiB,
    onProgress: () => {
      if (++calls === 2) end()
    },
  }).then(() => console.log('copied: the copy ended before the exit'))
} else {
  od.writeFile(
    dst,
    (async function* () {
      for (let i = 0; i < 16; i++) {
        if (i === 2) {
          end()
          await new Promise(() => {}) // the exception ends the process meanwhile
        }
        yield Buffer.alloc(MiB, i)
      }
    })(),
    { atomic: true },
  ).then(() => console.log('written: the write ended before the exit'))
}
