// A program whose own buffers (fh.alloc memory, anonymous) are out in swap when it uses them,
// for adversary-s12.spec.ts: `<odirect module path> <cgroup dir> <tmpfs file> <disk file>`.
// It joins the cgroup (its memory is charged there), fills its buffers, says 'ready' and waits
// for a line on stdin (the parent has pushed the cgroup's memory out to swap by then), then
// writes from and reads into those buffers: lone ops on tmpfs and O_DIRECT on disk, typed
// batches. Prints RESULT {json} of which checks held.
'use strict'
const fs = require('node:fs')

const [mod, cg, shmFile, diskFile] = process.argv.slice(2)
fs.writeFileSync(`${cg}/cgroup.procs`, String(process.pid))
const od = require(mod)
;(async () => {
  const a = await od.open(shmFile, 'r+')
  const d = await od.open(diskFile, 'r+')
  const bufs = []
  for (let i = 0; i < 4; i++) bufs.push(a.alloc(64 << 10).fill(i + 1))
  const mem = a.alloc(1 << 20)
  for (let i = 0; i < 16; i++) mem.fill(0x30 + i, i << 16, (i + 1) << 16)
  const dst = d.alloc(1 << 20)
  console.log('ready')
  await new Promise((r) => process.stdin.once('data', r))
  process.stdin.pause()
  const out = {}
  out.tmpfsWrite = (await a.write(bufs[0], 0, 4096, 0)).bytesWritten === 4096
  out.tmpfsRead = (await a.read(bufs[2], 0, 4096, 0)).bytesRead === 4096 && bufs[2].subarray(0, 4096).every((x) => x === 1)
  out.diskWrite = (await d.write(bufs[1], 0, 65536, 65536)).bytesWritten === 65536
  const n = 16
  const offsets = new Uint32Array(n).map((_, i) => i << 16)
  const lengths = new Uint32Array(n).fill(65536)
  const positions = new Float64Array(n).map((_, i) => (n - 1 - i) << 16)
  out.diskBatchWrite = [...(await d.writeMany({ memory: mem, offsets, lengths, positions }, { window: 4 }))].every((x) => x === 65536)
  out.diskBatchRead = [...(await d.readMany({ memory: dst, offsets, lengths, positions }, { window: 4 }))].every((x) => x === 65536) && dst.equals(mem)
  out.tmpfsBatchWrite = [...(await a.writeMany({ memory: mem, offsets, lengths, positions }))].every((x) => x === 65536)
  await a.close()
  await d.close()
  console.log('RESULT ' + JSON.stringify(out))
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
