// A loop device over a faultfs file whose reads faultfs can hold: a lone O_DIRECT read of the
// device then stays in flight until the test releases it (loop-wait, adversary-s13b).
import * as fs from 'node:fs'

import test from 'ava'

import type { childLines } from './child-lines.js'
import { type FaultFs, faultFs, isSkip, sh } from './fixtures.js'

export interface HeldDevice {
  /** The faultfs server (hold / release / waitForHeld). */
  fx(): FaultFs
  /** The loop device's path (/dev/loopN). */
  device(): string
  /**
   * Holds the server's reads, tells the child `go`, and resolves (with that line) once the child
   * printed `started` (a line starting so) and its read is held at the server.
   */
  startHeld(c: ReturnType<typeof childLines>, started?: string): Promise<string>
}

/**
 * Sets the fixture up before the spec's tests (a 1 MiB file of 0x5a bytes, 16 MiB faultfs) and
 * tears it down after them, unless `reason` says it cannot run here.
 */
export function heldDevice(reason: string | undefined): HeldDevice {
  let fx: FaultFs | undefined
  let device = ''
  test.before(() => {
    if (reason) return
    const f = faultFs({ size: 16 << 20, hold: true, threads: 4 })
    if (isSkip(f)) throw new Error(f.skip)
    fx = f
    fs.writeFileSync(fx.file, Buffer.alloc(1 << 20, 0x5a))
    device = sh('losetup', ['--find', '--show', fx.file]).trim()
  })
  test.after.always(() => {
    fx?.release()
    if (device) sh('losetup', ['-d', device])
    fx?.cleanup()
  })
  const startHeld = async (c: ReturnType<typeof childLines>, started = 'started'): Promise<string> => {
    const f = fx as FaultFs
    f.hold()
    c.child.stdin?.write('go\n')
    const line = await c.line(started)
    await f.waitForHeld(1)
    return line
  }
  return { fx: () => fx as FaultFs, device: () => device, startHeld }
}
