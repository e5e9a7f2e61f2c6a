// Adversary pass over the thirteenth session's new Node default: a lone disk read/write
// completes inside its own call by an in-kernel wait made only while the event loop would sleep,
// ended by a ring poll on libuv's epoll descriptor (kept armed between waits); and inline tmpfs
// reads that skip cachestat(2) while /proc/swaps lists no swap. What an application's loop may
// hold next to a depth-1 loop of reads: worker_threads with engines of their own (and a worker
// terminated while its thread sleeps in such a wait, or with its watch armed), signals (SIGUSR1,
// SIGCHLD) during a held read, process.exit() in the callback of an op that completed in its
// call, a busy socket, setImmediate / setInterval(0) / queueMicrotask chains, fh.close() right
// after a wait ended by a loop event with the op held, ops with a signal or a timeout, swapon
// and swapoff under inline tmpfs reads, and the process ending after its last op (Node 20, 22).
// Each case runs in a child (__test__/adversary-s13b/child.cjs; an ava worker's IPC channel is an
// event source of its loop); held reads are on a loop device over faultfs's file, whose reads
// faultfs holds, with ODIRECT_RW_WAIT_DISK_MS=120000 so that only the loop or a timer can end a
// wait. Counted by the engine's waitStats ([waits, woke with something to reap, skipped: the loop
// had work, ended by a loop event, bounded by a timer, waited again after an own wake-up]) and
// callStats ([done in their call, inline reads, inline writes, sent to the ring: not resident,
// cachestat skipped: no swap]), lines and exit codes; never by time.
// Found no wrong result and no hang. Noted: a signal ends a wait by EINTR as well as by the
// watch; a worker terminated mid-wait exits at once but its held disk read then waits out the
// 2 s exit wait and is kept with its DEFER_TASKRUN ring for the life of the process (the
// reaper's documented limit; coop rings are freed); after a swapoff the cachestat skip resumes
// only once the /proc/swaps poll's completion is reaped (some inline reads ask cachestat first).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { childLines } from './helpers/child-lines.js'
import { until } from './helpers/events.js'
import { isSkip, sh, skipReason } from './helpers/fixtures.js'
import { runtimePath } from './helpers/runtimes.js'
import { heldDevice } from './helpers/held-device.js'
import { scratchDirs } from './helpers/scratch.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.js'
import { fastSwap, fastSwapReason } from './helpers/swap.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const CHILD = path.join(here, 'adversary-s13b', 'child.cjs')
const scratch = scratchDirs('adv-s13b')
const REASON = FAULTFS_REASON ?? skipReason(['root', 'loop', 'fuse', 'cargo', 'cmd:umount'])
const HELD_ENV = { ODIRECT_RW_WAIT_DISK_MS: '120000' }
const node22 = runtimePath('node22')
/** Node (this one) and Node 22 where scripts/runtime-bin.cjs finds it. */
const nodes: Array<[string, string]> = [['node', process.execPath], ...(node22 === undefined ? [] : [['node22', node22] as [string, string]])]

interface Line {
  waitStats: number[]
  callStats: number[]
  [k: string]: unknown
}
const parse = (l: string): Line => JSON.parse(l.slice(l.indexOf(' ') + 1)) as Line
const delta = (a: number[], b: number[]): number[] => a.map((x, i) => x - (b[i] ?? NaN))

function child(target: string, scenario: string, env: Record<string, string> = {}, extra: string[] = [], stdin = false, cmd = process.execPath): ReturnType<typeof childLines> {
  return childLines(cmd, [CHILD, target, scenario, ...extra], { ...process.env, ...env }, stdin)
}

/** A 1 MiB file of 0x5a bytes on the disk (/var/tmp). */
function diskFile(): string {
  const file = path.join(scratch(), 'data')
  fs.writeFileSync(file, Buffer.alloc(1 << 20, 0x5a))
  return file
}

const hd = heldDevice(REASON)

/** Releases the child's held read; it completes whole (4096 bytes of the file) and the child exits 0. */
async function releaseHeld(t: ExecutionContext, c: ReturnType<typeof childLines>): Promise<void> {
  hd.fx().release()
  const read = parse(await c.line('read '))
  t.deepEqual([read.bytesRead, read.ok], [4096, true])
  t.is(await c.exited, 0, c.err())
}

