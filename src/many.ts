// readMany / writeMany: a batch of reads or writes on one handle, with a sliding window that
// bounds what is in flight (ops in the kernel and the memory they hold) and an AbortSignal that
// stops the batch. Without a window every op is captured and staged at the call (one native
// crossing, all or none); with one, the first `window` are, and each completion captures and
// stages the next op, so a bounce buffer exists only while its op is in flight.
import { type OpSink, RESULT_DETACHED } from './engine'
import { abortError, DirectIoError, errno as E, kernelError, misuse } from './errors'
import type { HandleIo } from './io'

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
    const whole = first === n
    const ids = io.engine.rwMany(io.file.bidx, d.write, io.file.fd, whole ? views : views.slice(0, first), whole ? lengths : lengths.slice(0, first), whole ? positions : positions.slice(0, first), d.memAlign, this.#slots)
    for (let i = 0; i < first; i++) {
      const slot = this.#slots[i]
      slot.index = i
      slot.id = io.flagged(ids[i], d.rwFlags)
      if (d.link) io.engine.setLink(ids[i])
      if (slot.bounced) io.stats.bounced++
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
  }

  /** A slot's op completed: record it and let the next op take the slot. */
  settled(slot: Slot, i: number, result: number, latencyUs: number): void {
    const io = this.io
    io.completed(this.d.kind, result, latencyUs)
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
    while (!this.#aborted && this.#next < d.views.length) {
      const i = this.#next++
      try {
        slot.id = io.flagged(io.engine.rw(io.file.bidx, d.write, io.file.fd, d.views[i], 0, d.lengths[i], d.positions[i], d.memAlign, slot), d.rwFlags)
        slot.index = i
        io.hold()
        if (slot.bounced) io.stats.bounced++
        return
      } catch (e) {
        this.#failed++
        this.#results[i] = e as DirectIoError
        this.#left--
      }
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
    if (this.#onAbort !== undefined) this.d.signal?.removeEventListener?.('abort', this.#onAbort)
    if (this.d.write) this.io.writeDone(this.#seq)
    this.io.release()
    const results = this.#results
    if (this.#failed === 0) return this.#resolve(results as number[])
    const n = results.length
    const what = this.#syscall
    const attach = (e: DirectIoError): void => {
      Object.defineProperty(e, 'results', { value: Object.freeze(results.slice()), enumerable: true })
    }
    if (this.#aborted) {
      const e = new DirectIoError(`${what}Many was aborted (${this.io.file.path}): ${this.#failed} of ${n} ops cancelled, never started or failed`, {
        code: 'ABORT_ERR',
        syscall: what,
        path: this.io.file.path,
        hint: 'the AbortSignal was aborted; error.results says what each op did (bytes, its error, or ABORT_ERR when it was cancelled or never started)',
        cause: (this.d.signal as AbortSignal).reason,
      })
      attach(e)
      return this.#reject(e)
    }
    const first = results.find((r) => typeof r !== 'number') as DirectIoError
    const e = new DirectIoError(`${this.#failed} of ${n} ${what}s failed; first: ${first.message}`, {
      code: first.code,
      errno: first.errno,
      syscall: first.syscall,
      path: this.io.file.path,
      position: first.position,
      length: first.length,
      hint: `${first.hint}${first.hint ? '; ' : ''}error.results says what each op did (bytes, or its error)`,
      cause: first,
    })
    attach(e)
    this.#reject(e)
  }
}
