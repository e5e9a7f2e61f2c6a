// adversary-s22b: process.exit() while the temp file's open is in flight. Starts writeFile(DST,
// { atomic }) or copyFile(SRC, DST); the native open of the temp file is wrapped: once it was
// started, this spins synchronously (no promise resumes meanwhile) until the file it creates is
// there, prints 'exit' and calls process.exit(0): the file made, its open's promise not resumed.
// argv: <dist> <dir> <write|copy>
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const [dist, dir, form] = process.argv.slice(2)
const od = require(dist)
const { native } = require(path.join(path.dirname(dist), 'src', 'native.js'))
const real = native.openFile
native.openFile = function (p, ...rest) {
  const r = real.call(this, p, ...rest)
  if (String(p).includes('.odirect-tmp-')) {
    const end = Date.now() + 10_000
    while (!fs.existsSync(p) && Date.now() < end) {}
    console.log(fs.existsSync(p) ? 'exit' : 'never made')
    process.exit(0)
  }
  return r
}
const dst = path.join(dir, 'dst')
const p = form === 'copy' ? od.copyFile(path.join(dir, 'src'), dst) : od.writeFile(dst, Buffer.alloc(1 << 20, 7), { atomic: true })
p.then(() => console.log('finished'), (e) => console.log('failed', e.code))