const held = (title: string, fn: Parameters<typeof test>[1]): void => testIf(REASON, title, fn, true)
if (REASON) console.log(`adversary-s13b.spec: held-read cases skipped: ${REASON}`)

/** Whether a thread of `pid` other than io_uring's workers sleeps in io_uring_enter(2) (426 on every architecture). */
function inUringEnter(pid: number): boolean {
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      if (fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith('iou-')) continue
      if (fs.readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8').split(' ')[0] === '426') return true
    } catch {
      // gone meanwhile
    }
  }
  return false
}

// ---------------------------------------------------------------------------------------
// Signals and loop events while a lone read is held (its JS thread sleeps in its call)

for (const [name, bin] of nodes) {
  held(`${name}: a SIGUSR1 sent by another process while a lone read is held in its in-call wait: the handler runs while the read is held; the read completes right once released`, async (t) => {
    const f = hd.fx()
    const c = child(hd.device(), 'signal', HELD_ENV, [], true, bin)
    try {
      await c.line('ready')
      await hd.startHeld(c)
      await until(() => inUringEnter(c.child.pid as number), 'the child sleeping in io_uring_enter')
      const k = spawnSync('kill', ['-USR1', String(c.child.pid)])
      t.is(k.status, 0, String(k.stderr))
      const sig = parse(await c.line('signal'))
      t.true(sig.readPending, 'the handler ran after the read was started')
      t.true(f.stats().held >= 1, 'the read is still held when the handler has run')
      const returned = parse(await c.line('returned'))
      const started = parse(await c.line('started'))
      const [waits, , busy] = delta(returned.waitStats, (started.before as Line).waitStats)
      t.log(`waitStats before ${JSON.stringify((started.before as Line).waitStats)}, after the call ${JSON.stringify(returned.waitStats)}`)
      t.is(waits, 1, 'the held read waited in its call')
      t.is(busy, 0)
      t.is(delta(returned.waitStats, (started.before as Line).waitStats)[3], 1, 'the wait ended by the loop event (the signal)')
      await releaseHeld(t, c)
    } finally {
      f.release()
      c.child.kill()
    }
  })
}

held('SIGCHLD: a child of the program exits while a lone read is held in its in-call wait: its exit event runs while the read is held', async (t) => {
  const f = hd.fx()
  const c = child(hd.device(), 'sigchld', HELD_ENV, [], true)
  try {
    const ready = parse(await c.line('ready'))
    await hd.startHeld(c)
    await until(() => inUringEnter(c.child.pid as number), 'the child sleeping in io_uring_enter')
    process.kill(ready.grandchild as number, 'SIGTERM')
    const chld = parse(await c.line('sigchld'))
    t.true(chld.readPending)
    t.is(chld.sig, 'SIGTERM')
    t.true(f.stats().held >= 1, 'the read is still held when the exit event has run')
    await releaseHeld(t, c)
  } finally {
    f.release()
    c.child.kill()
  }
})

for (const [name, bin] of nodes) {
  held(`${name}: fh.close() called from the stdin callback that ended a held lone read's in-call wait: close waits for the read, which completes right once released`, async (t) => {
    const f = hd.fx()
    const c = child(hd.device(), 'close', HELD_ENV, [], true, bin)
    try {
      await c.line('ready')
      await hd.startHeld(c)
      c.child.stdin?.write('close\n')
      const closing = parse(await c.line('closing'))
      const started = parse(await c.line('started'))
      const [waits, , , ended] = delta(closing.waitStats, (started.before as Line).waitStats)
      t.log(`waitStats before ${JSON.stringify((started.before as Line).waitStats)}, at close ${JSON.stringify(closing.waitStats)}`)
      t.is(waits, 1, 'the held read waited in its call')
      t.is(ended, 1, 'the wait ended by the loop event (the stdin line)')
      t.true(f.stats().held >= 1, 'the read is still held when close() is called')
      f.release()
      const lines = await c.next(6)
      const at = (p: string): number => lines.findIndex((l) => l.startsWith(p))
      const read = parse(await c.line('read '))
      const closed = parse(await c.line('closed'))
      t.deepEqual([read.bytesRead, read.ok], [4096, true])
      t.is(closed.error, undefined)
      t.true(at('read ') < at('closed'), `the read settled before close resolved: ${lines.join(' | ')}`)
      t.is(await c.exited, 0, c.err())
    } finally {
      f.release()
      c.child.kill()
    }
  })
}

