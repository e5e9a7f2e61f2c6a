// ava glue for the fault bed: register a test, or skip it with a printed reason.
import test from 'ava'
import type { ExecutionContext } from 'ava'

import { isSkip, type Requirement, type Skip, skipReason } from './fixtures.js'

export type Body = (t: ExecutionContext) => void | Promise<void>

/**
 * Registers `fn`, or `test.skip`s it (printing why) when `reqs` can't be met here or when
 * `extraReason` (e.g. an unavailable backend) is given. `'serial'`: the test runs alone in its
 * file (before the concurrent ones), for tests that measure the whole process.
 */
export function fxTest(title: string, reqs: readonly Requirement[], fn: Body, extraReason?: string, serial?: 'serial'): void {
  const reason = skipReason(reqs) ?? extraReason
  if (reason) {
    console.log(`skipping "${title}": ${reason}`)
    test.skip(title, fn)
  } else if (serial) {
    test.serial(title, fn)
  } else {
    test(title, fn)
  }
}

/** A fixture that returns a skip although its requirements are met is a failure. */
export function must<T>(r: T | Skip): T {
  if (isSkip(r)) throw new Error(`fixture unavailable although requirements are met: ${r.skip}`)
  return r
}
