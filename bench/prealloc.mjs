// A/B of the up-front reservation of copyFile / writeFile({ atomic }) (ODIRECT_PREALLOCATE): 512 MiB to a new
// file in DIR, ROUNDS interleaved on/off pairs (order alternating), the source out of the page cache.
// Usage: flock /tmp/odirect-build.lock node bench/prealloc.mjs DIR [ROUNDS=8] [copy|write]
import { copyFile, writeFile } from '../dist/index.js'
import fs from 'node:fs'
import os from 'node:os'
const [dir, roundsArg, what = 'copy'] = process.argv.slice(2)
let DATA
const rounds = Number(roundsArg ?? 8)
const src = dir + '/src512'
if (!fs.existsSync(src) || fs.statSync(src).size !== 512 * 2 ** 20) {
  const fd = fs.openSync(src, 'w'); const b = Buffer.alloc(2 ** 20)
  for (let i = 0; i < 512; i++) { for (let j = 0; j < b.length; j += 4096) b.writeUInt32LE(i * 1000 + j, j); fs.writeSync(fd, b) }
  fs.fsyncSync(fd); fs.closeSync(fd)
}
import { execFileSync } from 'node:child_process'
if (what !== 'copy') DATA = fs.readFileSync(src)
const res = { on: [], off: [] }
const one = async (v) => {
  const dst = dir + '/dst512'
  fs.rmSync(dst, { force: true })
  execFileSync('dd', ['if=' + src, 'iflag=nocache', 'count=0', 'status=none'])
  if (v === 'off') process.env.ODIRECT_PREALLOCATE = '0'; else delete process.env.ODIRECT_PREALLOCATE
  const t0 = process.hrtime.bigint()
  if (what === 'copy') await copyFile(src, dst); else await writeFile(dst, DATA, { atomic: true })
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  res[v].push(512 * 1.048576 / (ms / 1000))
}
await one('on'); await one('off') // warm-up
res.on = []; res.off = []
for (let r = 0; r < rounds; r++) {
  const order = r % 2 ? ['off', 'on'] : ['on', 'off']
  for (const v of order) await one(v)
}
const ratios = res.on.map((x, i) => x / res.off[i])
const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]
console.log(JSON.stringify({ what, dir, load: os.loadavg().map((x) => x.toFixed(2)), on: res.on.map(Math.round), off: res.off.map(Math.round), ratios: ratios.map((x) => x.toFixed(2)), medOn: Math.round(med(res.on)), medOff: Math.round(med(res.off)), medRatio: med(ratios).toFixed(3), onFaster: ratios.filter((x) => x > 1).length }))
fs.rmSync(dir + '/dst512', { force: true })