// ---------------------------------------------------------------------------------------
// Workers

for (const setup of ['default', 'coop'] as const) {
  held(`[${setup} ring] a worker terminated while its thread sleeps in a held lone read's in-call wait: its exit comes while the read is held (the termination is a loop event), the read handed to the reaper; ${setup === 'coop' ? 'once released, the reaper frees the ring and the eventfd' : 'its DEFER_TASKRUN ring is kept (documented), the process still ends'}`, async (t) => {
    const f = hd.fx()
    const c = child(hd.device(), 'worker-held', { ...HELD_ENV, ...(setup === 'coop' ? { ODIRECT_URING_SETUP: 'coop' } : {}) }, [], true)
    try {
      await c.line('ready')
      await hd.startHeld(c, 'worker {"opened"')
      // The worker's thread sleeps in the wait (with a 120 s cap): only its loop can end it.
      await until(() => inUringEnter(c.child.pid as number), 'the worker sleeping in io_uring_enter')
      c.child.stdin?.write('terminate\n')
      const exited = parse(await c.line('exited'))
      t.is(exited.code, 1)
      t.true(f.stats().held >= 1, 'the worker exited while its read is held')
      const [engines, , ops, , bytes] = exited.reaper as number[]
      t.deepEqual([engines, ops, bytes], [1, 1, 4096], 'the held read and its engine handed to the reaper')
      f.release()
      await f.waitFor((s) => s.inflight === 0, 'faultfs answered')
      c.child.stdin?.write('released\n')
      const freed = parse(await c.line('freed'))
      t.log(`exited ${JSON.stringify(exited)}, freed ${JSON.stringify(freed)}`)
      if (setup === 'coop') {
        t.deepEqual(freed.fds, freed.base, 'the worker\'s ring and eventfd closed')
        t.deepEqual((freed.reaper as number[]).slice(1), [1, 1, 1, 0], 'the engine and its read freed')
      }
      t.is(await c.exited, 0, c.err())
      t.false((await c.next(0)).some((x) => x.includes('readDone')), 'the terminated worker ran no more JS')
    } finally {
      f.release()
      c.child.kill()
    }
  })
}

test('a worker terminated while its watch of its loop is armed (after lone reads that waited in their call): its ring and eventfd are closed at exit, the process ends', async (t) => {
  const c = child(diskFile(), 'worker-idle', {}, [], true)
  await c.line('ready')
  c.child.stdin?.write('go\n')
  const w = parse(await c.line('worker'))
  t.true(w.ok as boolean)
  t.true(w.waitStats[0] > 0, `the worker's reads waited in their call: ${JSON.stringify(w.waitStats)}`)
  c.child.stdin?.write('terminate\n')
  const exited = parse(await c.line('exited'))
  t.is(exited.code, 1)
  t.deepEqual(exited.fds, exited.base, 'the worker\'s ring and eventfd closed')
  t.is(await c.exited, 0, c.err())
})

test('two worker_threads and the main thread, each with its own engine, doing lone disk reads at once: every read right, each engine waits in its calls', async (t) => {
  const c = child(diskFile(), 'workers')
  const done = parse(await c.line('done'))
  t.is(await c.exited, 0, c.err())
  const main = done.main as Line & { wrong: number }
  const workers = done.workers as Array<Line & { wrong: number; code: number }>
  t.log(JSON.stringify(done))
  t.is(main.wrong, 0)
  t.true(main.waitStats[0] > 0)
  t.is(workers.length, 2)
  for (const w of workers) {
    t.deepEqual([w.code, w.wrong], [0, 0])
    t.true(w.waitStats[0] > 0, 'the worker\'s engine waits in its calls (its own loop)')
  }
})

// ---------------------------------------------------------------------------------------
// Exit, sockets, chains

test('process.exit(7) inside the callback of a lone read that completed in its call: the process exits with 7, the callback saw the file\'s bytes', async (t) => {
  const c = child(diskFile(), 'exit', HELD_ENV)
  const line = parse(await c.line('exiting'))
  t.is(await c.exited, 7, c.err())
  t.deepEqual([line.bytesRead, line.ok], [4096, true])
})

