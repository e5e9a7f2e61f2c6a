// usage: node seqop.js FILE MODE r|w DURATION_MS [BS] [QD]   (eighteenth session, issue 19 item 1)
// One run of the bench's own odirect loop (bench/harness.ts odirectRun: MODE op, registered,
// typed, lanes, queue, batch) over FILE, sequential, BS bytes (default 1 MiB) at depth QD
// (default 4), printing one JSON line: MB/s, JS p50/p99 (call to settle), the native p50 (submit
// to reap), and what the engine counted meanwhile: reads/writes completed inside their own call
// (callStats[0]), in-call waits made / found (waitStats[0..1]), lone disk ops that skipped the
// wait because the loop had work (waitStats[2]), waits ended by a loop event (waitStats[3]),
// lone disk ops that did not wait because other completions were being delivered (waitStats[8]),
// ops submitted in their staging call (aloneSubmits). Run it under bench/counts/blkstream.py to
// see the requests at the device beside it.
const root = require('path').join(__dirname, '..', '..')
const { open } = require(root + '/dist/index.js')
const { odirectRun } = require(root + '/dist/bench/harness.js')
const { getEngine } = require(root + '/dist/src/engine.js')
const [file, mode, rw, dur, bsArg, qdArg] = process.argv.slice(2)
const size = require('fs').statSync(file).size
const bs = Number(bsArg || 1 << 20)
const w = { id: 'x', label: 'x', write: rw === 'w', random: false, bs, qd: Number(qdArg || 4), metric: 'mbps', place: 'disk' }
;(async () => {
  const fh = await open(file, 'r+')
  const n = getEngine().native
  const snap = () => ({ call: n.callStats.slice(0, 1), wait: n.waitStats.slice(0, 9), alone: n.aloneSubmits })
  const a = snap()
  const t0 = process.hrtime()
  const r = await odirectRun(fh, size, { durationMs: Number(dur), ops: 0, rampMs: 300 }, w, mode)
  const t1 = process.hrtime()
  const b = snap()
  // The loop's buffers' memory: odirect's pool, marked for transparent huge pages.
  const huge = require('./hugeback.js')()
  const st = fh.stats()
  await fh.close()
  const sec = (t) => (t[0] + t[1] / 1e9).toFixed(6)
  console.log(`T0 ${sec(t0)} T1 ${sec(t1)}`)
  console.log(
    JSON.stringify({
      mode,
      bs,
      qd: w.qd,
      ops: st.ops,
      mbps: Math.round((r.ops * bs) / r.seconds / 1e6),
      p50: r.p50,
      p99: r.p99,
      nativeP50: r.nativeP50,
      doneInCall: b.call[0] - a.call[0],
      waits: b.wait[0] - a.wait[0],
      waitsFound: b.wait[1] - a.wait[1],
      loopBusy: b.wait[2] - a.wait[2],
      loopEnded: b.wait[3] - a.wait[3],
      deliverySkips: b.wait[8] - a.wait[8],
      aloneSubmits: b.alone - a.alone,
      huge,
    }),
  )
})()
