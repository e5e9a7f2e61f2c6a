// Property-based tests (issue 3, point 5): thousands of random argument combinations thrown at
// every public function — each call either works or fails with a DirectIoError (never another
// error, never a crash) — and a write/verify soak per backend: 8 writers and 8 readers over random
// aligned ranges of a 64 MiB file, every block checked against its last completed write.
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'
import type { ExecutionContext } from 'ava'
import fc from 'fast-check'

import { addressOf, allocAligned, DirectIoError, type FileHandle, MAX_IO_LENGTH, open, PAGE_SIZE, probe } from '../dist/index.js'
import { rd, rdv, wr, wrv } from './helpers/rw.ts'


// Every test here names its backends itself (CI's per-backend ODIRECT_BACKEND runs must not
// turn the 'auto' cases into something else). Each spec file runs in its own process.
delete process.env.ODIRECT_BACKEND
type Backend = 'io_uring' | 'aio' | 'threadpool'
const BACKENDS: readonly Backend[] = ['io_uring', 'aio', 'threadpool']
const where = await probe('/var/tmp')
const backendSkip = (b: Backend): string | undefined =>
  where.backends[b].available ? undefined : `backend ${b} unavailable here: ${where.backends[b].reason}`

const gc = (globalThis as { gc?: () => void }).gc
const ROOT = fs.mkdtempSync('/var/tmp/odirect-props-')
test.after.always(() => fs.rmSync(ROOT, { recursive: true, force: true }))

/** A reproducible seed per run, printed so a failure can be replayed (FC_SEED=...). */
const SEED = process.env.FC_SEED ? Number(process.env.FC_SEED) : Date.now() ^ (process.pid << 8)
console.log(`props: fast-check seed ${SEED} (set FC_SEED to replay)`)

/** Registers per backend, or test.skip with the reason when the backend does not work here. */
function perBackend(title: string, fn: (t: ExecutionContext, backend: Backend) => Promise<void>): void {
  for (const backend of BACKENDS) {
    const name = `${title} [${backend}]`
    const reason = backendSkip(backend)
    if (reason) {
      console.log(`skipping "${name}": ${reason}`)
      test.skip(name, (t) => fn(t, backend))
    } else {
      test(name, (t) => fn(t, backend))
    }
  }
}

class Violation extends Error {}

/**
 * fc.assert, with the property's own error in the message: fast-check keeps it as the failure's
 * `cause`, which ava does not print, so a CI failure showed only "Property failed after N tests".
 */
async function assertProp(prop: unknown, params: unknown): Promise<void> {
  try {
    await (fc.assert as (p: unknown, q: unknown) => unknown)(prop, params)
  } catch (e) {
    const cause = (e as { cause?: unknown }).cause
    const why = cause instanceof Error ? `${cause.constructor.name}: ${cause.message}` : String(cause)
    const head = String((e as Error).message).split('\n').slice(0, 2).join(' ')
    throw new Error(`props violation: ${why.slice(0, 600)} [${head}]`, { cause: e })
  }
}

/** The one acceptable kind of failure: a DirectIoError with a code and a message. */
function checkError(e: unknown, what: string, allow?: unknown): DirectIoError | undefined {
  if (allow !== undefined && e === allow) return undefined // the caller's own getter threw it
  if (!(e instanceof DirectIoError)) {
    throw new Violation(`${what}: threw ${Object.prototype.toString.call(e)} ${String((e as Error)?.stack ?? e)} instead of a DirectIoError`)
  }
  if (typeof e.code !== 'string' || e.code === '') throw new Violation(`${what}: DirectIoError without a code: ${e.message}`)
  if (typeof e.message !== 'string' || e.message === '') throw new Violation(`${what}: DirectIoError ${e.code} without a message`)
  if (e.errno !== undefined && !(Number.isInteger(e.errno) && e.errno < 0)) throw new Violation(`${what}: errno ${e.errno}`)
  if (typeof e.hint !== 'string') throw new Violation(`${what}: hint is not a string`)
  return e
}

// ---------------------------------------------------------------------------------------
// Arbitraries for argument values

const HOSTILE = new Error('hostile getter')
const hostileOp = (): object =>
  Object.defineProperty({}, 'buffer', {
    get() {
      throw HOSTILE
    },
  })

let hugeView: Uint8Array | undefined
function huge(): Uint8Array {
  // One lazily allocated (untouched, so never really backed) view longer than one I/O can move.
  hugeView ??= new Uint8Array(new ArrayBuffer(MAX_IO_LENGTH + 8192), 4096, MAX_IO_LENGTH + 4096)
  return hugeView
}

const TYPED = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array] as const

