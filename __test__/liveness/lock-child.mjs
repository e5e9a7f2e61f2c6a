// Child of __test__/liveness.spec.ts (Node 20, Node 22, Bun, Deno): a lock() that can never be
// granted (another handle holds the lock) must not hold up process exit, worker termination,
// or other I/O. Prints one JSON line on success; the parent bounds how long it may take.
//
// argv[2]: JSON { mode: 'exit' | 'terminate' | 'starve', file, other }
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

const od = createRequire(import.meta.url)('../../dist/index.js')
const cfg = JSON.parse(process.argv[2])

const holder = await od.open(cfg.file, 'r+', { direct: 'prefer' })
await holder.lock()

if (cfg.mode === 'exit') {
  const waiter = await od.open(cfg.file, 'r+', { direct: 'prefer' })
  waiter.lock().catch(() => undefined)
  console.log(JSON.stringify({ exiting: true }))
  process.exit(0)
} else if (cfg.mode === 'terminate') {
  const w = new Worker(fileURLToPath(new URL('./lock-worker.mjs', import.meta.url)), { workerData: cfg.file })
  await new Promise((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
  })
  await w.terminate()
  // The holder's lock is untouched by the worker's end.
  const probe = await od.open(cfg.file, 'r+', { direct: 'prefer' })
  const free = probe.tryLock()
  await probe.close()
  await holder.close()
  console.log(JSON.stringify({ terminated: true, stillHeld: !free }))
} else {
  // More waiting lock()s than libuv's pool has threads: open() and node:fs still work.
  const waiters = []
  const waits = []
  for (let i = 0; i < 6; i++) {
    const h = await od.open(cfg.file, 'r+', { direct: 'prefer' })
    waiters.push(h)
    waits.push(h.lock().then(() => 'locked', (e) => e.code))
  }
  const text = await fs.promises.readFile(cfg.other, 'utf8')
  const other = await od.open(cfg.other, 'r', { direct: 'off' })
  const { bytesRead } = await other.read(Buffer.alloc(64), 0, 64, 0)
  await other.close()
  // close() ends each wait.
  await Promise.all(waiters.map((h) => h.close()))
  const outcomes = await Promise.all(waits)
  await holder.close()
  console.log(JSON.stringify({ text, bytesRead, outcomes }))
}
