// The engine's automatic registration of odirect memory (crates/napi/src/pins.rs AutoTable,
// ODIRECT_AUTO_REG; =0 the old way): an fh.alloc allocation that two ops use gets a slot in a
// sparse io_uring fixed-buffer table, and its reads/writes go as READ_FIXED / WRITE_FIXED, as
// those of fh.registerBuffers memory do (the array form [{ buffer, position }] of readMany /
// writeMany was the row it is for: its buffers were plain fh.alloc memory). Counted, never
// timed: the opcodes through the kernel's io_uring:io_uring_submit_req tracepoint (a trace
// instance of this test's own, filtered to the submitting process), the engine's counts
// (callStats[8..10]: registered, slots emptied by sweeps, slots in use).
// Memory safety is the product: an op names a slot only while it holds the slot's allocation,
// found by the allocation's identity (never its address alone); the table keeps no memory alive,
// and a slot whose allocation is gone is emptied in the kernel, or given to the next allocation
// at its address, only then. The tests below try to break that: buffers dropped and collected
// between batches (the heap gives their addresses to the next ones), a buffer detached right
// after its ops and a new one at its address, more live buffers than slots, transfers, a worker
// terminated mid-batch, a registration of the caller's replacing the table, resizable (plain)
// memory. Every byte is
// checked. A lone small op on tmpfs is made inline (never reaching the ring): off here.
// Serial: the tests read this process's engine counts.
process.env.ODIRECT_INLINE_TMPFS = '0'
// The table registers at the second use here, whatever its slots served (the twentieth
// session's rule): these tests churn slots with buffers used two to four times each, which the
// adaptive rule stops registering (speed-s21-batch.spec); the memory rule is the same either way.
process.env.ODIRECT_AUTO_REG_ADAPT = '0'

import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { type FileHandle, open } from '../dist/index.js'
import { getEngine } from '../dist/src/engine.js'
import { native } from '../dist/src/native.js'
import { childLines } from './helpers/child-lines.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { traceEvent, tracefsReason } from './helpers/tracefs.ts'

const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.js')
const BACKEND = (process.env.ODIRECT_BACKEND || 'auto') as 'auto'
const UNIT = 4096
const SLOTS = 1024
const scratch = scratchDirs('s20-arrays')
const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : undefined
const TRACE_WHY = tracefsReason('io_uring_submit_req')
const gc = (globalThis as { gc?: () => void }).gc

/** [registered so far, slots emptied by sweeps so far, slots in use now] of this thread's engine. */
const auto = (): number[] => (getEngine().native.callStats as number[]).slice(8, 11)

/** odirect allocations alive now (ArrayBuffers not finalized, ops in flight). */
const alive = (): number => native.memoryStats()[0] as number

/** alive(), once it is at most `n` (a detached buffer's memory goes when the runtime lets its backing store go), or after 1000 turns of the loop. */
async function aliveAtMost(n: number): Promise<number> {
  for (let k = 0; k < 1000 && alive() > n; k++) await new Promise((r) => setImmediate(r))
  return alive()
}

/** `n` fh.alloc blocks, block i filled with (seed + i) and its index stamped at its start. */
function patterned(fh: FileHandle, n: number, seed: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const b = fh.alloc(UNIT)
    b.fill((seed + i) & 0xff)
    b.writeUInt32LE(seed * 100000 + i, 0)
    return b
  })
}

const at = (bufs: readonly Uint8Array[], first = 0) => bufs.map((buffer, i) => ({ buffer, position: (first + i) * UNIT }))

/** Writes `src` at blocks first.., reads them back into new buffers (twice each: the second call's ops are the fixed ones); checks every byte. */
async function roundTrip(t: { true(v: boolean, m?: string): void; fail(m: string): void }, fh: FileHandle, src: Buffer[], first: number, window = 16): Promise<void> {
  for (let k = 0; k < 2; k++) await fh.writeMany(at(src, first), { window })
  const back = src.map(() => fh.alloc(UNIT))
  for (let k = 0; k < 2; k++) {
    for (const b of back) b.fill(0xee)
    await fh.readMany(at(back, first), { window })
  }
  let bad = -1
  for (let i = 0; i < src.length && bad < 0; i++) if (!back[i].equals(src[i])) bad = i
  if (bad >= 0) t.fail(`block ${first + bad} read back wrong: ${back[bad].readUInt32LE(0)} vs ${src[bad].readUInt32LE(0)}`)
  else t.true(true)
}

