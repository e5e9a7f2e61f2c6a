// The JS half of the engine: one NativeEngine per JS environment, a table of pending ops (array
// slots indexed by op id), and the batch callback that settles them.
//
// Every submission method captures what it submits before it returns: the native side reads the
// views' pointers and lengths in the same call (no user code can run in between), takes its own
// hold on the memory (odirect-owned memory, or a bounce buffer) and stages the op. Staged ops
// reach the kernel together at the next microtask checkpoint (one native crossing and one
// io_uring_enter per event-loop turn; on a device's files the native `rw` also submits what is
// staged every 4 reads/writes, see engine.rs SUBMIT_EVERY). Completions come back on this thread: from libuv's loop
// (a uv_poll on the engine's eventfd) on Node, or from a reaper thread elsewhere.
import { misuse } from './errors'
import { native, type NativeEngine } from './native'

export type BackendName = 'io_uring' | 'aio' | 'threadpool'
export const BACKENDS: readonly BackendName[] = ['io_uring', 'aio', 'threadpool']
/** The native side's index for each backend (generated from the Rust enum `BackendIndex`). */
const BACKEND_INDEX: Readonly<Record<BackendName, number>> = Object.freeze({
  io_uring: native.BackendIndex.IoUring,
  aio: native.BackendIndex.Aio,
  threadpool: native.BackendIndex.ThreadPool,
})
export const backendIndex = (b: BackendName): number => BACKEND_INDEX[b]

/** Who gets told when an op completes. */
export interface OpSink {
  /** result >= 0: bytes (or 0); result < 0: negated errno (or RESULT_DETACHED). */
  settle(result: number, latencyUs: number): void
  /** Set when a read or write is staged: its memory goes through an aligned bounce buffer. */
  bounced?: boolean
}

/** Numbers per completion in a results batch: op id, result, latency (us) (Rust `RESULT_STRIDE`). */
const STRIDE: number = native.RESULT_STRIDE
/** A staged read/write returns `(id << TICKET_SHIFT) | bounced` (Rust `consts::ticket`). */
const TICKET_SHIFT: number = native.TICKET_SHIFT
const TICKET_BOUNCED = (1 << TICKET_SHIFT) - 1
/** Added to a ticket when the staging call also submitted the op (Rust `consts::TICKET_SUBMITTED`). */
const TICKET_SUBMITTED: number = native.TICKET_SUBMITTED
/** A read/write completed in its staging call returns TICKET_DONE + a code (Rust `consts::done`). */
const TICKET_DONE: number = native.TICKET_DONE
const DONE_LAT_UNITS: number = native.DONE_LAT_UNITS
const DONE_LAT_SPAN: number = native.DONE_LAT_SPAN
const DONE_RESULT_BIAS: number = native.DONE_RESULT_BIAS
/** The fast `rw`'s packed argument (Rust `consts::RW_WRITE`...): write, alone, backend, RWF_* flags. */
const RW_WRITE: number = native.RW_WRITE
const RW_ALONE: number = native.RW_ALONE
const RW_BACKEND_SHIFT: number = native.RW_BACKEND_SHIFT
/** 2 ** RW_FLAGS_SHIFT: RWF_* flags times this (not a shift: any flag bit above 2^27 stays). */
const RW_FLAGS_UNIT: number = 2 ** native.RW_FLAGS_SHIFT

/**
 * A native batch whose every op completed in its start call returns its id plus this times
 * (1 + ops failed) (Rust `consts::batch_done`): see `batchDone`.
 */
export const BATCH_DONE_UNIT: number = 2 ** native.BATCH_DONE_SHIFT

/** What `Engine.batch` returned, split: [batch id, -1 while it runs, else the ops failed when it completed in the call]. */
export function batchDone(r: number): [id: number, failed: number] {
  if (r < BATCH_DONE_UNIT) return [r, -1]
  const k = Math.floor(r / BATCH_DONE_UNIT)
  return [r - k * BATCH_DONE_UNIT, k - 1]
}

/** A bounced read's buffer was detached or shrunk before its data could be copied back. */
export const RESULT_DETACHED: number = native.RESULT_DETACHED

