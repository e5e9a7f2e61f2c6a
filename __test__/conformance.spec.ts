// Node adapter of the runtime-neutral conformance cases (__test__/conformance/cases.ts), on ava.
// The same cases run under Bun (conformance/bun.test.ts) and Deno (conformance/deno.test.ts);
// `npm run test:node22` runs this file under Node 22.
import test, { type ExecutionContext } from 'ava'

import * as od from '../dist/index.js'
import { cases, errorMismatch, runCase, SkipSignal, type T } from './conformance/cases.ts'

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

test(`runtime: Node ${process.versions.node} (N-API ${process.versions.napi})`, (t) => {
  // `npm run test:node22` sets this: the cases below then ran under that Node, not the default one.
  const want = process.env.ODIRECT_EXPECT_NODE_MAJOR
  if (want !== undefined) t.is(process.versions.node.split('.')[0], want)
  t.pass()
})
for (const c of cases) {
  const why = c.skip?.[runtime]
  if (why !== undefined) {
    test.skip(`${c.name} (skipped on Node: ${why})`, () => {})
    continue
  }
  test(c.name, async (t) => {
    const skipped = await runCase(c, avaT(t), od as never, runtime)
    if (skipped !== undefined) t.log(`SKIP: ${skipped}`)
    t.pass()
  })
}
