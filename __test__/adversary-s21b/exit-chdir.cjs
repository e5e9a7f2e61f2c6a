// A copyFile or writeFile({ atomic }) given relative paths, whose process changes its working
// directory and then ends mid-way through process.exit() (adversary-s21b): the 'exit' listener
// must remove the temp file where it was made, not look for it under the new working directory.
// argv: <dist/index.js> <dir> <copy|atomic>; the source is <dir>/src.
const [dist, dir, form] = process.argv.slice(2)
const od = require(dist)
const MiB = 1 << 20
process.chdir(dir)
const end = () => {
  process.chdir('/')
  process.exit(3)
}
let calls = 0
if (form === 'copy') {
  od.copyFile('src', 'dst', {
    chunkSize: MiB,
    onProgress: () => {
      if (++calls === 2) end()
    },
  }).then(() => console.log('copied: the copy ended before the exit'))
} else {
  od.writeFile(
    'dst',
    (async function* () {
      for (let i = 0; i < 16; i++) {
        if (i === 2) end()
        yield Buffer.alloc(MiB, i)
      }
    })(),
    { atomic: true },
  ).then(() => console.log('written: the write ended before the exit'))
}
