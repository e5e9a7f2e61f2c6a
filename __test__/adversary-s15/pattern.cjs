// The bytes of a file that only ever grows: byte at offset o, the same whoever writes it.
'use strict'
function pattern(off, n) {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) {
    const o = off + i
    b[i] = (Math.imul(o, 2654435761) >>> 24) ^ (o & 0xff)
  }
  return b
}
module.exports = { pattern }