/** Simple (memoryless) op kinds, as the native side numbers them (Rust enum `SimpleOp`). */
export const OP_FSYNC: number = native.SimpleOp.Fsync
export const OP_FDATASYNC: number = native.SimpleOp.Fdatasync
export const OP_FALLOCATE: number = native.SimpleOp.Fallocate
export const OP_FTRUNCATE: number = native.SimpleOp.Ftruncate
export const OP_CLOSE: number = native.SimpleOp.Close
const LOCK_BASE: number = native.LOCK_BASE

/** Native capture failures (returned instead of an id) as typed errors. */
export function captureError(code: number, what: string): Error {
  switch (code) {
    case native.CaptureCode.Detached:
      return misuse('ERR_ODIRECT_DETACHED', `${what} is detached (its ArrayBuffer was transferred) or was shrunk below the op's range`, 'use a buffer that is not transferred, posted to a worker or resized while an op is being started')
    case native.CaptureCode.UnknownKind:
      return misuse('ERR_INVALID_ARG_TYPE', `${what} is a kind of TypedArray odirect does not know`, 'pass a Buffer, Uint8Array or DataView over the same memory')
    case native.CaptureCode.NoMemory:
      return misuse('ERR_ODIRECT_NOMEM', `no memory for an aligned bounce buffer for ${what}`, 'use buffers from fh.alloc() (no copy needed), or smaller ops')
    case native.CaptureCode.Closed:
      return misuse('ERR_ODIRECT_CLOSED', 'the engine of this thread is shut down (environment exiting)', 'do not start I/O during process or worker exit')
    case native.CaptureCode.NoBackend:
      return misuse('ERR_ODIRECT_BACKEND', 'the backend of this handle is not running', 'open the file again')
    default:
      return misuse('ERR_INVALID_ARG_TYPE', `${what} must be a Buffer, TypedArray or DataView (code ${code})`, 'allocate one with fh.alloc(size)')
  }
}

/** Which runtime path delivers completions, and how io_uring was set up. */
export interface EngineInfo {
  /** 'libuv': completions are reaped on the JS thread from its event loop (Node); 'thread': a reaper thread wakes the JS thread (Bun, Deno). */
  path: 'libuv' | 'thread'
  /** io_uring setup flags in use, '' when no ring was made yet. */
  ringSetup: string
  /** Ops staged or in flight on this thread. */
  inflight: number
}

const hasUvLoop = (): boolean => {
  const v = (typeof process !== 'undefined' ? process.versions : undefined) as Record<string, string | undefined> | undefined
  if (v === undefined || typeof v.node !== 'string') return false
  if (v.bun !== undefined || v.deno !== undefined) return false
  return typeof (globalThis as { Deno?: unknown }).Deno === 'undefined' && typeof (globalThis as { Bun?: unknown }).Bun === 'undefined'
}

export class Engine {
  readonly native: NativeEngine
  /** `rw` and `flush` as plain functions bound to the native engine: cheaper per call than its methods. */
  readonly #fast: ReturnType<NativeEngine['fastPath']>
  /**
   * `rw` without N-API number arguments (fast.rs `rwa`): its numbers go in `#args` slots 0-5, its
   * result comes back in slot 6. Undefined with ODIRECT_RW_ARGS=0 (then `#fast.rw`).
   */
  readonly #rwa: ((view: ArrayBufferView) => void) | undefined
  readonly #args: Float64Array | undefined
  #sinks: Array<OpSink | undefined> = []
  /** Lock waits by id (ids from LOCK_BASE up, apart from the dense op ids). */
  readonly #lockSinks = new Map<number, OpSink>()
  #flushScheduled = false
  readonly #flushBound = (): void => this.#flush()
  readonly #started = new Map<BackendName, string>()
  /** An op `rw` completed in its own call (it returned -1), settled by `settleDone`. */
  #doneSink: OpSink | undefined = undefined
  #doneResult = 0
  #doneLatency = 0