type BufSpec =
  | { k: 'aligned'; size: number }
  | { k: 'misaligned'; size: number; off: number }
  | { k: 'plain'; size: number }
  | { k: 'typed'; ctor: number; elems: number; aligned: boolean; skew: number }
  | { k: 'dataview'; size: number; aligned: boolean }
  | { k: 'shared'; size: number; aligned: boolean }
  | { k: 'detached'; size: number }
  | { k: 'empty' }
  | { k: 'huge' }
  | { k: 'registered'; i: number }
  | { k: 'arraybuffer'; size: number }
  | { k: 'value'; v: unknown }

const bufSpec: fc.Arbitrary<BufSpec> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ k: fc.constant('aligned' as const), size: fc.integer({ min: 1, max: 32 }).map((n) => n * 4096) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('aligned' as const), size: fc.integer({ min: 1, max: 64 }).map((n) => n * 512) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('misaligned' as const), size: fc.integer({ min: 1, max: 8 }).map((n) => n * 4096), off: fc.integer({ min: 1, max: 4095 }) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('plain' as const), size: fc.integer({ min: 0, max: 70000 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('typed' as const),
      ctor: fc.integer({ min: 0, max: TYPED.length - 1 }),
      elems: fc.integer({ min: 0, max: 8192 }),
      aligned: fc.boolean(),
      skew: fc.integer({ min: 0, max: 3 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('dataview' as const), size: fc.integer({ min: 0, max: 16384 }), aligned: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('shared' as const), size: fc.integer({ min: 1, max: 8 }).map((n) => n * 4096), aligned: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('detached' as const), size: fc.integer({ min: 0, max: 8192 }) }) },
  { weight: 1, arbitrary: fc.constant({ k: 'empty' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'huge' as const }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('registered' as const), i: fc.nat(7) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('arraybuffer' as const), size: fc.integer({ min: 0, max: 8192 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('value' as const),
      v: fc.oneof(fc.constant(null), fc.constant(undefined), fc.string({ maxLength: 8 }), fc.integer(), fc.constant([1, 2, 3]), fc.constant({}), fc.constant(Symbol('b')), fc.anything({ maxDepth: 1 })),
    }),
  },
)

/** Makes the value a BufSpec describes (fresh each time: detached buffers can't be reused). */
function makeBuf(s: BufSpec, registered: Uint8Array[]): unknown {
  switch (s.k) {
    case 'aligned':
      return allocAligned(s.size)
    case 'misaligned':
      return allocAligned(s.size + 4096).subarray(s.off, s.off + s.size)
    case 'plain':
      return Buffer.alloc(s.size)
    case 'typed': {
      const C = TYPED[s.ctor]
      const bytes = C.BYTES_PER_ELEMENT
      const base = allocAligned((s.elems + 4) * bytes + 8, 4096)
      const off = base.byteOffset + (s.aligned ? 0 : s.skew * bytes + bytes)
      return new C(base.buffer as ArrayBuffer, off, s.elems)
    }
    case 'dataview': {
      const base = allocAligned(s.size + 4096)
      return new DataView(base.buffer, base.byteOffset + (s.aligned ? 0 : 3), s.size)
    }
    case 'shared': {
      const sab = new SharedArrayBuffer(s.size + 8192)
      const whole = new Uint8Array(sab)
      const skip = (4096 - (addressOf(whole) % 4096)) % 4096
      return new Uint8Array(sab, skip + (s.aligned ? 0 : 1), s.size)
    }
    case 'detached': {
      const ab = new ArrayBuffer(s.size)
      const view = new Uint8Array(ab)
      structuredClone(ab, { transfer: [ab] })
      return view
    }
    case 'empty':
      return allocAligned(4096).subarray(0, 0)
    case 'huge':
      return huge()
    case 'registered':
      return registered.length > 0 ? registered[s.i % registered.length] : allocAligned(4096)
    case 'arraybuffer':
      return new ArrayBuffer(s.size)
    case 'value':
      return s.v
  }
}

const KEEP_SIZE = 1
const posArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 10, arbitrary: fc.integer({ min: 0, max: 1024 }).map((k) => k * 4096) },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 8192 }).map((k) => k * 512) },
  { weight: 2, arbitrary: fc.integer({ min: -1_000_000, max: 10_000_000 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom<unknown>(NaN, Infinity, -Infinity, -0, 0.5, 4096.5, -4096, 2 ** 53, 2 ** 53 - 1, 2 ** 53 - 4096, 2 ** 63, Number.MIN_VALUE, 1e300, 2 ** 40, 2 ** 44 - 4096, 2 ** 31, 2 ** 32),
  },
  { weight: 2, arbitrary: fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }) },
  { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: 1024n }).map((k) => k * 4096n) },
  { weight: 2, arbitrary: fc.constantFrom<unknown>(undefined, null) },
  { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 6 }), fc.boolean(), fc.constant({}), fc.constant([]), fc.constant(Symbol('p')), fc.constant({ valueOf: () => 4096 })) },
)
/** Lengths for truncate/allocate: bounded when valid, so no run reserves real disk space to speak of. */
const lenArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 1 << 20 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 256 }).map((k) => k * 4096) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(NaN, Infinity, -1, -4096, 0.5, 2 ** 53, 2 ** 64, 1e300, -0) },
  { weight: 1, arbitrary: fc.bigInt({ min: -(2n ** 66n), max: 1n << 20n }) },
  { weight: 1, arbitrary: fc.oneof(fc.constant(undefined), fc.constant(null), fc.string({ maxLength: 4 }), fc.constant({}), fc.constant(Symbol('l'))) },
)
const truncArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: lenArb },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(2 ** 40, 2 ** 44 - 4096, 2 ** 44, 2 ** 53 - 1, 2 ** 63) },
)
const modeArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(0, KEEP_SIZE, 0x02 | KEEP_SIZE, 0x02, 0x08, 0x10, 0x10 | KEEP_SIZE, 0x20, 0x40, 0x7f, -1, 2 ** 31, 2 ** 32 + 1, 1.5, NaN, Infinity, undefined, null, '1', 1n),
  fc.integer({ min: -1000, max: 1000 }),
)
type SignalSpec = 'none' | 'aborted' | 'live' | 'abort-soon' | 'bogus' | 'null'
const signalArb: fc.Arbitrary<SignalSpec> = fc.oneof(
  { weight: 6, arbitrary: fc.constant('none' as const) },
  { weight: 1, arbitrary: fc.constantFrom<SignalSpec>('aborted', 'live', 'abort-soon', 'bogus', 'null') },
)
function makeSignal(s: SignalSpec): unknown {
  switch (s) {
    case 'none':
      return undefined
    case 'aborted':
      return AbortSignal.abort(new Error('pre-aborted'))
    case 'live':
      return new AbortController().signal
    case 'abort-soon': {
      const ac = new AbortController()
      queueMicrotask(() => ac.abort())
      return ac.signal
    }
    case 'bogus':
      return { aborted: 'no' }
    case 'null':
      return null
  }
}

