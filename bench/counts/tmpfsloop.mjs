// node tmpfsloop.mjs FILE SECS typed|lanes|array|op w|r: 4 KiB random writes/reads at depth 64 on FILE (256 MiB)
// for SECS seconds (typed: writeMany/readMany of 256 ops over one registered region, window 64; lanes: two
// typed calls of 32; array: the array form, 512 ops, window 64; op: a promise per op on 64 buffers);
// prints {iops, cpu: process CPU µs per op (JS thread + io-wq workers), js: the JS thread's CPU µs per op}
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const { open } = require(new URL('../../dist/index.js', import.meta.url).pathname)
const path = process.argv[2] ?? '/dev/shm/odirect-counts.dat'
const secs = Number(process.argv[3] ?? 3)
const mode = process.argv[4] ?? 'typed'
const write = (process.argv[5] ?? 'w') === 'w'
const qd = 64, bs = 4096, size = 256 << 20
const fh = await open(path, 'r+')
const nblk = size / bs
let reg
// NOREG=1: plain fh.alloc memory for the typed forms (nineteenth session: registered vs not)
if (process.env.NOREG !== '1') try { reg = fh.registerBuffers(1, 256 * bs) } catch {}
const memory = reg?.buffers[0] ?? fh.alloc(256 * bs)
const n = 256
const offsets = new Uint32Array(n).map((_, i) => i * bs)
const lengths = new Uint32Array(n).fill(bs)
const positions = new Float64Array(n)
const results = new Int32Array(n)
const batch = { memory, offsets, lengths, positions, results }
let ops = 0
import { readFileSync } from 'node:fs'
const tck = 100
const thr = () => { const st = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8'); const f = st.slice(st.lastIndexOf(')') + 2).split(' '); return (Number(f[11]) + Number(f[12])) * 1e6 / tck }
const c0 = process.cpuUsage(), j0 = thr()
const t0 = performance.now()
const end = t0 + secs * 1000
if (mode === 'typed') {
  while (performance.now() < end) {
    for (let i = 0; i < n; i++) positions[i] = Math.floor(Math.random() * nblk) * bs
    await (write ? fh.writeMany(batch, { window: qd }) : fh.readMany(batch, { window: qd }))
    ops += n
  }
} else if (mode === 'lanes') {
  const lane = async (k) => {
    const m = memory.subarray(k * 32 * bs, (k + 1) * 32 * bs)
    const b = { memory: m, offsets: new Uint32Array(32).map((_, i) => i * bs), lengths: new Uint32Array(32).fill(bs), positions: new Float64Array(32), results: new Int32Array(32) }
    while (performance.now() < end) {
      for (let i = 0; i < 32; i++) b.positions[i] = Math.floor(Math.random() * nblk) * bs
      await (write ? fh.writeMany(b, { window: 32 }) : fh.readMany(b, { window: 32 }))
      ops += 32
    }
  }
  await Promise.all([lane(0), lane(1)])
} else if (mode === 'array') {
  const arr = Array.from({ length: 512 }, () => ({ buffer: fh.alloc(bs), position: 0 }))
  while (performance.now() < end) {
    for (const o of arr) o.position = Math.floor(Math.random() * nblk) * bs
    await (write ? fh.writeMany(arr, { window: qd }) : fh.readMany(arr, { window: qd }))
    ops += arr.length
  }
} else {
  const bufs = Array.from({ length: qd }, () => fh.alloc(bs))
  await Promise.all(bufs.map(async (b) => {
    while (performance.now() < end) { const p = Math.floor(Math.random() * nblk) * bs; await (write ? fh.write(b, { position: p }) : fh.read(b, { position: p })); ops++ }
  }))
}
const dt = (performance.now() - t0) / 1000
const c1 = process.cpuUsage(c0), j1 = thr() - j0
reg?.unregister()
await fh.close()
console.log(JSON.stringify({ iops: ops / dt, cpu: (c1.user + c1.system) / ops, js: j1 / ops }))
