// Bun adapter of the runtime-neutral conformance cases: `npm run test:bun`
// (scripts/runtime-bin.cjs bun test ./__test__/conformance/bun.test.ts). A case skipped on Bun
// (its `skip` entry or its `precheck`) is registered with test.skip: reported as skipped.
import { createRequire } from 'node:module'

import { test } from 'bun:test'

import { cases as conformanceCases, nodeAssertT, runCase, skipReasonFor } from './cases.ts'
import { fsCompatCases } from './fscompat-cases.ts'

// The package as a CommonJS consumer loads it (dist/index.js -> binding.js -> the .node addon).
const od = createRequire(import.meta.url)('../../dist/index.js')
const runtime = 'bun' as const

// The conformance cases and the fs/promises doc snippets (run with only the import changed).
const cases = [...conformanceCases, ...fsCompatCases]
const reasons = await Promise.all(cases.map((c) => skipReasonFor(c, od, runtime)))
for (const [i, c] of cases.entries()) {
  const why = reasons[i]
  if (why !== undefined) {
    console.log(`skipping "${c.name}": ${why}`)
    test.skip(`${c.name} (skipped: ${why})`, () => {})
    continue
  }
  test(c.name, async () => runCase(c, await nodeAssertT(console.log), od, runtime), 120_000)
}
