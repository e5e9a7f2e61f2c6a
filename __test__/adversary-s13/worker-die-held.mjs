// Child of adversary-s13.spec.ts (Node, Bun, Deno): a worker whose reads a FUSE server holds
// dies by an uncaught exception or process.exit() in the worker. Its 'exit' must come while the
// server still holds them (the engine hands what the kernel holds to the process-wide reaper);
// then the parent's line releases the server and the process ends by itself.
// argv: <odirect module> <FUSE file> <mode: throw | exit>. Prints 'held' once the worker's reads
// are issued, 'exited' when the worker's 'exit' event came, then waits for a stdin line.
import { Worker } from 'node:worker_threads'

const [mod, file, mode] = process.argv.slice(2)
const body = `
const { parentPort, workerData } = require('node:worker_threads')
const od = require(${JSON.stringify(mod)})
;(async () => {
  const fh = await od.open(workerData.file, 'r')
  for (let i = 0; i < 4; i++) fh.read(fh.alloc(4096), 0, 4096, i * 4096).catch(() => undefined)
  parentPort.postMessage('started')
  parentPort.once('message', () => {
    if (workerData.mode === 'exit') process.exit(3)
    throw new Error('worker dies with its reads held')
  })
})()
`
const w = new Worker(body, { eval: true, workerData: { file, mode } })
w.on('error', () => undefined)
await new Promise((resolve) => w.once('message', resolve))
console.log('held')
// The parent sees the server hold the reads, then tells us to kill the worker.
await new Promise((resolve) => process.stdin.once('data', resolve))
const exited = new Promise((resolve) => w.once('exit', resolve))
w.postMessage('die')
await exited
console.log('exited')
await new Promise((resolve) => process.stdin.once('data', resolve))
process.stdin.pause()
