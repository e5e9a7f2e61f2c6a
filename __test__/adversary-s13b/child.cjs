// Child of adversary-s13b.spec.ts: lone disk reads (the loop-aware in-call wait, the default in
// Node) next to what an application's loop has. CommonJS so Node 20 and Node 22 run it as is:
//   node child.cjs <file or device> <scenario> [arg]
// The file's (or device's) bytes are all 0x5a. Every line: `<what> <json of the engine's
// waitStats/callStats and the scenario's facts>`. Scenarios (the parent holds the device's reads
// in faultfs where said; such children run with ODIRECT_RW_WAIT_DISK_MS=120000, so only the loop
// or a timer can end a wait):
// - signal: after 'go' on stdin a held lone read; the parent sends SIGUSR1 (from a `kill`
//   child): 'signal' is printed by the handler while the read is held, 'read' once released.
// - sigchld: a grandchild (`sleep`) is started, then after 'go' a held lone read; the parent
//   kills the grandchild: its 'exit' ('sigchld') runs while the read is held.
// - close: after 'go' a held lone read; the parent writes 'close' on stdin, which ends the wait
//   (a loop event) and whose callback calls fh.close() with the read held: 'read' then 'closed'.
// - exit: lone reads until one completes in its call; process.exit(7) in its callback.
// - socket <port>: lone reads one at a time, at least 300 and until a socket (the parent
//   streams bytes into it) ends: every byte counted and summed, every read right.
// - immediate: 200 lone reads while a setImmediate chain runs: none may wait.
// - interval: 200 lone reads next to setInterval(0): every wait bounded by the timer.
// - microtask: 200 lone reads, each followed by 1000 recursive queueMicrotask calls.
// - signal-opts: 100 lone reads with { signal } and 100 with { timeout }: none waits in its call.
// - plain: 100 lone reads, nothing else, then the program ends (its loop must not be kept alive).
// - workers: 2 worker_threads and the main thread each do 200 lone reads at once.
// - worker-held: (the main thread makes no engine) after 'go' a worker opens the device and
//   starts a held lone read (its thread sleeps in the in-call wait); after 'terminate' the
//   worker is terminated: 'exited' with the process's io_uring/eventfd descriptor counts and
//   the reaper's; after the parent released the read, 'freed' (with ODIRECT_URING_SETUP=coop:
//   once the reaper freed the engine) with the counts again.
// - worker-idle: a worker does 50 lone reads (its watch of its loop stays armed), reports
//   its waitStats ('worker') and waits; after 'terminate': 'exited' with the descriptor counts.
// - swap (a tmpfs file): each 'read' line on stdin: 50 lone reads (inline), then 'read';
//   'end' ends.
'use strict'
const path = require('node:path')
const dist = path.join(__dirname, '..', '..', 'dist')
const od = require(path.join(dist, 'index.js'))
const { getEngine } = require(path.join(dist, 'src', 'engine.js'))

const [target, scenario, arg] = process.argv.slice(2)
const UNIT = 4096
const counters = () => ({ waitStats: getEngine().native.waitStats, callStats: getEngine().native.callStats })
const say = (what, extra = {}) => process.stdout.write(`${what} ${JSON.stringify({ ...counters(), ...extra })}\n`)
/** A reader of stdin's lines: each call resolves with the next line (queued if it came first). */
const lines = () => {
  const waiters = []
  const queued = []
  let buf = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (d) => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i)
      buf = buf.slice(i + 1)
      const w = waiters.shift()
      if (w) w(l)
      else queued.push(l)
    }
  })
  return () => (queued.length > 0 ? Promise.resolve(queued.shift()) : new Promise((resolve) => waiters.push(resolve)))
}

const { anonFds } = require('../helpers/fds.cjs')
const fds = () => ({ ring: anonFds('io_uring'), eventfd: anonFds('eventfd') })
/** As `say`, without the counters: the main thread makes no engine of its own. */
const tell = (what, extra = {}) => process.stdout.write(`${what} ${JSON.stringify(extra)}\n`)

