// Workers terminated at the Nth step of a form (the worker posts one message per step: an op
// settled, a registration made, a chunk piped; the main thread calls terminate() when the Nth
// arrives, so the kill lands at a different point of the form each run), for N = 1..STEPS:
// - registered: registerBuffers(2, 1 MiB) (mlock / io_uring_register), a WRITE_FIXED and a typed
//   batch over the registered memory, unregister, again;
// - BatchWindow: typed readMany / writeMany batches of two handles queued in one BatchWindow(8);
// - pipe: a read stream piped to a write stream (both odirect);
// - alloc: fh.alloc(4096) in a loop (the terminate lands inside one: its N-API calls fail);
// - reads: 32 per-op reads in flight on one handle, each refilled as it settles.
// Meanwhile a bystander worker and the main thread run verified I/O (write a block, read it back)
// on files of their own, without pause, until the sweep ends: every op of theirs must be right.
// At the end: the main thread's fh.alloc memory still runs a typed batch in a BatchWindow and
// registerBuffers still works (was: an allocation in a worker being terminated failed its N-API
// call, taken for a runtime that refuses external memory: every later allocation of the process
// was V8 memory, refused by BatchWindow, and registerBuffers failed EINVAL), the bystander's and the main thread's counts of wrong results are 0, the process's
// descriptors and io_uring rings are back to their count before the sweep (waited for as a state:
// workers' exits are events, the teardown after them is not).
// argv: dir [forms, comma separated]. ODIRECT_BACKEND picks the backend.
// Prints RESULT {"runs", "killedAt": {form: [steps seen]}, "wrong", "mainOps", "bystanderOps", "fdsBefore", "fdsAfter", "ringsBefore", "ringsAfter"}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { Worker } = require('node:worker_threads')

const root = path.join(__dirname, '..', '..')
const od = require(path.join(root, 'dist', 'index.js'))
const { verifiedLoop } = require(path.join(__dirname, '..', 'helpers', 'verified-loop.cjs'))
const { anonFds } = require(path.join(__dirname, '..', 'helpers', 'fds.cjs'))

const [dir, formArg = 'alloc,registered,BatchWindow,pipe,reads'] = process.argv.slice(2)
const STEPS = 6
const MiB = 1 << 20
const fds = () => fs.readdirSync('/proc/self/fd').length
const src = path.join(dir, 'src')
const big = Buffer.alloc(8 * MiB)
for (let i = 0; i < big.length; i += 4096) big.fill((i >>> 12) & 0xff, i, i + 4096)
fs.writeFileSync(src, big)

const body = `
const { workerData, parentPort } = require('node:worker_threads')
const path = require('node:path')
const od = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))})
const step = () => parentPort.postMessage('step')
const { kind, src, dir, id } = workerData
const U = 64 * 1024
const typed = (memory, n, at = 0) => ({ memory, offsets: new Uint32Array(n).map((_, i) => i * U), lengths: new Uint32Array(n).fill(U), positions: new Float64Array(n).map((_, i) => (at + i) * U) })
;(async () => {
  if (kind === 'bystander') {
    const fh = await od.open(path.join(dir, 'bystander-' + id), 'w+')
    const w = fh.alloc(U), r = fh.alloc(U)
    let wrong = 0, ops = 0, stop = false
    parentPort.on('message', (m) => { if (m === 'stop') stop = true })
    for (let i = 0; !stop; i++) {
      w.fill(i & 0xff)
      await fh.write(w, 0, U, (i % 16) * U)
      await fh.read(r, 0, U, (i % 16) * U)
      if (!r.every((b) => b === (i & 0xff))) wrong++
      ops++
      if (i % 64 === 0) await new Promise((res) => setImmediate(res))
    }
    await fh.close()
    parentPort.postMessage({ wrong, ops })
    parentPort.close()
    return
  }
  if (kind === 'registered') {
    const fh = await od.open(path.join(dir, 'reg-' + id), 'w+')
    for (;;) {
      const reg = fh.registerBuffers(2, 16 * U)
      step()
      const [a, b] = reg.buffers
      a.fill(1)
      b.fill(2)
      await fh.write(a, 0, U, 0)
      step()
      await fh.writeMany(typed(b, 16, 1), { window: 4 })
      step()
      await fh.readMany(typed(a, 16, 1), { window: 4 })
      reg.unregister()
      step()
    }
  }
  if (kind === 'BatchWindow') {
    const r = await od.open(src, 'r')
    const w = await od.open(path.join(dir, 'bw-' + id), 'w+')
    const win = new od.BatchWindow(8)
    const rm = r.alloc(32 * U), wm = w.alloc(32 * U).fill(3)
    for (let k = 0; ; k++) {
      const q = []
      for (let b = 0; b < 4; b++) {
        q.push(r.readMany(typed(rm.subarray(b * 8 * U, (b + 1) * 8 * U), 8, b * 8), { window: win }).then(step))
        q.push(w.writeMany(typed(wm.subarray(b * 8 * U, (b + 1) * 8 * U), 8, b * 8), { window: win }).then(step))
      }
      await Promise.all(q)
    }
  }
  if (kind === 'pipe') {
    const { pipeline } = require('node:stream/promises')
    // Again and again, as the other forms loop: a pipe that ended before the main thread's
    // terminate() (it is asynchronous: at load ~16 all 32 chunks went by first) kills nothing.
    for (;;) {
      const rs = od.createReadStream(src, { highWaterMark: 256 * 1024 })
      rs.on('data', step)
      await pipeline(rs, od.createWriteStream(path.join(dir, 'pipe-' + id), { writeBehind: 4 }))
    }
  }
  if (kind === 'alloc') {
    const fh = await od.open(src, 'r')
    for (let i = 0; ; i++) {
      fh.alloc(4096)
      if (i % 256 === 0) step()
    }
  }
  if (kind === 'reads') {
    const fh = await od.open(src, 'r')
    const one = (i) => fh.read(fh.alloc(U), 0, U, (i % 128) * U).then(() => { step(); return one(i + 32) })
    await Promise.all(Array.from({ length: 32 }, (_, i) => one(i)))
  }
})()
`
const workerFile = path.join(dir, 'worker.cjs')
fs.writeFileSync(workerFile, body)

