// Shared by the depth-1 wake-up specs (wake-ring, wait-hybrid): a patterned file, the process's
// read(2) count, and a FIFO read that must let timers fire while it is in flight.
import { execFile, execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import { promisify } from 'node:util'

import type { ExecutionContext } from 'ava'

import { open } from '../../dist/index.js'

export const UNIT = 4096

/** read(2)-family calls made by this process so far (every thread). */
export const readCalls = (): number => Number(/syscr:\s*(\d+)/.exec(fs.readFileSync('/proc/self/io', 'utf8'))?.[1] ?? NaN)

/** A file of `units` blocks, block i filled with the byte i % 251. */
export function patterned(dir: string, units: number): string {
  const file = `${dir}/data`
  const b = Buffer.alloc(units * UNIT)
  for (let i = 0; i < units; i++) b.fill(i % 251, i * UNIT, (i + 1) * UNIT)
  fs.writeFileSync(file, b)
  return file
}

/** `n` reads of one block at a time on `fh` over a `patterned` file of 64 blocks: the reads whose
 * data was wrong, and the read(2) calls the process made meanwhile. */
export async function readsOneAtATime(fh: Awaited<ReturnType<typeof open>>, n: number): Promise<{ wrong: number; reads: number }> {
  const buf = fh.alloc(UNIT)
  const before = readCalls()
  let wrong = 0
  for (let i = 0; i < n; i++) {
    const at = (i * 7) % 64
    const { bytesRead } = await fh.read(buf, { position: at * UNIT })
    if (bytesRead !== UNIT || buf[0] !== at % 251 || buf[UNIT - 1] !== at % 251) wrong++
  }
  return { wrong, reads: readCalls() - before }
}

/** One round of `depthOneInChild`. */
export interface DepthOneRound {
  waitMicros: number
  /** Reads whose byte count or data was wrong. */
  wrong: number
  /** read(2)-family calls the child made during the round. */
  reads: number
  /** In-kernel waits made / that found the completion (configureEngine({ waitMicros })). */
  tries: number
  found: number
  /** Reads completed inside their own rw call (inline or by the in-call wait), and those made inline. */
  inCall: number
  inline: number
  /** Inline ops that skipped cachestat(2) (no swap on the machine: callStats[4]). */
  skips: number
}

/**
 * `n` reads one at a time over a `patterned` file, in a child process of its own (an ava
 * worker reads its IPC channel now and then: hundreds of read(2) calls under load), once per
 * `waitMicros` value; `env` adds to the child's environment (e.g. ODIRECT_WAKE; undefined removes a variable).
 */
export async function depthOneInChild(
  file: string,
  n: number,
  waits: number[],
  env: Record<string, string | undefined> = {},
): Promise<{ backend: string; path: string; ringSetup: string; rounds: DepthOneRound[] }> {
  const child = new URL('./qd1-child.ts', import.meta.url).pathname
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', '@oxc-node/core/register', child, file, String(n), ...waits.map(String)],
    { env: Object.fromEntries(Object.entries({ ...process.env, ...env }).filter(([, v]) => v !== undefined)), encoding: 'utf8' },
  )
  return JSON.parse(stdout)
}

/**
 * Starts an io_uring read on a FIFO in `dir` nobody writes to yet, waits for 5 ticks of a 2 ms
 * interval (the JS thread must not block on the read), then writes 8 bytes and checks the read
 * returns them. `started` runs before the read is made, `ticked` after the ticks, before the
 * write (for the caller's own checks).
 */
export async function fifoReadLetsTimersFire(t: ExecutionContext, dir: string, started: () => void = () => {}, ticked: () => void = () => {}): Promise<void> {
  const fifo = `${dir}/fifo`
  execFileSync('mkfifo', [fifo])
  // Our own read-write descriptor keeps the FIFO open so that neither open() nor read() waits for a writer at open time.
  const keep = fs.openSync(fifo, 'r+')
  const fh = await open(fifo, 'r', { backend: 'io_uring', direct: 'off' })
  try {
    started()
    const read = fh.read(Buffer.alloc(8), 0, 8, null)
    const ticks = await new Promise<number>((resolve) => {
      let n = 0
      const iv = setInterval(() => {
        if (++n === 5) {
          clearInterval(iv)
          resolve(n)
        }
      }, 2)
    })
    t.is(ticks, 5)
    ticked()
    fs.writeSync(keep, 'abcdefgh')
    const { bytesRead, buffer } = await read
    t.is(bytesRead, 8)
    t.is(buffer.toString(), 'abcdefgh')
  } finally {
    await fh.close()
    fs.closeSync(keep)
  }
}

/** The SQ heads of this process's io_uring instances, summed (only the engine's ring moves in a spec; alone, inline-tmpfs and submit specs). */
export function sqHeads(): number {
  let sum = 0
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let link = ''
    try {
      link = fs.readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      continue
    }
    if (!link.includes('io_uring')) continue
    const m = /SqHead:\s*(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))
    if (m !== null) sum += Number(m[1])
  }
  return sum
}

/** Reads one block at a time on `fh` (a `patterned` file of 64 blocks) until a `ms` timer
 * fires: the timer must fire between them (the reads never starve the loop). Returns the reads made. */
export async function readsUntilTimer(fh: Awaited<ReturnType<typeof open>>, ms: number): Promise<number> {
  const buf = fh.alloc(UNIT)
  let fired = false
  setTimeout(() => (fired = true), ms)
  let ops = 0
  while (!fired) {
    await fh.read(buf, { position: (ops % 64) * UNIT })
    ops++
  }
  return ops
}
