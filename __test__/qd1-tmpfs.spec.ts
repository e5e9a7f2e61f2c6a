// A lone small read/write (nothing else in flight, at most 64 KiB) on a tmpfs/ramfs file is
// submitted by its flush with an in-kernel wait for its completion (io_uring_enter GETEVENTS,
// min_complete 1, as fio waits at depth 1), and its promise settles in the same microtask: no
// eventfd signal, epoll wake-up or io_uring_enter to post the completion. Seen in the engine's
// wait counters and in the process's read(2) count (/proc/self/io syscr: without the wait the
// eventfd is read about every other op). Not for bigger ops, more than two ops in flight, disk files, or with
// ODIRECT_WAIT_TMPFS=0; a chain of waits yields to the event loop (timers fire).
//
// Such ops are made inline by default when their pages are in memory (inline-tmpfs.spec): this
// spec turns that off to see the wait. The switch is read at the first engine's creation.
process.env.ODIRECT_INLINE_TMPFS = '0'
// The disk cases here check that disk ops take no tmpfs wait; the loop-aware disk wait (the
// default in Node, loop-wait.spec) is a wait of its own, off here.
process.env.ODIRECT_RW_WAIT_DISK = '0'

import test from 'ava'

import { open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { depthOneInChild, patterned, readsOneAtATime, readsUntilTimer, UNIT } from './helpers/qd1.js'
import { scratchDirs } from './helpers/scratch.js'

const scratch = scratchDirs('qd1-tmpfs')
const N = 4000

/** [in-kernel waits made, waits that found the completion]. */
const waitStats = (): [number, number] => {
  const [tries, found] = getEngine().native.waitStats
  return [tries, found]
}

test.serial(`tmpfs: ${N} reads one at a time wait in the kernel (one system call per op), none with ODIRECT_WAIT_TMPFS=0`, async (t) => {
  const file = patterned(scratch('/dev/shm'), 64)
  // Counted in child processes of their own (helpers/qd1.ts depthOneInChild), waitMicros 0.
  const on = await depthOneInChild(file, N, [0])
  const off = await depthOneInChild(file, N, [0], { ODIRECT_WAIT_TMPFS: '0' })
  if (on.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${on.backend}`)
  const [w, o] = [on.rounds[0], off.rounds[0]]
  t.is(w.wrong, 0)
  t.is(o.wrong, 0)
  t.is(o.tries, 0, 'ODIRECT_WAIT_TMPFS=0 waited')
  t.log(`${w.found} of ${w.tries} waits found the completion, ${N} ops; read(2) calls: ${w.reads} with the wait, ${o.reads} without`)
  // A chain of waits stops after 1 ms until the loop turns: most ops wait, at most one each (how
  // many fit in 1 ms depends on the machine's load, so the floors are loose: a quiet run has
  // ~99% of ops waiting and ~all waits finding their completion).
  t.true(w.tries >= N / 4 && w.tries <= N, `${w.tries} waits for ${N} ops`)
  t.true(w.found >= w.tries / 4 && w.found <= w.tries, `${w.found} of ${w.tries} waits found the completion`)
  if (on.ringSetup.includes('defer_taskrun')) {
    // Without the wait the eventfd is read about every other op (at least once per wake-up,
    // and a wake-up delivers 8 rounds at most); with it the ring keeps quiet while it waits:
    // an op the wait found costs no read (N / 20: the child's other reads).
    t.true(w.reads <= N - w.found + N / 20, `${w.reads} read(2) calls for ${N} ops, ${w.found} found by the wait`)
    t.true(w.reads < o.reads, `${w.reads} read(2) calls with the wait, ${o.reads} without`)
  }
})

test.serial('tmpfs: writes one at a time wait too and land; reads over 64 KiB, four in flight, and disk files do not wait', async (t) => {
  const tmp = await open(patterned(scratch('/dev/shm'), 64), 'r+', { backend: 'io_uring' })
  const disk = await open(patterned(scratch(), 64), 'r', { backend: 'io_uring' })
  try {
    if (tmp.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${tmp.backend}`)
    await tmp.read(tmp.alloc(UNIT), { position: 0 })
    let [tries0] = waitStats()
    const b = tmp.alloc(UNIT)
    for (let i = 0; i < 50; i++) {
      b.fill(200 + (i % 50))
      const { bytesWritten } = await tmp.write(b, { position: (i % 64) * UNIT })
      t.is(bytesWritten, UNIT)
    }
    t.true(waitStats()[0] - tries0 >= 1, 'no write waited')
    const back = tmp.alloc(UNIT)
    await tmp.read(back, { position: 49 * UNIT })
    t.true(back.every((x) => x === 249))

    const big = tmp.alloc(32 * UNIT)
    ;[tries0] = waitStats()
    for (let i = 0; i < 20; i++) t.is((await tmp.read(big, { position: 0 })).bytesRead, 32 * UNIT)
    t.is(waitStats()[0] - tries0, 0, 'a 128 KiB read waited')

    // Four started in one tick, each with a timeout (set after staging: never completed in its
    // own call, Engine.rw), so all four are in flight at the flush: it does not wait.
    ;[tries0] = waitStats()
    for (let i = 0; i < 20; i++) {
      const rs = await Promise.all([0, 1, 2, 3].map((k) => tmp.read(tmp.alloc(UNIT), { position: k * UNIT, timeout: 10_000 })))
      t.deepEqual(
        rs.map((r) => r.bytesRead),
        [UNIT, UNIT, UNIT, UNIT],
      )
    }
    t.is(waitStats()[0] - tries0, 0, 'four reads in flight waited')

    ;[tries0] = waitStats()
    const { wrong } = await readsOneAtATime(disk, 50)
    t.is(wrong, 0)
    t.is(waitStats()[0] - tries0, 0, 'a disk read waited')
  } finally {
    await tmp.close()
    await disk.close()
  }
})

test.serial('tmpfs: a timer fires while reads run one at a time (a chain of waits yields to the loop)', async (t) => {
  const fh = await open(patterned(scratch('/dev/shm'), 64), 'r', { backend: 'io_uring' })
  try {
    if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
    const [tries0] = waitStats()
    const ops = await readsUntilTimer(fh, 5)
    t.true(ops > 0)
    t.true(waitStats()[0] - tries0 > 0, 'no read waited')
  } finally {
    await fh.close()
  }
})
