// Child of small-s22.spec.ts (item 4), run as an unprivileged user: drops its own RLIMIT_NPROC
// to the tasks its user has now (prlimit on itself, once Node's threads are up), so the kernel
// can start no io-wq worker, then writes and datasyncs a file on io_uring and on aio.
// Prints RESULT {"uring": [...], "aio": [...]}: per op 'ok' or { code, hint }.
import { execFileSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import * as path from 'node:path'

const [dist, dir] = process.argv.slice(2)
const od = await import(dist)
const tasks = readdirSync('/proc/self/task').length
// No other task of this user may exist for the limit to be this process's threads.
execFileSync('prlimit', ['--pid', String(process.pid), `--nproc=${tasks}`])
const out = {}
try {
  for (const backend of ['io_uring', 'aio']) {
    const fh = await od.open(path.join(dir, backend), 'w', { backend })
    const b = fh.alloc(4096)
    const ops = []
    for (const op of [() => fh.write(b, 0, 4096, 0), () => fh.datasync()]) {
      try {
        await op()
        ops.push('ok')
      } catch (e) {
        ops.push({ code: e.code, hint: e.hint })
      }
    }
    await fh.close()
    out[backend] = ops
  }
} catch (e) {
  out.crash = String(e?.stack ?? e)
}
console.log(`RESULT ${JSON.stringify(out)}`)
