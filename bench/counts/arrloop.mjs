// arrloop.mjs r|w [MS]: array-form readMany / writeMany of 512 fh.alloc 4 KiB buffers, { window: 64 },
// on a 64 MiB file in /dev/shm, for MS ms (default 5000); prints IOPS. For threadcpu.py / perf
// (twentieth session: ODIRECT_AUTO_REG=0 vs the default). Run from the repository (a built dist/).
import { open } from '../../dist/index.js'
const f = `/dev/shm/odirect-arrloop-${process.pid}.dat`
const fh = await open(f, 'w+')
const size = 64 << 20
await fh.allocate(0, size)
const write = process.argv[2] === 'w'
const bufs = Array.from({ length: 512 }, () => fh.alloc(4096).fill(1))
const ops = bufs.map((buffer) => ({ buffer, position: 0 }))
const end = Date.now() + Number(process.argv[3] ?? 5000)
let n = 0
const t0 = performance.now()
while (Date.now() < end) {
  for (const o of ops) o.position = Math.floor(Math.random() * (size / 4096)) * 4096
  await (write ? fh.writeMany(ops, { window: 64 }) : fh.readMany(ops, { window: 64 }))
  n += ops.length
}
console.log(`${write ? 'write' : 'read'} ${process.env.ODIRECT_AUTO_REG ?? 'default'}: ${Math.round(n / ((performance.now() - t0) / 1000))} IOPS`)
await fh.close()
await (await import('node:fs/promises')).rm(f, { force: true })
