// Waiting on the event a test is about instead of sleeping: these resolve when the thing has
// happened (a stream's 'close', a file written, a kernel counter reached), never after a fixed time.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { setImmediate as tick } from 'node:timers/promises'

import { type BackendName, type DirectIoError, open } from '../../dist/index.js'

export { watchUntil } from './watch.cjs'

interface Closable {
  readonly closed: boolean
  once(event: 'close', listener: () => void): unknown
}

/** Resolves once `x` (a Node stream, or anything with `closed` and a 'close' event) has emitted 'close'. */
export function closeEvent(x: Closable): Promise<void> {
  return x.closed ? Promise.resolve() : new Promise((resolve) => x.once('close', () => resolve()))
}

/**
 * Resolves once `cond()` holds, checking it every few milliseconds: for kernel state that sends
 * no notification (a FUSE server's counters, /proc/locks, /proc/PID/fd). `ms` only bounds a
 * failure (the error names `what`); a passing run never waits for it.
 */
export async function until(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const end = process.hrtime.bigint() + BigInt(ms) * 1_000_000n
  while (!cond()) {
    if (process.hrtime.bigint() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    // A poll: what callers wait on (/proc, FUSE counters, thread states) notifies no one.
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** The scheduler states (R, S, D...) of this process's threads named `name` (/proc/self/task/TID/stat). */
export function threadStates(name: string): string[] {
  const out: string[] = []
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      const open = stat.indexOf('(')
      const close = stat.lastIndexOf(')')
      if (stat.slice(open + 1, close) === name) out.push(stat.slice(close + 2, close + 3))
    } catch {
      // the thread ended meanwhile
    }
  }
  return out
}

/**
 * Runs the collector until `finalized` resolves (a FinalizationRegistry callback or a weak
 * reference being cleared), with event-loop turns in between for the finalizers; throws after
 * `rounds` collections.
 */
export async function collectUntil(done: () => boolean, what: string, rounds = 200): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with --expose-gc')
  for (let i = 0; i < rounds && !done(); i++) {
    gc()
    await tick()
    await tick()
  }
  if (!done()) throw new Error(`${what}: not collected after ${rounds} collections`)
}

let turnFile: string | undefined

/**
 * One read through this thread's engine on `backend`, from submission to completion, on a plain
 * file of its own: when it resolves, the engine has flushed what was staged before it and
 * delivered the completions that were ready. "Still pending after this" replaces "still
 * pending after a sleep" for ops that must not settle (held by a FUSE server, queued).
 */
export async function engineRoundTrip(backend: BackendName): Promise<void> {
  if (turnFile === undefined) {
    const dir = fs.mkdtempSync('/var/tmp/odirect-turn-')
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }))
    turnFile = path.join(dir, 'f')
    fs.writeFileSync(turnFile, Buffer.alloc(4096))
  }
  const fh = await open(turnFile, 'r', { backend, direct: 'prefer' })
  try {
    await fh.read(fh.alloc(4096), { position: 0 })
  } finally {
    await fh.close()
  }
}

/** The error `p` rejects with (the test fails when it resolves). */
export async function expectError(t: { fail: (m: string) => void }, p: Promise<unknown>): Promise<DirectIoError> {
  try {
    await p
  } catch (e) {
    return e as DirectIoError
  }
  t.fail('expected an error')
  throw new Error('unreachable')
}