  constructor() {
    warnBadEnvironment()
    this.native = new native.NativeEngine((results: Float64Array, count: number) => this.#onBatch(results, count), hasUvLoop())
    this.#fast = this.native.fastPath()
    this.#rwa = this.#fast.rwa
    this.#args = this.#fast.args
  }

  #onBatch(results: Float64Array, count: number): void {
    const sinks = this.#sinks
    for (let i = 0; i < count; i++) {
      const at = i * STRIDE
      const id = results[at]
      let sink: OpSink | undefined
      if (id >= LOCK_BASE) {
        sink = this.#lockSinks.get(id)
        this.#lockSinks.delete(id)
      } else {
        sink = sinks[id]
        sinks[id] = undefined
      }
      if (sink === undefined) continue
      try {
        sink.settle(results[at + 1], results[at + 2])
      } catch (e) {
        // A settle callback must not break the rest of the batch.
        queueMicrotask(() => {
          throw e
        })
      }
    }
  }

  /** Starts a backend if needed; returns '' when it works, else why not. */
  ensure(backend: BackendName): string {
    const known = this.#started.get(backend)
    if (known !== undefined) return known
    const r = this.native.ensureBackend(backendIndex(backend), 0, 0)
    // Only successes are cached: a failure may be transient (EAGAIN, memory).
    if (r === '') this.#started.set(backend, r)
    return r
  }

  #schedule(): void {
    if (!this.#flushScheduled) {
      this.#flushScheduled = true
      queueMicrotask(this.#flushBound)
    }
  }