type Call =
  | { m: 'read' | 'write'; form: 'args' | 'options' | 'implicit'; buf: BufSpec; pos: unknown; signal: SignalSpec }
  | { m: 'readv' | 'writev'; bufs: BufSpec[] | { notArray: unknown }; pos: unknown; signal: SignalSpec }
  | { m: 'readMany' | 'writeMany'; ops: Array<{ buf: BufSpec; pos: unknown } | 'null' | 'hostile'> | { notArray: unknown } }
  | { m: 'truncate'; len: unknown; signal: SignalSpec }
  | { m: 'allocate'; off: unknown; len: unknown; mode: unknown; signal: SignalSpec }
  | { m: 'sync' | 'datasync'; signal: SignalSpec }
  | { m: 'stat' | 'stats' | 'close' | 'dispose' }
  | { m: 'alloc'; size: unknown }
  | { m: 'register'; count: unknown; size: unknown }

const notArray = fc.record({ notArray: fc.oneof(fc.constant(undefined), fc.constant(null), fc.string({ maxLength: 3 }), fc.integer(), fc.constant({ length: 2 })) })
const callArb: fc.Arbitrary<Call> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ m: fc.constantFrom('read' as const, 'write' as const), form: fc.constantFrom('args' as const, 'options' as const, 'implicit' as const), buf: bufSpec, pos: posArb, signal: signalArb }) },
  { weight: 3, arbitrary: fc.record({ m: fc.constantFrom('readv' as const, 'writev' as const), bufs: fc.oneof({ weight: 5, arbitrary: fc.array(bufSpec, { maxLength: 6 }) }, { weight: 1, arbitrary: notArray }), pos: posArb, signal: signalArb }) },
  {
    weight: 3,
    arbitrary: fc.record({
      m: fc.constantFrom('readMany' as const, 'writeMany' as const),
      ops: fc.oneof(
        { weight: 6, arbitrary: fc.array(fc.oneof({ weight: 10, arbitrary: fc.record({ buf: bufSpec, pos: posArb }) }, { weight: 1, arbitrary: fc.constantFrom('null' as const, 'hostile' as const) }), { maxLength: 8 }) },
        { weight: 1, arbitrary: notArray },
      ),
    }),
  },
  { weight: 2, arbitrary: fc.record({ m: fc.constant('truncate' as const), len: truncArb, signal: signalArb }) },
  { weight: 2, arbitrary: fc.record({ m: fc.constant('allocate' as const), off: posArb, len: lenArb, mode: modeArb, signal: signalArb }) },
  { weight: 1, arbitrary: fc.record({ m: fc.constantFrom('sync' as const, 'datasync' as const), signal: signalArb }) },
  { weight: 1, arbitrary: fc.record({ m: fc.constantFrom('stat' as const, 'stats' as const, 'close' as const, 'dispose' as const) }) },
  { weight: 1, arbitrary: fc.record({ m: fc.constant('alloc' as const), size: fc.oneof(fc.integer({ min: -10, max: 1 << 20 }), fc.constantFrom<unknown>(NaN, 0.5, '4096', null, 2 ** 53, Infinity)) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      m: fc.constant('register' as const),
      count: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constantFrom<unknown>(0, -1, 1.5, NaN, 2 ** 31, '2', undefined)),
      size: fc.oneof(fc.integer({ min: 1, max: 65536 }), fc.constantFrom<unknown>(0, -1, 2 ** 31, NaN, null)),
    }),
  },
)

