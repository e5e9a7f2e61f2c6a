// Child of __test__/liveness.spec.ts (Node 20, Node 22, Bun, Deno): reads held forever by a
// FUSE daemon (nothing cancels them) must not hold up worker termination or process exit.
// argv[2]: JSON { mode: 'terminate' | 'exit', file, statsFile, backend }
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

const cfg = JSON.parse(process.argv[2])
const held = () => Number(/held=(\d+)/.exec(fs.readFileSync(cfg.statsFile, 'utf8'))?.[1] ?? 0)
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

if (cfg.mode === 'terminate') {
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
  console.log(JSON.stringify({ terminated: true, held: held() }))
} else {
  const od = createRequire(import.meta.url)(dist)
  const fh = await od.open(cfg.file, 'r', { backend: cfg.backend })
  for (let i = 0; i < 5; i++) fh.read(fh.alloc(4096), 0, 4096, i * 4096).catch(() => undefined)
  await waitHeld(4)
  console.log(JSON.stringify({ exiting: true, held: held() }))
  process.exit(0)
}
