// Deno adapter of the runtime-neutral conformance cases: `npm run test:deno`
// (scripts/runtime-bin.cjs deno test --allow-all --no-check --node-modules-dir=manual
// __test__/conformance/deno.test.ts). Deno loads Node-API addons through process.dlopen, which
// needs --allow-ffi (part of --allow-all), and CommonJS through createRequire. A case skipped on
// Deno (its `skip` entry or its `precheck`) is registered with `ignore`: reported as ignored.
import { createRequire } from 'node:module'

import { cases as conformanceCases, nodeAssertT, runCase, skipReasonFor } from './cases.ts'
import { fsCompatCases } from './fscompat-cases.ts'

declare const Deno: {
  test(def: { name: string; ignore?: boolean; fn: () => Promise<void> }): void
}

const od = createRequire(import.meta.url)('../../dist/index.js')
const runtime = 'deno' as const

// The conformance cases and the fs/promises doc snippets (run with only the import changed).
const cases = [...conformanceCases, ...fsCompatCases]
const reasons = await Promise.all(cases.map((c) => skipReasonFor(c, od, runtime)))
for (const [i, c] of cases.entries()) {
  const why = reasons[i]
  if (why !== undefined) console.log(`skipping "${c.name}": ${why}`)
  Deno.test({
    name: why === undefined ? c.name : `${c.name} (skipped: ${why})`,
    ignore: why !== undefined,
    async fn() {
      await runCase(c, await nodeAssertT(console.log), od, runtime)
    },
  })
}
