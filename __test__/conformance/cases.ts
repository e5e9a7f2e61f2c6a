// Runtime-neutral behaviour cases: the same list runs under Node (ava, Node 20 and 22), Bun
// (`bun test`) and Deno (`Deno.test`). A case gets a tiny assertion interface `t` and an `env`
// holding the package module (each adapter loads the built dist/index.js its own way), a scratch
// directory on a real filesystem (/var/tmp), and the runtime's name.
//
// Only node:* built-ins that Node, Bun and Deno all provide are used here.
import { Buffer } from 'node:buffer'
import { execFileSync, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import type * as Odirect from '../../dist/index.js'

export type Runtime = 'node' | 'bun' | 'deno'

export interface Env {
  od: typeof Odirect
  /** A fresh directory for this case, removed by the adapter afterwards. */
  dir: string
  runtime: Runtime
}

export interface ErrorExpectation {
  code?: string
  instanceOf?: abstract new (...args: never[]) => unknown
  message?: RegExp
}

/** The assertion interface every adapter provides (see `nodeAssertT` for the default one). */
export interface T {
  is(actual: unknown, expected: unknown, message?: string): void
  true(value: unknown, message?: string): void
  deepEqual(actual: unknown, expected: unknown, message?: string): void
  /** Awaits a promise (or calls a function returning one) that must reject as described. */
  throwsAsync(p: Promise<unknown> | (() => Promise<unknown>), expected?: ErrorExpectation): Promise<unknown>
  /** Calls a function that must throw synchronously as described. */
  throws(fn: () => unknown, expected?: ErrorExpectation): unknown
  /** Ends the case as skipped (never returns). Adapters report the reason. */
  skip(reason: string): never
  log(...values: unknown[]): void
}

export interface Case {
  name: string
  /** Skipped up front on these runtimes, with the reason (a runtime issue, named). */
  skip?: Partial<Record<Runtime, string>>
  /**
   * Run by the adapters when they register the cases (before any case runs): a reason makes the
   * case a reported skip (never a pass). Cases do not skip themselves once started.
   */
  precheck?(env: Omit<Env, 'dir'>): string | undefined | Promise<string | undefined>
  fn(t: T, env: Env): Promise<void> | void
}

/** Thrown by `t.skip`; adapters turn it into a failure (a case that starts must run: use `precheck`). */
export class SkipSignal extends Error {
  constructor(readonly reason: string) {
    super(`skipped: ${reason}`)
    this.name = 'SkipSignal'
  }
}

/** Checks an error against an expectation; returns '' or what is wrong. */
export function errorMismatch(e: unknown, expected: ErrorExpectation | undefined): string {
  if (expected === undefined) return ''
  const err = e as { code?: unknown; message?: unknown } | null
  if (expected.instanceOf !== undefined && !(e instanceof (expected.instanceOf as unknown as new () => unknown))) {
    return `expected an instance of ${expected.instanceOf.name}, got ${String(e)}`
  }
  if (expected.code !== undefined && (err === null || typeof err !== 'object' || err.code !== expected.code)) {
    return `expected code ${expected.code}, got ${err !== null && typeof err === 'object' ? String(err.code) : 'no code'} (${String(e)})`
  }
  if (expected.message !== undefined && !expected.message.test(String(err?.message))) {
    return `expected message matching ${String(expected.message)}, got ${String(err?.message)}`
  }
  return ''
}

/**
 * The default assertion interface, on node:assert (which Node, Bun and Deno all ship). Bun and
 * Deno use it; the ava adapter maps onto ava's own assertions for its diffs.
 */
export async function nodeAssertT(log: (...v: unknown[]) => void = console.log): Promise<T> {
  const assert = (await import('node:assert')).strict
  return {
    is: (a, b, m) => assert.ok(Object.is(a, b), m ?? `expected ${String(b)}, got ${String(a)}`),
    true: (v, m) => assert.ok(v === true, m ?? `expected true, got ${String(v)}`),
    deepEqual: (a, b, m) => assert.deepStrictEqual(a, b, m),
    throwsAsync: async (p, expected) => {
      let caught: { e: unknown } | undefined
      try {
        await (typeof p === 'function' ? p() : p)
      } catch (e) {
        caught = { e }
      }
      if (caught === undefined) return assert.fail(`expected a rejection${expected?.code ? ` with code ${expected.code}` : ''}, but it resolved`)
      const bad = errorMismatch(caught.e, expected)
      if (bad !== '') assert.fail(bad)
      return caught.e
    },
    throws: (fn, expected) => {
      let caught: { e: unknown } | undefined
      try {
        fn()
      } catch (e) {
        caught = { e }
      }
      if (caught === undefined) return assert.fail(`expected a throw${expected?.code ? ` with code ${expected.code}` : ''}, but it returned`)
      const bad = errorMismatch(caught.e, expected)
      if (bad !== '') assert.fail(bad)
      return caught.e
    },
    skip: (reason) => {
      throw new SkipSignal(reason)
    },
    log,
  }
}

// ---------------------------------------------------------------------------------------------
// helpers

const KiB = 1024
const MiB = 1024 * KiB

function sha(b: ArrayBufferView): string {
  return createHash('sha256').update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength)).digest('hex')
}

