// Write streams' depth (issue 19 item 1, nineteenth session). Counted, never timed.
//
// ODIRECT_STREAM_READY=N (opt-in, src/streams/core.ts READY): a write stream accepts N full
// blocks beyond the `writeBehind` writes in the kernel before `write` waits (the engine's chain
// holds them back), instead of `writeBehind` more. Counted in a child process (the switch is read
// when the module loads): a Node stream of 128 KiB blocks, writeBehind 4, offered 12 blocks at
// once, before any completion reached JS (helpers: speed-s19/accept.cjs).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(HERE, 'speed-s19', 'accept.cjs')

interface Accepted {
  accepted: number
  inKernel: number
  held: number
  size: number
}

function run(t: { teardown(fn: () => void): void }, ready: string | undefined): Accepted {
  const dir = fs.mkdtempSync(path.join('/var/tmp', 'odirect-s19-streams-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const env: NodeJS.ProcessEnv = { ...process.env }
  delete env.ODIRECT_STREAM_READY
  if (ready !== undefined) env.ODIRECT_STREAM_READY = ready
  const r = spawnSync(process.execPath, [CHILD, path.join(dir, 'f')], { encoding: 'utf8', env, timeout: 60_000 })
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`)
  return JSON.parse(r.stdout) as Accepted
}

test('a write stream keeps writeBehind writes in the kernel and holds writeBehind full blocks more by default; ODIRECT_STREAM_READY=2 holds 2 (0 or unset: the default)', (t) => {
  const base = run(t, undefined)
  const zero = run(t, '0')
  const two = run(t, '2')
  t.log(JSON.stringify({ base, zero, two }))
  for (const r of [base, zero, two]) {
    t.is(r.inKernel, 4, 'writes in the kernel: writeBehind')
    t.is(r.size, 12 * 128 * 1024, 'every block written in the end')
  }
  t.is(base.held, 4, 'held back by the chain: writeBehind')
  t.deepEqual(zero, base)
  t.is(two.held, 2)
  // The 8th (6th) block waits: the stream accepts one block less than it holds in all.
  t.is(base.accepted, 7)
  t.is(two.accepted, 5)
})
