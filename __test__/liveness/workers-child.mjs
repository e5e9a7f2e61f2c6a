// Child of __test__/liveness.spec.ts (Node 20, Node 22, Bun, Deno): workers terminated in the
// middle of their I/O leave nothing behind. Prints one JSON line: descriptors and RSS after a
// warm-up, and again after `n` more workers were terminated mid-I/O.
//
// argv[2]: JSON { file, n, warm }
import * as fs from 'node:fs'
import { Worker } from 'node:worker_threads'

const cfg = JSON.parse(process.argv[2])
const fds = () => fs.readdirSync('/proc/self/fd').length
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024
const gc = globalThis.gc ?? (() => undefined)

const body = `
const { parentPort, workerData } = require('node:worker_threads')
const od = require(${JSON.stringify(new URL('../../dist/index.js', import.meta.url).pathname)})
;(async () => {
  const fh = await od.open(workerData, 'r')
  const bufs = Array.from({ length: 16 }, () => fh.alloc(4096))
  const plain = Buffer.alloc(4096)
  let told = false
  const loop = async (b, i) => {
    for (let k = 0; ; k++) {
      await fh.read(b, 0, 4096, ((i * 7 + k) % 256) * 4096)
      if (!told) {
        told = true
        parentPort.postMessage('busy')
      }
    }
  }
  bufs.forEach((b, i) => loop(b, i))
  loop(plain, 16)
})()
`
const workerFile = `${cfg.file}.worker.cjs`
fs.writeFileSync(workerFile, body)

async function round(count) {
  for (let i = 0; i < count; i++) {
    const w = new Worker(workerFile, { workerData: cfg.file })
    await new Promise((resolve, reject) => {
      w.once('message', resolve)
      w.once('error', reject)
    })
    await w.terminate()
  }
}

await round(cfg.warm)
gc()
const before = { fds: fds(), rss: rss() }
await round(cfg.n)
gc()
const after = { fds: fds(), rss: rss() }
fs.rmSync(workerFile, { force: true })
console.log(JSON.stringify({ before, after }))
