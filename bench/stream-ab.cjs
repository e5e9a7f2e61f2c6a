// Paired A/B of read-stream passes in fresh processes, for RSS tails: each round runs the
// bench's own stream child (dist/bench/streams.js, a 4 MiB warm-up pass, then one measured pass
// over the file, peak RSS growth from VmHWM, no forced GC) once per variant, alternating the
// order; prints min/median/max of peak RSS growth, MB/s and CPU per GiB, each variant's MB/s
// paired per round with the first variant's, every pass's RSS, and the load average.
//
//   flock /tmp/odirect-build.lock node bench/stream-ab.cjs ROUNDS ENGINE FILE NAME=JSON...
//
// ENGINE: odirect-stream, odirect-stream-sha, odirect-stream-reuse, odirect-web,
// odirect-web-sha, odirect-web-byob (see bench/streams.ts pass()); FILE: a file on the disk to
// read whole; JSON: environment of that variant, `_flags` for Node's own flags, e.g.
//   node bench/stream-ab.cjs 15 odirect-stream /var/tmp/f.bin \
//     'old={"ODIRECT_STREAM_WAIT_GC":"0","ODIRECT_STREAM_SYNC_SWEEP":"0"}' 'new={}'
//
// ODIRECT_BENCH_STREAM_COUNTS=1 in the environment adds each variant's median read-stream counts
// (src/streams/core.ts readCopyStats: copies, handed over, reused, new, copy windows yes/no, ring
// reads, ring buffers made, bytes copied, distinct addresses when traced).
//
// Write passes (nineteenth session): ENGINE prefixed `w:` (w:odirect-stream, w:odirect-web,
// w:odirect-stream-transfer, w:odirect-web-transfer) overwrites FILE in place (it must hold the
// data already, e.g. written once with dd and synced), e.g.
//   node bench/stream-ab.cjs 9 w:odirect-stream /var/tmp/f.bin 'base={}' 'r2={"ODIRECT_STREAM_READY":"2"}'
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const [rounds, engineArg, file, ...vs] = process.argv.slice(2)
const write = engineArg?.startsWith('w:') === true
const engine = write ? engineArg.slice(2) : engineArg
if (!file || vs.length === 0) {
  console.error('usage: node bench/stream-ab.cjs ROUNDS ENGINE FILE NAME=JSON...')
  process.exit(2)
}
const size = fs.statSync(file).size
const child = path.join(__dirname, '..', 'dist', 'bench', 'streams.js')
const variants = vs.map((v) => {
  const i = v.indexOf('=')
  return [v.slice(0, i), JSON.parse(v.slice(i + 1))]
})
const res = Object.fromEntries(variants.map(([n]) => [n, []]))
const loads = []
for (let r = 0; r < Number(rounds); r++) {
  loads.push(os.loadavg()[0])
  for (const [n, env] of r % 2 ? [...variants].reverse() : variants) {
    const flags = env._flags ? env._flags.split(' ') : []
    const p = spawnSync(process.execPath, [...flags, child, '--odirect-stream-child', engine, write ? '1' : '0', file, String(size)], { env: { ...process.env, ...env }, encoding: 'utf8' })
    if (p.status !== 0) {
      console.error(n, p.stderr)
      res[n].push(null)
      continue
    }
    res[n].push(JSON.parse(p.stdout))
  }
}
const q = (a, d = 1) => {
  const s = a.filter(Number.isFinite).sort((x, y) => x - y)
  return [s[0], s[s.length >> 1], s[s.length - 1]].map((x) => x.toFixed(d)).join('/')
}
console.log(`${write ? 'write ' : ''}${engine}, ${rounds} rounds, ${size} bytes, load ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}`)
const base = res[variants[0][0]]
for (const [n] of variants) {
  const a = res[n]
  const ok = a.filter((x) => x !== null)
  const ratio = a.map((x, i) => (x && base[i] ? x.mbps / base[i].mbps : NaN))
  const counts = ok.filter((x) => Array.isArray(x.counts))
  const cnt = counts.length === 0 ? '' : `  counts med [${counts[0].counts.map((_, i) => q(counts.map((x) => x.counts[i]), 0).split('/')[1]).join(' ')}]`
  console.log(`${n.padEnd(12)} RSS min/med/max ${q(ok.map((x) => x.rssGrowthMiB))} MiB  MB/s ${q(ok.map((x) => x.mbps), 0)}  vs ${variants[0][0]} ${q(ratio, 3)} (${ratio.filter((x) => x > 1).length}/${ratio.filter(Number.isFinite).length} above)  CPU s/GiB ${q(ok.map((x) => x.cpuPerGiB), 2)}  RSS: ${ok.map((x) => x.rssGrowthMiB.toFixed(0)).join(' ')}${cnt}`)
}
