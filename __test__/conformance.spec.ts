// Node adapter of the runtime-neutral conformance cases (__test__/conformance/cases.ts), on ava.
// The same cases run under Bun (conformance/bun.test.ts) and Deno (conformance/deno.test.ts);
// `npm run test:node22` runs this file under Node 22. A case skipped on this runtime (its `skip`
// entry or its `precheck`) is registered with test.skip and the reason printed: never a pass.
import test, { type ExecutionContext } from 'ava'

import * as od from '../dist/index.js'
import { cases, errorMismatch, runCase, SkipSignal, skipReasonFor, type T } from './conformance/cases.ts'

function avaT(t: ExecutionContext): T {
  const check = (e: unknown, expected: Parameters<T['throws']>[1]): unknown => {
    const bad = errorMismatch(e, expected)
    t.is(bad, '', bad)
    return e
  }
  return {
    is: (a, b, m) => t.is(a, b, m),
    true: (v, m) => t.true(v as boolean, m),
    deepEqual: (a, b, m) => t.deepEqual(a, b, m),
    throwsAsync: async (p, expected) => {
      try {
        await (typeof p === 'function' ? p() : p)
      } catch (e) {
        return check(e, expected)
      }
      t.fail(`expected a rejection${expected?.code ? ` with code ${expected.code}` : ''}, but it resolved`)
      return undefined
    },
    throws: (fn, expected) => {
      try {
        fn()
      } catch (e) {
        return check(e, expected)
      }
      t.fail(`expected a throw${expected?.code ? ` with code ${expected.code}` : ''}, but it returned`)
      return undefined
    },
    skip: (reason) => {
      throw new SkipSignal(reason)
    },
    log: (...v) => t.log(...v),
  }
}

const runtime = 'node' as const

// Every precheck runs before the first test is declared (ava wants all declarations in one turn).
const reasons = await Promise.all(cases.map((c) => skipReasonFor(c, od as never, runtime)))
test(`runtime: Node ${process.versions.node} (N-API ${process.versions.napi})`, (t) => {
  t.true(Number(process.versions.napi) >= 8, `N-API ${process.versions.napi}`)
  // `npm run test:node22` sets this: the cases below then ran under that Node, not the default one.
  const want = process.env.ODIRECT_EXPECT_NODE_MAJOR
  if (want !== undefined) t.is(process.versions.node.split('.')[0], want)
})
for (const [i, c] of cases.entries()) {
  const why = reasons[i]
  if (why !== undefined) {
    console.log(`skipping "${c.name}": ${why}`)
    test.skip(`${c.name} (skipped: ${why})`, () => {})
    continue
  }
  test(c.name, async (t) => {
    await runCase(c, avaT(t), od as never, runtime)
  })
}
