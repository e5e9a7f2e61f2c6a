// A lone small read/write on a tmpfs file (nothing else staged or in flight, at most 64 KiB)
// completes inside its own `rw` call and its promise settles there: made inline with
// pread/pwrite when cachestat(2) says no page of its range is swapped out (the default), else,
// with ODIRECT_INLINE_TMPFS=0, submitted with an in-kernel wait in the call (ODIRECT_RW_WAIT=0:
// in its flush, as before). Counted by the engine (callStats: [completed in their call, reads
// made inline, writes made inline, sent to the ring because a page was swapped out]) and by the
// ring's SQ head, never by time. An op started beside another in flight never completes in its
// call (it could overtake it). Swap cases (root): a tmpfs file pushed to swap (helpers/swap.ts
// fastSwap: written from a memory cgroup of its own, then that cgroup emptied) takes the ring
// and reads right; and with
// the swap device on a loop device over a FUSE file whose reads faultfs holds, the in-call wait
// times out and the op is delivered later, as any other.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { faultFs, isSkip, skipReason } from './helpers/fixtures.js'
import { childLines } from './helpers/child-lines.js'
import { depthOneInChild, patterned, sqHeads, UNIT } from './helpers/qd1.js'
import { scratchDirs } from './helpers/scratch.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'
import { fastSwap, fastSwapReason } from './helpers/swap.js'

// Writes are made inline only with ODIRECT_INLINE_TMPFS=all (the default makes reads inline and
// gives writes the in-call wait: a write takes the inode lock another writer may hold). This
// file's in-process cases observe inline writes, so its engine runs with =all; the default is
// observed in a child process below.
process.env.ODIRECT_INLINE_TMPFS = 'all'
// A lone disk read completes in its call too by default in Node (the loop-aware disk wait,
// loop-wait.spec); the in-process cases here start disk reads to have one in flight beside a
// tmpfs op, so their engine leaves disk ops to the loop. The disk case below sets it per child.
process.env.ODIRECT_RW_WAIT_DISK = '0'

const scratch = scratchDirs('qd1-call')
const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.js')
const N = 2000

/** [completed in their call, reads inline, writes inline, not resident (ring)]. */
const callStats = (): number[] => getEngine().native.callStats.slice(0, 4)
/** Inline ops that skipped cachestat(2) because the machine had no swap (callStats[4]). */
const cachestatSkips = (): number => getEngine().native.callStats[4] ?? NaN
/** Whether /proc/swaps lists a swap device (anything past its header line). */
const swapListed = (): boolean => fs.readFileSync('/proc/swaps', 'utf8').split('\n').slice(1).some((l) => l.trim() !== '')
const delta = (a: number[], b: number[]): number[] => b.map((x, i) => x - a[i])
/**
 * Lets the event loop turn with its clock moved on: a chain of ops completed in their calls
 * (inline or by the wait) stops after 1 ms without a loop turn (then an op takes the ring, and
 * the loop its turn); after this the next lone op starts a new chain, whatever the load. The
 * budget is time itself: there is no event to wait on instead.
 */
const turn = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 2))
/**
 * One lone tmpfs read: the engine's first inline op (and the first after a swapon or swapoff)
 * reads /proc/swaps and arms the ring's poll on it, one submission to the ring; cases that count
 * the ring's submissions make it first.
 */
async function armSwapWatch(): Promise<void> {
  const fh = await open(patterned(scratch('/dev/shm'), 1), 'r', { backend: 'io_uring' })
  await fh.read(fh.alloc(UNIT), { position: 0 })
  await fh.close()
  await turn()
}