/** A position-dependent pattern: byte i of the file is f(i), so any misplaced byte shows. */
function pattern(size: number, seed = 0): Uint8Array {
  const b = new Uint8Array(size)
  const dv = new DataView(b.buffer)
  for (let i = 0; i + 4 <= size; i += 4) dv.setUint32(i, (Math.imul(i + seed, 2654435761) ^ seed) >>> 0, true)
  return b
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return a.length === b.length ? -1 : n
}

function sameBytes(t: T, actual: Uint8Array, expected: Uint8Array, what: string): void {
  const at = firstDifference(actual, expected)
  t.is(at, -1, `${what}: first differing byte at ${at} (length ${actual.length} vs ${expected.length})`)
}

function u8(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
}

/** Detaches `ab` the way a user would (structuredClone transfer, or ArrayBuffer#transfer). */
function detach(ab: ArrayBuffer): void {
  const withTransfer = ab as ArrayBuffer & { transfer?: () => ArrayBuffer }
  if (typeof structuredClone === 'function') {
    try {
      structuredClone(ab, { transfer: [ab] })
      if (ab.byteLength === 0) return
    } catch {
      // fall through
    }
  }
  if (typeof withTransfer.transfer === 'function') withTransfer.transfer()
}

function streamsMissing({ od }: Omit<Env, 'dir'>): string | undefined {
  if (typeof (od as { createReadStream?: unknown }).createReadStream !== 'function') return 'createReadStream is not exported by this build'
  return undefined
}