const IO_METHODS = new Set(['read', 'write', 'readv', 'writev', 'readMany', 'writeMany', 'truncate', 'allocate', 'sync', 'datasync', 'stat', 'register'])

interface Outcome {
  call: Call
  afterClose: boolean
  ok: boolean
  value?: unknown
  error?: unknown
}

/** Runs one call on `fh` without awaiting; returns a promise of its outcome (never rejects). */
function runCall(fh: FileHandle, c: Call, registered: Uint8Array[], afterClose: boolean): Promise<Outcome> {
  const done = (p: unknown): Promise<Outcome> =>
    Promise.resolve(p).then(
      (value) => ({ call: c, afterClose, ok: true, value }),
      (error: unknown) => ({ call: c, afterClose, ok: false, error }),
    )
  const fail = (error: unknown): Promise<Outcome> => Promise.resolve({ call: c, afterClose, ok: false, error })
  try {
    const any = fh as unknown as Record<string, (...a: unknown[]) => unknown>
    switch (c.m) {
      case 'read':
      case 'write': {
        const buf = makeBuf(c.buf, registered)
        const signal = makeSignal(c.signal)
        // fs/promises' forms: read({ buffer, ... }) / write(buffer, { ... }), the position omitted
        // (the handle's current position), and (buffer, offset, length, position).
        if (c.form === 'options') return done(c.m === 'read' ? any.read({ buffer: buf, position: c.pos, signal }) : any.write(buf, { position: c.pos, signal }))
        if (c.form === 'implicit') return done(any[c.m](buf, { signal }))
        return done(any[c.m](buf, 0, viewLength(buf), c.pos))
      }
      case 'readv':
      case 'writev': {
        const bufs = Array.isArray(c.bufs) ? c.bufs.map((b) => makeBuf(b, registered)) : c.bufs.notArray
        return done(any[c.m](bufs, c.pos, { signal: makeSignal(c.signal) }))
      }
      case 'readMany':
      case 'writeMany': {
        const ops = Array.isArray(c.ops)
          ? c.ops.map((o) => (o === 'null' ? null : o === 'hostile' ? hostileOp() : { buffer: makeBuf(o.buf, registered), position: o.pos }))
          : c.ops.notArray
        return done(any[c.m](ops))
      }
      case 'truncate':
        return done(any.truncate(c.len, { signal: makeSignal(c.signal) }))
      case 'allocate':
        return done(any.allocate(c.off, c.len, c.mode, { signal: makeSignal(c.signal) }))
      case 'sync':
      case 'datasync':
        return done(any[c.m]({ signal: makeSignal(c.signal) }))
      case 'stat':
        return done(fh.stat())
      case 'stats':
        return done(fh.stats())
      case 'close':
        return done(fh.close())
      case 'dispose':
        return done(fh[Symbol.asyncDispose]())
      case 'alloc':
        return done(any.alloc(c.size))
      case 'register': {
        const reg = any.registerBuffers(c.count, c.size) as { buffers: Uint8Array[] }
        registered.push(...reg.buffers)
        return done(reg)
      }
    }
  } catch (e) {
    return fail(e)
  }
}

function viewLength(v: unknown): number {
  return ArrayBuffer.isView(v) ? v.byteLength : 0
}