async function workerCase() {
  const { Worker } = require('node:worker_threads')
  const { native } = require(path.join(dist, 'src', 'native.js'))
  const next = lines()
  const body = `
    const { parentPort, workerData } = require('node:worker_threads')
    const od = require(workerData.index)
    const { getEngine } = require(workerData.engine)
    ;(async () => {
      const fh = await od.open(workerData.target, 'r', { backend: 'io_uring' })
      const buf = fh.alloc(4096)
      if (workerData.scenario === 'worker-held') {
        parentPort.postMessage({ opened: true })
        await fh.read(buf, 0, 4096, 0)
        parentPort.postMessage({ readDone: true })
      } else {
        for (let i = 0; i < 50; i++) await fh.read(buf, 0, 4096, (i % 16) * 4096)
        parentPort.postMessage({ waitStats: getEngine().native.waitStats, ok: buf.every((x) => x === 0x5a) })
      }
      setInterval(() => {}, 1 << 30)
    })()
  `
  const base = fds()
  tell('ready', { fds: base })
  await next()
  const w = new Worker(body, { eval: true, workerData: { target, scenario, index: path.join(dist, 'index.js'), engine: path.join(dist, 'src', 'engine.js') } })
  w.on('error', (e) => tell('error', { error: String(e) }))
  const exited = new Promise((resolve) => w.on('exit', resolve))
  w.on('message', (m) => tell('worker', m))
  await next()
  const freed0 = native.reaperStats()[1]
  await w.terminate()
  tell('exited', { code: await exited, fds: fds(), base, reaper: native.reaperStats() })
  if (scenario === 'worker-held') {
    await next()
    // A DEFER_TASKRUN ring (the default for disk files) cannot be reaped by another thread: its
    // orphan is kept for the life of the process (see crates/napi/src/reaper.rs); a coop ring is.
    if (process.env.ODIRECT_URING_SETUP === 'coop') {
      while (native.reaperStats()[1] === freed0) await new Promise((resolve) => setTimeout(resolve, 5))
    }
    tell('freed', { fds: fds(), base, reaper: native.reaperStats() })
  }
  process.stdin.destroy()
}

async function swapCase() {
  const next = lines()
  const fh = await od.open(target, 'r')
  const buf = fh.alloc(UNIT)
  say('ready')
  for (;;) {
    const l = await next()
    if (l !== 'read') break
    let wrong = 0
    for (let i = 0; i < 50; i++) {
      buf.fill(0)
      const { bytesRead } = await fh.read(buf, 0, UNIT, (i % 16) * UNIT)
      if (bytesRead !== UNIT || !buf.every((x) => x === 0x5a)) wrong++
    }
    say('read', { wrong })
  }
  process.stdin.destroy()
  await fh.close()
}

