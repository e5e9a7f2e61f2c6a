// Write streams' writes in the kernel, for the writeBehind tests of streams.spec and streams-s11.spec.
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { Writable } from 'node:stream'

import type { FileHandle } from '../../dist/index.js'
import { getEngine } from '../../dist/src/engine.js'

/** The handle's ops in flight less the writes its stream's chain holds back in the engine (not yet in the kernel). */
export function inKernel(fh: FileHandle): number {
  return fh.stats().inflight - getEngine().native.chainStats[2]
}

/**
 * Offers `count` blocks of `size` random bytes to `ws` at once, then lets 200 ticks run: no
 * completion reaches JS before the event loop's poll phase, so after them every block the stream
 * started is in the kernel (or staged for it). `early`: the writes then in the kernel and the blocks
 * the stream had accepted (called back); `accepted()`: the count later; `block`: the bytes written.
 */
export async function offerBlocks(
  fh: FileHandle,
  ws: Writable,
  count: number,
  size: number,
): Promise<{ early: { inKernel: number; accepted: number }; accepted: () => number; block: Buffer }> {
  let accepted = 0
  const block = randomBytes(size)
  for (let i = 0; i < count; i++) ws.write(block, () => accepted++)
  for (let i = 0; i < 200; i++) await new Promise((r) => process.nextTick(r))
  return { early: { inKernel: inKernel(fh), accepted }, accepted: () => accepted, block }
}

/**
 * Makes the engine's write chain refuse every block (its `chainAdd` answers false: the write stays an
 * ordinary op, already on its way to the kernel), the refusal a runtime that bounces the block (or a
 * write submitted alone) meets, until `restore()` or the test's end. `refused()`: how many so far.
 */
export function refuseChain(t: { teardown(fn: () => void): void }): { refused: () => number; restore: () => void } {
  const proto = Object.getPrototypeOf(getEngine().native) as { chainAdd: (...a: unknown[]) => boolean }
  const chainAdd = Object.getOwnPropertyDescriptor(proto, 'chainAdd') as PropertyDescriptor
  let refused = 0
  Object.defineProperty(proto, 'chainAdd', {
    configurable: true,
    value: () => {
      refused++
      return false
    },
  })
  const restore = (): void => {
    Object.defineProperty(proto, 'chainAdd', chainAdd)
  }
  t.teardown(restore)
  return { refused: () => refused, restore }
}

/** Ends `ws` and waits for 'finish', sampling the handle's writes in the kernel meanwhile; returns the most seen (at least `from`). */
export async function endSamplingKernel(fh: FileHandle, ws: Writable, from: number): Promise<number> {
  let most = from
  const timer = setInterval(() => (most = Math.max(most, inKernel(fh))), 0)
  ws.end()
  await once(ws, 'finish')
  clearInterval(timer)
  return most
}

/** Writes `chunks` through a web stream's writer in turn, then closes it: undefined, or what rejected (the stream's error). */
export async function writeAll(writer: { write(chunk: Uint8Array): Promise<void>; close(): Promise<void> }, chunks: readonly Uint8Array[]): Promise<unknown> {
  try {
    for (const c of chunks) await writer.write(c)
    await writer.close()
    return undefined
  } catch (e) {
    return e
  }
}