test.serial(`tmpfs: ${N} reads one at a time complete in their own call: inline by default, by the in-call wait with ODIRECT_INLINE_TMPFS=0, in neither with ODIRECT_RW_WAIT=0 too`, async (t) => {
  const file = patterned(scratch('/dev/shm'), 64)
  const inline = await depthOneInChild(file, N, [0], { ODIRECT_INLINE_TMPFS: undefined })
  const wait = await depthOneInChild(file, N, [0], { ODIRECT_INLINE_TMPFS: '0' })
  const off = await depthOneInChild(file, N, [0], { ODIRECT_INLINE_TMPFS: '0', ODIRECT_RW_WAIT: '0' })
  if (inline.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${inline.backend}`)
  const [i, w, o] = [inline.rounds[0], wait.rounds[0], off.rounds[0]]
  t.log(`completed in their call: inline ${i.inCall} (${i.inline} inline), wait ${w.inCall} (${w.tries} waits), off ${o.inCall} (${o.tries} waits in the flush)`)
  for (const r of [i, w, o]) t.is(r.wrong, 0)
  // Past the chain budget (1 ms without a loop turn) an op takes the loop's path: how many fit
  // depends on the load, so the floors are loose (a quiet run has ~99% in their call).
  t.true(i.inCall >= N / 4 && i.inCall <= N, `${i.inCall} of ${N} completed in their call`)
  t.is(i.inline, i.inCall, 'each one completed in its call was made inline')
  t.is(i.tries, 0, 'an inline op waited in the kernel')
  t.true(w.inCall >= N / 4 && w.inCall <= w.tries, `${w.inCall} of ${N} completed in their call, ${w.tries} waits`)
  t.is(w.inline, 0)
  t.is(o.inCall, 0, 'ODIRECT_RW_WAIT=0 completed ops in their call')
  t.true(o.tries >= N / 4, `${o.tries} waits in the flush with ODIRECT_RW_WAIT=0`)
})

test.serial('disk: lone reads complete in their call by default in Node (the loop-aware wait) and with ODIRECT_RW_WAIT_DISK=1, by the in-kernel wait, never inline; never with =0', async (t) => {
  const file = patterned(scratch(), 64)
  const dflt = await depthOneInChild(file, 500, [0], { ODIRECT_RW_WAIT_DISK: undefined })
  const always = await depthOneInChild(file, 500, [0], { ODIRECT_RW_WAIT_DISK: '1' })
  const off = await depthOneInChild(file, 500, [0], { ODIRECT_RW_WAIT_DISK: '0' })
  if (dflt.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${dflt.backend}`)
  const [d, w, o] = [dflt.rounds[0], always.rounds[0], off.rounds[0]]
  t.log(`default: ${d.inCall} of 500 completed in their call, ${d.tries} waits; =1: ${w.inCall}, ${w.tries} waits; =0: ${o.inCall}, ${o.tries} waits`)
  for (const r of [d, w, o]) t.is(r.wrong, 0)
  // A wait that runs out (a slow moment of the device) or that an event of the loop ends leaves
  // its op to the loop: not all of them.
  for (const r of [d, w]) {
    t.true(r.inCall > 0 && r.inCall <= r.tries, `${r.inCall} completed in their call, ${r.tries} waits`)
    t.is(r.inline, 0)
  }
  t.deepEqual([o.inCall, o.tries], [0, 0])
})