/** Checks one outcome; throws a Violation when it breaks the contract. */
function checkOutcome(o: Outcome, fh: FileHandle): void {
  const what = `${o.call.m}${o.afterClose ? ' (after close)' : ''}`
  if (!o.ok) {
    if (o.call.m === 'stat' && !o.afterClose) {
      // fstat of an open regular file cannot fail — unless close() ran under it (fd reuse).
      throw new Violation(`stat before close rejected: ${String(o.error)}`)
    }
    const e = checkError(o.error, what, (o.call.m === 'readMany' || o.call.m === 'writeMany') ? HOSTILE : undefined)
    if (e && !o.afterClose && e.code === 'ERR_ODIRECT_CLOSED' && o.call.m !== 'alloc') {
      throw new Violation(`${what}: an op started before close() rejected with ERR_ODIRECT_CLOSED`)
    }
    if (e && e.code === 'ERR_ODIRECT_ALIGNMENT' && !fh.direct) throw new Violation(`${what}: alignment enforced on a buffered handle`)
    // The checks before the syscall must catch every transfer O_DIRECT would refuse.
    if (e && e.code === 'EINVAL' && fh.direct && ['read', 'write', 'readv', 'writev', 'readMany', 'writeMany'].includes(o.call.m)) {
      throw new Violation(`${what}: the kernel refused (EINVAL) a transfer the alignment checks let through: ${e.message}`)
    }
    return
  }
  if (o.afterClose && IO_METHODS.has(o.call.m)) throw new Violation(`${what}: succeeded on a closed handle`)
  const c = o.call
  if (c.m === 'read' || c.m === 'write') {
    const r = o.value as { bytesRead?: number; bytesWritten?: number; buffer?: unknown }
    const n = c.m === 'read' ? r.bytesRead : r.bytesWritten
    // fs/promises' write(string) resolves with the string as `buffer`.
    const bufferOk = ArrayBuffer.isView(r.buffer) || (c.m === 'write' && typeof r.buffer === 'string')
    if (!Number.isInteger(n) || (n as number) < 0 || !bufferOk) throw new Violation(`${what}: resolved with ${String(n)} and buffer ${typeof r.buffer}`)
  } else if (c.m === 'readMany' || c.m === 'writeMany') {
    const r = o.value as number[]
    if (!Array.isArray(r) || !Array.isArray(c.ops) || r.length !== c.ops.length) throw new Violation(`${what}: resolved with ${String(r)}`)
    if (!r.every((n) => Number.isInteger(n) && n >= 0)) throw new Violation(`${what}: bad counts ${String(r)}`)
  } else if (c.m === 'alloc') {
    const v = o.value as Uint8Array
    if (!(v instanceof Uint8Array) || addressOf(v) % PAGE_SIZE !== 0 || v.byteLength < (c.size as number) || v.byteLength % fh.alignment.offset !== 0) {
      throw new Violation(`alloc(${String(c.size)}) gave ${viewLength(v)} bytes at ${addressOf(v)}`)
    }
  }
}

// ---------------------------------------------------------------------------------------
// Every FileHandle method

perBackend('random calls on a FileHandle work or fail with a DirectIoError (concurrent, with close mid-way)', async (t, backend) => {
  const dir = fs.mkdtempSync(path.join(ROOT, 'fh-'))
  const file = path.join(dir, 'data')
  fs.writeFileSync(file, Buffer.alloc(1 << 20, 7))
  const counts = { calls: 0, ok: 0, errors: new Map<string, number>(), kernel: new Set<string>() }
  await assertProp(
    fc.asyncProperty(
      fc.constantFrom('r+' as const, 'r+' as const, 'r' as const, 'w+' as const),
      fc.constantFrom('require' as const, 'require' as const, 'require' as const, 'off' as const),
      fc.array(callArb, { minLength: 1, maxLength: 8 }),
      async (flags, direct, calls) => {
        // Each run starts from a 1 MiB file, so space reserved by earlier runs is given back.
        fs.truncateSync(file, 0)
        fs.truncateSync(file, 1 << 20)
        const fh = await open(file, flags, { backend, direct })
        const registered: Uint8Array[] = []
        const pending: Array<Promise<Outcome>> = []
        let closed = false
        for (const c of calls) {
          pending.push(runCall(fh, c, registered, closed))
          if (c.m === 'close' || c.m === 'dispose') closed = true
        }
        const outcomes = await Promise.all(pending)
        await fh.close()
        for (const o of outcomes) {
          counts.calls++
          if (o.ok) counts.ok++
          else {
            const e = o.error as DirectIoError
            const code = e?.code ?? 'hostile'
            counts.errors.set(code, (counts.errors.get(code) ?? 0) + 1)
            if (e?.errno !== undefined) counts.kernel.add(`${o.call.m}:${code}`)
          }
          checkOutcome(o, fh)
        }
        if (fh.stats().inflight !== 0) throw new Violation(`inflight ${fh.stats().inflight} after every op settled`)
      },
    ),
    { numRuns: 500, seed: SEED, endOnFailure: true },
  )
  gc?.()
  t.log(`${counts.calls} calls: ${counts.ok} worked; errors ${JSON.stringify(Object.fromEntries([...counts.errors].sort((a, b) => b[1] - a[1])))}`)
  t.log(`kernel errors seen: ${[...counts.kernel].sort().join(' ')}`)
  t.true(counts.ok > counts.calls / 10, 'a fair share of calls really did I/O')
  t.true(counts.errors.size >= 6, 'many different error codes were exercised')
})

// ---------------------------------------------------------------------------------------
// open, probe, allocAligned

const OPEN_DIR = path.join(ROOT, 'open')
fs.mkdirSync(OPEN_DIR)
fs.writeFileSync(path.join(OPEN_DIR, 'existing'), Buffer.alloc(8192, 1))
fs.mkdirSync(path.join(OPEN_DIR, 'dir'))

const pathArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom('existing', 'existing', 'new-a', 'new-b', 'dir', 'missing/x', 'existing/x').map((n) => path.join(OPEN_DIR, n)) },
  { weight: 1, arbitrary: fc.constantFrom<unknown>('', '/dev/null', '/dev/zero', '/nonexistent/odirect', OPEN_DIR + '/\0x', 42, null, undefined, {}, Symbol('path')) },
  { weight: 1, arbitrary: fc.constantFrom('existing', 'new-url').map((n) => new URL(`file://${path.join(OPEN_DIR, n)}`)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }).map((s) => path.join(OPEN_DIR, 'rnd', s)) },
)
const flagsArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom('r', 'r+', 'rs+', 'w', 'wx', 'xw', 'w+', 'wx+', 'xw+') },
  { weight: 2, arbitrary: fc.constantFrom<unknown>('a', 'a+', 'ax', 'as+', '', 'rw', 'R', undefined, null, 0, 2, {}, Symbol('f')) },
  { weight: 1, arbitrary: fc.string({ maxLength: 4 }) },
)
const validOpts = fc.record(
  {
    direct: fc.constantFrom('require', 'prefer', 'off'),
    backend: fc.constantFrom('auto', 'io_uring', 'aio', 'threadpool'),
    dsync: fc.boolean(),
    noatime: fc.boolean(),
    mode: fc.integer({ min: 0, max: 0o7777 }),
  },
  { requiredKeys: [] },
)
const invalidOpts = fc.record(
  {
    direct: fc.oneof(fc.constantFrom<unknown>('require', 'prefer', 'off'), fc.constantFrom<unknown>('', 'on', true, 1, null)),
    backend: fc.oneof(fc.constantFrom<unknown>('auto', 'io_uring', 'aio', 'threadpool'), fc.constantFrom<unknown>('uring', '', 'libaio', 0, null)),
    dsync: fc.oneof(fc.boolean(), fc.constantFrom<unknown>(0, 'yes', null)),
    noatime: fc.oneof(fc.boolean(), fc.constantFrom<unknown>(1, 'no')),
    mode: fc.oneof(fc.integer({ min: 0, max: 0o7777 }), fc.constantFrom<unknown>(-1, 0o10000, 1.5, NaN, '644', 2 ** 32)),
    bogus: fc.anything({ maxDepth: 0 }),
  },
  { requiredKeys: [] },
)
const optsArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: validOpts },
  { weight: 3, arbitrary: invalidOpts },
  { weight: 1, arbitrary: fc.oneof(fc.constant(undefined), fc.constant(null), fc.string({ maxLength: 4 }), fc.integer(), fc.constant([])) },
)

test('open() with random paths, flags and options opens a working handle or fails with a DirectIoError', async (t) => {
  let opened = 0
  let failed = 0
  await assertProp(
    fc.asyncProperty(pathArb, flagsArb, optsArb, fc.boolean(), async (p, flags, opts, doIo) => {
      let fh: FileHandle
      try {
        fh = await (open as (...a: unknown[]) => Promise<FileHandle>)(p, flags, opts)
      } catch (e) {
        checkError(e, `open(${String(typeof p === 'symbol' ? 'Symbol' : p)}, ${String(typeof flags === 'symbol' ? 'Symbol' : flags)})`)
        failed++
        return
      }
      opened++
      try {
        if (!BACKENDS.includes(fh.backend as Backend)) throw new Violation(`backend ${fh.backend}`)
        const a = fh.alignment
        for (const k of ['memory', 'offset', 'logicalBlockSize', 'physicalBlockSize'] as const) {
          if (!(a[k] > 0 && (a[k] & (a[k] - 1)) === 0)) throw new Violation(`alignment.${k} = ${a[k]}`)
        }
        if (fh.direct && fh.fallbackReason !== '') throw new Violation('direct with a fallback reason')
        if (doIo) {
          const b = fh.alloc(4096)
          try {
            await (fh.readable ? rd(fh, b, 0) : wr(fh, b, 0))
          } catch (e) {
            checkError(e, 'I/O on a random open')
          }
        }
      } finally {
        await fh.close()
      }
    }),
    { numRuns: 1500, seed: SEED, endOnFailure: true },
  )
  t.log(`${opened} opened, ${failed} refused`)
  t.true(opened > 100 && failed > 100)
  // Refused opens left nothing open.
  const fds = fs.readdirSync('/proc/self/fd').map((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      return ''
    }
  })
  t.deepEqual(fds.filter((l) => l.startsWith(OPEN_DIR)), [])
})

