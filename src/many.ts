// readMany / writeMany: a batch of reads or writes on one handle, with a sliding window that
// bounds what is in flight (ops in the kernel and the memory they hold) and an AbortSignal that
// stops the batch. Without a window every op is captured and staged at the call (one native
// crossing, all or none); with one, the first `window` are, and each completion captures and
// stages the next op, so a bounce buffer exists only while its op is in flight.
import { callerError, intArg, isOptionsObject, RWF_DONTCACHE, unlisten } from './args'
import { MAX_IO_LENGTH } from './buffers'
import { batchDone, captureError, type OpSink, RESULT_DETACHED } from './engine'
import { abortError, DirectIoError, errno as E, kernelError, misuse, reasonOf } from './errors'
import type { HandleIo } from './io'
import { native } from './native'
import { BUCKETS } from './ops'

/** A batch, as the FileHandle describes it (all validated). */
export interface BatchDesc {
  write: boolean
  kind: number
  views: readonly ArrayBufferView[]
  lengths: readonly number[]
  positions: readonly number[]
  memAlign: number
  /** At most this many ops in flight (Infinity: all at once). */
  window: number
  signal: AbortSignal | undefined
  /** RWF_* flags of every op (dsync, sync; RWF_DONTCACHE is added by HandleIo where it applies). */
  rwFlags: number
  /** io_uring: the ops are linked (IOSQE_IO_LINK) to the fdatasync staged next (writeMany { datasync }, no window). */
  link: boolean
  /**
   * Linked ops that completed ECANCELED (cancelled by their chain, not by an abort): op index ->
   * latency (us). Not counted in fh.stats() as they complete: `rerunCancelled` counts them when
   * the caller sees them fail, not at all when they run again (their re-run is what it sees).
   */
  cancelled?: Map<number, number>
}

/** A window slot's sink: reused by each op that takes the slot (one op at a time). */
class Slot implements OpSink {
  index = -1
  id = -1
  bounced = false
  constructor(readonly batch: ManyBatch) {}
  settle(result: number, latencyUs: number): void {
    const i = this.index
    this.index = -1
    this.id = -1
    this.batch.settled(this, i, result, latencyUs)
  }
}

export class ManyBatch {
  readonly promise: Promise<number[]>
  readonly #results: Array<number | DirectIoError>
  readonly #slots: Slot[] = []
  #resolve!: (v: number[]) => void
  #reject!: (e: unknown) => void
  #next = 0
  #left: number
  #failed = 0
  #aborted = false
  #finished = false
  readonly #seq: number
  readonly #syscall: 'read' | 'write'
  readonly #onAbort: (() => void) | undefined