/** A file on tmpfs, and whether its ops go on the ring with O_DIRECT (the automatic table's place; elsewhere only the data is checked). */
async function ringFile(t: { log(...a: unknown[]): void }, name: string): Promise<{ fh: FileHandle; ring: boolean }> {
  const fh = await open(path.join(scratch(shm), name), 'w+', { backend: BACKEND })
  const ring = fh.backend === 'io_uring' && fh.direct
  if (!ring) t.log(`backend ${fh.backend}, direct ${fh.direct}: no fixed buffers here, only the data is checked`)
  return { fh, ring }
}

/** The READ and WRITE opcodes (fixed or not) this process submits while `fn` runs. */
async function opcodes(fn: () => Promise<void>, pid = process.pid): Promise<string[]> {
  const trace = await traceEvent('io_uring/io_uring_submit_req', pid, fn)
  return [...trace.matchAll(/opcode (\w+)/g)].map((m) => m[1]).filter((o) => /^(READ|WRITE)/.test(o))
}

{
  const why = TRACE_WHY ?? (shm === undefined ? 'no /dev/shm' : undefined)
  const title = `array-form writeMany / readMany on fh.alloc buffers: plain WRITE / READ the first time, WRITE_FIXED / READ_FIXED from the second (each buffer registered once)${why ? ` (skipped: ${why})` : ''}`
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const { fh, ring } = await ringFile(t, 'opcodes')
    try {
      if (!ring) {
        await roundTrip(t, fh, patterned(fh, 24, 1), 0)
        return
      }
      const n = 24
      const src = patterned(fh, n, 1)
      const back = src.map(() => fh.alloc(UNIT))
      const before = auto()
      const first = await opcodes(async () => {
        await fh.writeMany(at(src), { window: 8 })
        await fh.readMany(at(back), { window: 8 })
      })
      t.deepEqual(first, [...new Array<string>(n).fill('WRITE'), ...new Array<string>(n).fill('READ')], 'seen once: not registered yet')
      const second = await opcodes(async () => {
        await fh.writeMany(at(src), { window: 8 })
        for (const b of back) b.fill(0)
        await fh.readMany(at(back), { window: 8 })
      })
      t.deepEqual(second, [...new Array<string>(n).fill('WRITE_FIXED'), ...new Array<string>(n).fill('READ_FIXED')])
      for (let i = 0; i < n; i++) t.true(back[i].equals(src[i]), `block ${i}`)
      const after = auto()
      t.is(after[0] - before[0], 2 * n, 'each buffer registered once')
      // A third time: registered already, nothing new.
      await fh.writeMany(at(src), { window: 8 })
      t.is(auto()[0], after[0])
    } finally {
      await fh.close()
    }
  })
}