/** Why registered buffers can't be tried here (RLIMIT_MEMLOCK too low), or undefined. */
async function memlockMissing({ od, runtime }: Omit<Env, 'dir'>): Promise<string | undefined> {
  const dir = fs.mkdtempSync(path.join('/var/tmp', `odirect-conf-pre-${runtime}-`))
  try {
    const fh = await od.open(path.join(dir, 'f'), 'w+')
    try {
      fh.registerBuffers(4, 64 * KiB).unregister()
      return undefined
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_ODIRECT_MEMLOCK') return `RLIMIT_MEMLOCK too low here: ${(e as Error).message}`
      throw e
    } finally {
      await fh.close()
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------------------------
// the cases

export const cases: Case[] = [
  {
    name: 'exports: open, probe, allocAligned, addressOf, DirectIoError, FileHandle, constants',
    fn(t, { od }) {
      for (const k of ['open', 'probe', 'allocAligned', 'addressOf'] as const) t.is(typeof od[k], 'function', k)
      t.is(typeof od.DirectIoError, 'function')
      t.is(typeof od.FileHandle, 'function')
      t.true(Number.isInteger(od.PAGE_SIZE) && od.PAGE_SIZE >= 4096, `PAGE_SIZE ${od.PAGE_SIZE}`)
      t.is(od.MAX_IO_LENGTH, 0x7ffff000)
    },
  },
  {
    name: 'probe: kernel, O_DIRECT works on the scratch filesystem, alignment with its source, backends',
    async fn(t, { od, dir }) {
      const r = await od.probe(dir)
      t.true(/^Linux /.test(r.kernel), r.kernel)
      t.true(r.direct.works, r.direct.reason)
      t.true(r.alignment !== undefined, 'alignment reported')
      const a = r.alignment!
      t.true(['statx', 'ioctl', 'sysfs', 'fstat', 'default'].includes(a.source), a.source)
      t.is(a.offset & (a.offset - 1), 0, 'offset alignment is a power of two')
      t.true(r.backends.threadpool.available, r.backends.threadpool.reason)
      for (const b of ['io_uring', 'aio'] as const) {
        t.is(typeof r.backends[b].available, 'boolean')
        if (!r.backends[b].available) t.true(r.backends[b].reason.length > 0, `${b} says why not`)
      }
      t.true(!fs.readdirSync(dir).some((f) => f.startsWith('.odirect-probe-')), 'no probe file left behind')
    },
  },
  {
    name: 'open/write/read round trip with O_DIRECT: 4 MiB, sha256 matches, stat size',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'rt.bin')
      const fh = await od.open(file, 'w+')
      try {
        t.true(fh.direct, 'O_DIRECT in effect')
        t.is(fh.fallbackReason, '')
        t.true(['io_uring', 'aio', 'threadpool'].includes(fh.backend), fh.backend)
        const data = fh.alloc(4 * MiB)
        data.set(randomBytes(data.length))
        t.is(od.addressOf(data) % fh.alignment.memory, 0, 'alloc is aligned')
        t.is((await fh.write(data, { position: 0 })).bytesWritten, data.length)
        await fh.datasync()
        const back = fh.alloc(4 * MiB)
        t.is((await fh.read(back, { position: 0 })).bytesRead, back.length)
        t.is(sha(back), sha(data))
        t.is((await fh.stat()).size, data.length)
        t.is(fs.statSync(file).size, data.length)
      } finally {
        await fh.close()
      }
      t.true(fh.closed)
    },
  },
  {
    name: 'every available backend does an O_DIRECT round trip',
    async fn(t, { od, dir }) {
      const r = await od.probe(dir)
      let ran = 0
      for (const b of ['io_uring', 'aio', 'threadpool'] as const) {
        if (!r.backends[b].available) {
          t.log(`${b}: not available here (${r.backends[b].reason})`)
          continue
        }
        const fh = await od.open(path.join(dir, `b-${b}.bin`), 'w+', { backend: b })
        try {
          t.is(fh.backend, b)
          const data = fh.alloc(256 * KiB)
          data.set(pattern(data.length, ran + 1))
          t.is((await fh.write(data, { position: 64 * KiB })).bytesWritten, data.length)
          const back = fh.alloc(256 * KiB)
          t.is((await fh.read(back, { position: 64 * KiB })).bytesRead, back.length)
          sameBytes(t, back, data, b)
          ran++
        } finally {
          await fh.close()
        }
      }
      t.true(ran >= 1, 'at least the thread pool ran')
    },
  },
  {
    name: '64 ops in flight: 64 x 64 KiB writes then reads at shuffled positions, per-block checksums',
    async fn(t, { od, dir }) {
      const fh = await od.open(path.join(dir, 'qd.bin'), 'w+')
      try {
        const block = 64 * KiB
        const n = 64
        const order = [...Array(n).keys()].sort(() => Math.random() - 0.5)
        const src = order.map((i) => {
          const b = fh.alloc(block)
          b.set(pattern(block, i * 7919 + 1))
          return b
        })
        const wrote = (await Promise.all(order.map((blk, k) => fh.write(src[k], { position: blk * block })))).map((r) => r.bytesWritten)
        t.deepEqual(wrote, new Array(n).fill(block))
        const dst = order.map(() => fh.alloc(block))
        const inflight = order.map((blk, k) => fh.read(dst[k], { position: blk * block }))
        t.true(fh.stats().inflight > 0, 'reads were in flight together')
        t.deepEqual((await Promise.all(inflight)).map((r) => r.bytesRead), new Array(n).fill(block))
        for (let k = 0; k < n; k++) t.is(sha(dst[k]), sha(src[k]), `block ${order[k]}`)
        const s = fh.stats()
        t.is(s.writes, n)
        t.is(s.reads, n)
        t.is(s.bytesRead, n * block)
        t.is(s.inflight, 0)
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'EOF: a read across end of file is short, a read past it returns 0',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'eof.bin')
      const fh = await od.open(file, 'w+')
      try {
        const unit = fh.alignment.offset
        const data = fh.alloc(4 * unit)
        data.set(pattern(data.length, 3))
        await fh.write(data, { position: 0 })
        await fh.truncate(3 * unit + 100)
        const buf = fh.alloc(2 * unit)
        buf.fill(0xee)
        t.is((await fh.read(buf, { position: 2 * unit })).bytesRead, unit + 100)
        sameBytes(t, buf.subarray(0, unit + 100), data.subarray(2 * unit, 3 * unit + 100), 'short read bytes')
        t.is((await fh.read(buf, { position: 4 * unit })).bytesRead, 0)
        t.is((await fh.read(buf, { position: 1000 * unit })).bytesRead, 0)
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'writev/readv: gather and scatter across three buffers',
    async fn(t, { od, dir }) {
      const fh = await od.open(path.join(dir, 'v.bin'), 'w+')
      try {
        const unit = fh.alignment.offset
        const sizes = [unit, 4 * unit, 2 * unit]
        const src = sizes.map((s, i) => {
          const b = fh.alloc(s)
          b.set(pattern(s, 100 + i))
          return b
        })
        const total = sizes.reduce((a, b) => a + b, 0)
        t.is((await fh.writev(src, unit)).bytesWritten, total)
        const dst = sizes.map((s) => fh.alloc(s))
        t.is((await fh.readv(dst, unit)).bytesRead, total)
        for (let i = 0; i < 3; i++) sameBytes(t, dst[i], src[i], `buffer ${i}`)
        // The file holds them back to back.
        const whole = fh.alloc(total)
        t.is((await fh.read(whole, { position: unit })).bytesRead, total)
        let at = 0
        for (const s of src) {
          sameBytes(t, whole.subarray(at, at + s.length), s, `at ${at}`)
          at += s.length
        }
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'writeMany/readMany: one submission, results in order',
    async fn(t, { od, dir }) {
      const fh = await od.open(path.join(dir, 'many.bin'), 'w+')
      try {
        const block = 16 * KiB
        const positions = [7, 0, 3, 12, 5].map((i) => i * block)
        const src = positions.map((p) => {
          const b = fh.alloc(block)
          b.set(pattern(block, p + 11))
          return b
        })
        t.deepEqual(await fh.writeMany(positions.map((position, i) => ({ buffer: src[i], position }))), positions.map(() => block))
        const dst = positions.map(() => fh.alloc(block))
        t.deepEqual(await fh.readMany(positions.map((position, i) => ({ buffer: dst[i], position: BigInt(position) }))), positions.map(() => block))
        for (let i = 0; i < positions.length; i++) sameBytes(t, dst[i], src[i], `op ${i}`)
        t.deepEqual(await fh.readMany([]), [])
        // Past EOF in a batch: 0 for that op, the others full.
        const far = fh.alloc(block)
        t.deepEqual(await fh.readMany([{ buffer: dst[0], position: 0 }, { buffer: far, position: 1000 * block }]), [block, 0])
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'writeMany/readMany over typed arrays: one region, the window refilled by the engine, results per op',
    async fn(t, { od, dir }) {
      const fh = await od.open(path.join(dir, 'typed.bin'), 'w+')
      try {
        const block = 16 * KiB
        const n = 40
        const memory = fh.alloc(n * block)
        for (let i = 0; i < n; i++) memory.set(pattern(block, i * 7 + 1), i * block)
        const offsets = new Uint32Array(n).map((_, i) => i * block)
        const lengths = new Uint32Array(n).fill(block)
        const positions = new Float64Array(n).map((_, i) => ((i * 13) % n) * block)
        const wrote = await fh.writeMany({ memory, offsets, lengths, positions }, { window: 4 })
        t.deepEqual([...wrote], new Array(n).fill(block))
        const back = fh.alloc(n * block)
        const results = new Int32Array(n + 1)
        t.is(await fh.readMany({ memory: back, offsets, lengths, positions: new BigInt64Array(n).map((_, i) => BigInt(positions[i])), results }, { window: 4 }), results)
        t.deepEqual([...results], [...new Array(n).fill(block), 0])
        sameBytes(t, back, memory, 'the region')
        // Past EOF: 0 for that op.
        const far = await fh.readMany({ memory: back, offsets: new Uint32Array([0, block]), lengths: new Uint32Array([block, block]), positions: new Float64Array([0, 1000 * block]) })
        t.deepEqual([...far], [block, 0])
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'implicit position: reads and writes without a position advance the handle position',
    async fn(t, { od, dir }) {
      const fh = await od.open(path.join(dir, 'seq.bin'), 'w+')
      try {
        const unit = fh.alignment.offset
        const a = fh.alloc(unit).fill(1)
        const b = fh.alloc(unit).fill(2)
        t.is((await fh.write(a)).bytesWritten, unit)
        t.is((await fh.write(b)).bytesWritten, unit)
        const back = fh.alloc(2 * unit)
        t.is((await fh.read(back, { position: 0 })).bytesRead, 2 * unit)
        t.is(back[0], 1)
        t.is(back[unit], 2)
        t.is((await fh.read({ buffer: back, position: unit })).bytesRead, unit)
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'misuse: alignment of length and position is refused before any system call; unaligned memory is bounced',
    async fn(t, { od, dir }) {
      const fh = await od.open(path.join(dir, 'mis.bin'), 'w+')
      try {
        const unit = fh.alignment.offset
        const big = fh.alloc(4 * unit)
        await fh.write(big, { position: 0 })
        if (unit > 1) {
          const e = (await t.throwsAsync(fh.read(big.subarray(0, unit - 1), { position: 0 }), { code: 'ERR_ODIRECT_ALIGNMENT', instanceOf: od.DirectIoError })) as Odirect.DirectIoError
          t.true(e.hint.length > 0, 'has a hint')
          t.is(e.errno, undefined)
          await t.throwsAsync(fh.write(big.subarray(0, unit), { position: 1 }), { code: 'ERR_ODIRECT_ALIGNMENT' })
          await t.throwsAsync(fh.readv([big.subarray(0, unit), big.subarray(0, unit - 1)], 0), { code: 'ERR_ODIRECT_ALIGNMENT' })
          await t.throwsAsync(fh.readMany([{ buffer: big.subarray(0, unit), position: 3 }]), { code: 'ERR_ODIRECT_ALIGNMENT' })
        }
        t.is((await fh.read(new Uint8Array(0), { position: 0 })).bytesRead, 0, 'a zero-length read is 0 bytes, as in node:fs')
        await t.throwsAsync(fh.read('nope' as unknown as Uint8Array, 0), { code: 'ERR_INVALID_ARG_TYPE' })
        t.is(fh.stats().ops, 1, 'only the setup write reached the kernel')
        // Memory alignment is not the caller's problem any more: an unaligned view is copied
        // through an aligned bounce buffer (counted in stats().bounced) and reads the right bytes.
        const src = fh.alloc(unit)
        src.set(pattern(unit, 5))
        await fh.write(src, { position: unit })
        const odd = big.subarray(1, 1 + unit)
        const bounced0 = fh.stats().bounced
        t.is((await fh.read(odd, { position: unit })).bytesRead, unit)
        sameBytes(t, odd, src, 'bounced read')
        t.is(fh.stats().bounced, bounced0 + 1, 'the unaligned read was bounced')
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'misuse: bad positions, closed handle, detached buffer, flags and options',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'mis2.bin')
      const fh = await od.open(file, 'w+')
      const unit = fh.alignment.offset
      const buf = fh.alloc(unit)
      await t.throwsAsync(fh.read(buf, { position: -unit }), { code: 'ERR_OUT_OF_RANGE' })
      await t.throwsAsync(fh.read(buf, { position: 1.5 }), { code: 'ERR_OUT_OF_RANGE' })
      await t.throwsAsync(fh.read(buf, { position: 2 ** 60 }), { code: 'ERR_OUT_OF_RANGE' })
      await t.throwsAsync(fh.read(buf, { position: -2n }), { code: 'ERR_OUT_OF_RANGE' })
      await t.throwsAsync(fh.read(buf, { position: 'x' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' })
      await t.throwsAsync(fh.truncate(-1), { code: 'ERR_OUT_OF_RANGE' })
      // A plain V8 buffer: every runtime can detach it (odirect's own memory may be copied instead).
      const detachable = new Uint8Array(unit)
      detach(detachable.buffer as ArrayBuffer)
      t.is(detachable.byteLength, 0, 'the buffer was detached')
      await t.throwsAsync(fh.read(detachable, { position: 0 }), { code: 'ERR_ODIRECT_DETACHED' })
      await fh.close()
      await fh.close() // idempotent
      t.true(fh.closed)
      await t.throwsAsync(fh.read(buf, { position: 0 }), { code: 'ERR_ODIRECT_CLOSED' })
      await t.throwsAsync(fh.write(buf, { position: 0 }), { code: 'ERR_ODIRECT_CLOSED' })
      await t.throwsAsync(fh.stat(), { code: 'ERR_ODIRECT_CLOSED' })
      await t.throwsAsync(od.open(file, 'a' as 'r'), { code: 'ERR_ODIRECT_FLAGS' })
      await t.throwsAsync(od.open(file, 'a+' as 'r'), { code: 'ERR_ODIRECT_FLAGS' })
      await t.throwsAsync(od.open(file, 42 as unknown as 'r'), { code: 'ERR_ODIRECT_FLAGS' })
      // Options fs does not know are ignored, as fs ignores them.
      await (await od.open(file, 'r', { bogus: true } as never)).close()
      await t.throwsAsync(od.open(file, 'r', { direct: 'maybe' as 'off' }), { code: 'ERR_INVALID_ARG_VALUE' })
      await t.throwsAsync(od.open('', 'r'), { code: 'ERR_INVALID_ARG_VALUE' })
      t.throws(() => od.allocAligned(4096, 3), { code: 'ERR_INVALID_ARG_VALUE' })
      t.throws(() => od.allocAligned(0), { code: 'ERR_OUT_OF_RANGE' })
    },
  },
  {
    name: 'errors: writing a read-only handle is ERR_ODIRECT_FLAGS before any syscall; ENOENT, EEXIST typed with errno',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'ro.bin')
      fs.writeFileSync(file, new Uint8Array(64 * KiB))
      const ro = await od.open(file, 'r')
      try {
        const buf = ro.alloc(4 * KiB)
        const e = (await t.throwsAsync(ro.write(buf, { position: 0 }), { code: 'ERR_ODIRECT_FLAGS', instanceOf: od.DirectIoError })) as Odirect.DirectIoError
        t.is(e.errno, undefined)
        t.is(e.syscall, 'write')
        t.is(e.path, file)
        t.true(e instanceof Error)
        t.is(ro.stats().ops, 0, 'nothing reached the kernel')
        t.is((await ro.read(buf, { position: 0 })).bytesRead, buf.length, 'the handle still reads')
      } finally {
        await ro.close()
      }
      const missing = path.join(dir, 'missing', 'x.bin')
      const noent = (await t.throwsAsync(od.open(missing, 'r'), { code: 'ENOENT', instanceOf: od.DirectIoError })) as Odirect.DirectIoError
      t.is(noent.errno, -2)
      t.is(noent.path, missing)
      await t.throwsAsync(od.open(file, 'wx'), { code: 'EEXIST' })
    },
  },
  {
    name: 'truncate, allocate and stat',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'tr.bin')
      const fh = await od.open(file, 'w+', { mode: 0o640 })
      try {
        await fh.truncate(10_000)
        let s = await fh.stat()
        t.is(s.size, 10_000)
        t.true(s.isFile())
        t.is(s.isBlockDevice(), false)
        t.is(s.mode & 0o777 & ~0o640, 0, 'mode within 0o640')
        await fh.truncate(0n)
        t.is((await fh.stat()).size, 0)
        await fh.allocate(0, 1 * MiB)
        s = await fh.stat()
        t.is(s.size, 1 * MiB)
        t.true(s.blocks * 512 >= 1 * MiB, `allocated blocks ${s.blocks}`)
        await fh.truncate()
        t.is(fs.statSync(file).size, 0)
        await fh.sync()
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'registerBuffers: pinned buffers write and read back',
    precheck: memlockMissing,
    async fn(t, { od, dir }) {
      const fh = await od.open(path.join(dir, 'reg.bin'), 'w+')
      try {
        const reg = fh.registerBuffers(4, 64 * KiB)
        t.true(reg.registered)
        t.is(reg.backend, fh.backend)
        t.is(reg.buffers.length, 4)
        for (const b of reg.buffers) t.is(od.addressOf(b) % fh.alignment.memory, 0)
        reg.buffers[0].set(pattern(64 * KiB, 77))
        t.is((await fh.write(reg.buffers[0], { position: 0 })).bytesWritten, 64 * KiB)
        t.is((await fh.write(reg.buffers[0].subarray(0, 16 * KiB), { position: 64 * KiB })).bytesWritten, 16 * KiB)
        t.is((await fh.read(reg.buffers[1], { position: 0 })).bytesRead, 64 * KiB)
        sameBytes(t, reg.buffers[1], reg.buffers[0], 'registered round trip')
        const kept = reg.buffers[2]
        reg.unregister()
        reg.unregister()
        t.is(reg.registered, false)
        t.is(reg.buffers.length, 0, 'unregister() drops the buffers list')
        t.is((await fh.read(kept, { position: 0 })).bytesRead, 64 * KiB, 'a kept buffer is still usable as a plain aligned buffer')
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'memory: the bytes the kernel wrote are the bytes JS reads (views at offsets, guard bytes untouched)',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'mem.bin')
      const size = 1 * MiB
      const want = pattern(size, 0x5eed)
      fs.writeFileSync(file, want) // through the page cache; O_DIRECT reads flush it first
      const fh = await od.open(file, 'r')
      try {
        const unit = Math.max(fh.alignment.offset, fh.alignment.memory)
        // A larger aligned buffer; read into a view in its middle, guard bytes around it.
        const outer = od.allocAligned(size + 2 * unit, Math.max(od.PAGE_SIZE, fh.alignment.memory))
        outer.fill(0xa5)
        const view = outer.subarray(unit, unit + size)
        t.is((await fh.read(view, { position: 0 })).bytesRead, size)
        sameBytes(t, view, want, 'Uint8Array view')
        t.true(outer.subarray(0, unit).every((x) => x === 0xa5), 'guard before untouched')
        t.true(outer.subarray(unit + size).every((x) => x === 0xa5), 'guard after untouched')
        // Other view types over aligned memory see the same bytes.
        const raw = od.allocAligned(64 * KiB)
        const u32 = new Uint32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)
        t.is((await fh.read(u32, { position: 128 * KiB })).bytesRead, 64 * KiB)
        sameBytes(t, u8(u32), want.subarray(128 * KiB, 192 * KiB), 'Uint32Array')
        const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength)
        t.is((await fh.read(dv, { position: 256 * KiB })).bytesRead, 64 * KiB)
        sameBytes(t, u8(dv), want.subarray(256 * KiB, 320 * KiB), 'DataView')
        t.is(dv.getUint32(0, true), new DataView(want.buffer).getUint32(256 * KiB, true))
        const nodeBuf = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
        t.is((await fh.read(nodeBuf, { position: 512 * KiB })).bytesRead, 64 * KiB)
        sameBytes(t, u8(nodeBuf), want.subarray(512 * KiB, 576 * KiB), 'Buffer')
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: 'memory: the bytes JS wrote are the bytes on disk (node:fs reads them back)',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'mem-w.bin')
      const fh = await od.open(file, 'w')
      try {
        const buf = fh.alloc(512 * KiB)
        buf.set(pattern(buf.length, 0xbeef))
        t.is((await fh.write(buf, { position: 0 })).bytesWritten, buf.length)
        // A later JS change to the buffer must not reach the file.
        buf.fill(0)
      } finally {
        await fh.close()
      }
      sameBytes(t, new Uint8Array(fs.readFileSync(file)), pattern(512 * KiB, 0xbeef), 'file contents')
    },
  },
  {
    name: 'memory safety: buffers detached (transfer, structuredClone) right after 64 reads were started: every read settles, fresh memory never holds file bytes',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'detach.bin')
      // A marker no fresh allocation holds: 0xA5 then the block index.
      const size = 4 * MiB
      const data = Buffer.alloc(size, 0xa5)
      fs.writeFileSync(file, data)
      const fh = await od.open(file, 'r')
      const unit = 64 * KiB
      const owned = Array.from({ length: 32 }, () => fh.alloc(unit))
      const plain = Array.from({ length: 32 }, () => new Uint8Array(unit))
      const reads = [...owned, ...plain].map((b, i) => fh.read(b, { position: (i % 64) * unit }))
      let detached = 0
      for (const b of [...owned, ...plain]) {
        detach(b.buffer as ArrayBuffer)
        if (b.byteLength === 0) detached++
      }
      // Churn: fresh allocations while the kernel may still be writing.
      let dirty = 0
      for (let round = 0; round < 64; round++) {
        const fresh = new Uint8Array(unit)
        if (fresh[0] === 0xa5 && fresh[unit - 1] === 0xa5) dirty++
      }
      const settled = await Promise.allSettled(reads)
      for (let round = 0; round < 256; round++) {
        const fresh = new Uint8Array(unit)
        if (fresh.some((x) => x === 0xa5)) dirty++
      }
      await fh.close()
      t.is(dirty, 0, 'fresh allocations never contain file bytes')
      let ok = 0
      let refused = 0
      for (const r of settled) {
        if (r.status === 'fulfilled') {
          t.is(r.value.bytesRead, unit)
          ok++
        } else {
          t.is((r.reason as { code?: string }).code, 'ERR_ODIRECT_DETACHED', String(r.reason))
          refused++
        }
      }
      t.is(ok + refused, 64)
      t.log(`${detached} of 64 buffers detached by this runtime; ${ok} reads resolved (odirect memory), ${refused} refused as detached`)
    },
  },
  {
    name: 'close waits for ops in flight; they settle normally',
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'close.bin')
      fs.writeFileSync(file, pattern(1 * MiB, 9))
      const fh = await od.open(file, 'r')
      const bufs = Array.from({ length: 16 }, () => fh.alloc(64 * KiB))
      const reads = bufs.map((b, i) => fh.read(b, { position: i * 64 * KiB }))
      const closing = fh.close()
      t.true(fh.closed)
      t.deepEqual((await Promise.all(reads)).map((r) => r.bytesRead), bufs.map(() => 64 * KiB))
      await closing
      const want = pattern(1 * MiB, 9)
      for (let i = 0; i < 16; i++) sameBytes(t, bufs[i], want.subarray(i * 64 * KiB, (i + 1) * 64 * KiB), `read ${i}`)
    },
  },
  {
    name: 'AbortSignal: an aborted signal rejects with AbortError (ABORT_ERR)',
    async fn(t, { od, dir }) {
      const fh = await od.open(path.join(dir, 'abort.bin'), 'w+')
      try {
        const ac = new AbortController()
        ac.abort()
        const e = (await t.throwsAsync(fh.read(fh.alloc(4096), { position: 0, signal: ac.signal }), { code: 'ABORT_ERR' })) as Error
        t.is(e.name, 'AbortError')
        // A signal that is never aborted does not get in the way.
        const live = new AbortController()
        t.is((await fh.write(fh.alloc(4096), { position: 0, signal: live.signal })).bytesWritten, 4096)
      } finally {
        await fh.close()
      }
    },
  },
  {
    name: "direct: 'off' and 'prefer' open buffered or direct handles as documented",
    async fn(t, { od, dir }) {
      const file = path.join(dir, 'modes.bin')
      const off = await od.open(file, 'w+', { direct: 'off' })
      try {
        t.is(off.direct, false)
        // Alignment rules are lifted without O_DIRECT.
        const odd = new Uint8Array(1000).fill(7)
        t.is((await off.write(odd, { position: 3 })).bytesWritten, 1000)
        const back = new Uint8Array(1000)
        t.is((await off.read(back, { position: 3 })).bytesRead, 1000)
        t.is(back[999], 7)
      } finally {
        await off.close()
      }
      const pref = await od.open(file, 'r+', { direct: 'prefer' })
      try {
        t.is(pref.direct, true, 'ext4/tmpfs support O_DIRECT, so prefer gives it')
        t.is(pref.fallbackReason, '')
      } finally {
        await pref.close()
      }
    },
  },
  {
    name: 'streams: createWriteStream then createReadStream through stream/promises pipeline',
    precheck: streamsMissing,
    async fn(t, { od, dir }) {
      const s = od as unknown as {
        createReadStream(p: string, o?: object): Readable
        createWriteStream(p: string, o?: object): Writable
      }
      const file = path.join(dir, 'stream.bin')
      const total = 3 * MiB + 12345 // not a multiple of the block size
      const data = pattern(total, 42)
      const chunks: Uint8Array[] = []
      for (let at = 0; at < total; at += 100_003) chunks.push(data.subarray(at, Math.min(total, at + 100_003)))
      await pipeline(Readable.from(chunks), s.createWriteStream(file))
      t.is(fs.statSync(file).size, total)
      const got: Uint8Array[] = []
      await pipeline(
        s.createReadStream(file),
        new Writable({
          write(chunk: Uint8Array, _enc, cb) {
            got.push(Uint8Array.from(chunk))
            cb()
          },
        }),
      )
      const all = new Uint8Array(got.reduce((n, c) => n + c.length, 0))
      let at = 0
      for (const c of got) {
        all.set(c, at)
        at += c.length
      }
      t.is(all.length, total)
      t.is(sha(all), sha(data))
    },
  },
  {
    name: 'web streams: writableWebStream then readableWebStream',
    precheck(env) {
      const s = env.od as unknown as Record<string, unknown>
      if (typeof s.readableWebStream !== 'function' || typeof s.writableWebStream !== 'function') return 'web streams are not exported by this build'
      return undefined
    },
    async fn(t, { od, dir }) {
      const s = od as unknown as {
        readableWebStream?(p: string, o?: object): ReadableStream<Uint8Array>
        writableWebStream?(p: string, o?: object): WritableStream<Uint8Array>
      }
      const file = path.join(dir, 'web.bin')
      const total = 2 * MiB + 999
      const data = pattern(total, 4242)
      const w = s.writableWebStream!(file).getWriter()
      for (let at = 0; at < total; at += 65_537) await w.write(data.slice(at, Math.min(total, at + 65_537)))
      await w.close()
      t.is(fs.statSync(file).size, total)
      const h = createHash('sha256')
      let n = 0
      const reader = s.readableWebStream!(file).getReader()
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        h.update(value)
        n += value.length
      }
      t.is(n, total)
      t.is(h.digest('hex'), sha(data))
    },
  },
  {
    name: 'helpers: a FIFO destination is written in place (it stays a FIFO), a /proc source is read to its end',
    async fn(t, { od, dir }) {
      const fifo = path.join(dir, 'fifo')
      execFileSync('mkfifo', [fifo])
      const src = path.join(dir, 'src.bin')
      const data = pattern(MiB + 77, 15)
      fs.writeFileSync(src, data)
      // The reader is another process (as a shell's `cat`): Deno's node:fs writes to a pipe block
      // its JS thread while the pipe is full, so a reader in the same process would never run.
      const reader = spawn('sh', ['-c', `sha256sum < '${fifo}'`], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      reader.stdout.on('data', (d: Buffer) => (out += String(d)))
      const exited = new Promise<void>((resolve) => reader.on('close', () => resolve()))
      const r = await od.copyFile(src, fifo)
      await exited
      t.is(r.bytes, data.length)
      t.is(out.split(' ')[0], sha(data))
      t.true(fs.statSync(fifo).isFIFO(), 'still a FIFO')
      const want = fs.readFileSync('/proc/self/status', 'utf8').split('\n')[0]
      const back = await od.readFile('/proc/self/status', { direct: 'prefer', encoding: 'utf8' })
      t.is(back.split('\n')[0], want)
      const copy = path.join(dir, 'cpuinfo')
      const c = await od.copyFile('/proc/cpuinfo', copy, { direct: 'prefer' })
      t.true(c.bytes > 0 && fs.statSync(copy).size === c.bytes, `${c.bytes} bytes`)
      t.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-')), [])
    },
  },
  {
    name: "writeFile honours its signal at any moment; the caller's own error comes back as the same object",
    async fn(t, { od, dir }) {
      const dst = path.join(dir, 'dst.bin')
      fs.writeFileSync(dst, 'old')
      const ac = new AbortController()
      const chunks = async function* (): AsyncGenerator<Uint8Array> {
        yield new Uint8Array(MiB).fill(1)
        ac.abort()
        yield new Uint8Array(MiB).fill(2)
      }
      await t.throwsAsync(od.writeFile(dst, chunks(), { atomic: true, signal: ac.signal }), { code: 'ABORT_ERR' })
      t.is(fs.readFileSync(dst, 'utf8'), 'old')
      const boom = new Error('mine')
      const failing = async function* (): AsyncGenerator<Uint8Array> {
        yield new Uint8Array(4096)
        throw boom
      }
      const e = await t.throwsAsync(od.writeFile(dst, failing(), { atomic: true }))
      t.is(e, boom)
      t.is(fs.readFileSync(dst, 'utf8'), 'old')
      t.deepEqual(fs.readdirSync(dir), ['dst.bin'])
    },
  },
  {
    name: "FileHandle as Node's: 'close' event, writeFile/readFile at its position, constants from fs",
    async fn(t, { od, dir }) {
      const f = path.join(dir, 'h.txt')
      const fh = await od.open(f, 'w+', { direct: 'off' })
      let closed = 0
      fh.on('close', () => closed++)
      await fh.write('hello ')
      await od.writeFile(fh, 'world')
      t.is(fs.readFileSync(f, 'utf8'), 'hello world')
      t.is(fh.position, 11)
      await fh.close()
      t.is(closed, 1)
      t.is(od.constants.COPYFILE_EXCL, fs.constants.COPYFILE_EXCL)
      t.is(od.constants.O_CREAT, fs.constants.O_CREAT)
      const g = await od.open(f, od.constants.O_RDWR | od.constants.O_CREAT)
      t.is((await g.stat()).size, 11, 'numeric flags without O_TRUNC keep the data')
      await g.close()
      await t.throwsAsync(od.copyFile(f, f + '.x', od.constants.COPYFILE_EXCL).then(() => od.copyFile(f, f + '.x', od.constants.COPYFILE_EXCL)), { code: 'EEXIST' })
    },
  },
  {
    name: "streams as fs's: 'open' with the fd, 'ready', fd, pending, an encoding string as options",
    async fn(t, { od, dir }) {
      const f = path.join(dir, 's.txt')
      fs.writeFileSync(f, 'stream text')
      const rs = od.createReadStream(f, 'utf8')
      t.is(rs.pending, true)
      t.is(rs.fd, null)
      const fd = await new Promise<number>((resolve) => rs.once('open', resolve))
      t.is(typeof fd, 'number')
      await new Promise<void>((resolve) => (rs.pending ? rs.once('ready', () => resolve()) : resolve()))
      let text = ''
      for await (const c of rs) text += String(c)
      t.is(text, 'stream text')
    },
  },
]

/**
 * Why `c` is skipped on `runtime` (its static `skip` entry or its `precheck`), or undefined.
 * Adapters call it while registering, so a skipped case is reported as skipped, never as passed.
 */
export async function skipReasonFor(c: Case, od: typeof Odirect, runtime: Runtime): Promise<string | undefined> {
  const why = c.skip?.[runtime]
  if (why !== undefined) return `skipped on ${runtime}: ${why}`
  return c.precheck ? await c.precheck({ od, runtime }) : undefined
}

/** Runs one case with `t` in a fresh scratch directory under `root`. A `t.skip` inside a started case fails it. */
export async function runCase(c: Case, t: T, od: typeof Odirect, runtime: Runtime, root = '/var/tmp'): Promise<void> {
  const dir = fs.mkdtempSync(path.join(root, `odirect-conf-${runtime}-`))
  try {
    await c.fn(t, { od, dir, runtime })
  } catch (e) {
    if (e instanceof SkipSignal) throw new Error(`case "${c.name}" tried to skip after it started (${e.reason}); give it a precheck instead`)
    throw e
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
