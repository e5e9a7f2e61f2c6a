// Runs the runtime-neutral conformance cases (__test__/conformance/cases.ts and fscompat-cases.ts,
// compiled to JavaScript by scripts/test-targets.cjs into .tmp/targets/conformance) in whatever
// runtime starts this file: Node 20/22, Bun or Deno, native or under qemu-user. It exists because
// ava's TypeScript loader (@oxc-node/core) has no build for the emulated architectures; the cases,
// their assertions (nodeAssertT) and their skip rules (skipReasonFor) are the same objects the ava,
// bun:test and Deno.test adapters run.
//
//   <runtime> scripts/target-conformance.mjs <compiled-cases-dir> <label>
//
// The addon is the one NAPI_RS_NATIVE_LIBRARY_PATH names (binding.js honours it). ODIRECT_BACKEND
// picks the backend as for every suite. Prints `ok`/`not ok` per case, a `# env {json}` line (the
// runtime, architecture, which backend `auto` chose, every backend's availability and reason) and
// `N passed, N failed, N skipped`.
import { createRequire } from 'node:module'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { pathToFileURL } from 'node:url'

const [dir, label = 'target'] = (typeof Deno !== 'undefined' ? Deno.args : process.argv.slice(2))
const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..')
const { cases, nodeAssertT, runCase, skipReasonFor } = await import(pathToFileURL(path.resolve(dir, 'cases.js')).href)
const { fsCompatCases } = await import(pathToFileURL(path.resolve(dir, 'fscompat-cases.js')).href)
const od = createRequire(import.meta.url)(path.join(root, 'dist', 'index.js'))
const runtime = typeof Deno !== 'undefined' ? 'deno' : typeof Bun !== 'undefined' ? 'bun' : 'node'
const version = runtime === 'deno' ? Deno.version.deno : runtime === 'bun' ? Bun.version : process.versions.node

let passed = 0
let failed = 0
let skipped = 0
const all = [...cases, ...fsCompatCases]
for (const c of all) {
  const why = await skipReasonFor(c, od, runtime)
  if (why !== undefined) {
    skipped++
    console.log(`ok - ${label}: ${c.name} # SKIP ${why}`)
    continue
  }
  try {
    await runCase(c, await nodeAssertT(() => {}), od, runtime)
    passed++
    console.log(`ok - ${label}: ${c.name}`)
  } catch (e) {
    failed++
    console.log(`not ok - ${label}: ${c.name}\n  ${String(e && e.stack ? e.stack : e).split('\n').join('\n  ')}`)
  }
}

// What ran: the backend `auto` (or ODIRECT_BACKEND) gives a file here, and why the others are not used.
const scratch = fs.mkdtempSync('/var/tmp/odirect-target-env-')
const env = { runtime, version, arch: process.arch, requested: process.env.ODIRECT_BACKEND || 'auto' }
try {
  const fh = await od.open(path.join(scratch, 'probe.bin'), 'w+')
  env.backend = fh.backend
  env.direct = fh.direct
  await fh.close()
  const p = await od.probe(scratch)
  env.backends = Object.fromEntries(Object.entries(p.backends).map(([k, b]) => [k, b.available ? 'available' : `unavailable: ${b.reason}`]))
  env.completionPath = p.completionPath
  env.addon = process.env.NAPI_RS_NATIVE_LIBRARY_PATH || null
} catch (e) {
  failed++
  console.log(`not ok - ${label}: open + probe for the environment report\n  ${e && e.stack ? e.stack : e}`)
} finally {
  fs.rmSync(scratch, { recursive: true, force: true })
}
console.log(`# env ${JSON.stringify(env)}`)
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
if (failed) {
  if (typeof Deno !== 'undefined') Deno.exit(1)
  process.exitCode = 1
}
