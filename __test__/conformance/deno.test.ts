// Deno adapter of the runtime-neutral conformance cases: `npm run test:deno`
// (scripts/runtime-bin.cjs deno test --allow-all --no-check --node-modules-dir=manual
// __test__/conformance/deno.test.ts). Deno loads Node-API addons through process.dlopen, which
// needs --allow-ffi (part of --allow-all), and CommonJS through createRequire.
import { createRequire } from 'node:module'

import { cases, nodeAssertT, runCase } from './cases.ts'

declare const Deno: {
  test(def: { name: string; ignore?: boolean; fn: () => Promise<void> }): void
}

const od = createRequire(import.meta.url)('../../dist/index.js')
const runtime = 'deno' as const

for (const c of cases) {
  const why = c.skip?.[runtime]
  Deno.test({
    name: why === undefined ? c.name : `${c.name} (skipped on Deno: ${why})`,
    ignore: why !== undefined,
    async fn() {
      const skipped = await runCase(c, await nodeAssertT(console.log), od, runtime)
      if (skipped !== undefined) console.log(`SKIP ${c.name}: ${skipped}`)
    },
  })
}
