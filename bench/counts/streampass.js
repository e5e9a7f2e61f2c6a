// streampass.js read|sha|webread|write|webwrite FILE [MiB] (sixteenth session): one stream pass over FILE (a 4 MiB
// warm-up pass first unless NOWARM=1; env OPTS: stream options as JSON), printing MB/s, CPU per
// GiB, peak RSS growth, the memory pool's counts over the pass and `T0 <s> T1 <s>` (CLOCK_MONOTONIC) for
// blkstream.py / sysstream.py.
const mono = () => Number(process.hrtime.bigint()) / 1e9
const o = require('../../dist/index.js')
const fs = require('fs'); const { pipeline } = require('stream/promises'); const { Readable, Writable } = require('stream'); const crypto = require('crypto')
const [mode, file, sz] = process.argv.slice(2); const size = (Number(sz) || 512) << 20
const opts = { chunkSize: 2 << 20, ...(JSON.parse(process.env.OPTS || '{}')) }
const src = (bytes) => { const b = Buffer.alloc(1 << 20, 7); let i = 0; const n = bytes >> 20; return Readable.from((function* () { for (; i < n; i++) yield b })()) }
async function pass(fh, n) {
  if (mode === 'read') { let c = 0; for await (const ch of o.createReadStream(fh, { ...opts, end: n - 1, autoClose: true })) c += ch.length; return c }
  if (mode === 'sha') { const h = crypto.createHash('sha256'); let c = 0; await pipeline(o.createReadStream(fh, { ...opts, end: n - 1, autoClose: true }), new Writable({ write(ch, e, cb) { c += ch.length; h.update(ch); cb() } })); return c }
  if (mode === 'webread') { const r = o.readableWebStream(fh, { ...opts, end: n - 1, autoClose: true }).getReader(); let c = 0; for (;;) { const { done, value } = await r.read(); if (done) break; c += value.length } return c }
  if (mode === 'write') { await pipeline(src(n), o.createWriteStream(fh, { ...opts, datasync: true, autoClose: true })); return n }
  if (mode === 'webwrite') { await Readable.toWeb(src(n)).pipeTo(o.writableWebStream(fh, { ...opts, datasync: true, autoClose: true })); return n }
}
;(async () => {
  const w = mode.includes('write')

  if (!process.env.NOWARM) { const fw = await o.open(file, w ? 'r+' : 'r'); await pass(fw, 4 << 20) }
  const fh = await o.open(file, w ? 'r+' : 'r')
  const p0 = o.native ? null : null; const nat = require('../../dist/src/native.js').native; const sp0 = nat.poolSpareStats()
  fs.writeFileSync('/proc/self/clear_refs', '5'); const rss0 = process.memoryUsage.rss()
  const c0 = process.cpuUsage(); const m0 = mono(); const t0 = performance.now()
  const n = await pass(fh, size)
  const s = (performance.now() - t0) / 1000; const m1 = mono(); const c = process.cpuUsage(c0)
  const sp1 = nat.poolSpareStats(); console.log('pool [mapped_here, taken, made, recycled, held] delta', sp1.map((v, i) => v - sp0[i]).join(','), 'mem', nat.memoryStats().join(','))
  const hwm = Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024
  console.log('pool memory on huge pages', JSON.stringify(require('./hugeback.js')()))
  console.log(`${mode} rss growth ${((hwm - rss0) / 2 ** 20).toFixed(1)} MiB`)
  console.log(`${mode} ${(n / s / 1e6).toFixed(0)} MB/s cpu ${((c.user + c.system) / 1e6 / (n / 2 ** 30)).toFixed(3)} s/GiB T0 ${m0} T1 ${m1}`)
})()
