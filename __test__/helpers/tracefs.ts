// tracefs for specs that count io_uring tracepoints (registered-fixed, streams-s13, prealloc,
// wait-spin). traceEvent (a trace instance of the caller's own) is plain CommonJS in
// trace-event.cjs, which the child scripts run by plain node require too.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { TRACING, traceEvent } from './trace-event.cjs'

export { TRACING, traceEvent } from './trace-event.cjs'

/**
 * Why io_uring's tracepoint `event` cannot be traced here (a skip reason), or undefined. A fresh
 * machine may not have tracefs mounted (it is not mounted at boot everywhere): it is mounted.
 */
export function tracefsReason(event: string): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root for tracefs'
  if (!fs.existsSync(path.join(TRACING, 'events'))) {
    try {
      execFileSync('mount', ['-t', 'tracefs', 'nodev', TRACING], { stdio: 'ignore' })
    } catch {
      return `tracefs is not mounted at ${TRACING} and mounting it failed`
    }
  }
  if (!fs.existsSync(path.join(TRACING, 'events', 'io_uring', event))) return `no io_uring tracepoints under ${TRACING}`
  if (!fs.existsSync(path.join(TRACING, 'instances'))) return 'tracefs has no instances directory'
  return undefined
}

/** A child that prints a 'ready' line, waits for 'go' on stdin, and prints a 'done' line (childLines). */
interface GoChild {
  child: { pid?: number; stdin: { write(s: string): unknown } | null }
  line(prefix: string): Promise<string>
}

/**
 * Writes 'go' to `c` (which has printed its 'ready' line) and traces `events` on its threads until
 * it prints its 'done' line; returns that line and the trace text.
 */
export async function traceGo(c: GoChild, events: string | readonly string[]): Promise<{ done: string; trace: string }> {
  let done = ''
  const trace = await traceEvent(events, c.child.pid as number, async () => {
    c.child.stdin?.write('go\n')
    done = await c.line('done')
  })
  return { done, trace }
}

/** (to_submit, min_complete) of each traced syscalls/sys_enter_io_uring_enter. */
export function enterCalls(trace: string): [number, number][] {
  return [...trace.matchAll(/to_submit: (0x[0-9a-f]+|\d+), min_complete: (0x[0-9a-f]+|\d+)/g)].map((m): [number, number] => [Number(m[1]), Number(m[2])])
}

/** Why syscalls/sys_enter_io_uring_enter cannot be traced here (a skip reason), or undefined. */
export function enterTraceReason(): string | undefined {
  const why = tracefsReason('io_uring_submit_req')
  if (why !== undefined) return why
  if (!fs.existsSync(path.join(TRACING, 'events', 'syscalls', 'sys_enter_io_uring_enter'))) return 'no syscall tracepoints (CONFIG_FTRACE_SYSCALLS)'
  return undefined
}