  #flush(): void {
    this.#flushScheduled = false
    this.#fast.flush()
  }

  #track(r: number, sink: OpSink, what: string): number {
    if (r < 0) throw captureError(r, what)
    this.#sinks[r] = sink
    this.#schedule()
    return r
  }

  /** A read/write's ticket (see TICKET_SHIFT): the sink learns whether it was bounced; returns the op id. */
  #trackRw(r: number, sink: OpSink, what: string): number {
    if (r < 0) throw captureError(r, what)
    if (r >= TICKET_DONE) {
      // Completed in the call: nothing in flight any more, its id already free again.
      const x = r - TICKET_DONE
      const y = Math.floor(x / DONE_LAT_SPAN)
      sink.bounced = y % 2 === 1
      this.#doneSink = sink
      this.#doneResult = Math.floor(y / 2) - DONE_RESULT_BIAS
      this.#doneLatency = (x % DONE_LAT_SPAN) / DONE_LAT_UNITS
      return -1
    }
    // Submitted in its staging call (a lone op): no flush to schedule for it.
    const submitted = r >= TICKET_SUBMITTED
    if (submitted) r -= TICKET_SUBMITTED
    const id = r >>> TICKET_SHIFT
    sink.bounced = (r & TICKET_BOUNCED) !== 0
    this.#sinks[id] = sink
    if (!submitted) this.#schedule()
    return id
  }

  /**
   * Stages a read (write = false) or write of `length` bytes of `view` from `offset`, at
   * `position`; returns the op id. `memAlign`: the address alignment the file needs (odirect
   * memory that meets it goes to the kernel as is; anything else through a bounce buffer).
   * `rwFlags`: its RWF_* flags. `alone`: the caller links nothing to it, so when nothing else
   * is staged or in flight the native side submits it at once (no flush microtask for it), or
   * even completes it (a small op on tmpfs/ramfs): then it returns -1 and the caller must call
   * `settleDone()` after its bookkeeping (no signal or timeout may be attached to such an op).
   */
  rw(backend: number, write: boolean, fd: number, view: ArrayBufferView, offset: number, length: number, position: number, memAlign: number, sink: OpSink, rwFlags = 0, alone = false, what = 'buffer'): number {
    const packed = rwFlags * RW_FLAGS_UNIT + (backend << RW_BACKEND_SHIFT) + (write ? RW_WRITE : 0) + (alone ? RW_ALONE : 0)
    const a = this.#args
    if (a !== undefined) {
      a[0] = fd
      a[1] = offset
      a[2] = length
      a[3] = position
      a[4] = memAlign
      a[5] = packed
      ;(this.#rwa as (view: ArrayBufferView) => void)(view)
      return this.#trackRw(a[6], sink, what)
    }
    return this.#trackRw(this.#fast.rw(fd, view, offset, length, position, memAlign, packed), sink, what)
  }

  /**
   * Settles the op whose `rw` returned -1 (completed in its staging call): the caller calls it
   * once its own bookkeeping of the op is done.
   */
  settleDone(): void {
    const sink = this.#doneSink
    if (sink === undefined) return
    this.#doneSink = undefined
    sink.settle(this.#doneResult, this.#doneLatency)
  }

  /**
   * Stages many reads or writes on one fd; all are captured or none (throws). Each op gets the
   * RWF_* flags `rwFlags` (as the kernel takes them). `early`: the caller links nothing to them,
   * so on a device's file they go to the kernel in groups as they are staged (engine.rs
   * `Inner::rw_many`) rather than all at the flush.
   */
  rwMany(backend: number, write: boolean, fd: number, views: readonly ArrayBufferView[], lengths: readonly number[], positions: readonly number[], memAlign: number, sinks: readonly OpSink[], rwFlags = 0, early = false): number[] {
    const ids = this.native.rwMany(backend, write, fd, views as ArrayBufferView[], lengths as number[], positions as number[], memAlign, rwFlags, early)
    if (ids.length === 1 && ids[0] < 0) throw captureError(ids[0], 'an ops[] buffer')
    for (let i = 0; i < ids.length; i++) {
      sinks[i].bounced = (ids[i] & TICKET_BOUNCED) !== 0
      ids[i] = ids[i] >>> TICKET_SHIFT
      this.#sinks[ids[i]] = sinks[i]
    }
    this.#schedule()
    return ids
  }

  /**
   * Starts a native batch (NativeEngine.batchStart: the window is refilled at reap time); `sink`
   * settles once, with the number of ops that failed, then `native.batchTake` gives the results.
   * `group` > 0: the id of the shared window (BatchWindow) it runs in, of `window` ops.
   * Returns the batch id (kept with the lock waits' sinks: both are ids >= LOCK_BASE), or a
   * negative BatchCode / CaptureCode (nothing started), or, when every op completed in the
   * call (a window of 1 on tmpfs, made inline), a value >= BATCH_DONE_UNIT (`batchDone` splits
   * it): the sink is not kept, the caller settles the batch itself.
   */
  batch(backend: number, write: boolean, fd: number, memory: ArrayBufferView | ArrayBuffer, offsets: Uint32Array, lengths: Uint32Array, positions: Float64Array | BigInt64Array, window: number, memAlign: number, rwFlags: number, group: number, sink: OpSink): number {
    return this.#batchStarted(this.native.batchStart(backend, write, fd, memory, offsets, lengths, positions, window, memAlign, rwFlags, group), sink)
  }

  /** As `batch`, over the buffers of an array-form readMany/writeMany (NativeEngine.batchStart given the views' array). */
  batchViews(backend: number, write: boolean, fd: number, views: readonly ArrayBufferView[], positions: Float64Array, window: number, memAlign: number, rwFlags: number, sink: OpSink): number {
    return this.#batchStarted(this.native.batchStart(backend, write, fd, views, undefined, undefined, positions, window, memAlign, rwFlags, 0), sink)
  }

  #batchStarted(id: number, sink: OpSink): number {
    // Refused, or complete already (every op made inline in the call: no completion follows).
    if (id < 0 || id >= BATCH_DONE_UNIT) return id
    this.#lockSinks.set(id, sink)
    this.#schedule()
    return id
  }

  /** Per-write flags (RWF_DSYNC / RWF_SYNC) of a write op staged in this tick (before the flush). */
  setRwFlags(id: number, rwFlags: number): void {
    if (!this.native.setRwFlags(id, rwFlags)) throw new Error(`odirect: op ${id} is not a write waiting for submission`)
  }

  /** io_uring: links the staged op to the next one staged (IOSQE_IO_LINK: that one starts after it succeeded, is cancelled if it fails). False elsewhere. */
  setLink(id: number): boolean {
    return this.native.setLink(id)
  }

  /** Stages a vectored read or write; returns the op id. */
  rwv(backend: number, write: boolean, fd: number, views: readonly ArrayBufferView[], lengths: readonly number[], position: number, memAlign: number, sink: OpSink): number {
    return this.#trackRw(this.native.rwv(backend, write, fd, views as ArrayBufferView[], lengths as number[], position, memAlign), sink, 'a buffers[] element')
  }

  /** Stages an op without memory (OP_*); returns the op id. */
  simple(backend: number, op: number, fd: number, a: number, b: number, mode: number, sink: OpSink): number {
    return this.#track(this.native.simple(backend, op, fd, a, b, mode), sink, 'op')
  }

  /** Asks the kernel to cancel op `id` (it still completes, usually with ECANCELED). */
  cancel(_backend: number, id: number): void {
    if ((id >= LOCK_BASE ? this.#lockSinks.get(id) : this.#sinks[id]) === undefined) return
    this.native.cancel(id)
  }

  /**
   * Starts waiting for a whole-file lock on `fd` (on a thread of its own, never libuv's pool);
   * `sink` gets 0 or -errno (-ECANCELED once cancelled). Returns the wait's id, or -errno when
   * it cannot start.
   */
  lock(fd: number, exclusive: boolean, sink: OpSink): number {
    const id = this.native.lock(fd, exclusive)
    if (id >= 0) this.#lockSinks.set(id, sink)
    return id
  }

  /** Ops staged or in the kernel whose completion has not reached JS yet. */
  get inflight(): number {
    return this.native.inflight
  }

  /** Registers (pins) odirect buffers; returns 0 or an errno. */
  registerBuffers(backend: number, views: ArrayBufferView[]): number {
    return this.native.registerBuffers(backend, views)
  }

  unregisterBuffers(backend: number): number {
    return this.native.unregisterBuffers(backend)
  }

  info(): EngineInfo {
    return { path: this.native.path as 'libuv' | 'thread', ringSetup: this.native.ringSetup, inflight: this.native.inflight }
  }
}

/** Options of this thread's engine, set before its first io_uring open. */
export interface EngineOptions {
  /**
   * SQPOLL: a kernel thread polls the submission queue, so submitting costs no system call while
   * it is awake; it sleeps after `sqpoll` idle milliseconds. For latency-critical programs with a
   * core to spare: that thread's CPU time is the price (see `odirect bench`). 0 (default): off.
   * The environment variable ODIRECT_SQPOLL=<ms> sets it too.
   */
  sqpoll?: number
  /**
   * Hybrid completion wait (io_uring only; aio and the thread pool ignore it): when a flush
   * submits a lone op (or a write and its linked fdatasync) with nothing else in flight, the JS
   * thread waits in the kernel up to `waitMicros` µs for its completion, as fio does at depth 1,
   * and settles the promise at once instead of through the event loop's wake-up. The thread is
   * blocked meanwhile (at most `waitMicros` per such op; chains of waits stop after 1 ms until
   * the loop turns), and never waits for ops on descriptors whose I/O may sleep (FIFOs, sockets,
   * FUSE, NFS) nor with more ops in flight. 0 (default): off. Integer 0..1000; can be changed at
   * any time. The environment variable ODIRECT_WAIT_US=<µs> sets it too.
   */
  waitMicros?: number
}

let engine: Engine | undefined

/**
 * The documented tuning variables take integers in a range; anything else is ignored (the
 * engine keeps its default) or, above the range, clamped. Said once per process as a warning
 * (code ODIRECT_ENV), so a mistyped setting is not silently without effect.
 */
const ENV_RANGES: ReadonlyArray<[name: string, max: number, effect: string]> = [
  ['ODIRECT_SQPOLL', 2 ** 32 - 1, 'SQPOLL stays off'],
  ['ODIRECT_WAIT_US', 1000, 'values above 1000 act as 1000, others leave the wait off'],
]
let envChecked = false
function warnBadEnvironment(): void {
  if (envChecked || typeof process === 'undefined' || typeof process.emitWarning !== 'function') return
  envChecked = true
  for (const [name, max, effect] of ENV_RANGES) {
    const v = process.env[name]
    if (v === undefined || (/^\+?\d+$/.test(v) && Number(v) <= max)) continue
    process.emitWarning(`odirect: ${name}=${JSON.stringify(v)} is not an integer from 0 to ${max} (${effect})`, { code: 'ODIRECT_ENV' })
  }
}

export function getEngine(): Engine {
  if (engine === undefined) engine = new Engine()
  return engine
}

/** Which path this thread's engine uses to reap completions, and how io_uring is set up. */
export function engineInfo(): EngineInfo {
  return getEngine().info()
}
