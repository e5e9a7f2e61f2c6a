// Worker of lock-child.mjs 'terminate': waits in lock() for a lock its parent holds, then says so.
import { createRequire } from 'node:module'
import { parentPort, workerData } from 'node:worker_threads'

const od = createRequire(import.meta.url)('../../dist/index.js')
const fh = await od.open(workerData, 'r+', { direct: 'prefer' })
fh.lock().catch(() => undefined)
parentPort.postMessage('waiting')
