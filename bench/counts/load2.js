// node load2.js FILE MODE r|w DUR_MS : modes arr512 arr2x32 typed512 typed4096 typed2x32 queue
const { open, BatchWindow } = require(require('path').join(__dirname, '..', '..', 'dist', 'index.js'))
const [file, mode, rw, dur] = process.argv.slice(2)
const size = require('fs').statSync(file).size
const bs = 4096, blocks = Math.floor(size / bs), write = rw === 'w'
const pos = () => Math.floor(Math.random() * blocks) * bs
;(async () => {
  const fh = await open(file, 'r+')
  let ops = 0, measuring = false, stop = false
  const t0 = performance.now()
  setTimeout(() => { measuring = true; ops = 0; tm = performance.now() }, 300)
  let tm = 0
  setTimeout(() => { stop = true }, 300 + Number(dur))
  const count = (n) => { if (measuring) ops += n }
  const arrLane = async (n, window) => {
    const bufs = Array.from({ length: n }, () => fh.alloc(bs))
    const list = bufs.map((buffer) => ({ buffer, position: 0 }))
    while (!stop) { for (const o of list) o.position = pos(); await (write ? fh.writeMany(list, { window }) : fh.readMany(list, { window })); count(n) }
  }
  const typedLane = async (n, window) => {
    const memory = fh.alloc(n * bs)
    const offsets = new Uint32Array(n).map((_, i) => i * bs), lengths = new Uint32Array(n).fill(bs), positions = new Float64Array(n), results = new Int32Array(n)
    const b = { memory, offsets, lengths, positions, results }, o = { window }
    while (!stop) { for (let i = 0; i < n; i++) positions[i] = pos(); await (write ? fh.writeMany(b, o) : fh.readMany(b, o)); count(n) }
  }
  const m = {
    arr512: () => [arrLane(512, 64)],
    arr2x32: () => [arrLane(32, 32), arrLane(32, 32)],
    typed512: () => [typedLane(512, 64)],
    typed4096: () => [typedLane(4096, 64)],
    typed2x32: () => [typedLane(32, 32), typedLane(32, 32)],
    queue: () => { const w = new BatchWindow(64); return [typedLane(256, w), typedLane(256, w)] },
  }[mode]
  await Promise.all(m())
  const secs = (performance.now() - tm) / 1000
  const total = fh.stats().ops
  await fh.close()
  console.log(JSON.stringify({ ops, seconds: secs, iops: Math.round(ops / secs), total, cpuUsPerOp: 0 }))
})()