async function main() {
  if (scenario === 'worker-held' || scenario === 'worker-idle') return workerCase()
  if (scenario === 'swap') return swapCase()
  const fh = await od.open(target, 'r', { backend: 'io_uring' })
  const buf = fh.alloc(UNIT)
  const readOnce = async (pos = 0, opts) => {
    buf.fill(0)
    const { bytesRead } = opts ? await fh.read(buf, { position: pos, ...opts }) : await fh.read(buf, 0, UNIT, pos)
    return { bytesRead, ok: bytesRead === UNIT && buf.every((x) => x === 0x5a) }
  }
  const loopReads = async (n) => {
    let wrong = 0
    for (let i = 0; i < n; i++) if (!(await readOnce((i % 16) * UNIT)).ok) wrong++
    return wrong
  }
  // The engine and its ring exist and have read once (not held yet).
  await readOnce()

  if (scenario === 'signal' || scenario === 'sigchld' || scenario === 'close') {
    const next = lines()
    let pending
    let grandchild
    if (scenario === 'signal') process.on('SIGUSR1', () => say('signal', { readPending: pending !== undefined }))
    if (scenario === 'sigchld') {
      grandchild = require('node:child_process').spawn('sleep', ['1000'], { stdio: 'ignore' })
      grandchild.on('exit', (code, sig) => say('sigchld', { readPending: pending !== undefined, sig }))
    }
    say('ready', { grandchild: grandchild?.pid })
    await next()
    const before = counters()
    say('started', { before })
    pending = readOnce()
    say('returned')
    let closed
    if (scenario === 'close') {
      const l = await next()
      say('closing', { line: l })
      closed = fh.close().then(() => say('closed'), (e) => say('closed', { error: String(e) }))
    }
    const r = await pending
    say('read', r)
    process.stdin.destroy()
    if (closed) return closed
  } else if (scenario === 'exit') {
    for (let i = 0; i < 1000; i++) {
      const before = getEngine().native.callStats[0]
      let inCall = false
      const p = fh.read(buf, 0, UNIT, 0).then(({ bytesRead }) => {
        if (!inCall) return
        say('exiting', { bytesRead, ok: buf.every((x) => x === 0x5a) })
        process.exit(7)
      })
      inCall = getEngine().native.callStats[0] === before + 1
      await p
    }
    say('never-in-call')
  } else if (scenario === 'socket') {
    const net = require('node:net')
    const sock = net.connect(Number(arg), '127.0.0.1')
    let bytes = 0
    let sum = 0
    let events = 0
    let ended = false
    sock.on('data', (d) => {
      events++
      bytes += d.length
      for (let i = 0; i < d.length; i++) sum = (sum + d[i] * ((bytes - d.length + i) % 251 + 1)) % 1000000007
    })
    const end = new Promise((resolve) => sock.on('end', resolve))
    void end.then(() => (ended = true))
    let reads = 0
    let wrong = 0
    // At least 300 reads, and on until the socket ended.
    while (!ended || reads < 300) {
      if (!(await readOnce((reads % 16) * UNIT)).ok) wrong++
      reads++
    }
    await end
    say('done', { bytes, sum, events, reads, wrong })
  } else if (scenario === 'immediate') {
    let ticks = 0
    let stop = false
    const tick = () => {
      ticks++
      if (!stop) setImmediate(tick)
    }
    setImmediate(tick)
    await new Promise((resolve) => setImmediate(resolve))
    const before = counters()
    const wrong = await loopReads(200)
    const after = counters()
    stop = true
    say('done', { before, after, wrong, ticks })
  } else if (scenario === 'interval') {
    let ticks = 0
    const iv = setInterval(() => ticks++, 0)
    const before = counters()
    const wrong = await loopReads(200)
    const after = counters()
    const t0 = ticks
    // Timers still fire after the reads (the loop keeps turning).
    await new Promise((resolve) => {
      const check = setInterval(() => {
        if (ticks > t0 + 2) {
          clearInterval(check)
          resolve()
        }
      }, 0)
    })
    clearInterval(iv)
    say('done', { before, after, wrong, ticks })
  } else if (scenario === 'microtask') {
    let depth = 0
    const recurse = (n, done) => {
      depth++
      if (n === 0) done()
      else queueMicrotask(() => recurse(n - 1, done))
    }
    const before = counters()
    let wrong = 0
    for (let i = 0; i < 200; i++) {
      if (!(await readOnce((i % 16) * UNIT)).ok) wrong++
      await new Promise((resolve) => recurse(1000, resolve))
    }
    say('done', { before, after: counters(), wrong, depth })
  } else if (scenario === 'signal-opts') {
    const before = counters()
    let wrong = 0
    const ac = new AbortController()
    for (let i = 0; i < 100; i++) if (!(await readOnce((i % 16) * UNIT, { signal: ac.signal })).ok) wrong++
    const mid = counters()
    for (let i = 0; i < 100; i++) if (!(await readOnce((i % 16) * UNIT, { timeout: 60000 })).ok) wrong++
    say('done', { before, mid, after: counters(), wrong })
  } else if (scenario === 'plain') {
    const wrong = await loopReads(100)
    say('done', { wrong })
  } else if (scenario === 'workers') {
    const { Worker } = require('node:worker_threads')
    const body = `
      const { parentPort, workerData } = require('node:worker_threads')
      const od = require(workerData.index)
      const { getEngine } = require(workerData.engine)
      ;(async () => {
        const fh = await od.open(workerData.target, 'r', { backend: 'io_uring' })
        const buf = fh.alloc(4096)
        let wrong = 0
        for (let i = 0; i < 200; i++) {
          buf.fill(0)
          const { bytesRead } = await fh.read(buf, 0, 4096, (i % 16) * 4096)
          if (bytesRead !== 4096 || !buf.every((x) => x === 0x5a)) wrong++
        }
        const n = getEngine().native
        parentPort.postMessage({ wrong, waitStats: n.waitStats, callStats: n.callStats })
        await fh.close()
      })()
    `
    const ws = [0, 1].map(
      () =>
        new Promise((resolve, reject) => {
          const w = new Worker(body, { eval: true, workerData: { target, index: path.join(dist, 'index.js'), engine: path.join(dist, 'src', 'engine.js') } })
          let msg
          w.on('message', (m) => (msg = m))
          w.on('error', reject)
          w.on('exit', (code) => resolve({ code, ...msg }))
        }),
    )
    const wrong = await loopReads(200)
    const main = { wrong, ...counters() }
    say('done', { main, workers: await Promise.all(ws) })
  } else {
    throw new Error(`unknown scenario ${scenario}`)
  }
  await fh.close()
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
