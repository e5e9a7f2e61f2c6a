// The depth-1 path. A lone read or write (nothing else staged or in flight: every op of a loop
// that awaits each op) goes to the kernel in its own call, not at the end of the microtasks:
// seen in the ring's SQ head (/proc/self/fdinfo of the io_uring descriptor) before read()
// returns, and in the engine's count of such submissions. An op started while another waits is
// staged for the tick's end as before. And a wake-up whose round delivered a few small
// completions goes on reaping when the next op's completion came in meanwhile (the engine's
// count of such rounds), instead of announcing it for the loop's next turn; timers still fire.
// An op with an AbortSignal is staged as before: aborted in the same tick, it never runs.
// The tmpfs rows test the loop's path: a lone small op on tmpfs otherwise is made inline
// (inline-tmpfs.spec.ts) or waits in the kernel (qd1-tmpfs.spec.ts). Read at the engine's
// creation, before any open().
process.env.ODIRECT_WAIT_TMPFS = '0'
process.env.ODIRECT_INLINE_TMPFS = '0'
// Likewise the disk rows: a lone disk op otherwise waits in its call where the loop would sleep
// (the loop-aware disk wait, loop-wait.spec.ts).
process.env.ODIRECT_RW_WAIT_DISK = '0'

import * as fs from 'node:fs'

import test from 'ava'

import { open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { patterned, readsUntilTimer, sqHeads, UNIT } from './helpers/qd1.js'
import { scratchDirs } from './helpers/scratch.js'

const scratch = scratchDirs('alone')


const aloneSubmits = (): number => getEngine().native.aloneSubmits
const smallRounds = (): number => getEngine().native.smallRounds

for (const where of ['disk', 'tmpfs'] as const) {
  test.serial(`${where}: a lone read reaches the kernel before read() returns; one started while it waits goes at the tick's end`, async (t) => {
    const file = patterned(where === 'tmpfs' ? scratch('/dev/shm') : scratch(), 16)
    const fh = await open(file, 'r', { backend: 'io_uring' })
    try {
      if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
      const [a, b] = [fh.alloc(UNIT), fh.alloc(UNIT)]
      // The ring exists (made by the first op) and is idle.
      await fh.read(a, { position: 0 })
      const heads = sqHeads()
      const alone = aloneSubmits()
      const first = fh.read(a, { position: 3 * UNIT })
      t.is(sqHeads() - heads, 1, 'the lone read is in the kernel when read() returns')
      const second = fh.read(b, { position: 5 * UNIT })
      t.is(sqHeads() - heads, 1, 'the read started while another is in flight waits for the flush')
      t.is(aloneSubmits() - alone, 1)
      const [r1, r2] = await Promise.all([first, second])
      t.is(sqHeads() - heads, 2)
      t.deepEqual([r1.bytesRead, r2.bytesRead], [UNIT, UNIT])
      t.true(a.every((x) => x === 3) && b.every((x) => x === 5))
    } finally {
      await fh.close()
    }
  })
}

test.serial('a lone write with a signal waits for the tick\'s end: aborted in the same tick, it never reaches the file', async (t) => {
  const file = patterned(scratch(), 4)
  const fh = await open(file, 'r+', { backend: 'io_uring' })
  try {
    if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
    await fh.read(fh.alloc(UNIT), { position: 0 })
    const [heads, alone] = [sqHeads(), aloneSubmits()]
    const ac = new AbortController()
    const w = fh.write(fh.alloc(UNIT).fill(0xee), { position: UNIT, signal: ac.signal })
    t.is(sqHeads() - heads, 0, 'staged, not submitted')
    t.is(aloneSubmits() - alone, 0)
    ac.abort()
    const e = await t.throwsAsync(w)
    t.is((e as { code?: string }).code, 'ABORT_ERR')
  } finally {
    await fh.close()
  }
  t.true(fs.readFileSync(file).subarray(UNIT, 2 * UNIT).every((x) => x === 1), 'block 1 as it was')
})

test.serial('a lone write with { dsync: true } goes in its call with its flag, and lands', async (t) => {
  const file = patterned(scratch(), 4)
  const fh = await open(file, 'r+')
  try {
    const buf = fh.alloc(UNIT).fill(0xa5)
    const alone = aloneSubmits()
    const w = fh.write(buf, { position: 2 * UNIT, dsync: true })
    t.is(aloneSubmits() - alone, 1)
    t.is((await w).bytesWritten, UNIT)
    const back = Buffer.alloc(UNIT)
    const fd = fs.openSync(file, 'r')
    try {
      fs.readSync(fd, back, 0, UNIT, 2 * UNIT)
    } finally {
      fs.closeSync(fd)
    }
    t.true(back.every((x) => x === 0xa5))
  } finally {
    await fh.close()
  }
})

test.serial('tmpfs: reads one at a time whose next completion came in while a round was delivered are reaped in the same wake-up', async (t) => {
  const fh = await open(patterned(scratch('/dev/shm'), 64), 'r', { backend: 'io_uring' })
  try {
    if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
    const bufs = [fh.alloc(UNIT), fh.alloc(UNIT)]
    await fh.read(bufs[0], { position: 0 })
    const n = 200
    const rounds = smallRounds()
    let wrong = 0
    let next = fh.read(bufs[1].fill(255), { position: 1 * UNIT })
    for (let i = 1; i <= n; i++) {
      const { bytesRead, buffer } = await next
      if (bytesRead !== UNIT || buffer[0] !== i % 64 || buffer[UNIT - 1] !== i % 64) wrong++
      if (i === n) break
      // Inside the delivery of read i: start read i + 1 (a lone op, in the kernel at once) and
      // stay until its data has landed, so its completion is there before this round ends.
      const at = i + 1
      const b = bufs[at % 2].fill(255)
      const alone = aloneSubmits()
      next = fh.read(b, { position: (at % 64) * UNIT })
      const until = Date.now() + 5000
      if (aloneSubmits() > alone) while (b[UNIT - 1] !== at % 64 && Date.now() < until);
    }
    t.is(wrong, 0)
    const went = smallRounds() - rounds
    t.true(went >= n / 2, `${went} of ${n} completions were reaped in the wake-up that delivered the one before`)
  } finally {
    await fh.close()
  }
})

test.serial('tmpfs: a timer fires while reads run one at a time (a wake-up still ends after its last round)', async (t) => {
  const fh = await open(patterned(scratch('/dev/shm'), 64), 'r', { backend: 'io_uring' })
  try {
    t.true((await readsUntilTimer(fh, 1)) > 0)
  } finally {
    await fh.close()
  }
})
