// Bun adapter of the runtime-neutral conformance cases: `npm run test:bun`
// (scripts/runtime-bin.cjs bun test ./__test__/conformance/bun.test.ts).
import { createRequire } from 'node:module'

import { expect, test } from 'bun:test'

import { cases, nodeAssertT, runCase } from './cases.ts'

// The package as a CommonJS consumer loads it (dist/index.js -> binding.js -> the .node addon).
const od = createRequire(import.meta.url)('../../dist/index.js')
const runtime = 'bun' as const

for (const c of cases) {
  const why = c.skip?.[runtime]
  if (why !== undefined) {
    test.skip(`${c.name} (skipped on Bun: ${why})`, () => {})
    continue
  }
  test(
    c.name,
    async () => {
      const skipped = await runCase(c, await nodeAssertT(console.log), od, runtime)
      if (skipped !== undefined) console.log(`SKIP ${c.name}: ${skipped}`)
      expect(true).toBe(true)
    },
    120_000,
  )
}