  constructor(
    readonly io: HandleIo,
    readonly d: BatchDesc,
  ) {
    const { views, lengths, positions } = d
    const n = views.length
    this.#syscall = d.write ? 'write' : 'read'
    this.#results = new Array<number | DirectIoError>(n)
    this.#left = n
    this.promise = new Promise<number[]>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    // The first window (all ops when there is none) in one native crossing: captured whole or
    // not at all (a capture error throws from here, nothing started).
    const first = Math.min(n, d.window)
    for (let i = 0; i < first; i++) this.#slots.push(new Slot(this))
    // (s22) A window of 1, nothing linked, no RWF_* flags, no signal: each op goes as a lone
    // op does (Engine.rw `alone`: a small read on tmpfs is made inline in the call and settled
    // at once; elsewhere it reaches the kernel in its call), not staged for the flush.
    this.#alone = first === 1 && !d.link && d.rwFlags === 0 && d.signal === undefined && manyAlone()
    if (this.#alone) {
      const slot = this.#slots[0]
      slot.id = io.engine.rw(io.file.bidx, d.write, io.file.fd, views[0], 0, lengths[0], positions[0], d.memAlign, slot, io.rwFlags(0), true, 'an ops[] buffer')
      slot.index = 0
      if (slot.bounced) io.stats.bounced++
    } else {
      const whole = first === n
      // Their RWF_* flags go with them (set natively before any can be submitted); unlinked ones
      // may go to the kernel as they are staged (a device's file: in groups, engine.rs rw_many).
      const ids = io.engine.rwMany(io.file.bidx, d.write, io.file.fd, whole ? views : views.slice(0, first), whole ? lengths : lengths.slice(0, first), whole ? positions : positions.slice(0, first), d.memAlign, this.#slots, io.rwFlags(d.rwFlags), !d.link)
      for (let i = 0; i < first; i++) {
        const slot = this.#slots[i]
        slot.index = i
        slot.id = ids[i]
        if (d.link) io.engine.setLink(ids[i])
        if (slot.bounced) io.stats.bounced++
      }
    }
    this.#next = first
    // Each op in flight counts in the handle's in-flight ops (its settle takes it back), and the
    // batch as one more until it settles, so close() waits for all of it.
    for (let i = 0; i <= first; i++) io.hold()
    this.#seq = d.write ? io.writeStarted() : 0
    if (d.signal !== undefined) {
      this.#onAbort = () => this.#abort()
      d.signal.addEventListener('abort', this.#onAbort, { once: true })
    }
    // Completed in its call (made inline): settled now that the batch's bookkeeping is done.
    if (this.#alone && this.#slots[0].id < 0) io.engine.settleDone()
  }

  /** Ops go one by one as lone ops (see the constructor). */
  readonly #alone: boolean

  /** A slot's op completed: record it and let the next op take the slot. */
  settled(slot: Slot, i: number, result: number, latencyUs: number): void {
    const io = this.io
    if (result === -E.ECANCELED && this.d.link && !this.#aborted) {
      // Cancelled by its chain: counted (or not) by rerunCancelled, once the batch ended.
      ;(this.d.cancelled ??= new Map()).set(i, latencyUs)
      io.release()
    } else io.completed(this.d.kind, result, latencyUs)
    const at = this.d.positions[i]
    const len = this.d.lengths[i]
    const path = io.file.path
    if (result >= 0) {
      this.#results[i] = result
      io.dropCache(at, result)
    } else {
      this.#failed++
      this.#results[i] =
        result === RESULT_DETACHED
          ? misuse('ERR_ODIRECT_DETACHED', `ops[${i}].buffer was detached while the ${this.#syscall} was in flight`, 'do not transfer a buffer while an op on it is pending', { syscall: this.#syscall, path, position: at, length: len })
          : this.#aborted && result === -E.ECANCELED
            ? this.#abortedOp(i)
            : kernelError(-result, { syscall: this.#syscall, path, position: at, length: len })
    }
    this.#left--
    if (this.#left === 0) return this.#finish()
    if (this.#next < this.d.views.length) {
      // The next op takes the slot right after this batch of completions has been delivered
      // (not during it: the engine may give the new op an id whose completion is still to be
      // delivered in this batch).
      this.#idle.push(slot)
      if (this.#idle.length === 1) queueMicrotask(this.#refillBound)
    }
  }

  readonly #idle: Slot[] = []
  readonly #refillBound = (): void => {
    const idle = this.#idle.splice(0)
    for (const slot of idle) this.#startNext(slot)
    if (this.#left === 0) this.#finish()
  }

  /** Captures and stages ops into `slot` until one is started (a capture error settles that op). */
  #startNext(slot: Slot): void {
    const { io, d } = this
    const alone = this.#alone
    while (!this.#aborted && this.#next < d.views.length) {
      const i = this.#next++
      let id: number
      try {
        id = io.engine.rw(io.file.bidx, d.write, io.file.fd, d.views[i], 0, d.lengths[i], d.positions[i], d.memAlign, slot, alone ? io.rwFlags(0) : 0, alone)
        if (!alone) id = io.flagged(id, d.rwFlags)
      } catch (e) {
        this.#failed++
        this.#results[i] = withOp(e, { syscall: this.#syscall, path: io.file.path, position: d.positions[i], length: d.lengths[i] })
        this.#left--
        continue
      }
      slot.id = id
      slot.index = i
      io.hold()
      if (slot.bounced) io.stats.bounced++
      // Completed in its call (a lone op made inline): settled now.
      if (id < 0) io.engine.settleDone()
      return
    }
  }

  #abortedOp(i: number): DirectIoError {
    return abortError(this.d.signal as AbortSignal, { syscall: this.#syscall, path: this.io.file.path, position: this.d.positions[i], length: this.d.lengths[i] })
  }

  #abort(): void {
    if (this.#left === 0) return
    this.#aborted = true
    // Ops not started yet never will be.
    const n = this.d.views.length
    for (let i = this.#next; i < n; i++) {
      this.#failed++
      this.#results[i] = this.#abortedOp(i)
      this.#left--
    }
    this.#next = n
    // Ops in the kernel are cancelled (each still completes: with ECANCELED, or with its result
    // when it finished first).
    for (const s of this.#slots) if (s.index >= 0) this.io.engine.cancel(this.io.file.bidx, s.id)
    if (this.#left === 0) this.#finish()
  }

  #finish(): void {
    if (this.#finished) return
    this.#finished = true
    unlisten(this.d.signal, this.#onAbort)
    if (this.d.write) this.io.writeDone(this.#seq)
    this.io.release()
    const results = this.#results
    if (this.#failed === 0) return this.#resolve(results as number[])
    this.#reject(manyError(results, this.#failed, this.#syscall, this.io.file.path, this.#aborted ? this.d.signal : undefined))
  }
}

/**
 * ODIRECT_MANY_NATIVE=1 (opt-in, read at each call): array-form batches on odirect's own memory
 * run in the engine (as the typed-array form: the window refilled at reap time, one completion
 * for the batch, no object or native call per op). Half the user-space instructions per op, but
 * not faster in `odirect bench` (README "Kernel features, measured"): off by default.
 */
const manyNative = (): boolean => typeof process !== 'undefined' && process.env?.ODIRECT_MANY_NATIVE === '1'

/**
 * ODIRECT_MANY_ALONE=0 (read once): array-form batches with a window of 1 stage their ops for the
 * flush as wider windows do (the twenty-first session's way), instead of as lone ops.
 */
let manyAloneOn: boolean | undefined
const manyAlone = (): boolean => (manyAloneOn ??= !(typeof process !== 'undefined' && process.env?.ODIRECT_MANY_ALONE === '0'))

/** The op positions of an array-form batch as the engine takes them (one array, reused: read at the call). */
let positionsScratch = new Float64Array(64)

/**
 * Starts an array-form batch: with ODIRECT_MANY_NATIVE=1 in the engine when every buffer is
 * odirect's own memory at an aligned address (and the writes are not linked to a datasync), else
 * op by op (ManyBatch, bounce buffers where needed). Same results and errors either way.
 */
export function startMany(io: HandleIo, d: BatchDesc): Promise<number[]> {
  const n = d.views.length
  if (!d.link && manyNative()) {
    if (positionsScratch.length < n) positionsScratch = new Float64Array(Math.max(n, 2 * positionsScratch.length))
    const ps = positionsScratch
    for (let i = 0; i < n; i++) ps[i] = d.positions[i]
    const batch = new ArraysBatch(io, d.write, d.signal, n, undefined, d)
    // Not the engine's to run (plain memory, a misaligned view, ...): nothing started.
    const id = io.engine.batchViews(io.file.bidx, d.write, io.file.fd, d.views, ps, Math.min(n, d.window), d.memAlign, io.rwFlags(d.rwFlags), batch)
    if (id >= 0) {
      batch.started(id)
      return batch.promise as Promise<number[]>
    }
  }
  return new ManyBatch(io, d).promise
}

/**
 * writeMany({ datasync }) on io_uring, its writes linked to the fdatasync (`d.link`): the kernel
 * ends a chain at a write that moved fewer bytes than asked (a block device's end,
 * RLIMIT_FSIZE), so the writes linked after it complete ECANCELED though none failed, where aio
 * and the thread pool run them. When `e`, the batch's rejection, is only that (every failed op
 * cancelled, after a short write), the cancelled writes run again unlinked: the promise of the
 * whole batch's results (theirs in their places), or of its error with them. Else undefined.
 */
export function rerunCancelled(io: HandleIo, d: BatchDesc, e: unknown): Promise<number[]> | undefined {
  const again = rerunOf(io, d, e)
  const held = d.cancelled
  d.cancelled = undefined
  // (s22) Not run again: the caller sees them fail, counted now as failed ops, their latencies
  // with them. Run again: out of fh.stats() whole (counts and latency histogram alike; was: out
  // of the counts only, adversary-s21c), their re-run counted as it completes.
  if (again === undefined && held !== undefined) for (const us of held.values()) io.completed(d.kind, -E.ECANCELED, us, false)
  return again
}

function rerunOf(io: HandleIo, d: BatchDesc, e: unknown): Promise<number[]> | undefined {
  const results = (e as { results?: ReadonlyArray<number | DirectIoError> } | null)?.results
  if (!d.link || !(e instanceof DirectIoError) || e.code === 'ABORT_ERR' || results === undefined) return undefined
  const again: number[] = []
  let short = false
  for (let i = 0; i < results.length; i++) {
    const r = results[i]
    if (typeof r === 'number') short ||= again.length === 0 && r < d.lengths[i]
    else if (short && r instanceof DirectIoError && r.code === 'ECANCELED') again.push(i)
    else return undefined
  }
  if (again.length === 0) return undefined
  const path = io.file.path
  const { signal } = d
  const merged = results.slice()
  const failure = (aborted: boolean): DirectIoError => manyError(merged, merged.filter((r) => typeof r !== 'number').length, 'write', path, aborted ? signal : undefined)
  let batch: ManyBatch
  try {
    // Aborted since the batch ended: they never start (as a batch's ops not started at an abort).
    if (signal?.aborted) throw abortError(signal, { syscall: 'write', path })
    batch = new ManyBatch(io, { ...d, views: again.map((i) => d.views[i]), lengths: again.map((i) => d.lengths[i]), positions: again.map((i) => d.positions[i]), link: false })
  } catch (x) {
    // Never started (aborted, or a buffer detached since the call): each says so.
    for (const i of again) merged[i] = withOp(x, { syscall: 'write', path, position: d.positions[i], length: d.lengths[i] })
    return Promise.reject(failure(signal?.aborted === true))
  }
  return batch.promise.then(
    (rs) => {
      for (let k = 0; k < again.length; k++) merged[again[k]] = rs[k]
      return merged as number[]
    },
    (x: unknown) => {
      const rs = (x as { results?: ReadonlyArray<number | DirectIoError> }).results
      if (rs === undefined) throw x
      for (let k = 0; k < again.length; k++) merged[again[k]] = rs[k]
      throw failure((x as DirectIoError).code === 'ABORT_ERR')
    },
  )
}

/**
 * An op's capture error (a windowed op started late: its buffer detached or shrunk meanwhile)
 * with the op's syscall, path, position and length, which the capture does not know.
 */
function withOp(e: unknown, ctx: { syscall: string; path: string; position: number; length: number }): DirectIoError {
  if (!(e instanceof DirectIoError)) return e as DirectIoError
  return new DirectIoError(e.message, { code: e.code, errno: e.errno, hint: e.hint, cause: e.cause, ...ctx })
}

/**
 * The rejection of a batch with `failed` failed ops: ABORT_ERR when `signal` aborted it, else
 * the first failure's code; `results` says what each op did.
 */
function manyError(results: ReadonlyArray<number | DirectIoError>, failed: number, what: 'read' | 'write', path: string, signal: AbortSignal | undefined): DirectIoError {
  const n = results.length
  let e: DirectIoError
  if (signal !== undefined) {
    e = new DirectIoError(`${what}Many was aborted (${path}): ${failed} of ${n} ops cancelled, never started or failed`, {
      code: 'ABORT_ERR',
      syscall: what,
      path,
      hint: 'the AbortSignal was aborted; error.results says what each op did (bytes, its error, or ABORT_ERR when it was cancelled or never started)',
      cause: reasonOf(signal),
    })
  } else {
    const first = results.find((r) => typeof r !== 'number') as DirectIoError
    e = new DirectIoError(`${failed} of ${n} ${what}s failed; first: ${first.message}`, {
      code: first.code,
      errno: first.errno,
      syscall: first.syscall,
      path,
      position: first.position,
      length: first.length,
      hint: `${first.hint}${first.hint ? '; ' : ''}error.results says what each op did (bytes, or its error)`,
      cause: first,
    })
  }
  Object.defineProperty(e, 'results', { value: Object.freeze(results.slice()), enumerable: true })
  return e
}

/**
 * readMany / writeMany over typed arrays: op i moves `lengths[i]` bytes at `offsets[i]` in
 * `memory` at file position `positions[i]`. With odirect's own memory (`fh.alloc`) the batch
 * runs in the engine: one native call to start it, its window refilled at reap time, one
 * completion for the whole batch; results land in `results` (bytes, or -errno). Other memory
 * goes op by op through bounce buffers (the array form), with the same results.
 */
export interface ManyArrays {
  /** One region every op reads into / writes from: `fh.alloc(size)` memory for the native batch. */
  memory: ArrayBufferView | ArrayBuffer
  /** Byte offset of each op in `memory` (each a multiple of `fh.alignment.memory`). */
  offsets: Uint32Array
  /** Bytes each op moves (each a multiple of `fh.alignment.offset` on O_DIRECT; not 0). */
  lengths: Uint32Array
  /** File position of each op (each a multiple of `fh.alignment.offset` on O_DIRECT). */
  positions: Float64Array | BigInt64Array
  /** Where each op's result goes (bytes, or a negative errno): at least as many as the ops. Default: a new Int32Array. */
  results?: Int32Array
}

/** Ids of the BatchWindows of this thread (the engine knows a shared window by its id). */
const windowIds = new WeakMap<BatchWindow, number>()
let lastWindowId = 0

/**
 * A window shared by typed-array readMany/writeMany batches (`{ window: w }`): at most
 * `w.size` ops of all of them in flight, across handles of this thread. The batches start their
 * ops in the order they were called, each as soon as the ones before it leave room, so the
 * device queue stays full from one batch to the next: start the next batch while the current
 * one runs (a queue of batches) and the window never drains. Each batch still resolves (or
 * rejects) on its own, when its own ops are done. Runs natively: the memory must be odirect's
 * own (`fh.alloc`, registered buffers).
 */
export class BatchWindow {
  /** The most ops in flight at once, over all the batches in this window. */
  declare readonly size: number
  constructor(size: number) {
    // Fixed for good (not writable): a size changed after the first batch would not reach the
    // engine's window, and one that is not a whole number would not reach it at all.
    Object.defineProperty(this, 'size', { value: intArg(size, 'BatchWindow size', 1, MAX_OPS), enumerable: true })
    windowIds.set(this, ++lastWindowId)
  }
}

/** The engine's id of a shared window (0: none, or an object that only looks like a BatchWindow). */
export const windowId = (w: BatchWindow | undefined): number => (w === undefined ? 0 : (windowIds.get(w) ?? 0))

/** What the FileHandle gives the typed-array batch (its options already validated). */
export interface ArraysDesc {
  write: boolean
  kind: number
  memAlign: number
  /** O_DIRECT's length and position unit (1 when not direct). */
  unit: number
  window: number
  /** The shared window the batch runs in (its `size` is `window`), if any. */
  shared: BatchWindow | undefined
  signal: AbortSignal | undefined
  rwFlags: number
  /** Throws the handle's alignment error for op `what`. */
  checkAligned(length: number, position: number, what: string): void
  /** (s21c) Reads refused for their position only: 0 bytes at or past the end of the file (see FileHandle #manyAtEnd). */
  atEnd?: AtEnd
}

/**
 * (s21c) Ops `skip` of a read batch of `n` (block-multiple lengths, positions not aligned): one fstat,
 * then `run` the batch without them when every one is at or past the end of the file, else
 * the alignment error `refuse(i)` of the first inside it.
 */
export type AtEnd = <R>(n: number, skip: readonly number[], position: (i: number) => number, refuse: (i: number) => unknown, run: (keep: number[]) => Promise<R>) => Promise<R>

/** The ops of `n` not in `skip` (both in order). */
export function keptOps(n: number, skip: readonly number[]): number[] {
  const keep: number[] = []
  for (let i = 0, k = 0; i < n; i++) {
    if (k < skip.length && skip[k] === i) k++
    else keep.push(i)
  }
  return keep
}

/**
 * (s21c) `p`, the results of a batch run with only ops `keep` of `n`, spread to all `n` places:
 * the others (reads at or past the end of the file) 0 bytes. Its error likewise (`results`).
 */
export function spreadResults(p: Promise<number[]>, n: number, keep: readonly number[], path: string, signal: AbortSignal | undefined): Promise<number[]> {
  const spread = <T>(rs: ReadonlyArray<T>): Array<T | number> => {
    const all = new Array<T | number>(n).fill(0)
    for (let k = 0; k < keep.length; k++) all[keep[k]] = rs[k]
    return all
  }
  if (keep.length === 0) return Promise.resolve(new Array<number>(n).fill(0))
  return p.then(
    (rs) => spread(rs) as number[],
    (x: unknown) => {
      const rs = (x as { results?: ReadonlyArray<number | DirectIoError> } | null)?.results
      if (rs === undefined) throw x
      const all = spread(rs)
      throw manyError(all, all.filter((r) => typeof r !== 'number').length, 'read', path, (x as DirectIoError).code === 'ABORT_ERR' ? signal : undefined)
    },
  )
}

const MAX_OPS = 1 << 20

/** A typed array's own element count (%TypedArray%.prototype.length: not a `length` the caller shadowed on the array). */
const elementsOf = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype) as object, 'length')?.get as (this: ArrayBufferView) => number

/** Whether `ops` is the typed-array form (`{ memory, ... }`) rather than an array of ops. */
export function isManyArrays(ops: unknown): boolean {
  if (!isOptionsObject(ops)) return false // not an object, an array, or a revoked Proxy
  try {
    return 'memory' in ops
  } catch (e) {
    throw callerError(e) // a Proxy's `has` trap: the caller's code
  }
}

/** The typed-array batch, validated, and started (rejects with the same errors as the array form). */
export function manyArrays(io: HandleIo, d: ArraysDesc, arg: unknown): Promise<Int32Array> {
  const syscall = d.write ? 'write' : 'read'
  const a = arg as Record<string, unknown>
  const hint = 'pass { memory: fh.alloc(size), offsets: Uint32Array, lengths: Uint32Array, positions: Float64Array | BigInt64Array }'
  let memory: unknown, offsets: unknown, lengths: unknown, positions: unknown, results: unknown
  try {
    ;({ memory, offsets, lengths, positions, results } = a)
  } catch (e) {
    throw callerError(e) // a getter or Proxy trap: the caller's code
  }
  const size = ArrayBuffer.isView(memory) || memory instanceof ArrayBuffer ? memory.byteLength : -1
  if (size <= 0) throw misuse(size === 0 ? 'ERR_ODIRECT_DETACHED' : 'ERR_INVALID_ARG_TYPE', `${syscall}Many: memory must be a non-empty Buffer, TypedArray, DataView or ArrayBuffer, got ${size === 0 ? 'an empty or detached one' : typeof memory}`, hint)
  if (!(offsets instanceof Uint32Array)) throw misuse('ERR_INVALID_ARG_TYPE', `${syscall}Many: offsets must be a Uint32Array`, hint)
  if (!(lengths instanceof Uint32Array)) throw misuse('ERR_INVALID_ARG_TYPE', `${syscall}Many: lengths must be a Uint32Array`, hint)
  if (!(positions instanceof Float64Array || positions instanceof BigInt64Array)) throw misuse('ERR_INVALID_ARG_TYPE', `${syscall}Many: positions must be a Float64Array or BigInt64Array`, hint)
  const n = elementsOf.call(offsets)
  const ln = elementsOf.call(lengths)
  const pn = elementsOf.call(positions)
  if (ln !== n || pn !== n) throw misuse('ERR_INVALID_ARG_VALUE', `${syscall}Many: offsets, lengths and positions must have the same length (got ${n}, ${ln}, ${pn})`, 'one entry per op in each')
  if (n > MAX_OPS) throw misuse('ERR_OUT_OF_RANGE', `${syscall}Many takes at most ${MAX_OPS} ops, got ${n}`, 'split into several calls')
  if (results !== undefined && !(results instanceof Int32Array && elementsOf.call(results) >= n)) throw misuse('ERR_INVALID_ARG_TYPE', `${syscall}Many: results must be an Int32Array of at least ${n} elements`, 'pass new Int32Array(n), or leave it out')
  const out = results === undefined ? new Int32Array(n) : results
  if (n === 0) return Promise.resolve(out)
  const big = positions instanceof BigInt64Array
  const { unit, memAlign } = d
  let skip: number[] | undefined
  for (let i = 0; i < n; i++) {
    const off = offsets[i]
    const len = lengths[i]
    const p = big ? Number(positions[i]) : (positions[i] as number)
    if (!(Number.isSafeInteger(p) && p >= 0)) throw misuse('ERR_OUT_OF_RANGE', `${syscall}Many: positions[${i}] must be a whole number from 0 to 2^53 - 1, got ${String(positions[i])}`, 'pass file offsets in bytes')
    if (len === 0 || len > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `${syscall}Many: lengths[${i}] must be from 1 to ${MAX_IO_LENGTH}, got ${len}`, 'split larger transfers into several ops')
    if (off + len > size) throw misuse('ERR_OUT_OF_RANGE', `${syscall}Many: op ${i} (offset ${off}, length ${len}) ends past the memory's ${size} bytes`, 'keep offsets[i] + lengths[i] within memory.byteLength')
    if (memAlign > 1 && off % memAlign !== 0) throw misuse('ERR_ODIRECT_ALIGNMENT', `${syscall}Many: offsets[${i}] ${off} is not a multiple of ${memAlign}, the memory alignment O_DIRECT on ${io.file.path} requires`, 'keep each op at a multiple of fh.alignment.memory in memory from fh.alloc', { path: io.file.path, syscall })
    // (p / unit floored, times unit: exact for whole numbers below 2^53 and a power-of-two unit;
    // cheaper than a floating-point %.)
    if (len % unit !== 0 || Math.floor(p / unit) * unit !== p) {
      // (s21c) A read refused for its position only: 0 bytes at or past the end (d.atEnd).
      if (d.atEnd !== undefined && len % unit === 0) (skip ??= []).push(i)
      else d.checkAligned(len, p, `lengths[${i}]`)
    }
  }
  if (d.signal?.aborted) return Promise.reject(abortError(d.signal, { syscall, path: io.file.path }))
  const mem = memory as ArrayBufferView | ArrayBuffer
  if (skip !== undefined && d.atEnd !== undefined) {
    const at = (i: number): number => Number(positions[i])
    const refuse = (i: number): unknown => {
      try {
        d.checkAligned(lengths[i], at(i), `lengths[${i}]`)
      } catch (e) {
        return e
      }
    }
    return d.atEnd(n, skip, at, refuse, (keep) => {
      // The kept ops as a batch of their own (checked again: all aligned now), its results
      // spread to theirs in `out` and the skipped ones' 0.
      const m = keep.length
      const sub = { memory: mem, offsets: new Uint32Array(m), lengths: new Uint32Array(m), positions: new Float64Array(m), results: new Int32Array(m) }
      keep.forEach((i, k) => {
        sub.offsets[k] = offsets[i]
        sub.lengths[k] = lengths[i]
        sub.positions[k] = at(i)
      })
      for (const i of skip) out[i] = 0
      const rs = m === 0 ? Promise.resolve([]) : manyArrays(io, { ...d, atEnd: undefined }, sub).then((r) => Array.from(r))
      return spreadResults(rs, n, keep, io.file.path, d.signal).then(
        () => {
          for (let k = 0; k < m; k++) out[keep[k]] = sub.results[k]
          return out
        },
        (x: unknown) => {
          for (let k = 0; k < m; k++) out[keep[k]] = sub.results[k]
          throw x
        },
      )
    })
  }
  const flags = io.file.uncached ? d.rwFlags | RWF_DONTCACHE : d.rwFlags
  // The caller may change or transfer the arrays once the call returns: the engine copied the
  // ops, and gives their positions and lengths back when the batch needs them (errors, cache).
  const batch = new ArraysBatch(io, d.write, d.signal, n, out)
  const group = windowId(d.shared)
  const id = io.engine.batch(io.file.bidx, d.write, io.file.fd, mem, offsets, lengths, positions, group === 0 ? Math.min(n, d.window) : d.window, memAlign, flags, group, batch)
  if (id === native.BatchCode.NotOwned) {
    if (group !== 0) throw misuse('ERR_INVALID_ARG_VALUE', `${syscall}Many: a BatchWindow runs batches in the engine, which needs odirect's own memory`, 'pass memory from fh.alloc (or registered buffers), or a number as window')
    return viaOps(io, d, mem, n, offsets, lengths, positions, out)
  }
  if (id < 0) throw batchError(id, d.write)
  batch.started(id)
  return batch.promise as Promise<Int32Array>
}

/** Memory that is not odirect's own: the array form (bounce buffers), its results copied into `out`. */
function viaOps(io: HandleIo, d: ArraysDesc, memory: ArrayBufferView | ArrayBuffer, n: number, offsets: Uint32Array, lengths: Uint32Array, positions: Float64Array | BigInt64Array, out: Int32Array): Promise<Int32Array> {
  // `n` as validated (the arrays' own element counts: not a `length` the caller defined on them).
  const bytes = ArrayBuffer.isView(memory) ? new Uint8Array(memory.buffer, memory.byteOffset, memory.byteLength) : new Uint8Array(memory)
  const views: Uint8Array[] = []
  const ls: number[] = []
  const ps: number[] = []
  for (let i = 0; i < n; i++) {
    views.push(bytes.subarray(offsets[i], offsets[i] + lengths[i]))
    ls.push(lengths[i])
    ps.push(Number(positions[i]))
  }
  const copy = (rs: ReadonlyArray<number | DirectIoError>): void => {
    for (let i = 0; i < n; i++) {
      const r = rs[i]
      // A DirectIoError's errno is negative already, as Node's (was negated again: +28 for ENOSPC, read as 28 bytes moved).
      out[i] = typeof r === 'number' ? r : r.code === 'ABORT_ERR' ? -E.ECANCELED : r.errno !== undefined ? -Math.abs(r.errno) : -E.EIO
    }
  }
  const b = new ManyBatch(io, { write: d.write, kind: d.kind, views, lengths: ls, positions: ps, memAlign: d.memAlign, window: d.window, signal: d.signal, rwFlags: d.rwFlags, link: false })
  return b.promise.then(
    (rs) => {
      copy(rs)
      return out
    },
    (e: unknown) => {
      const rs = (e as { results?: ReadonlyArray<number | DirectIoError> }).results
      if (rs !== undefined) copy(rs)
      throw e
    },
  )
}

/**
 * The per-op latencies of a native batch as NativeEngine.batchTake gives them (a count per
 * histogram bucket, then count, sum, max): one array for every batch of the thread, read right
 * after each take.
 */
let latencyStats: Float64Array | undefined

/** The results of an array-form native batch as the engine gives them (one array, reused: read at the take). */
let resultsScratch = new Int32Array(64)

/**
 * A native batch: one sink for all its ops. The typed-array form resolves with `results`; the
 * array form (`ops` given, `results` undefined) with an array of numbers, as ManyBatch does.
 */
class ArraysBatch implements OpSink {
  readonly promise: Promise<Int32Array | number[]>
  #resolve!: (v: Int32Array | number[]) => void
  #reject!: (e: unknown) => void
  #id = -1
  #seq = 0
  #onAbort: (() => void) | undefined
  #aborted = false

  constructor(
    readonly io: HandleIo,
    readonly write: boolean,
    readonly signal: AbortSignal | undefined,
    /** How many ops. */
    readonly n: number,
    /** The typed-array form's results array. */
    readonly results: Int32Array | undefined,
    /** The array form's ops (their positions and lengths, for errors and the cache). */
    readonly ops?: BatchDesc,
  ) {
    this.promise = new Promise<Int32Array | number[]>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
  }

  /** The engine started the batch: `r`, what Engine.batch returned (its id, or its id and ops failed when it completed in the call). */
  started(r: number): void {
    const { io, signal } = this
    const [id, failed] = batchDone(r)
    this.#id = id
    io.hold()
    this.#seq = this.write ? io.writeStarted() : 0
    // Every op made inline in the call (a window of 1 on tmpfs): no completion follows.
    if (failed >= 0) return this.settle(failed)
    if (signal !== undefined) {
      this.#onAbort = () => {
        this.#aborted = true
        io.engine.cancel(io.file.bidx, this.#id)
      }
      signal.addEventListener('abort', this.#onAbort, { once: true })
    }
  }

  /** The whole batch completed (`failed` ops failed; the mean latency per op is not used: batchTake gives each op's). */
  settle(failed: number): void {
    const { io, write, signal, n, ops } = this
    const f = io.file
    unlisten(signal, this.#onAbort)
    if (write) io.writeDone(this.#seq)
    const lat = (latencyStats ??= new Float64Array(BUCKETS + 3))
    lat[BUCKETS] = 0
    if (this.results === undefined && resultsScratch.length < n) resultsScratch = new Int32Array(Math.max(n, 2 * resultsScratch.length))
    const results = this.results ?? resultsScratch
    // Each op's position and length (2i, 2i + 1), from the engine: only for errors and for
    // dropping a buffered file's cache (the array form has its own).
    const dropping = !f.direct && !f.uncached && f.fallbackReason !== ''
    const ranges = ops === undefined && (failed > 0 || dropping) ? new Float64Array(2 * n) : undefined
    const taken = io.engine.native.batchTake(this.#id, results, lat, ranges)
    const s = io.stats
    let bytes = 0
    for (let i = 0; i < n; i++) if (results[i] > 0) bytes += results[i]
    s.ops += n
    s.errors += failed
    if (write) {
      s.writes += n - failed
      s.bytesWritten += bytes
    } else {
      s.reads += n - failed
      s.bytesRead += bytes
    }
    io.latency.addCounted(lat)
    const position = (i: number): number => (ops === undefined ? (ranges as Float64Array)[2 * i] : ops.positions[i])
    const length = (i: number): number => (ops === undefined ? (ranges as Float64Array)[2 * i + 1] : ops.lengths[i])
    if (dropping) for (let i = 0; i < n; i++) if (results[i] > 0) io.dropCache(position(i), results[i])
    io.release()
    const syscall = write ? 'write' : 'read'
    if (taken < 0) {
      return this.#reject(misuse('ERR_ODIRECT_DETACHED', `${syscall}Many: results was detached or shrunk while the batch ran; the ops' results are lost (the data moved)`, 'do not transfer the results array while the batch runs', { syscall, path: f.path }))
    }
    if (failed === 0) {
      if (ops === undefined) return this.#resolve(results)
      const each = new Array<number>(n)
      for (let i = 0; i < n; i++) each[i] = results[i]
      return this.#resolve(each)
    }
    const each: Array<number | DirectIoError> = []
    for (let i = 0; i < n; i++) {
      const r = results[i]
      const ctx = { syscall, path: f.path, position: position(i), length: length(i) } as const
      each.push(r >= 0 ? r : this.#aborted && r === -E.ECANCELED ? abortError(signal as AbortSignal, ctx) : kernelError(-r, ctx))
    }
    this.#reject(manyError(each, failed, syscall, f.path, this.#aborted ? signal : undefined))
  }
}

/** A native batch refused at the start (nothing started). */
function batchError(code: number, write: boolean): Error {
  const what = `${write ? 'write' : 'read'}Many`
  switch (code) {
    case native.BatchCode.OutOfRange:
      return misuse('ERR_OUT_OF_RANGE', `${what}: an op's range left the memory (changed while the batch was being started?)`, 'do not change offsets / lengths / memory from another thread while starting a batch')
    case native.BatchCode.Misaligned:
      return misuse('ERR_ODIRECT_ALIGNMENT', `${what}: an op's address in memory is not aligned to the file's memory alignment`, 'use memory from fh.alloc and offsets that are multiples of fh.alignment.memory')
    case native.BatchCode.BadArrays:
      return misuse('ERR_INVALID_ARG_VALUE', `${what}: offsets / lengths / positions changed while the batch was being started`, 'do not change them from another thread while starting a batch')
    default:
      return captureError(code, 'memory')
  }
}