test.serial('tmpfs: inline reads skip cachestat(2) while the machine has no swap (none listed in /proc/swaps, none turned on since), and never with ODIRECT_CACHESTAT_SKIP=0', async (t) => {
  const file = patterned(scratch('/dev/shm'), 64)
  const on = await depthOneInChild(file, 300, [0], { ODIRECT_INLINE_TMPFS: undefined })
  const off = await depthOneInChild(file, 300, [0], { ODIRECT_INLINE_TMPFS: undefined, ODIRECT_CACHESTAT_SKIP: '0' })
  if (on.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${on.backend}`)
  const [a, b] = [on.rounds[0], off.rounds[0]]
  const swap = swapListed()
  t.log(`swap listed: ${swap}; default: ${a.inline} inline, ${a.skips} skipped cachestat; =0: ${b.inline} inline, ${b.skips} skipped`)
  t.is(a.wrong, 0)
  t.is(b.wrong, 0)
  t.true(a.inline > 0 && b.inline > 0)
  t.is(b.skips, 0)
  // The first inline op of an engine reads /proc/swaps and arms the ring's poll on it, and
  // asks cachestat; so do ops that find a completion waiting in the ring (none here).
  if (swap) t.is(a.skips, 0, 'an inline op skipped cachestat with swap on')
  else t.true(a.skips > 0 && a.skips <= a.inline, `${a.skips} of ${a.inline} skipped`)
})

test.serial('tmpfs: a lone write completes in its call and a read started right after it sees its bytes; promises settle in the order the ops were started', async (t) => {
  await armSwapWatch()
  const fh = await open(patterned(scratch('/dev/shm'), 16), 'r+', { backend: 'io_uring' })
  try {
    if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
    const s0 = callStats()
    const heads0 = sqHeads()
    const w = fh.alloc(UNIT).fill(77)
    const r = fh.alloc(UNIT)
    const order: string[] = []
    const pw = fh.write(w, { position: 3 * UNIT }).then((x) => (order.push('write'), x))
    // Started while nothing is in flight (the write is done): it completes in its call too.
    const pr = fh.read(r, { position: 3 * UNIT }).then((x) => (order.push('read'), x))
    const [a, b] = await Promise.all([pw, pr])
    t.is(a.bytesWritten, UNIT)
    t.is(b.bytesRead, UNIT)
    t.true(r.every((x) => x === 77), 'the read saw the write')
    t.deepEqual(order, ['write', 'read'])
    // The write starts a chain; the read continues it unless more than the chain budget (1 ms)
    // passed between them (a busy machine): then it goes through the ring.
    const [inCall, reads, writes, swapped] = delta(s0, callStats())
    t.deepEqual([writes, swapped, inCall], [1, 0, reads + writes])
    t.is(sqHeads() - heads0, 1 - reads, 'the read went inline and through the ring, or neither')
    t.is(fh.stats().writes, 1)
    t.is(fh.stats().reads, 1)
    // A plain Buffer (bounced): its data is copied back in the call.
    await turn()
    const s1 = callStats()
    const plain = Buffer.alloc(UNIT)
    t.is((await fh.read(plain, 0, UNIT, 3 * UNIT)).bytesRead, UNIT)
    t.true(plain.every((x) => x === 77))
    t.deepEqual(delta(s1, callStats()), [1, 1, 0, 0])
    t.is(fh.stats().bounced, 1)
  } finally {
    await fh.close()
  }
})

test.serial('tmpfs: reads and writes at the handle position (null) complete in their call and move it as before, a short read at the end of the file too', async (t) => {
  const fh = await open(patterned(scratch('/dev/shm'), 2), 'r+', { backend: 'io_uring' })
  try {
    const s0 = callStats()
    const b = fh.alloc(UNIT)
    t.is((await fh.read(b, { position: null })).bytesRead, UNIT)
    t.true(b.every((x) => x === 0))
    t.is((await fh.read(b, { position: null })).bytesRead, UNIT)
    t.true(b.every((x) => x === 1))
    // At the end of the file: 0 bytes, completed in its call, the position stays at 2 blocks.
    await turn()
    const s1 = callStats()
    t.is((await fh.read(b, { position: null })).bytesRead, 0)
    t.is(delta(s1, callStats())[0], 1, 'the read at the end of the file did not complete in its call')
    t.is((await fh.write(fh.alloc(UNIT).fill(42), 0, UNIT, null)).bytesWritten, UNIT)
    t.is((await fh.stat()).size, 3 * UNIT, 'the write after the short read landed at the end of the file')
    t.true(delta(s0, callStats())[0] >= 1)
  } finally {
    await fh.close()
  }
})

test.serial('tmpfs: an op started while a disk read is in flight does not complete in its call (it would overtake it); both complete', async (t) => {
  const tmp = await open(patterned(scratch('/dev/shm'), 16), 'r', { backend: 'io_uring' })
  const disk = await open(patterned(scratch(), 16), 'r', { backend: 'io_uring' })
  try {
    if (tmp.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${tmp.backend}`)
    for (let i = 0; i < 20; i++) {
      const s0 = callStats()
      const order: string[] = []
      const d = disk.read(disk.alloc(UNIT), { position: 5 * UNIT }).then((x) => (order.push('disk'), x))
      const m = tmp.read(tmp.alloc(UNIT), { position: 6 * UNIT }).then((x) => (order.push('tmpfs'), x))
      const [x, y] = await Promise.all([d, m])
      t.is(x.bytesRead, UNIT)
      t.is(y.bytesRead, UNIT)
      t.true(x.buffer.every((v) => v === 5) && y.buffer.every((v) => v === 6))
      t.deepEqual(delta(s0, callStats()), [0, 0, 0, 0], `round ${i}: ${order.join(', ')}`)
    }
    // A timeout is set after staging: such an op never completes in its call.
    const s0 = callStats()
    t.is((await tmp.read(tmp.alloc(UNIT), { position: 0, timeout: 10_000 })).bytesRead, UNIT)
    t.deepEqual(delta(s0, callStats()), [0, 0, 0, 0])
  } finally {
    await tmp.close()
    await disk.close()
  }
})

// ---------------------------------------------------------------------------------------
// Swap

