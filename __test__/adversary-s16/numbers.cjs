// Hostile numbers (-0, NaN, ±Infinity, 2^31, 2^53, 2^53 - 4096, 2^64 as a BigInt, BigInts, 4096.5,
// numeric strings, null, objects with valueOf / Symbol.toPrimitive, one whose toPrimitive throws,
// booleans) as every positional argument and size option: fh.read / fh.write position, length and
// offset, readMany positions, read stream start / end / highWaterMark / chunkSize / readAhead,
// write stream writeBehind / start, copyFile chunkSize, truncate, alloc. Each outcome is recorded
// ('ok N' or the error's code), with whether the error is a DirectIoError and how many native I/O
// calls (the engine's methods, opens, stats, path operations) the call made: a misuse (ERR_* code)
// must be refused before any (but a write stream's unaligned start: the block size is its file's,
// known once open). Runs the same in Node, Bun and Deno; the spec compares them.
//
// argv: dir. Prints RESULT {"outcomes": {case: outcome}, "bad": [...]}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..', '..')
const binding = require(path.join(root, 'binding.js'))
const od = require(path.join(root, 'dist', 'index.js'))

let ioCalls = 0
let statCalls = 0
const IO = ['openFile', 'statFd', 'probePath', 'linkPath', 'renamePath', 'unlinkPath', 'syncDir', 'seekData', 'tryLockFd', 'unlockFd', 'dropCache']
for (const k of IO) {
  const f = binding[k]
  if (typeof f === 'function') {
    binding[k] = function (...a) {
      ioCalls++
      if (k === 'statFd') statCalls++
      return f.apply(this, a)
    }
  }
}
const proto = binding.NativeEngine.prototype
for (const k of Object.getOwnPropertyNames(proto)) {
  const d = Object.getOwnPropertyDescriptor(proto, k)
  if (k === 'constructor' || typeof d.value !== 'function') continue
  const f = d.value
  proto[k] = function (...a) {
    ioCalls++
    return f.apply(this, a)
  }
}

const dir = process.argv[2]
const f = path.join(dir, 'n.bin')
const VALUES = {
  0: 0,
  '-0': -0,
  1: 1,
  511: 511,
  NaN: NaN,
  Infinity: Infinity,
  '-Infinity': -Infinity,
  '-1': -1,
  '2^31': 2 ** 31,
  '2^53': 2 ** 53,
  '2^53-4096': 2 ** 53 - 4096,
  '2^64n': 2n ** 64n,
  '4096n': 4096n,
  '-1n': -1n,
  4096.5: 4096.5,
  '"4096"': '4096',
  null: null,
  undefined: undefined,
  valueOf: { valueOf: () => 4096 },
  toPrimitive: { [Symbol.toPrimitive]: () => 4096 },
  toPrimitiveThrows: {
    [Symbol.toPrimitive]() {
      throw new Error('mine')
    },
  },
  true: true,
}

async function collect(s) {
  let n = 0
  for await (const c of s) n += c.length
  return n
}
function written(w) {
  return new Promise((resolve, reject) => {
    w.on('error', reject)
    w.on('close', () => resolve('closed'))
    w.end('x')
  })
}

async function main() {
  fs.writeFileSync(f, Buffer.alloc(1 << 20, 0x61))
  const fh = await od.open(f, 'r+')
  const buf = fh.alloc(8192)
  const forms = {
    'read position': (v) => fh.read(buf, 0, 4096, v),
    'read { position }': (v) => fh.read(buf, { position: v }),
    'read length': (v) => fh.read(buf, 0, v, 0),
    'read offset': (v) => fh.read(buf, v, 4096, 0),
    'write position': (v) => fh.write(buf, 0, 4096, v),
    'readMany position': (v) => fh.readMany([{ buffer: buf, position: v }]),
    'createReadStream start': (v) => collect(od.createReadStream(f, { start: v })),
    'createReadStream end': (v) => collect(od.createReadStream(f, { end: v })),
    'createReadStream highWaterMark': (v) => collect(od.createReadStream(f, { highWaterMark: v })),
    'createReadStream chunkSize': (v) => collect(od.createReadStream(f, { chunkSize: v })),
    'createReadStream readAhead': (v) => collect(od.createReadStream(f, { readAhead: v })),
    'createWriteStream writeBehind': (v) => written(od.createWriteStream(`${f}.w`, { writeBehind: v })),
    'createWriteStream start': (v) => written(od.createWriteStream(`${f}.w`, { start: v })),
    'copyFile chunkSize': (v) => od.copyFile(f, `${f}.c`, { chunkSize: v }),
    truncate: (v) => fh.truncate(v),
    alloc: async (v) => fh.alloc(v),
  }
  const out = { outcomes: {}, bad: [] }
  for (const [form, run] of Object.entries(forms)) {
    for (const [name, v] of Object.entries(VALUES)) {
      if (form === 'truncate' && v === undefined) continue
      const key = `${form} ${name}`
      // Each case on the same 1 MiB file (a write at 2^31 would make the next reads 2 GiB long).
      await fh.truncate(1 << 20)
      ioCalls = 0
      statCalls = 0
      let outcome
      try {
        const r = await run(v)
        outcome = `ok ${typeof r === 'object' && r !== null ? (r.bytesRead ?? r.bytesWritten ?? r.length ?? r.bytes ?? '') : (r ?? '')}`
      } catch (e) {
        outcome = String(e && e.code)
        if (!(e instanceof od.DirectIoError)) out.bad.push(`${key}: ${e && e.constructor && e.constructor.name} ${e && e.message}, not a DirectIoError`)
        // A write stream's start is checked against the block size of the file it opened; a read
        // at a misaligned position against the file's size (an fstat: at or past the end it reads
        // 0 bytes, as fs; adversary-s21).
        else if (outcome.startsWith('ERR_') && ioCalls > 0 && !(form === 'createWriteStream start' && outcome === 'ERR_ODIRECT_ALIGNMENT') && !(form.startsWith('read') && outcome === 'ERR_ODIRECT_ALIGNMENT' && ioCalls === statCalls)) out.bad.push(`${key}: ${outcome} after ${ioCalls} native I/O calls`)
      }
      out.outcomes[key] = outcome
    }
  }
  await fh.close()
  console.log(`RESULT ${JSON.stringify(out)}`)
}
main().catch((e) => console.log(`RESULT ${JSON.stringify({ crash: String(e && e.stack) })}`))
