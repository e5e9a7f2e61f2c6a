// Node adapter of the runtime-neutral conformance cases (__test__/conformance/cases.ts), on ava.
// The same cases run under Bun (conformance/bun.test.ts) and Deno (conformance/deno.test.ts);
// `npm run test:node22` runs this file under Node 22. A case skipped on this runtime (its `skip`
// entry or its `precheck`) is registered with test.skip and the reason printed: never a pass.
import test from 'ava'

import { cases } from './conformance/cases.ts'
import { registerCases } from './helpers/avat.ts'

// Every precheck runs before the first test is declared (ava wants all declarations in one turn).
await registerCases(cases)
test(`runtime: Node ${process.versions.node} (N-API ${process.versions.napi})`, (t) => {
  t.true(Number(process.versions.napi) >= 8, `N-API ${process.versions.napi}`)
  // `npm run test:node22` sets this: the cases below then ran under that Node, not the default one.
  const want = process.env.ODIRECT_EXPECT_NODE_MAJOR
  if (want !== undefined) t.is(process.versions.node.split('.')[0], want)
})
