#!/usr/bin/env node
// `npm test`: every check of the project, independent ones at the same time.
//
//   node scripts/test-all.cjs [--only NAME,NAME...]
//
// Stages run one after another; the steps of a stage run concurrently, each with its output
// captured and printed in one piece when it ends (never interleaved), followed by a summary of
// every step's status and time. The exit status is 1 if any step failed. Stages:
//   1. build            (everything else tests what it produces), and the faultfs FUSE test
//                       filesystem, built once here for every ava worker (FAULTFS_BIN)
//   2. the independent checks: binding.d.ts as the build regenerated it, Rust tests, ava (every spec, including the aio and threadpool
//      passes of __test__/backends/), the type checks, Bun, Deno, Node 22 and the packaging test
//   3. machine-wide     (the ava tests titled "machine-wide", one at a time when nothing else of
//                       ours runs: kernel.io_uring_disabled fails every other process's io_uring
//                       setup while it is on; drop_caches empties what page-cache tests measure)
'use strict'
const { spawn } = require('node:child_process')
const path = require('node:path')

const STAGES = [
  ['build', 'faultfs'],
  ['check:binding', 'test:rust', 'test:js', 'test:conformance-types', 'test:types', 'test:bun', 'test:deno', 'test:node22', 'test:pack'],
  ['test:machine-wide'],
]

const only = (() => {
  const i = process.argv.indexOf('--only')
  return i >= 0 ? new Set(process.argv[i + 1].split(',')) : undefined
})()

// The FUSE test filesystem, built once here instead of by `cargo build` in every ava worker
// that mounts it (helpers/fixtures.ts honours FAULTFS_BIN).
const FAULTFS = path.join(__dirname, '..', process.env.CARGO_TARGET_DIR ?? 'target', 'release', 'faultfs')
const COMMANDS = { faultfs: ['cargo', ['build', '-q', '-p', 'faultfs', '--release']] }
const env = { ...process.env, FORCE_COLOR: '0', FAULTFS_BIN: process.env.FAULTFS_BIN ?? FAULTFS }

function run(script) {
  const t0 = process.hrtime.bigint()
  return new Promise((resolve) => {
    const [cmd, args] = COMMANDS[script] ?? ['npm', ['run', '--silent', script]]
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
    const out = []
    child.stdout.on('data', (d) => out.push(d))
    child.stderr.on('data', (d) => out.push(d))
    child.on('close', (code, signal) => {
      const secs = Number(process.hrtime.bigint() - t0) / 1e9
      const ok = code === 0
      process.stdout.write(`\n===== ${script}: ${ok ? 'ok' : `FAILED (${signal ?? `exit ${code}`})`} in ${secs.toFixed(1)} s =====\n`)
      process.stdout.write(Buffer.concat(out))
      resolve({ script, ok, secs, out: Buffer.concat(out).toString() })
    })
  })
}

async function main() {
  const t0 = process.hrtime.bigint()
  const results = []
  for (const stage of STAGES) {
    const steps = stage.filter((s) => !only || only.has(s))
    const done = await Promise.all(steps.map(run))
    results.push(...done)
    // Later stages test what the build made: stop if it failed.
    if (stage.includes('build') && done.some((r) => !r.ok)) break
  }
  const total = Number(process.hrtime.bigint() - t0) / 1e9
  // CI logs are often read from their tail only: repeat what failed (ava's ✘ lines, errors)
  // just above the summary, so the cause is never cut off.
  for (const r of results.filter((x) => !x.ok)) {
    // A failing property's own error (props.spec's "props violation: ...") is repeated too: ava
    // prints it only in the failure's details, far above the summary.
    const marked = [...new Set(r.out.split('\n').filter((l) => /✘|Uncaught exception|Unhandled rejection|Timed out|panicked at|^error(\[|:)|^FAIL|props violation:/.test(l)).map((l) => (l.length > 700 ? `${l.slice(0, 700)}...` : l)))]
    console.log(`\n===== ${r.script} failed; its error lines (${marked.length}) =====\n${marked.slice(0, 20).join('\n')}`)
  }
  console.log('\n===== summary =====')
  for (const r of results) console.log(`${r.ok ? 'ok    ' : 'FAILED'} ${r.script.padEnd(24)} ${r.secs.toFixed(1).padStart(6)} s`)
  console.log(`total ${total.toFixed(1)} s`)
  process.exitCode = results.every((r) => r.ok) ? 0 : 1
}

main()
