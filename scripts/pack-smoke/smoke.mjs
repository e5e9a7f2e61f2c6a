// Smoke program run by scripts/pack-test.cjs inside a fresh project where odirect was installed
// from its tarballs: ESM, as a user writes it.
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import * as odirect from 'odirect'
import { DirectIoError, open, probe } from 'odirect'

const sha = (b) => createHash('sha256').update(b).digest('hex')
const dir = fs.mkdtempSync('/var/tmp/odirect-smoke-esm-')
const report = { flavour: 'esm' }
try {
  const file = path.join(dir, 'a.bin')
  const fh = await open(file, 'w+')
  report.direct = fh.direct
  report.backend = fh.backend
  const data = fh.alloc(1 << 20)
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff
  report.wrote = (await fh.write(data, 0, data.length, 0)).bytesWritten
  const back = fh.alloc(1 << 20)
  report.read = (await fh.read(back, 0, back.length, 0)).bytesRead
  report.same = sha(back) === sha(data)
  try {
    await fh.read(back, 0, 4096, 1) // a position off the file's alignment
  } catch (e) {
    report.misuse = e instanceof DirectIoError ? e.code : String(e)
  }
  await fh.close()
  report.probe = (await probe(dir)).direct.works
  if (typeof odirect.createReadStream === 'function' && typeof odirect.createWriteStream === 'function') {
    const sfile = path.join(dir, 's.bin')
    const chunks = Array.from({ length: 40 }, (_, i) => Buffer.alloc(50_001, i))
    await pipeline(Readable.from(chunks), odirect.createWriteStream(sfile))
    const h = createHash('sha256')
    let n = 0
    await pipeline(
      odirect.createReadStream(sfile),
      new Writable({
        write(c, _e, cb) {
          h.update(c)
          n += c.length
          cb()
        },
      }),
    )
    report.stream = n === 40 * 50_001 && h.digest('hex') === sha(Buffer.concat(chunks)) ? 'ok' : `mismatch (${n} bytes)`
  } else {
    report.stream = 'skipped: createReadStream is not exported'
  }
  // Which addon file was loaded: it must come from the platform package.
  report.addon = Object.keys((await import('node:module')).createRequire(import.meta.url).cache).find((k) => k.endsWith('.node')) ?? null
} finally {
  fs.rmSync(dir, { recursive: true, force: true })
}
console.log(JSON.stringify(report))