{
  const why = TRACE_WHY ?? (shm === undefined ? 'no /dev/shm' : undefined)
  const title = `ODIRECT_AUTO_REG=0: the same array-form batches stay plain WRITE / READ, nothing registered${why ? ` (skipped: ${why})` : ''}`
  ;(why === undefined ? test.serial : test.skip)(title, async (t) => {
    const script = `
      const { open } = require(${JSON.stringify(DIST)})
      const { getEngine } = require(${JSON.stringify(path.join(path.dirname(DIST), 'src', 'engine.js'))})
      ;(async () => {
        const fh = await open(process.argv[1], 'w+', { backend: process.argv[2] })
        const src = Array.from({ length: 24 }, (_, i) => fh.alloc(4096).fill(i + 1))
        const ops = src.map((buffer, i) => ({ buffer, position: i * 4096 }))
        await fh.writeMany(ops, { window: 8 })
        process.stdout.write('ready ' + fh.backend + ' ' + fh.direct + '\\n')
        await new Promise((resolve) => process.stdin.once('data', resolve))
        await fh.writeMany(ops, { window: 8 })
        await fh.readMany(ops, { window: 8 })
        process.stdout.write('done ' + getEngine().native.callStats.slice(8, 11).join(',') + '\\n')
        await fh.close()
        process.stdin.destroy()
      })()`
    const { child, line, exited, err } = childLines(process.execPath, ['-e', script, path.join(scratch(shm), 'off.bin'), BACKEND], { ...process.env, ODIRECT_AUTO_REG: '0' }, true)
    const ready = (await line('ready')).split(' ')
    if (ready[1] !== 'io_uring' || ready[2] !== 'true') {
      t.log(`backend ${ready[1]}, direct ${ready[2]}: no fixed buffers here`)
      child.stdin?.end('go\n')
      t.is(await line('done'), 'done 0,0,0')
      t.is(await exited, 0, err())
      return
    }
    let done = ''
    const seen = await opcodes(async () => {
      child.stdin?.write('go\n')
      done = await line('done')
    }, child.pid as number)
    t.is(await exited, 0, err())
    t.is(done, 'done 0,0,0')
    t.deepEqual(seen, [...new Array<string>(24).fill('WRITE'), ...new Array<string>(24).fill('READ')])
  })
}

test.serial('buffers dropped and collected between batches, more of them than slots: every byte right, slots given anew, the table keeps none of them alive', async (t) => {
  if (gc === undefined) return t.fail('needs --expose-gc (the ava config passes it)')
  const { fh, ring } = await ringFile(t, 'churn')
  try {
    const start = auto()
    const a0 = alive()
    // 24 rounds of 64 new buffers written and read back twice each: 3072 registrations wanted,
    // 1024 slots. Each round's buffers are dropped and collected before the next, so the heap
    // hands their addresses to the next round's buffers.
    for (let round = 0; round < 24; round++) {
      await roundTrip(t, fh, patterned(fh, 64, round + 1), (round % 4) * 64)
      gc()
      await new Promise((r) => setImmediate(r))
    }
    const end = auto()
    t.log(`registered ${end[0] - start[0]}, emptied ${end[1] - start[1]}, in use ${end[2]}`)
    if (ring) {
      t.true(end[0] - start[0] > SLOTS, 'more registrations than slots')
      t.true(end[2] <= SLOTS && end[2] < end[0] - start[0], 'slots of freed buffers given to new ones')
    }
    // The table keeps nothing alive: once collected, the rounds' buffers are all freed.
    for (let k = 0; k < 100 && alive() > a0; k++) {
      gc()
      await new Promise((r) => setImmediate(r))
    }
    t.true(alive() <= a0, `every buffer of the rounds freed (${alive()} alive, ${a0} before)`)
  } finally {
    await fh.close()
  }
})

test.serial('a registered buffer released at once (detached, as a write stream releases its blocks) is freed at once; a new buffer at its address gets the slot anew, by identity, every byte right', async (t) => {
  const { fh, ring } = await ringFile(t, 'release')
  try {
    const first = auto()
    for (let round = 0; round < 8; round++) {
      const b = fh.alloc(UNIT)
      b.fill(round + 1)
      const before = auto()
      const a0 = alive()
      await fh.write(b, { position: round * UNIT })
      await fh.write(b, { position: round * UNIT })
      if (ring) t.is(auto()[0] - before[0], 1, 'registered at its second op')
      t.true(native.releaseBlock(b.buffer), 'detached')
      t.is(await aliveAtMost(a0 - 1), a0 - 1, 'freed without a collection: the table does not keep it')
      const back = fh.alloc(UNIT)
      await fh.read(back, { position: round * UNIT })
      await fh.read(back, { position: round * UNIT })
      t.true(back.every((x) => x === round + 1), `round ${round}`)
    }
    // Each buffer registered once, at its second op, also one the heap put at the address of
    // the buffer just freed (an address's slot is never taken for a new buffer's: identity).
    if (ring) t.is(auto()[0] - first[0], 16)
  } finally {
    await fh.close()
  }
})

