// usage: node load.js FILE MODE r|w DURATION_MS  -> JSON {ops, seconds, iops, cpuUsPerOp, total}
const root = require('path').join(__dirname, '..', '..')
const { open } = require(root + '/dist/index.js')
const { odirectRun } = require(root + '/dist/bench/harness.js')
const [file, mode, rw, dur] = process.argv.slice(2)
const size = require('fs').statSync(file).size
const w = { id: 'x', label: 'x', write: rw === 'w', random: true, bs: 4096, qd: Number(process.env.QD || 64), metric: 'iops', place: 'disk' }
;(async () => {
  const fh = await open(file, 'r+')
  const r = await odirectRun(fh, size, { durationMs: Number(dur), ops: 0, rampMs: 300 }, w, mode)
  const st = fh.stats()
  await fh.close()
  console.log(JSON.stringify({ ops: r.ops, seconds: r.seconds, iops: Math.round(r.ops / r.seconds), cpuUsPerOp: r.cpuUsPerOp, total: st.ops, nativeP50: r.nativeP50 }))
})()
