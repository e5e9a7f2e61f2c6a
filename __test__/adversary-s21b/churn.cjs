// The adaptive automatic table churned (adversary-s21b), run with --expose-gc: four loops at once,
// phases of fresh fh.alloc buffers (4 KiB, 64 KiB, 256 KiB in turn) used by two ops each (the
// table's `need` climbs) and of a set of buffers used 24 times each (it comes back down); between
// two uses a buffer is refilled with other bytes, and buffers are dropped and collected often (a
// fresh one gets a dropped one's start back: it must never write through the dropped one's slot
// or pinned pages, nor count its uses). Every write is checked in the file through node:fs at
// once; every read against the bytes last written. Prints one JSON line: ok, writes, bad (the
// first few mismatches), callStats[8..13] [registered, swept, in use, need, let go, few] at the
// end of each phase.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const [dist, file] = process.argv.slice(2)
const { open } = require(dist)
const { getEngine } = require(path.join(path.dirname(dist), 'src', 'engine.js'))
const SIZES = [4096, 65536, 262144]
const REGION = 262144
;(async () => {
  const fh = await open(file, 'w+')
  const rfd = fs.openSync(file, 'r')
  const bad = []
  let writes = 0
  let stamp = 0
  const check = (buf, pos, what) => {
    const got = Buffer.alloc(buf.length)
    fs.readSync(rfd, got, 0, got.length, pos)
    if (!got.equals(buf) && bad.length < 5) bad.push(`${what} at ${pos} (${buf.length} bytes): file has ${got[0]},${got[got.length - 1]} want ${buf[0]},${buf[buf.length - 1]}`)
  }
  const use = async (b, loop, k) => {
    // Distinct bytes per use: the first 4 a counter, the rest one value.
    const s = ++stamp
    b.fill((s % 253) + 1)
    b.writeUInt32LE(s, 0)
    const pos = (loop * 8 + (k % 8)) * REGION
    await fh.write(b, { position: pos })
    writes++
    check(b, pos, 'write')
    const want = Buffer.from(b)
    b.fill(0)
    await fh.read(b, { position: pos })
    if (!b.equals(want) && bad.length < 5) bad.push(`read at ${pos}`)
  }
  const phases = []
  for (let phase = 0; phase < 6; phase++) {
    await Promise.all(
      Array.from({ length: 4 }, async (_, loop) => {
        if (phase % 2 === 0) {
          for (let k = 0; k < 300; k++) {
            const b = fh.alloc(SIZES[(k + loop) % 3])
            await use(b, loop, k)
            await use(b, loop, k)
            if (k % 25 === 0) globalThis.gc()
          }
        } else {
          const set = Array.from({ length: 8 }, (_, i) => fh.alloc(SIZES[(i + loop) % 3]))
          for (let r = 0; r < 24; r++) for (let i = 0; i < set.length; i++) await use(set[i], loop, i)
        }
      }),
    )
    globalThis.gc()
    phases.push(getEngine().native.callStats.slice(8, 14))
  }
  fs.closeSync(rfd)
  await fh.close()
  process.stdout.write(JSON.stringify({ ok: bad.length === 0, writes, bad, phases }) + '\n')
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