test.serial('more buffers alive at once than slots: the rest go unfixed, every byte right; once they are gone, new buffers get slots', async (t) => {
  if (gc === undefined) return t.fail('needs --expose-gc (the ava config passes it)')
  const { fh, ring } = await ringFile(t, 'many')
  try {
    const a0 = alive()
    let src: Buffer[] | undefined = patterned(fh, 1500, 7)
    await roundTrip(t, fh, src, 0, 64)
    const s = auto()
    t.true(s[2] <= SLOTS, `slots in use ${s[2]}`)
    // Again: the ones in slots go fixed, the others plain; all land.
    await roundTrip(t, fh, src, 0, 64)
    // All of them dropped and collected: new buffers get slots again (a full table of gone
    // allocations is swept, or a slot given to a new buffer at the same address).
    src = undefined
    for (let k = 0; k < 100 && alive() > a0 && gc !== undefined; k++) {
      gc()
      await new Promise((r) => setImmediate(r))
    }
    const mid = auto()
    // After a sweep that found every slot's buffer alive, the table waits out as many misses as
    // it has slots before it sweeps again: rounds of new buffers until it has (at most 20).
    let rounds = 0
    while (rounds < 20 && auto()[0] - mid[0] < 64) await roundTrip(t, fh, patterned(fh, 64, 8 + rounds++), 0)
    const end = auto()
    t.log(`full: registered ${mid[0]}, in use ${mid[2]}; after ${rounds} rounds of 128 new buffers: registered ${end[0]}, emptied ${end[1]}, in use ${end[2]}`)
    if (ring) {
      t.is(mid[2], SLOTS, 'the table was full')
      t.true(end[0] - mid[0] >= 64, 'new buffers registered once the old ones were gone')
      t.true(end[2] <= SLOTS)
    }
  } finally {
    await fh.close()
  }
})

test.serial('buffers transferred between batches (structuredClone with transfer): moved, the new views use the same memory and slot; copied (Node 20 copies external memory), the copy is plain memory; every byte right', async (t) => {
  const { fh, ring } = await ringFile(t, 'transfer')
  try {
    const src = patterned(fh, 16, 3)
    await roundTrip(t, fh, src, 0)
    const before = auto()
    const expect = src.map((b) => Buffer.from(b))
    const moved = src.map((b) => {
      const ab = b.buffer as ArrayBuffer
      return new Uint8Array(structuredClone(ab, { transfer: [ab] }), b.byteOffset, b.byteLength)
    })
    const detached = src[0].byteLength === 0
    t.log(detached ? 'moved (the old views detached)' : 'copied (the old views keep their memory)')
    if (detached) await t.throwsAsync(async () => fh.writeMany(at(src.slice(0, 1))), { code: 'ERR_ODIRECT_DETACHED' })
    for (let i = 0; i < 16; i++) {
      moved[i][100] = 0x5a
      expect[i][100] = 0x5a
    }
    await fh.writeMany(at(moved), { window: 8 })
    await fh.writeMany(at(moved), { window: 8 })
    if (ring) t.is(auto()[0], before[0], detached ? 'same allocations: no new registration' : 'plain memory: never registered')
    const back = moved.map(() => fh.alloc(UNIT))
    await fh.readMany(at(back), { window: 8 })
    await fh.readMany(at(back), { window: 8 })
    for (let i = 0; i < 16; i++) t.true(back[i].equals(expect[i]), `block ${i}`)
  } finally {
    await fh.close()
  }
})

