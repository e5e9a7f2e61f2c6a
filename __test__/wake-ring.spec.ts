// ODIRECT_WAKE=ring: on Node's event loop the engine polls the io_uring's own descriptor
// (readable while its completion queue holds entries; the ring is made with COOP_TASKRUN) instead
// of an eventfd the ring signals, so a wake-up at QD 1 reads no eventfd and needs no
// io_uring_enter(GETEVENTS). Seen in the process's read(2) count (/proc/self/io syscr): one
// eventfd read per op without it. The other drivers (thread pool, aio) still announce on the
// eventfd, watched beside the ring.
//
// The switch is read once per process at the first engine's creation: set before any open().
process.env.ODIRECT_WAKE = 'ring'
// A lone small op on tmpfs is made inline by default (its pread counts in syscr, and it never
// reaches the ring): turned off, this spec tests the ring's wake-up.
process.env.ODIRECT_INLINE_TMPFS = '0'

import test from 'ava'

import { open } from '../dist/index.js'
import { depthOneInChild, fifoReadLetsTimersFire, patterned, UNIT } from './helpers/qd1.js'
import { scratchDirs } from './helpers/scratch.js'

const scratch = scratchDirs('wake-ring')
const N = 2000

for (const where of ['disk', 'tmpfs'] as const) {
  test.serial(`${where}: ${N} reads one at a time make no eventfd read per op (the ring's own descriptor is polled)`, async (t) => {
    // Counted in a child process of its own (helpers/qd1.ts depthOneInChild), with the switch set.
    const file = patterned(where === 'tmpfs' ? scratch('/dev/shm') : scratch(), 64)
    const { backend, path, ringSetup, rounds } = await depthOneInChild(file, N, [0], { ODIRECT_WAKE: 'ring' })
    if (backend !== 'io_uring') return t.fail(`io_uring is not available here: ${backend}`)
    t.is(path, 'libuv')
    t.true(ringSetup.includes('poll_ring'), ringSetup)
    t.false(ringSetup.includes('defer_taskrun'), ringSetup)
    const [{ wrong, reads }] = rounds
    t.is(wrong, 0)
    t.log(`${reads} read(2) calls for ${N} ops`)
    // The eventfd path reads the eventfd once per wake-up: >= N here. This loop alone makes ~3
    // (reading /proc/self/io).
    t.true(reads < N / 20, `${reads} read(2) calls for ${N} ops`)
  })
}

test.serial('ring and thread-pool ops in flight together all complete (the eventfd is still watched)', async (t) => {
  const file = patterned(scratch(), 64)
  const ring = await open(file, 'r', { backend: 'io_uring' })
  const pool = await open(file, 'r', { backend: 'threadpool' })
  try {
    if (ring.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${ring.backend}`)
    t.is(pool.backend, 'threadpool')
    const one = async (fh: typeof ring, i: number): Promise<boolean> => {
      const b = fh.alloc(UNIT)
      const at = i % 64
      const { bytesRead } = await fh.read(b, { position: at * UNIT })
      return bytesRead === UNIT && b[0] === at % 251 && b[UNIT - 1] === at % 251
    }
    for (let round = 0; round < 20; round++) {
      const ok = await Promise.all(Array.from({ length: 32 }, (_, i) => one(i % 2 === 0 ? ring : pool, round * 32 + i)))
      t.true(ok.every(Boolean), `round ${round}`)
    }
  } finally {
    await ring.close()
    await pool.close()
  }
})

test.serial('a timer fires while a ring read waits on a FIFO nobody writes to yet (the JS thread does not block)', async (t) => {
  await fifoReadLetsTimersFire(t, scratch())
})
