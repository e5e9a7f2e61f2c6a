// fresh2.mjs FILE SECS [USES] (twenty-first session): 64 loops at once on FILE (an existing file,
// e.g. 256 MiB on /dev/shm), each: a fresh fh.alloc 4 KiB buffer, USES ops on it (a write, then
// reads; default 2), dropped. The automatic table's worst case (a registration per buffer for one
// fixed op). Prints {iops, cpu: process CPU µs per op, js: the JS thread's, stats: callStats[8..13]}.
import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'
const require = createRequire(import.meta.url)
const { open } = require(new URL('../../dist/index.js', import.meta.url).pathname)
const { getEngine } = require(new URL('../../dist/src/engine.js', import.meta.url).pathname)
const [file, secsArg, usesArg] = process.argv.slice(2)
const secs = Number(secsArg ?? 3), uses = Number(usesArg ?? 2), bs = 4096
const fh = await open(file, 'r+')
const nblk = Math.floor((await fh.stat()).size / bs)
const thr = () => { const st = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8'); const f = st.slice(st.lastIndexOf(')') + 2).split(' '); return (Number(f[11]) + Number(f[12])) * 1e4 }
let ops = 0
const run = async (end) => {
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (performance.now() < end) {
      const b = fh.alloc(bs)
      const p = Math.floor(Math.random() * nblk) * bs
      await fh.write(b, { position: p })
      for (let k = 1; k < uses; k++) await fh.read(b, { position: p })
      ops += uses
    }
  }))
}
await run(performance.now() + 300)
ops = 0
const c0 = process.cpuUsage(), j0 = thr(), t0 = performance.now()
await run(t0 + secs * 1000)
const dt = (performance.now() - t0) / 1000
const c1 = process.cpuUsage(c0), j1 = thr() - j0
const stats = getEngine().native.callStats.slice(8, 14)
await fh.close()
console.log(JSON.stringify({ iops: Math.round(ops / dt), cpu: +((c1.user + c1.system) / ops).toFixed(3), js: +(j1 / ops).toFixed(3), stats }))
