// Keeps swapping DIR/x between a regular file and a FIFO (live-s22, probe's race): hard links of
// DIR/file0 and DIR/fifo0 renamed over DIR/x in turn, so that DIR/x always exists and changes
// type every few microseconds. Prints 'swapping' once it started; ends when stdin ends (checked
// between rounds of 2000 swaps).
// argv: <dir>
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const dir = process.argv[2]
const x = path.join(dir, 'x')
const file0 = path.join(dir, 'file0')
const fifo0 = path.join(dir, 'fifo0')
const tmp = path.join(dir, 'tmp')
fs.writeFileSync(file0, Buffer.alloc(8192, 1))
const r = spawnSync('mkfifo', [fifo0])
if (r.status !== 0) throw new Error(`mkfifo: ${r.stderr}`)
let done = false
process.stdin.on('end', () => (done = true)).resume()
const round = () => {
  for (let i = 0; i < 1000; i++) {
    fs.linkSync(fifo0, tmp)
    fs.renameSync(tmp, x)
    fs.linkSync(file0, tmp)
    fs.renameSync(tmp, x)
  }
  if (!done) setImmediate(round)
}
process.stdout.write('swapping\n')
round()
