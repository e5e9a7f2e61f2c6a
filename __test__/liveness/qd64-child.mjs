// Child of __test__/deno-wake.spec.ts (run by Deno, or Bun: the reaper-thread wake-up path). Writes
// cfg.n blocks of 4 KiB, one per-op write each, 64 in flight, block i at position i * 4096 with
// every byte i & 0xff, then reads the file back with node:fs and prints one JSON line: writes
// that returned 4096, blocks whose bytes are right, and the reaper's wake-up recalls.
//
// argv[last]: JSON { file, n }
import * as fs from 'node:fs'
import { createRequire } from 'node:module'

const od = createRequire(import.meta.url)('../../dist/index.js')
const native = createRequire(import.meta.url)('../../dist/src/native.js').native
const cfg = JSON.parse(process.argv[process.argv.length - 1])
const BS = 4096
const QD = 64
const fh = await od.open(cfg.file, 'r+')
let next = 0
let ok = 0
const lane = async () => {
  const buf = fh.alloc(BS)
  while (next < cfg.n) {
    const i = next++
    buf.fill(i & 0xff)
    const r = await fh.write(buf, { position: i * BS })
    if ((typeof r === 'number' ? r : r.bytesWritten) === BS) ok++
  }
}
await Promise.all(Array.from({ length: QD }, lane))
const path = od.engineInfo().path
await fh.close()
const data = fs.readFileSync(cfg.file)
let right = 0
for (let i = 0; i < cfg.n; i++) {
  const b = data.subarray(i * BS, (i + 1) * BS)
  if (b.length === BS && b.every((x) => x === (i & 0xff))) right++
}
console.log(JSON.stringify({ ok, right, path, recalls: native.wakeRecalls() }))
