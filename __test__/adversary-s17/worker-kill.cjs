// Workers terminated at the Nth step of a whole-file or stream form, in whatever runtime runs this
// (Node, Bun, Deno: each has its own Worker teardown), for N = 1..STEPS. Each form loops and posts
// 'step' as each call settles (or each chunk passes), so the main thread's terminate() lands at a
// different point of the form each run:
// - readFile: readFile of an 8 MiB file, checked;
// - atomic: writeFile({ atomic: true }) of 4 MiB, a new version each time, onto the worker's destination;
// - copyFile: copyFile of the 8 MiB source onto the worker's destination;
// (each worker its own destination: two threads' temp names collide, see adversary-s17.spec's
// test.failing on concurrent atomic writes)
// - web: a readable web stream piped into a writable web stream (pipeTo);
// - readMany: typed readMany batches with a window;
// - opens: open() and close() in a loop (the kill lands while an open is in flight).
// Meanwhile the main thread runs verified I/O (write a block, read it back) on a file of its own.
// Afterwards: every destination is whole (one version of the data, its full size: never a mix or a
// cut), the main thread's reads were all right, and the process's descriptors are back to their
// count before the sweep, by kind (regular files, io_uring, eventfd, pipes...; waited for as a
// state: a worker's teardown after its 'exit' has no event). Temp files a kill leaves next to a
// destination (NAME.odirect-tmp-PID-N: no JavaScript runs in the dying worker to remove them, as
// README's Troubleshooting says) are counted, not refused.
// argv: dir [forms, comma separated]. Prints RESULT {runs, killedAt, errors, wrong, mainOps, before, after, temps, extraFiles}.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { Worker } = require('node:worker_threads')

const root = path.join(__dirname, '..', '..')
const od = require(path.join(root, 'dist', 'index.js'))
const { verifiedLoop } = require(path.join(__dirname, '..', 'helpers', 'verified-loop.cjs'))

const [dir, formArg = 'readFile,atomic,copyFile,web,readMany'] = process.argv.slice(2)
const STEPS = 6
const MiB = 1 << 20
const src = path.join(dir, 'src')
const big = Buffer.alloc(8 * MiB)
for (let i = 0; i < big.length; i += 4096) big.fill((i >>> 12) & 0xff, i, i + 4096)
fs.writeFileSync(src, big)

/** This process's descriptors by kind: 'file' (regular files), anon_inode kinds, 'pipe', 'socket'... */
function fdKinds() {
  const m = {}
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let l
    try {
      l = fs.readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      continue
    }
    const k = l.startsWith('/') ? 'file' : l.replace(/:\[?\d+\]?$/, '')
    m[k] = (m[k] || 0) + 1
  }
  return m
}
/** The paths of this process's descriptors of regular files. */
function filePaths() {
  const out = []
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const l = fs.readlinkSync(`/proc/self/fd/${fd}`)
      if (l.startsWith('/')) out.push(l)
    } catch {
      // closed meanwhile
    }
  }
  return out
}
const same = (a, b) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort())

const body = `
const { workerData, parentPort } = require('node:worker_threads')
const path = require('node:path')
const od = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))})
const step = () => parentPort.postMessage('step')
const { kind, src, dir, id } = workerData
const MiB = 1 << 20
;(async () => {
  if (kind === 'none') return step()
  if (kind === 'readFile') {
    for (;;) {
      const b = await od.readFile(src)
      if (b.length !== 8 * MiB || b[4096] !== 1) parentPort.postMessage('wrong')
      step()
    }
  }
  if (kind === 'atomic') {
    for (let v = 1; ; v++) {
      await od.writeFile(path.join(dir, 'atomic-dst-' + id), Buffer.alloc(4 * MiB, v & 0xff), { atomic: true })
      step()
    }
  }
  if (kind === 'copyFile') {
    for (;;) {
      await od.copyFile(src, path.join(dir, 'copy-dst-' + id))
      step()
    }
  }
  if (kind === 'web') {
    // Again and again, as the other forms loop (terminate() is asynchronous: a pipe that ended
    // before it landed would kill nothing).
    for (;;) {
      const counter = new TransformStream({ transform(c, ctl) { ctl.enqueue(c); step() } })
      await od.readableWebStream(src, { highWaterMark: 256 * 1024 }).pipeThrough(counter).pipeTo(od.writableWebStream(path.join(dir, 'web-' + id), { highWaterMark: 256 * 1024 }))
    }
  }
  if (kind === 'opens') {
    for (;;) {
      const fh = await od.open(src, 'r')
      await fh.close()
      step()
    }
  }
  if (kind === 'readMany') {
    const fh = await od.open(src, 'r')
    const U = 64 * 1024
    const memory = fh.alloc(32 * U)
    for (;;) {
      await fh.readMany({ memory, offsets: new Uint32Array(32).map((_, i) => i * U), lengths: new Uint32Array(32).fill(U), positions: new Float64Array(32).map((_, i) => i * U) }, { window: 8 })
      step()
    }
  }
})()
`
const workerFile = path.join(dir, 'worker.cjs')
fs.writeFileSync(workerFile, body)

