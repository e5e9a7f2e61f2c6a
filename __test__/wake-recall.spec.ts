// The reaper-thread wake-up path (Bun, Deno): the reaper thread wakes the JS thread with one
// threadsafe-function call at a time (`pending` set until the JS thread's round begins). A runtime
// can lose such a call: Deno 2.x's V8CrossThreadTaskSpawner wakes an AtomicWaker that its event
// loop, between finding no task and registering its waker again, has left empty. With no second
// call every op in flight waited until something else woke the loop: per-op tmpfs QD 64 bench
// runs of 30 s instead of 1.6 s, about one Deno run in five. The reaper thread now calls again
// when a call goes unanswered (wake.rs RECALL_MS; ODIRECT_WAKE_RECALL=0 turns it off).
//
// The loss is a race inside the runtime this machine did not hit on demand (0 stalls in 150
// bench-child runs while the fix was made), so the first cases make it happen:
// ODIRECT_TEST_LOSE_WAKE=40 has the reaper thread skip every 40th call while acting as if made.
// Without the recall (ODIRECT_WAKE_RECALL=0, the code before) such a child never finishes (killed
// by the bound below, by hand: 30 s timeout, 0 of 20000 results); with it, every write completes.
// The last case is the bench's own shape without injection (a regression check).
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { runtimePath } from './helpers/runtimes.js'
import { testIf } from './helpers/skips.js'
import { scratchDirs } from './helpers/scratch.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.join(here, '..')
const CHILD = path.join(here, 'liveness', 'qd64-child.mjs')
const scratch = scratchDirs('wake-recall')

/** A bound on a child that should take a few seconds: reached only when it stalls for good. */
const STALLED_AFTER_MS = 120_000

interface Out {
  ok: number
  right: number
  path: string
  recalls: number
}

function runtimeArgv(name: 'deno' | 'bun'): string[] | undefined {
  const bin = runtimePath(name)
  if (bin === undefined) return undefined
  return name === 'deno' ? [bin, 'run', '--allow-all', '--no-check', '--no-lock', '--node-modules-dir=manual'] : [bin]
}

/** Runs the child; resolves with its line, or rejects when it exits without one or stalls. */
function runChild(argv: string[], n: number, env: Record<string, string>): Promise<Out> {
  const file = path.join(scratch('/dev/shm'), 'f')
  fs.writeFileSync(file, '')
  return new Promise((resolve, reject) => {
    const c = spawn(argv[0], [...argv.slice(1), CHILD, JSON.stringify({ file, n })], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    c.stdout.on('data', (d: Buffer) => (out += d.toString()))
    c.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const bound = setTimeout(() => c.kill('SIGKILL'), STALLED_AFTER_MS)
    c.on('close', (code, signal) => {
      clearTimeout(bound)
      const line = out.split('\n').find((l) => l.startsWith('{'))
      if (line === undefined) return reject(new Error(`child ended (${code ?? signal}) without a result: it stalled, or failed: ${err.trim().split('\n').slice(-3).join(' ')}`))
      resolve(JSON.parse(line) as Out)
    })
  })
}

const N = 20_000

for (const name of ['deno', 'bun'] as const) {
  const argv = runtimeArgv(name)
  const title = `${name}: per-op writes at depth 64 on tmpfs finish when every 40th wake-up call is lost (the reaper thread calls again)`
  testIf(argv === undefined ? `no ${name} binary here (scripts/runtime-bin.cjs)` : undefined, title, async (t: ExecutionContext) => {
    const r = await runChild(argv!, N, { ODIRECT_TEST_LOSE_WAKE: '40' })
    t.is(r.path, 'thread')
    t.is(r.ok, N, 'writes that returned 4096')
    t.is(r.right, N, 'blocks read back right')
    // Calls were lost (at least one every 40), and each was made again.
    t.true(r.recalls >= 1, `recalls ${r.recalls}`)
  })
}

const denoArgv = runtimeArgv('deno')
testIf(denoArgv === undefined ? 'no deno binary here (scripts/runtime-bin.cjs)' : undefined, 'deno: three per-op QD 64 write loops of 50000 ops on tmpfs finish with every result right', async (t: ExecutionContext) => {
  for (let i = 0; i < 3; i++) {
    const r = await runChild(denoArgv!, 50_000, {})
    t.is(r.ok, 50_000)
    t.is(r.right, 50_000)
  }
})
