// `<file> <from> <bytes>`: appends the pattern of `pattern(off)` to `file` (O_APPEND) in 777-byte
// pieces from offset `from` until `bytes` more are written; prints "go" before the first and
// "stopped" after the last, then waits for stdin to close (so the spec decides when it ends).
'use strict'
const fs = require('node:fs')
const { pattern } = require('./pattern.cjs')

const [file, fromArg, bytesArg] = process.argv.slice(2)
const fd = fs.openSync(file, 'a')
let off = Number(fromArg)
const stop = off + Number(bytesArg)
process.stdout.write('go\n')
while (off < stop) {
  fs.writeSync(fd, pattern(off, 777))
  off += 777
}
process.stdout.write('stopped\n')
process.stdin.resume()
process.stdin.on('end', () => process.exit(0))
