// Whether this process still holds a file open (/proc/self/fd), and a wait for it to let go:
// a stream's teardown after its error has no event of its own.
import * as fs from 'node:fs'

/** Whether this process holds `file` open, per /proc/self/fd. */
export function holds(file: string): boolean {
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === file) return true
    } catch {
      // closed meanwhile
    }
  }
  return false
}

/** Waits (loop turns, bounded at 10 s) until this process no longer holds `file` open; whether it let go. */
export async function openedNoMore(file: string): Promise<boolean> {
  const until = Date.now() + 10_000
  while (holds(file) && Date.now() < until) await new Promise((resolve) => setImmediate(resolve))
  return !holds(file)
}
