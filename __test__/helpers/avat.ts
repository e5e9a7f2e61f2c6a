// The conformance cases' assertion interface (`T`, __test__/conformance/cases.ts) on ava: shared by
// the specs that run runtime-neutral cases on Node (fs-compat.spec.ts; conformance.spec.ts can use it too).
import test, { type ExecutionContext } from 'ava'

import * as od from '../../dist/index.js'
import { type Case, errorMismatch, runCase, SkipSignal, skipReasonFor, type T } from '../conformance/cases.ts'

export function avaT(t: ExecutionContext): T {
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

/**
 * Registers runtime-neutral cases as ava tests on Node: every precheck runs before the first
 * declaration (ava wants them all in one turn); a case skipped here is test.skip with the reason
 * printed, never a pass.
 */
export async function registerCases(cases: readonly Case[]): Promise<void> {
  const reasons = await Promise.all(cases.map((c) => skipReasonFor(c, od as never, 'node')))
  for (const [i, c] of cases.entries()) {
    const why = reasons[i]
    if (why !== undefined) {
      console.log(`skipping "${c.name}": ${why}`)
      test.skip(`${c.name} (skipped: ${why})`, () => {})
      continue
    }
    test(c.name, async (t) => {
      await runCase(c, avaT(t), od as never, 'node')
    })
  }
}
