// Ordering: an un-awaited write followed by `await fh.datasync()` (and sync()). Run with
// ODIRECT_DEBUG=1: the parent checks in stderr that each write completed before the
// fdatasync/fsync after it was submitted. argv: <scratch dir>. Prints RESULT { fd }.
'use strict'
const path = require('node:path')
const { od, result } = require('./common.cjs')

async function main() {
  const fh = await od.open(path.join(process.argv[2], 'order'), 'w+')
  const writes = []
  for (let i = 0; i < 4; i++) {
    const b = fh.alloc(64 * 1024)
    b.fill(i + 1)
    writes.push(fh.write(b, { position: i * 64 * 1024 })) // not awaited
    if (i % 2 === 0) await fh.datasync()
    else await fh.sync()
  }
  const n = (await Promise.all(writes)).map((r) => r.bytesWritten)
  const fd = fh.fd
  await fh.close()
  result({ fd, n })
}
main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(2)
})
