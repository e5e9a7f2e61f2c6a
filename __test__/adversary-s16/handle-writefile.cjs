// writeFile / readFile on a FileHandle whose position is inside a block, as fs/promises' users
// write: `await fh.writeFile(a); await fh.writeFile(b)` (the second starts where the first ended),
// after `fh.readFile()` to an end that is not a block multiple, after a read; then the file and
// what each readFile returned are compared byte for byte with node:fs/promises doing the same.
// A write-only handle there cannot read the block's bytes before its position: a typed error.
//
// argv: dir. Prints RESULT {"cases", "bad": [...], "writeOnly": {code, message}}.
'use strict'
const fs = require('node:fs')
const fsp = require('node:fs/promises')
const path = require('node:path')

const od = require(path.join(__dirname, '..', '..', 'dist', 'index.js'))
const dir = process.argv[2]

function pattern(size, seed) {
  const b = Buffer.alloc(size)
  for (let i = 0; i < size; i++) b[i] = 97 + ((i + seed) % 26)
  return b
}

/** The same steps on `m`'s handle of `file`: what the reads returned, and the file's size at the end. */
async function steps(m, file, flags, pre, data) {
  const h = await m.open(file, flags)
  const seen = []
  try {
    if (pre === 'readFile') seen.push(await h.readFile())
    if (pre === 'read') {
      const b = m === od ? h.alloc(512) : Buffer.alloc(512)
      const { bytesRead } = await h.read(b, 0, 512, null)
      seen.push(Buffer.from(b.subarray(0, bytesRead)))
    }
    await h.writeFile(data)
    await h.writeFile(data)
    seen.push(await h.readFile())
    await h.writeFile('tail')
    seen.push(await h.readFile())
  } finally {
    await h.close()
  }
  return seen
}

async function main() {
  const out = { cases: 0, bad: [] }
  const a = path.join(dir, 'fs')
  const b = path.join(dir, 'od')
  for (const flags of ['r+', 'w+']) {
    for (const size of [0, 5, 513, 4096, 5000, 12345, 70000]) {
      for (const data of ['x', 'hello world '.repeat(500), Buffer.alloc(4096, 7), pattern(70001, 3)]) {
        for (const pre of ['none', 'readFile', 'read']) {
          const init = pattern(size, 0)
          fs.writeFileSync(a, init)
          fs.writeFileSync(b, init)
          out.cases++
          const what = `${flags} size ${size} data ${data.length} after ${pre}`
          let want
          let got
          try {
            want = await steps(fsp, a, flags, pre, data)
            got = await steps(od, b, flags, pre, data)
          } catch (e) {
            out.bad.push(`${what}: ${e.code} ${e.message}`)
            continue
          }
          const same = want.length === got.length && want.every((w, i) => w.equals(got[i]))
          if (!same) out.bad.push(`${what}: readFile results differ`)
          const fa = fs.readFileSync(a)
          const fb = fs.readFileSync(b)
          if (!fa.equals(fb)) out.bad.push(`${what}: files differ (fs ${fa.length} bytes, odirect ${fb.length})`)
        }
      }
    }
  }
  fs.writeFileSync(b, 'abc')
  const h = await od.open(b, 'w')
  try {
    await h.writeFile('hello')
    await h.writeFile('x')
    out.writeOnly = { code: 'none' }
  } catch (e) {
    out.writeOnly = { code: e.code, message: e.message, position: e.position }
  } finally {
    await h.close()
  }
  out.writeOnlyFile = fs.readFileSync(b, 'latin1')
  console.log(`RESULT ${JSON.stringify(out)}`)
}
main().catch((e) => console.log(`RESULT ${JSON.stringify({ crash: String(e && e.stack) })}`))
