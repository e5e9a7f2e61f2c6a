// configureEngine({ waitMicros }): a flush that submits a lone io_uring op (nothing else in
// flight) waits in the kernel up to waitMicros for its completion (io_uring_enter with
// GETEVENTS and a timeout, as fio waits at depth 1) and settles the promise at once, without a
// wake-up through the eventfd, epoll and the event loop. Seen in the engine's wait counters and
// in the process's read(2) count (/proc/self/io syscr): the eventfd is read once per op without
// it. Never for deeper queues, for descriptors whose ops may sleep (a FIFO), or on aio.
// The disk rows compare the flush's wait with the loop's path: the loop-aware in-call disk wait
// (the default in Node, loop-wait.spec.ts) is off here. Read at the engine's creation.
process.env.ODIRECT_RW_WAIT_DISK = '0'

import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'

import test from 'ava'

import { configureEngine, DirectIoError, open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { depthOneInChild, fifoReadLetsTimersFire, patterned, UNIT } from './helpers/qd1.js'
import { scratchDirs } from './helpers/scratch.js'

const scratch = scratchDirs('wait-hybrid')
const N = 2000

/** [in-kernel waits made, waits that found the completion]. */
const waitStats = (): [number, number] => {
  const [tries, found] = getEngine().native.waitStats
  return [tries, found]
}

test.afterEach.always(() => configureEngine({ waitMicros: 0 }))

test.serial(`disk: ${N} reads one at a time: those whose completion the flush's in-kernel wait found make no eventfd read`, async (t) => {
  // Counted in a child process of its own: helpers/qd1.ts depthOneInChild.
  const { backend, ringSetup, rounds } = await depthOneInChild(patterned(scratch(), 64), N, [0, 1000])
  if (backend !== 'io_uring') return t.fail(`io_uring is not available here: ${backend}`)
  const [off, on] = rounds
  t.is(off.wrong, 0)
  t.is(off.tries, 0)
  t.is(on.wrong, 0)
  t.log(`${on.found} of ${on.tries} waits found the completion, ${N} ops; read(2) calls: ${on.reads} with the wait, ${off.reads} without`)
  // How many waits find their completion depends on the disk's latency against the 1 ms budget
  // (on a quiet disk ~9 in 10; beside a saturating writer about half): asserted is that waits
  // are made and find completions, at most one per op.
  t.true(on.tries <= N)
  t.true(on.found >= 1 && on.found <= on.tries)
  if (ringSetup.includes('defer_taskrun')) {
    // Without the wait the eventfd is read once per wake-up (~N); with it the ring keeps
    // quiet while it waits (IORING_CQ_EVENTFD_DISABLED): an op whose completion the wait found
    // costs no eventfd read, whatever the share of such ops (N / 20: the child's other reads).
    t.true(off.reads >= N / 2, `${off.reads} read(2) calls for ${N} ops without the wait`)
    t.true(on.reads <= N - on.found + N / 20, `${on.reads} read(2) calls for ${N} ops, ${on.found} found by the wait`)
  }
})

test.serial('a deeper queue never waits in the kernel (32 reads in flight)', async (t) => {
  const fh = await open(patterned(scratch(), 64), 'r', { backend: 'io_uring' })
  try {
    if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
    configureEngine({ waitMicros: 1000 })
    const [tries0] = waitStats()
    for (let round = 0; round < 20; round++) {
      const ok = await Promise.all(
        Array.from({ length: 32 }, async (_, i) => {
          const b = fh.alloc(UNIT)
          const at = (round * 32 + i) % 64
          const { bytesRead } = await fh.read(b, { position: at * UNIT })
          return bytesRead === UNIT && b[0] === at % 251 && b[UNIT - 1] === at % 251
        }),
      )
      t.true(ok.every(Boolean), `round ${round}`)
    }
    t.is(waitStats()[0] - tries0, 0)
  } finally {
    await fh.close()
  }
})

test.serial('a write linked with its fdatasync waits for both and is durable whole', async (t) => {
  const file = `${scratch()}/out`
  const fh = await open(file, 'w+', { backend: 'io_uring' })
  try {
    if (fh.backend !== 'io_uring') return t.fail(`io_uring is not available here: ${fh.backend}`)
    configureEngine({ waitMicros: 1000 })
    const [tries0] = waitStats()
    for (let i = 0; i < 8; i++) {
      const b = fh.alloc(UNIT)
      b.fill(0x41 + i)
      const r = await fh.writeMany([{ buffer: b, position: i * UNIT }], { datasync: true })
      t.deepEqual(r, [UNIT])
    }
    t.true(waitStats()[0] - tries0 >= 1)
    const back = fs.readFileSync(file)
    t.is(back.length, 8 * UNIT)
    for (let i = 0; i < 8; i++) t.true(back.subarray(i * UNIT, (i + 1) * UNIT).every((v) => v === 0x41 + i), `block ${i}`)
  } finally {
    await fh.close()
  }
})

test.serial('a read on a FIFO never waits in the kernel: timers fire while it is in flight', async (t) => {
  let tries0 = 0
  await fifoReadLetsTimersFire(
    t,
    scratch(),
    () => {
      configureEngine({ waitMicros: 1000 })
      tries0 = waitStats()[0]
    },
    () => t.is(waitStats()[0] - tries0, 0),
  )
})

test.serial('aio and the thread pool ignore waitMicros', async (t) => {
  const file = patterned(scratch(), 64)
  for (const backend of ['aio', 'threadpool'] as const) {
    const fh = await open(file, 'r', { backend })
    try {
      configureEngine({ waitMicros: 1000 })
      const [tries0] = waitStats()
      const buf = fh.alloc(UNIT)
      for (let i = 0; i < 50; i++) {
        const { bytesRead } = await fh.read(buf, { position: (i % 64) * UNIT })
        t.is(bytesRead, UNIT)
        t.is(buf[0], (i % 64) % 251)
      }
      t.is(waitStats()[0] - tries0, 0, backend)
    } finally {
      await fh.close()
    }
  }
})

test('waitMicros is validated: an integer from 0 to 1000', (t) => {
  for (const [bad, code] of [
    [-1, 'ERR_OUT_OF_RANGE'],
    [1001, 'ERR_OUT_OF_RANGE'],
    [1.5, 'ERR_OUT_OF_RANGE'],
    [Number.NaN, 'ERR_OUT_OF_RANGE'],
    ['50', 'ERR_INVALID_ARG_TYPE'],
    [null, 'ERR_INVALID_ARG_TYPE'],
  ] as const) {
    const e = t.throws(() => configureEngine({ waitMicros: bad as unknown as number }), { instanceOf: DirectIoError })
    t.is(e?.code, code, String(bad))
    t.regex(e?.hint ?? '', /waitMicros: 50/)
  }
  t.is(getEngine().native.waitMicros, 0)
})

test('ODIRECT_WAIT_US / ODIRECT_SQPOLL outside their range: one ODIRECT_ENV warning each, the engine keeps working', async (t) => {
  const dist = new URL('../dist/index.js', import.meta.url).pathname
  const file = patterned(scratch(), 1)
  const script = `const od = require(${JSON.stringify(dist)})
process.on('warning', (w) => console.log('W', w.code, w.message))
;(async () => { const fh = await od.open(${JSON.stringify(file)}, 'r'); const r = await fh.read(fh.alloc(4096), { position: 0 }); console.log('read', r.bytesRead); await fh.close() })()`
  for (const [env, warned] of [
    [{ ODIRECT_WAIT_US: 'abc', ODIRECT_SQPOLL: '-1' }, ['ODIRECT_SQPOLL="-1"', 'ODIRECT_WAIT_US="abc"']],
    [{ ODIRECT_WAIT_US: '5000' }, ['ODIRECT_WAIT_US="5000"']],
    [{ ODIRECT_WAIT_US: '200', ODIRECT_SQPOLL: '0' }, []],
  ] as const) {
    const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    const warnings = out.split('\n').filter((l) => l.startsWith('W ODIRECT_ENV'))
    t.is(warnings.length, warned.length, out)
    for (const w of warned) t.true(warnings.some((l) => l.includes(w)), `${w} in ${out}`)
    t.true(out.includes('read 4096'), out)
  }
})