async function main() {
  // The main thread's engine and the runtime's per-worker descriptors first.
  const warm = await od.open(src, 'r')
  await warm.read(warm.alloc(4096), 0, 4096, 0)
  await warm.close()
  await new Promise((resolve) => {
    const w = new Worker(workerFile, { workerData: { kind: 'none' } })
    w.on('exit', resolve)
  })
  const fdsBefore = fds()
  const ringsBefore = anonFds('io_uring')

  const bystander = new Worker(workerFile, { workerData: { kind: 'bystander', dir, id: 0 } })
  const bystanderExit = new Promise((resolve) => bystander.on('exit', resolve))
  const bystanderDone = new Promise((resolve, reject) => {
    bystander.on('message', resolve)
    bystander.on('error', reject)
  })
  // The main thread's own verified I/O, running until the sweep ends.
  const mainLoop = verifiedLoop(od, path.join(dir, 'main'))

  const killedAt = {}
  let runs = 0
  const errors = []
  for (const kind of formArg.split(',')) {
    killedAt[kind] = []
    for (let n = 1; n <= STEPS; n++) {
      await new Promise((resolve) => {
        const worker = new Worker(workerFile, { workerData: { kind, src, dir, id: `${kind}-${n}` } })
        let steps = 0
        worker.on('error', (e) => errors.push(`${kind} #${n}: ${String(e)}`))
        worker.on('message', (m) => {
          if (m === 'step' && ++steps === n) void worker.terminate()
        })
        worker.on('exit', () => {
          killedAt[kind].push(steps)
          resolve()
        })
      })
      runs++
    }
  }
  // The process's memory after the kills: odirect's own (a BatchWindow takes only that), and
  // registerBuffers (which looks its buffers up in the same registry) works.
  try {
    const fh = await od.open(src, 'r')
    const U = 65536
    const memory = fh.alloc(8 * U)
    await fh.readMany({ memory, offsets: new Uint32Array(8).map((_, i) => i * U), lengths: new Uint32Array(8).fill(U), positions: new Float64Array(8).map((_, i) => i * U) }, { window: new od.BatchWindow(4) })
    if (!memory.equals(big.subarray(0, 8 * U))) errors.push('main: the BatchWindow read returned wrong bytes')
    const reg = fh.registerBuffers(1, U)
    await fh.read(reg.buffers[0], 0, U, 0)
    reg.unregister()
    await fh.close()
  } catch (e) {
    errors.push(`main after the kills: ${String(e)}`)
  }
  const own = await mainLoop.stop()
  bystander.postMessage('stop')
  const by = await bystanderDone
  await bystanderExit
  // Workers' teardown after their 'exit' has no event of its own: the state is polled until it
  // holds (or 20 s pass: then the counts show what stayed).
  for (const t0 = Date.now(); (anonFds('io_uring') > ringsBefore || fds() > fdsBefore) && Date.now() - t0 < 20_000; ) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  console.log(`RESULT ${JSON.stringify({ runs, killedAt, errors, wrong: own.wrong + by.wrong, mainOps: own.ops, bystanderOps: by.ops, fdsBefore, fdsAfter: fds(), ringsBefore, ringsAfter: anonFds('io_uring') })}`)
}
main().catch((e) => console.log(`RESULT ${JSON.stringify({ crash: String((e && e.stack) || e) })}`))
