// tracefs for specs that count io_uring tracepoints (registered-fixed, streams-s13, prealloc,
// wait-spin). traceEvent (a trace instance of the caller's own) is plain CommonJS in
// trace-event.cjs, which the child scripts run by plain node require too.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { TRACING } from './trace-event.cjs'

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