test('allocAligned() and probe() with random arguments work or throw a DirectIoError', async (t) => {
  let allocated = 0
  await assertProp(
    fc.property(
      fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 1, max: 1 << 20 }) },
        { weight: 2, arbitrary: fc.integer({ min: -10, max: 10 }) },
        { weight: 1, arbitrary: fc.constantFrom<unknown>(MAX_IO_LENGTH, MAX_IO_LENGTH + 1, 2 ** 53, NaN, Infinity, 0.5, '4096', null, undefined, 4096n, {}) },
      ),
      fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 0, max: 20 }).map((k) => 2 ** k) },
        { weight: 2, arbitrary: fc.constantFrom<unknown>(undefined, 0, -4096, 3, 4095, 2 ** 30, 2 ** 31, NaN, 1.5, '4096', null, 4096n) },
      ),
      (size, alignment) => {
        let v: Uint8Array
        try {
          v = (allocAligned as (...a: unknown[]) => Uint8Array)(size, alignment)
        } catch (e) {
          checkError(e, `allocAligned(${String(size)}, ${String(alignment)})`)
          return
        }
        allocated++
        const align = alignment === undefined ? PAGE_SIZE : (alignment as number)
        if (v.byteLength !== size) throw new Violation(`allocAligned(${String(size)}) gave ${v.byteLength} bytes`)
        if (addressOf(v) % align !== 0) throw new Violation(`allocAligned(${String(size)}, ${align}) misaligned`)
        if (v[0] !== 0 || v[v.byteLength - 1] !== 0) throw new Violation('not zeroed')
      },
    ),
    { numRuns: 3000, seed: SEED, endOnFailure: true },
  )
  t.true(allocated > 1000)
  gc?.()

  const probeDir = fs.mkdtempSync(path.join(ROOT, 'probe-'))
  fs.writeFileSync(path.join(probeDir, 'file'), 'x')
  let probed = 0
  await assertProp(
    fc.asyncProperty(
      fc.oneof(
        fc.constantFrom<unknown>(probeDir, path.join(probeDir, 'file'), path.join(probeDir, 'missing'), '/dev/null', '/nonexistent', '/proc', '', probeDir + '\0', 42, null, {}, Symbol('p')),
        fc.string({ maxLength: 10 }).map((s) => path.join(probeDir, s)),
      ),
      async (p) => {
        try {
          const r = await (probe as (...a: unknown[]) => Promise<Awaited<ReturnType<typeof probe>>>)(p)
          probed++
          if (typeof r.kernel !== 'string' || !r.backends.threadpool.available) throw new Violation(`probe(${String(p)}) gave ${JSON.stringify(r)}`)
        } catch (e) {
          if (e instanceof Violation) throw e
          checkError(e, `probe(${typeof p === 'symbol' ? 'Symbol' : String(p)})`)
        }
      },
    ),
    { numRuns: 200, seed: SEED, endOnFailure: true },
  )
  t.true(probed > 10)
  // probe leaves no temp file behind.
  t.deepEqual(fs.readdirSync(probeDir).filter((n) => n.startsWith('.odirect-probe')), [])
})

// ---------------------------------------------------------------------------------------
// Soak: 8 writers and 8 readers, every block verified against its last completed write

const SOAK_OPS = Number(process.env.ODIRECT_SOAK_OPS || 20_000)
const BLOCK = 4096
const FILE_BLOCKS = (64 << 20) / BLOCK
const MAX_RUN = 8

/** The content of `block` at `version` (version 0: zeros, as after truncate). */
function fillBlock(dst: Uint8Array, block: number, version: number): void {
  const w = new Uint32Array(dst.buffer, dst.byteOffset, BLOCK / 4)
  if (version === 0) {
    w.fill(0)
    return
  }
  let x = (Math.imul(block, 0x9e3779b1) ^ Math.imul(version, 0x85ebca6b) ^ 0x5bd1e995) >>> 0 || 1
  w[0] = block
  w[1] = version
  for (let i = 2; i < w.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    w[i] = x >>> 0
  }
}

const digest = (b: Uint8Array): string => createHash('sha1').update(b).digest('base64')