test.serial('default ODIRECT_INLINE_TMPFS: a lone tmpfs read is made inline, a lone write is not (it completes by the in-call wait through the ring)', async (t) => {
  const file = patterned(scratch('/dev/shm'), 4)
  const child = `
    const { open } = require(${JSON.stringify(DIST)})
    const { getEngine } = require(${JSON.stringify(path.join(path.dirname(DIST), 'src', 'engine.js'))})
    ;(async () => {
      const fh = await open(process.argv[1], 'r+', { backend: 'io_uring' })
      const b = fh.alloc(4096)
      await fh.read(b, { position: 0 })
      // turn() above: the engine's 1 ms chain budget is time itself, nothing to wait on instead.
      await new Promise((r) => setTimeout(r, 2))
      const s0 = getEngine().native.callStats
      await fh.write(b.fill(7), { position: 4096 })
      const s1 = getEngine().native.callStats
      await new Promise((r) => setTimeout(r, 2))
      const r = await fh.read(b.fill(0), { position: 4096 })
      const s2 = getEngine().native.callStats
      process.stdout.write(JSON.stringify({ backend: fh.backend, s0, s1, s2, read: r.bytesRead, sevens: b.every((x) => x === 7) }))
      await fh.close()
    })()`
  const env = { ...process.env }
  delete env.ODIRECT_INLINE_TMPFS
  const out = JSON.parse(execFileSync(process.execPath, ['-e', child, file], { env, encoding: 'utf8' })) as { backend: string; s0: number[]; s1: number[]; s2: number[]; read: number; sevens: boolean }
  if (out.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${out.backend}`)
  const w = delta(out.s0, out.s1)
  const r = delta(out.s1, out.s2)
  t.log(`write: ${JSON.stringify(w)}, read: ${JSON.stringify(r)} ([in call, reads inline, writes inline, not resident])`)
  t.is(w[2], 0, 'the write was not made inline')
  t.is(w[1], 0)
  t.is(r[1], 1, 'the read was made inline')
  t.is(out.read, 4096)
  t.true(out.sevens, 'the read saw the write')
})

testIf(fastSwapReason(), 'machine-wide (a swap device): tmpfs pages pushed to swap: a lone op on them takes the ring (cachestat), reads and writes right; resident ones go inline', async (t) => {
  // Inline reads before the swap is on: the engine reads /proc/swaps and arms the ring's poll
  // on it; with no swap listed, its inline ops skip cachestat until a swapon fires that poll.
  const pre = await open(patterned(scratch('/dev/shm'), 4), 'r', { backend: 'io_uring' })
  for (let i = 0; i < 3; i++) await pre.read(pre.alloc(UNIT), { position: UNIT })
  await pre.close()
  const sw = fastSwap()
  // fastSwapReason found every tool and root: a refusal here is a failure, not a skip.
  if (isSkip(sw)) return t.fail(sw.skip)
  try {
    const file = path.join(sw.dir, 'data')
    sw.write(file, fs.readFileSync(patterned(scratch(), 16)))
    sw.swapOut(file)
    const fh = await open(file, 'r+', { backend: 'io_uring' })
    try {
      if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
      const b = fh.alloc(UNIT)
      // The swapon fired the poll (reaped by the loop since): this read re-arms it.
      await armSwapWatch()
      // This file's engine made inline reads before the swap was turned on (the tests above):
      // from the swapon on, every inline op asks cachestat(2) again (the ring's poll on
      // /proc/swaps fired), none skips it.
      const skips0 = cachestatSkips()
      let s0 = callStats()
      let heads0 = sqHeads()
      t.is((await fh.read(b, { position: 5 * UNIT })).bytesRead, UNIT)
      t.true(b.every((x) => x === 5), 'the swapped-out block read back right')
      t.deepEqual(delta(s0, callStats()), [0, 0, 0, 1], 'a swapped-out block was not made inline')
      t.is(sqHeads() - heads0, 1, 'it went through the ring')
      // Read back in: resident now, the next read of it goes inline.
      await turn()
      s0 = callStats()
      t.is((await fh.read(b.fill(0), { position: 5 * UNIT })).bytesRead, UNIT)
      t.true(b.every((x) => x === 5))
      t.deepEqual(delta(s0, callStats()), [1, 1, 0, 0], 'a resident block was not made inline')
      t.is(cachestatSkips() - skips0, 0, 'an inline op skipped cachestat while swap was on')
      // A write over a swapped-out block: the ring too, and it lands.
      await turn()
      s0 = callStats()
      heads0 = sqHeads()
      t.is((await fh.write(fh.alloc(UNIT).fill(99), { position: 9 * UNIT })).bytesWritten, UNIT)
      t.deepEqual(delta(s0, callStats()), [0, 0, 0, 1])
      t.is(sqHeads() - heads0, 1)
      const back = Buffer.alloc(UNIT)
      const fd = fs.openSync(file, 'r')
      fs.readSync(fd, back, 0, UNIT, 9 * UNIT)
      fs.closeSync(fd)
      t.true(back.every((x) => x === 99), 'the write landed')
      // Its neighbours never left swap: read right through the ring.
      await turn()
      s0 = callStats()
      t.is((await fh.read(b, { position: 12 * UNIT })).bytesRead, UNIT)
      t.true(b.every((x) => x === 12))
      t.is(delta(s0, callStats())[3], 1)
    } finally {
      await fh.close()
    }
  } finally {
    sw.cleanup()
  }
}, true)

// The fallback when the in-call wait runs out: a lone write to a tmpfs file whose inode lock
// another process holds. That process (python3) writes into the same file from a MAP_SHARED
// mapping of a faultfs file whose reads are held: the kernel faults the source page in with the
// tmpfs inode locked, so the lock stays taken until faultfs answers. The lone write (in a child
// with ODIRECT_INLINE_TMPFS=0: waited for in its call) goes to an io-wq worker, which waits for
// the lock; the wait in the call times out, the op stays in flight and is delivered once the
// lock is free, as any other.
const HOLDER = `
import mmap, os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(src, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
dst = os.open(sys.argv[2], os.O_WRONLY)
print(os.pwrite(dst, memoryview(m)[:4096], 0), flush=True)
`

// The child: opens the tmpfs file, starts one lone write of block 5, prints the engine's counters
// at once (the call has returned), then the write's outcome.
const CHILD = `
  const { open } = require(${JSON.stringify(DIST)})
  const { getEngine } = require(${JSON.stringify(DIST.replace(/index\.js$/, 'src/engine.js'))})
  ;(async () => {
    const fh = await open(process.argv[1], 'r+', { backend: 'io_uring' })
    const p = fh.write(fh.alloc(4096).fill(55), { position: 5 * 4096 })
    const [inCall] = getEngine().native.callStats
    const [tries, found] = getEngine().native.waitStats
    process.stdout.write(JSON.stringify({ backend: fh.backend, inCall, tries, found }) + '\\n')
    const { bytesWritten } = await p
    process.stdout.write(JSON.stringify({ bytesWritten }) + '\\n')
    await fh.close()
  })()`

testIf(skipReason(['root', 'python3']) ?? FAULTFS_REASON, 'in-call wait of a lone tmpfs write whose inode lock another process holds: the wait times out, the write is delivered once the lock is free', async (t) => {
  const f = faultFs({ size: 1 << 20, hold: 'held', pageCache: true })
  if (isSkip(f)) return t.fail(f.skip)
  try {
    const file = patterned(scratch('/dev/shm'), 16)
    const holder = childLines('python3', ['-c', HOLDER, f.file, file], process.env)
    // The holder's source page is being read (held): the tmpfs inode is locked meanwhile.
    await f.waitForHeld(1)
    const child = childLines(process.execPath, ['-e', CHILD, file], { ...process.env, ODIRECT_INLINE_TMPFS: '0' })
    const [started] = await child.next(1)
    t.log(`after the call: ${started}`)
    const s = JSON.parse(started) as { backend: string; inCall: number; tries: number; found: number }
    if (s.backend !== 'io_uring') {
      f.release()
      await child.exited
      return t.fail(`io_uring is not available here: ${s.backend}`)
    }
    t.deepEqual([s.inCall, s.tries, s.found], [0, 1, 0], 'the write completed in its call, or did not wait')
    t.is(f.stats().held, 1, 'the holder was let go early')
    f.release()
    t.deepEqual((await holder.next(1))[0], String(UNIT))
    t.deepEqual(JSON.parse((await child.next(2))[1]), { bytesWritten: UNIT })
    t.is(await child.exited, 0, child.err())
    t.is(await holder.exited, 0, holder.err())
    const back = fs.readFileSync(file)
    t.true(back.subarray(5 * UNIT, 6 * UNIT).every((x) => x === 55), 'the write landed')
  } finally {
    f.release()
    f.cleanup()
  }
})
