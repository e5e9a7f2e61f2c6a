// Write streams' writes in the kernel, for the writeBehind tests of streams.spec and streams-s11.spec.
import { randomBytes } from 'node:crypto'
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