test.serial('a worker whose batches run on its own automatically registered buffers, terminated mid-batch: this thread goes on, every byte right', async (t) => {
  const { fh } = await ringFile(t, 'worker')
  try {
    const file = path.join(path.dirname(fh.path), 'worker-file')
    fs.writeFileSync(file, Buffer.alloc(256 * UNIT, 0x33))
    const src = patterned(fh, 32, 9)
    await roundTrip(t, fh, src, 0)
    const code = `
      const { parentPort, workerData } = require('node:worker_threads')
      const { open } = require(${JSON.stringify(DIST)})
      const { getEngine } = require(${JSON.stringify(path.join(path.dirname(DIST), 'src', 'engine.js'))})
      ;(async () => {
        const fh = await open(workerData.file, 'r+')
        const bufs = Array.from({ length: 128 }, () => fh.alloc(4096))
        const ops = bufs.map((buffer, i) => ({ buffer, position: (i % 256) * 4096 }))
        for (let k = 0; ; k++) {
          const p = k % 2 === 0 ? fh.readMany(ops, { window: 32 }) : fh.writeMany(ops, { window: 32 })
          if (k === 5) parentPort.postMessage(getEngine().native.callStats.slice(8, 11))
          await p
        }
      })()`
    const worker = new Worker(code, { eval: true, workerData: { file } })
    const stats = await new Promise<number[]>((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
      worker.once('exit', (c) => reject(new Error(`worker exited ${c} before its fifth batch`)))
    })
    t.log(`worker's table when terminated: registered ${stats[0]}, in use ${stats[2]}`)
    await worker.terminate()
    for (let round = 0; round < 4; round++) await roundTrip(t, fh, patterned(fh, 64, 20 + round), round * 64)
    if (gc !== undefined) gc()
    await roundTrip(t, fh, patterned(fh, 64, 40), 0)
    // The worker's file: every block the worker wrote is the 0x33 it read (its buffers were
    // read into, then written back), whatever its termination cut.
    const rest = fs.readFileSync(file)
    t.true(rest.every((x) => x === 0x33), 'the worker wrote back only what it read')
  } finally {
    await fh.close()
  }
})

test.serial("a registration of the caller's replaces the table; its buffers and the earlier ones still land; unregistered, the automatic table comes back", async (t) => {
  const { fh, ring } = await ringFile(t, 'caller')
  try {
    const src = patterned(fh, 16, 5)
    await roundTrip(t, fh, src, 0)
    if (ring) t.true(auto()[2] > 0, 'slots in use')
    const reg = fh.registerBuffers(2, UNIT)
    t.deepEqual(auto(), [0, 0, 0], 'the automatic table is gone')
    reg.buffers[0].fill(0x77)
    await fh.write(reg.buffers[0], { position: 100 * UNIT })
    await fh.read(reg.buffers[1], { position: 100 * UNIT })
    t.true(reg.buffers[1].every((x) => x === 0x77))
    await roundTrip(t, fh, src, 0)
    t.deepEqual(auto(), [0, 0, 0], 'no automatic registration beside the caller’s')
    reg.unregister()
    await roundTrip(t, fh, src, 0)
    if (ring) t.true(auto()[2] > 0, 'the automatic table again')
  } finally {
    await fh.close()
  }
})

test.serial('resizable (plain) memory resized between batches: never registered, bounced, every byte right', async (t) => {
  const { fh, ring } = await ringFile(t, 'resizable')
  try {
    const before = auto()[0]
    const ab = new ArrayBuffer(8 * UNIT, { maxByteLength: 16 * UNIT })
    const whole = new Uint8Array(ab)
    whole.fill(0x42)
    const views = Array.from({ length: 8 }, (_, i) => new Uint8Array(ab, i * UNIT, UNIT))
    await fh.writeMany(at(views), { window: 4 })
    ab.resize(16 * UNIT)
    new Uint8Array(ab).fill(0x43)
    await fh.writeMany(at(views), { window: 4 })
    ab.resize(4 * UNIT)
    await t.throwsAsync(async () => fh.writeMany(at(views)), { code: 'ERR_OUT_OF_RANGE' }, 'views past the shrunk buffer are refused')
    const back = Array.from({ length: 8 }, () => fh.alloc(UNIT))
    await fh.readMany(at(back))
    for (const b of back) t.true(b.every((x) => x === 0x43))
    t.is(auto()[0], before, 'plain memory is never registered')
  } finally {
    await fh.close()
  }
})