perBackend(`soak: 8 writers + 8 readers, ${SOAK_OPS} random aligned ops on a 64 MiB file, 0 bytes wrong`, async (t, backend) => {
  const dir = fs.mkdtempSync(path.join(ROOT, 'soak-'))
  const fh = await open(path.join(dir, 'soak'), 'w+', { backend })
  t.teardown(() => fh.close())
  t.true(fh.direct)
  t.is(fh.backend, backend)
  await fh.truncate(FILE_BLOCKS * BLOCK)

  const zeroSum = digest(new Uint8Array(BLOCK))
  const version = new Uint32Array(FILE_BLOCKS) // of the last completed write
  const sums: string[] = new Array<string>(FILE_BLOCKS).fill(zeroSum)
  const writing = new Uint8Array(FILE_BLOCKS)
  const reading = new Uint16Array(FILE_BLOCKS)
  let nextVersion = 1
  // Half of the ops for the writers, half for the readers.
  let wStarted = 0
  let rStarted = 0
  let writes = 0
  let reads = 0
  let blocksChecked = 0
  let wrongBlocks = 0
  let wrongBytes = 0
  const expected = new Uint8Array(BLOCK)

  function pick(forWrite: boolean): [number, number] | undefined {
    for (let attempt = 0; attempt < 16; attempt++) {
      const len = 1 + Math.floor(Math.random() * MAX_RUN)
      const first = Math.floor(Math.random() * (FILE_BLOCKS - len + 1))
      let free = true
      for (let b = first; b < first + len && free; b++) free = writing[b] === 0 && (!forWrite || reading[b] === 0)
      if (free) return [first, len]
    }
    return undefined
  }

  function verify(buf: Uint8Array, first: number, len: number): void {
    for (let i = 0; i < len; i++) {
      const b = first + i
      const got = buf.subarray(i * BLOCK, (i + 1) * BLOCK)
      blocksChecked++
      if (digest(got) === sums[b]) continue
      wrongBlocks++
      fillBlock(expected, b, version[b])
      for (let j = 0; j < BLOCK; j++) if (got[j] !== expected[j]) wrongBytes++
    }
  }

  const yieldNow = (): Promise<void> => new Promise((r) => setImmediate(r))

  async function writer(): Promise<void> {
    const buf = fh.alloc(MAX_RUN * BLOCK)
    while (wStarted < SOAK_OPS / 2) {
      const r = pick(true)
      if (!r) {
        await yieldNow()
        continue
      }
      wStarted++
      const [first, len] = r
      for (let b = first; b < first + len; b++) writing[b] = 1
      const vers: number[] = []
      for (let i = 0; i < len; i++) {
        vers.push(nextVersion++)
        fillBlock(buf.subarray(i * BLOCK, (i + 1) * BLOCK), first + i, vers[i])
      }
      const view = buf.subarray(0, len * BLOCK)
      const mode = writes % 4
      let n: number
      if (mode === 3 && len > 1) {
        n = await wrv(fh, Array.from({ length: len }, (_, i) => buf.subarray(i * BLOCK, (i + 1) * BLOCK)), first * BLOCK)
      } else if (mode === 2) {
        n = (await fh.writeMany([{ buffer: view, position: first * BLOCK }]))[0]
      } else {
        n = await wr(fh, view, first * BLOCK)
      }
      if (n !== len * BLOCK) throw new Error(`short write: ${n} of ${len * BLOCK}`)
      for (let i = 0; i < len; i++) {
        version[first + i] = vers[i]
        sums[first + i] = digest(buf.subarray(i * BLOCK, (i + 1) * BLOCK))
        writing[first + i] = 0
      }
      writes++
    }
  }

  async function reader(): Promise<void> {
    const buf = fh.alloc(MAX_RUN * BLOCK)
    while (rStarted < SOAK_OPS - SOAK_OPS / 2) {
      const r = pick(false)
      if (!r) {
        await yieldNow()
        continue
      }
      rStarted++
      const [first, len] = r
      for (let b = first; b < first + len; b++) reading[b]++
      const view = buf.subarray(0, len * BLOCK)
      let n: number
      if (reads % 4 === 1) {
        n = (await fh.readMany([{ buffer: view, position: first * BLOCK }]))[0]
      } else if (reads % 4 === 2 && len > 1) {
        n = await rdv(fh, Array.from({ length: len }, (_, i) => buf.subarray(i * BLOCK, (i + 1) * BLOCK)), first * BLOCK)
      } else {
        n = await rd(fh, view, first * BLOCK)
      }
      if (n !== len * BLOCK) throw new Error(`short read: ${n} of ${len * BLOCK}`)
      verify(view, first, len)
      for (let b = first; b < first + len; b++) reading[b]--
      reads++
    }
  }

  const t0 = performance.now()
  await Promise.all([...Array.from({ length: 8 }, writer), ...Array.from({ length: 8 }, reader)])
  const ms = performance.now() - t0
  t.is(writes + reads, SOAK_OPS)

  // Final pass: the whole file, every block against its last write.
  const chunk = fh.alloc(1 << 20)
  const per = chunk.byteLength / BLOCK
  for (let first = 0; first < FILE_BLOCKS; first += per) {
    t.is(await rd(fh, chunk, first * BLOCK), chunk.byteLength)
    verify(chunk, first, per)
  }
  const st = fh.stats()
  t.log(`${backend}: ${writes} writes + ${reads} reads in ${ms.toFixed(0)} ms; ${blocksChecked} block checks; latency p50 ${st.latencyUs.p50.toFixed(0)} us, p99 ${st.latencyUs.p99.toFixed(0)} us`)
  t.is(wrongBytes, 0, `${wrongBlocks} blocks wrong`)
  t.is(wrongBlocks, 0)
  t.is(st.errors, 0)
  t.is(st.inflight, 0)
})