/** Runs one worker of `kind`, terminated when its `n`th step arrives; resolves the steps seen. */
function killAt(kind, n, errors) {
  return new Promise((resolve) => {
    const worker = new Worker(workerFile, { workerData: { kind, src, dir, id: `${kind}-${n}` } })
    let steps = 0
    let ended = false
    worker.on('error', (e) => errors.push(`${kind} #${n}: ${String(e)}`))
    worker.on('message', (m) => {
      if (m === 'wrong') errors.push(`${kind} #${n}: the worker read wrong bytes`)
      if (m === 'step' && ++steps === n) void worker.terminate()
      if (m === 'step' && kind === 'none' && !ended) {
        ended = true
        void worker.terminate()
      }
    })
    worker.on('exit', () => resolve(steps))
  })
}

/** A destination a killed writer may have left: absent, or whole (`len` bytes of one version). */
function whole(p, len, check) {
  if (!fs.existsSync(p)) return true
  const b = fs.readFileSync(p)
  return b.length === len && check(b)
}

async function main() {
  // The main thread's engine and the runtime's per-worker descriptors first.
  const warm = await od.open(src, 'r')
  await warm.read(warm.alloc(4096), 0, 4096, 0)
  await warm.close()
  const errors = []
  await killAt('none', 1, errors)
  const before = fdKinds()
  const pathsBefore = filePaths()

  // The main thread's own verified I/O, running until the sweep ends.
  const mainLoop = verifiedLoop(od, path.join(dir, 'main'))

  const killedAt = {}
  let runs = 0
  for (const kind of formArg.split(',')) {
    killedAt[kind] = []
    for (let n = 1; n <= STEPS; n++) {
      killedAt[kind].push(await killAt(kind, n, errors))
      runs++
      if (!whole(path.join(dir, `atomic-dst-${kind}-${n}`), 4 * MiB, (b) => b.every((x) => x === b[0]))) errors.push(`atomic #${n}: the destination is not one whole version`)
      if (!whole(path.join(dir, `copy-dst-${kind}-${n}`), 8 * MiB, (b) => b.equals(big))) errors.push(`copyFile #${n}: the destination is not the whole source`)
    }
  }
  // The main thread still does every form after the kills.
  try {
    if (!(await od.readFile(src)).equals(big)) errors.push('main: readFile after the kills returned wrong bytes')
    await od.copyFile(src, path.join(dir, 'main-copy'))
    if (!fs.readFileSync(path.join(dir, 'main-copy')).equals(big)) errors.push('main: copyFile after the kills wrote wrong bytes')
    await od.writeFile(path.join(dir, 'main-atomic'), big, { atomic: true })
    if (!fs.readFileSync(path.join(dir, 'main-atomic')).equals(big)) errors.push('main: writeFile atomic after the kills wrote wrong bytes')
  } catch (e) {
    errors.push(`main after the kills: ${String(e)}`)
  }
  const own = await mainLoop.stop()
  // Workers' teardown after their 'exit' has no event of its own: the state is polled until it
  // holds (or 20 s pass: then the counts show what stayed).
  for (const t0 = Date.now(); !same(fdKinds(), before) && Date.now() - t0 < 20_000; ) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  const temps = fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-')).length
  const extra = filePaths()
  for (const p of pathsBefore) extra.splice(extra.indexOf(p), extra.indexOf(p) < 0 ? 0 : 1)
  console.log(`RESULT ${JSON.stringify({ runs, killedAt, errors, wrong: own.wrong, mainOps: own.ops, before, after: fdKinds(), temps, extraFiles: extra })}`)
}
main()
  .catch((e) => console.log(`RESULT ${JSON.stringify({ crash: String((e && e.stack) || e) })}`))
  .finally(() => process.exit(0))
