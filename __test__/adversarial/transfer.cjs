// Attack: reads really pending in the kernel (faultfs holds the replies), then the destination
// memory is given away by JS (structuredClone transfer, MessageChannel postMessage transfer,
// ArrayBuffer#transfer, resizable ArrayBuffer shrunk to 0), the new owner dropped, gc() run
// repeatedly and many fresh Uint8Arrays allocated over the freed memory. Only then are the
// replies released. If the kernel writes into memory JS freed, the fresh arrays contain the
// file's bytes (or the heap is corrupted and this process dies).
//
// argv: <file on faultfs> <hold file> <stats file> <faultfs's stdout> <attack: clone|post|transfer|resize> <memory: alloc|plain>
// Prints RESULT { found, foundIn, settled: [{status, value|code}], reads, heldAtAttack }.
'use strict'
const fs = require('node:fs')
const { watchUntil } = require('../helpers/watch.cjs')
const { od, result, detachers, settle, gcHard, tick } = require('./common.cjs')

const [file, holdFile, statsFile, outFile, attack, memory] = process.argv.slice(2)
const READS = 16
const SIZE = 64 * 1024

/** faultfs's content at offset o (same as patternByte in helpers/fixtures.ts). */
function patternByte(o) {
  const s = Math.floor(o / 256) >>> 0
  const h = Math.imul(s, 0x9e3779b1) >>> 24
  return ((o % 256) * 31 + 7 + h) & 0xff
}
function patternBuffer(offset, length) {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = patternByte(offset + i)
  return b
}

function held() {
  const m = /held=(\d+)/.exec(fs.readFileSync(statsFile, 'utf8'))
  return m ? Number(m[1]) : 0
}

async function main() {
  const fh = await od.open(file, 'r')
  const bufs = []
  for (let i = 0; i < READS; i++) {
    if (memory === 'alloc') bufs.push(fh.alloc(SIZE))
    else if (attack === 'resize') bufs.push(new Uint8Array(new ArrayBuffer(SIZE, { maxByteLength: SIZE })))
    else bufs.push(new Uint8Array(new ArrayBuffer(SIZE)))
  }
  const pending = bufs.map((b, i) => settle(fh.read(b, { position: i * SIZE })))
  // Wait until the filesystem holds as many replies as this backend gets to it at once: io_uring
  // all 16 (max_background), aio and the pool the 4 their threads run (see liveness.spec.ts).
  const expect = fh.backend === 'io_uring' ? READS : 4
  // faultfs prints its counters on stdout (outFile) at every change: wait on that file's changes.
  await watchUntil(outFile, () => held() >= expect, `faultfs to hold ${expect} reads`, 20_000)
  const heldAtAttack = held()
  let refused = 0
  for (const b of bufs) {
    try {
      if (attack === 'resize') b.buffer.resize(0)
      else detachers[attack](b.buffer)
    } catch (e) {
      // Node 22 and Bun refuse to transfer odirect's (external) memory: DataCloneError. That is
      // a safe outcome too; the reads must still settle and nothing may leak.
      if (!(e && e.name === 'DataCloneError')) throw e
      refused++
    }
  }
  bufs.length = 0
  for (let r = 0; r < 4; r++) {
    gcHard()
    await tick()
  }
  // Fresh allocations over whatever memory was freed (zero-filled by V8).
  const fresh = []
  for (let i = 0; i < 512; i++) fresh.push(new Uint8Array(SIZE))
  for (let i = 0; i < 256; i++) fresh.push(new Uint8Array(4096))
  fs.rmSync(holdFile, { force: true })
  const settled = await Promise.all(pending)
  await tick()
  gcHard(2)
  // Scan the fresh arrays for 32-byte markers from the middle of every read's range.
  const needles = Array.from({ length: READS }, (_, i) => patternBuffer(i * SIZE + 8192, 32))
  let found = 0
  const foundIn = []
  for (let k = 0; k < fresh.length; k++) {
    const f = Buffer.from(fresh[k].buffer, fresh[k].byteOffset, fresh[k].byteLength)
    let nonzero = false
    for (let j = 0; j < f.length; j += 512) if (f[j] !== 0) nonzero = true
    if (!nonzero && f.indexOf(1) < 0 && f.every((x) => x === 0)) continue
    for (const n of needles) {
      if (f.indexOf(n) >= 0) {
        found++
        if (foundIn.length < 5) foundIn.push(k)
        break
      }
    }
  }
  await fh.close()
  result({ found, foundIn, settled, reads: READS, heldAtAttack, refused })
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(2)
})