test('lone reads one at a time next to a busy socket (another process streams 8 MiB into it): every byte delivered in order, every read right', async (t) => {
  const SIZE = 8 << 20
  const data = Buffer.alloc(SIZE)
  for (let i = 0; i < SIZE; i++) data[i] = (i * 7 + (i >> 12)) & 0xff
  let sum = 0
  for (let i = 0; i < SIZE; i++) sum = (sum + data[i] * ((i % 251) + 1)) % 1000000007
  const server = net.createServer((s) => {
    let off = 0
    const pump = (): void => {
      while (off < SIZE) {
        const n = Math.min(16 << 10, SIZE - off)
        const more = s.write(data.subarray(off, off + n))
        off += n
        if (!more) return void s.once('drain', pump)
      }
      s.end()
    }
    pump()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const port = (server.address() as net.AddressInfo).port
  const c = child(diskFile(), 'socket', {}, [String(port)])
  const done = parse(await c.line('done'))
  t.is(await c.exited, 0, c.err())
  t.log(`${done.reads} reads, ${done.events} data events, waitStats ${JSON.stringify(done.waitStats)}, callStats ${JSON.stringify(done.callStats)}`)
  t.is(done.bytes, SIZE)
  t.is(done.sum, sum, 'the bytes came in order')
  t.is(done.wrong, 0)
  t.true((done.reads as number) >= 300)
})

test('lone reads while a setImmediate chain runs: the loop always has work, so none waits in its call; every read right', async (t) => {
  const c = child(diskFile(), 'immediate')
  const d = parse(await c.line('done'))
  t.is(await c.exited, 0, c.err())
  const [waits, , busy] = delta((d.after as Line).waitStats, (d.before as Line).waitStats)
  t.log(`before ${JSON.stringify((d.before as Line).waitStats)} after ${JSON.stringify((d.after as Line).waitStats)}, ${d.ticks} immediates`)
  t.is(d.wrong, 0)
  t.is(waits, 0, 'no wait while an immediate is pending')
  t.is(busy, 200, 'each read found the loop busy')
  t.true((d.ticks as number) >= 200, 'the chain turned at least once per read')
})

test('lone reads next to setInterval(0): every wait in a call is bounded by the timer, the interval keeps firing, every read right', async (t) => {
  const c = child(diskFile(), 'interval', HELD_ENV)
  const d = parse(await c.line('done'))
  t.is(await c.exited, 0, c.err())
  const [waits, , , , bounded, rewaits] = delta((d.after as Line).waitStats, (d.before as Line).waitStats)
  t.log(`before ${JSON.stringify((d.before as Line).waitStats)} after ${JSON.stringify((d.after as Line).waitStats)}, ${d.ticks} interval ticks`)
  t.is(d.wrong, 0)
  // The cap is 120 s: a wait not bounded by the 1 ms timer would count waits without bounds.
  t.true(bounded >= waits - rewaits, `waits ${waits}, timer-bounded ${bounded}, rewaits ${rewaits}`)
  t.true((d.ticks as number) > 0)
})

test('lone reads each followed by a 1000-deep queueMicrotask recursion: every read right, the microtasks all ran, reads still wait in their call', async (t) => {
  const c = child(diskFile(), 'microtask')
  const d = parse(await c.line('done'))
  t.is(await c.exited, 0, c.err())
  const [waits] = delta(d.waitStats, (d.before as Line).waitStats)
  t.log(`waitStats ${JSON.stringify(d.waitStats)}`)
  t.is(d.wrong, 0)
  t.is(d.depth, 200 * 1001)
  t.true(waits > 0)
})

for (const mode of ['default', 'ODIRECT_RW_WAIT_DISK=1'] as const) {
  test(`${mode}: lone reads with a signal or a timeout never wait in their call (each must stay cancellable by the loop); every read right`, async (t) => {
    const c = child(diskFile(), 'signal-opts', mode === 'default' ? {} : { ODIRECT_RW_WAIT_DISK: '1' })
    const d = parse(await c.line('done'))
    t.is(await c.exited, 0, c.err())
    t.log(`before ${JSON.stringify((d.before as Line).waitStats)} after ${JSON.stringify(d.waitStats)}`)
    t.is(d.wrong, 0)
    t.deepEqual(delta(d.waitStats, (d.before as Line).waitStats).slice(0, 1), [0], 'no in-call wait')
    t.deepEqual(delta(d.callStats, (d.before as Line).callStats).slice(0, 1), [0], 'none completed in its call')
  })
}

// ---------------------------------------------------------------------------------------
// The process ends after its last op

for (const [name, bin] of [['node', process.execPath], ['node22', node22]] as const) {
  const title = `${name}: after lone disk reads that waited in their call (the loop watch left armed), the program ends by itself with exit code 0`
  if (bin === undefined) {
    test(title, (t) => t.log('skipped: node22 is not installed here (scripts/runtime-bin.cjs)'))
    continue
  }
  test(title, async (t) => {
    const c = child(diskFile(), 'plain', {}, [], false, bin)
    const d = parse(await c.line('done'))
    t.is(d.wrong, 0)
    t.true(d.waitStats[0] > 0, `the reads waited in their call: ${JSON.stringify(d.waitStats)}`)
    // A poll or handle left keeping the loop alive would keep the child running (this awaits
    // its exit, without a time bound but the test's).
    t.is(await c.exited, 0, c.err())
  })
}

// ---------------------------------------------------------------------------------------
// swapon / swapoff under inline tmpfs reads

const swapWhy = fastSwapReason()
const noSwap = (): boolean => fs.readFileSync('/proc/swaps', 'utf8').trim().split('\n').length <= 1

testIf(swapWhy, 'machine-wide: inline tmpfs reads skip cachestat(2) without swap, stop skipping at once when a swap is turned on under the running program, and skip again after its swapoff', async (t) => {
  // A swap fixture (a swap on a loop device and a tmpfs), its swap off until the case turns it on.
  const sw = fastSwap(16)
  // fastSwapReason found every tool and root: a refusal here is a failure, not a skip.
  if (isSkip(sw)) return t.fail(sw.skip)
  let swapOn = true
  const swap = (on: boolean): void => {
    sh(on ? 'swapon' : 'swapoff', [sw.device])
    swapOn = on
  }
  const file = path.join(sw.dir, 'data')
  fs.writeFileSync(file, Buffer.alloc(64 << 10, 0x5a))
  // Off for the first phase: the program starts on a machine without (this) swap.
  swap(false)
  const c = child(file, 'swap', {}, [], true)
  t.teardown(async () => {
    c.child.kill()
    await c.exited
    // The fixture's cleanup turns its swap off itself.
    if (!swapOn) swap(true)
    sw.cleanup()
  })
  /** 50 lone reads in the child, one at a time (most made inline, within the chain budget). */
  const phase = async (): Promise<Line> => {
    const n = (await c.next(0)).length
    c.child.stdin?.write('read\n')
    const lines = await c.next(n + 1)
    return parse(lines[n] as string)
  }
  const ready = parse(await c.line('ready'))
  const none = noSwap()
  const a = await phase()
  const first = delta(a.callStats, ready.callStats)
  t.log(`no swap (${none}): callStats ${JSON.stringify(first)}`)
  t.is(a.wrong, 0)
  t.true(first[1] > 0, 'reads made inline')
  if (none && noSwap()) t.true(first[4] >= first[1] - 1, 'inline reads skipped cachestat while no swap is listed')
  else t.log('another swap was on meanwhile: the first phase is not checked')
  swap(true)
  const b = await phase()
  const on = delta(b.callStats, a.callStats)
  t.log(`swap on: callStats ${JSON.stringify(on)}`)
  t.is(b.wrong, 0)
  t.true(on[1] > 0, 'the reads were still made inline (their pages are resident)')
  t.is(on[4], 0, 'no read skipped cachestat once a swap was on')
  swap(false)
  // The swapoff's poll completion is reaped at a later turn of the loop or ring op, so the skip
  // comes back after some reads that asked cachestat (harmless: asking is always right).
  const d1 = await phase()
  const d2 = await phase()
  const off = delta(d2.callStats, d1.callStats)
  t.log(`swap off again: callStats ${JSON.stringify(delta(d1.callStats, b.callStats))}, then ${JSON.stringify(off)}`)
  t.deepEqual([d1.wrong, d2.wrong], [0, 0])
  t.true(off[1] > 0)
  if (noSwap()) t.true(off[4] > 0, 'the skip resumed after swapoff')
  else t.log('another swap is on: the last phase is not checked')
  c.child.stdin?.write('end\n')
  t.is(await c.exited, 0, c.err())
}, true)
