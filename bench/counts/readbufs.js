// readbufs.js FILE BS QD NBUF [passes] (twentieth session): sequential O_DIRECT reads of the whole FILE, QD in flight, into NBUF fh.alloc buffers used in turn (filled once first); prints MB/s. 2 MiB x 4 into 4 / 8 / 16 / 32 buffers shows how the device's rate depends on the memory it fills.
const o = require(require('path').join(__dirname, '..', '..', 'dist', 'index.js'))
const [file, bsA, qdA, nA, pA] = process.argv.slice(2)
const bs = Number(bsA), qd = Number(qdA), nbuf = Number(nA), passes = Number(pA || 1)
;(async () => {
  const fh = await o.open(file, 'r')
  const size = (await fh.stat()).size
  const bufs = []
  for (let i = 0; i < nbuf; i++) { const b = fh.alloc(bs); b.fill(1); bufs.push(b) }
  const t0 = process.hrtime.bigint()
  let total = 0
  for (let p = 0; p < passes; p++) {
    let pos = 0, k = 0
    const run = async () => { while (pos < size) { const at = pos; pos += bs; const b = bufs[k++ % nbuf]; const r = await fh.read(b, { position: at }); total += r.bytesRead } }
    await Promise.all(Array.from({ length: qd }, run))
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9
  console.log((total / s / 1e6).toFixed(0))
  await fh.close()
})()
