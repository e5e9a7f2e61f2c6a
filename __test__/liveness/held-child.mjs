// Child of __test__/liveness.spec.ts (Node 20, Node 22, Bun, Deno): reads held forever by a
// FUSE daemon (nothing cancels them) must not hold up worker termination or process exit.
// argv[2]: JSON { mode: 'terminate' | 'exit', file, statsFile, backend }
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

const cfg = JSON.parse(process.argv[2])
const held = () => Number(/held=(\d+)/.exec(fs.readFileSync(cfg.statsFile, 'utf8'))?.[1] ?? 0)
// Polled, though faultfs announces each change on its stdout: fs.watch there (inotify) made
// Deno's worker-terminate case see an extra eventfd left open and Bun's process.exit() die of a
// signal (tried in the eleventh session).
const waitHeld = (n) =>
  new Promise((resolve) => {
    const iv = setInterval(() => {
      if (held() >= n) {
        clearInterval(iv)
        resolve()
      }
    }, 5)
  })
const dist = new URL('../../dist/index.js', import.meta.url).pathname

/** This process's eventfd descriptors (each engine has one). */
const eventfds = () =>
  fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]'
    } catch {
      return false
    }
  }).length

if (cfg.mode === 'terminate') {
  const baseline = eventfds()
  const body = `
const { parentPort, workerData } = require('node:worker_threads')
const od = require(${JSON.stringify(dist)})
;(async () => {
  const fh = await od.open(workerData.file, 'r', { backend: workerData.backend })
  for (let i = 0; i < 4; i++) fh.read(fh.alloc(4096), 0, 4096, i * 4096).catch(() => undefined)
  fh.read(Buffer.alloc(4096), 0, 4096, 4 * 4096).catch(() => undefined)
  parentPort.postMessage('started')
})()
`
  const w = new Worker(body, { eval: true, workerData: { file: cfg.file, backend: cfg.backend } })
  await new Promise((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
  })
  await waitHeld(4)
  await w.terminate()
  const h = held()
  console.log(JSON.stringify({ terminated: true, held: h }))
  // The parent releases the daemon on that line: the process-wide reaper then reaps the reads
  // the dead worker left in the kernel and frees their memory, backend and eventfd (Deno may
  // still be tearing the worker down when terminate() returns: its engine's own wait then sees
  // the reads complete, and nothing reaches the reaper). Once the worker's eventfd is closed
  // (or after 20 s): the reaper's counters [engines handed over, freed, ops handed over, freed,
  // bytes held] and whether the eventfds are back to what they were before the worker.
  const { native } = createRequire(import.meta.url)(new URL('../../dist/src/native.js', import.meta.url).pathname)
  const end = Date.now() + 20_000
  // A poll: a descriptor closing in /proc/self/fd notifies no one (procfs has no inotify).
  while (eventfds() > baseline && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 5))
  console.log(JSON.stringify({ terminated: true, held: h, reaper: native.reaperStats(), eventfdsBack: eventfds() <= baseline }))
} else {
  const od = createRequire(import.meta.url)(dist)
  const fh = await od.open(cfg.file, 'r', { backend: cfg.backend })
  for (let i = 0; i < 5; i++) fh.read(fh.alloc(4096), 0, 4096, i * 4096).catch(() => undefined)
  await waitHeld(4)
  console.log(JSON.stringify({ exiting: true, held: held() }))
  process.exit(0)
}
