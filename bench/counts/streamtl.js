// streamtl.js FILE [MiB] (twentieth session): one read-stream pass (a 4 MiB warm-up pass first; env OPTS: stream options as JSON; MODE=web: the web default reader) printing MB/s, CPU per GiB, T0/T1 (CLOCK_MONOTONIC) and the time of each chunk's delivery, for streamtl.py.
const mono = () => Number(process.hrtime.bigint()) / 1e9
const o = require(require('path').join(__dirname, '..', '..', 'dist', 'index.js'))
const [file, mb] = process.argv.slice(2); const size = (Number(mb) || 512) << 20
const opts = { chunkSize: 2 << 20, ...(JSON.parse(process.env.OPTS || '{}')) }
const mode = process.env.MODE || 'read'
async function pass(fh, n, ts) {
  if (mode === 'read') { let c = 0; for await (const ch of o.createReadStream(fh, { ...opts, end: n - 1, autoClose: true })) { ts && ts.push(mono()); c += ch.length } return c }
  if (mode === 'web') { const r = o.readableWebStream(fh, { ...opts, end: n - 1, autoClose: true }).getReader(); let c = 0; for (;;) { const { done, value } = await r.read(); if (done) break; ts && ts.push(mono()); c += value.length } return c }
}
;(async () => {
  { const fw = await o.open(file, 'r'); await pass(fw, 4 << 20) }
  const fh = await o.open(file, 'r')
  const ts = []
  const c0 = process.cpuUsage(); const m0 = mono()
  const n = await pass(fh, size, ts)
  const m1 = mono(); const c = process.cpuUsage(c0)
  console.log(`MBps ${(n / (m1 - m0) / 1e6).toFixed(0)} cpu ${((c.user + c.system) / 1e6 / (n / 2 ** 30)).toFixed(3)} T0 ${m0} T1 ${m1}`)
  console.log('JS ' + ts.join(' '))
})()
