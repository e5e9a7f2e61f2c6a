// readMany / writeMany: a batch of reads or writes on one handle, with a sliding window that
// bounds what is in flight (ops in the kernel and the memory they hold) and an AbortSignal that
// stops the batch. Without a window every op is captured and staged at the call (one native
// crossing, all or none); with one, the first `window` are, and each completion captures and
// stages the next op, so a bounce buffer exists only while its op is in flight.
import { type Engine, type OpSink, RESULT_DETACHED } from './engine'
import { abortError, DirectIoError, kernelError, misuse } from './errors'

/** What a batch needs of its FileHandle (internal methods of handle.ts). */
export interface BatchOwner {
  readonly path: string
  readonly fd: number
  _done(kind: number, result: number, latencyUs: number): void
  _dropCache(position: number, length: number): void
  _hold(): void
  _release(): void
  _noteBounced(): void
  _flagged(id: number, rwFlags: number): number
  _writeStarted(): number
  _writeDone(seq: number): void
}

/** A window slot's sink: reused by each op that takes the slot (one op at a time). */
class Slot implements OpSink {
  index = -1
  id = -1
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
    readonly owner: BatchOwner,
    readonly engine: Engine,
    readonly bidx: number,
    readonly write: boolean,
    readonly kind: number,
    readonly views: readonly ArrayBufferView[],
    readonly lengths: readonly number[],
    readonly positions: readonly number[],
    readonly memAlign: number,
    window: number,
    readonly signal: AbortSignal | undefined,
    /** RWF_* flags of every op (dsync, sync; RWF_DONTCACHE is added by the owner where it applies). */
    readonly rwFlags: number,
    /** io_uring: the ops are linked (IOSQE_IO_LINK) to the fdatasync the owner stages next (writeMany { datasync }, no window). */
    link: boolean,
  ) {
    const n = views.length
    this.#syscall = write ? 'write' : 'read'
    this.#results = new Array<number | DirectIoError>(n)
    this.#left = n
    this.promise = new Promise<number[]>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    // The first window (all ops when there is none) in one native crossing: captured whole or
    // not at all (a capture error throws from here, nothing started).
    const first = Math.min(n, window)
    for (let i = 0; i < first; i++) this.#slots.push(new Slot(this))
    const ids = engine.rwMany(bidx, write, owner.fd, first === n ? views : views.slice(0, first), first === n ? lengths : lengths.slice(0, first), first === n ? positions : positions.slice(0, first), memAlign, this.#slots)
    for (let i = 0; i < first; i++) {
      this.#slots[i].index = i
      this.#slots[i].id = owner._flagged(ids[i], rwFlags)
      if (link) engine.setLink(ids[i])
    }
    this.#next = first
    owner._noteBounced()
    // Each op in flight counts in the handle's in-flight ops (its settle takes it back), and the
    // batch as one more until it settles, so close() waits for all of it.
    for (let i = 0; i <= first; i++) owner._hold()
    this.#seq = write ? owner._writeStarted() : 0
    if (signal !== undefined) {
      this.#onAbort = () => this.#abort()
      signal.addEventListener('abort', this.#onAbort, { once: true })
    }
  }

  /** A slot's op completed: record it and let the next op take the slot. */
  settled(slot: Slot, i: number, result: number, latencyUs: number): void {
    const o = this.owner
    o._done(this.kind, result, latencyUs)
    const at = this.positions[i]
    const len = this.lengths[i]
    if (result >= 0) {
      this.#results[i] = result
      o._dropCache(at, result)
    } else {
      this.#failed++
      this.#results[i] =
        result === RESULT_DETACHED
          ? misuse('ERR_ODIRECT_DETACHED', `ops[${i}].buffer was detached while the ${this.#syscall} was in flight`, 'do not transfer a buffer while an op on it is pending', { syscall: this.#syscall, path: o.path, position: at, length: len })
          : this.#aborted && result === -125 /* ECANCELED */
            ? this.#abortedOp(i)
            : kernelError(-result, { syscall: this.#syscall, path: o.path, position: at, length: len })
    }
    this.#left--
    if (this.#left === 0) return this.#finish()
    if (this.#next < this.views.length) {
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
    while (!this.#aborted && this.#next < this.views.length) {
      const i = this.#next++
      try {
        slot.id = this.owner._flagged(this.engine.rw(this.bidx, this.write, this.owner.fd, this.views[i], 0, this.lengths[i], this.positions[i], this.memAlign, slot), this.rwFlags)
        slot.index = i
        this.owner._hold()
        this.owner._noteBounced()
        return
      } catch (e) {
        this.#failed++
        this.#results[i] = e as DirectIoError
        this.#left--
      }
    }
  }

  #abortedOp(i: number): DirectIoError {
    return abortError(this.signal as AbortSignal, { syscall: this.#syscall, path: this.owner.path, position: this.positions[i], length: this.lengths[i] })
  }

  #abort(): void {
    if (this.#left === 0) return
    this.#aborted = true
    // Ops not started yet never will be.
    for (let i = this.#next; i < this.views.length; i++) {
      this.#failed++
      this.#results[i] = this.#abortedOp(i)
      this.#left--
    }
    this.#next = this.views.length
    // Ops in the kernel are cancelled (each still completes: with ECANCELED, or with its result
    // when it finished first).
    for (const s of this.#slots) if (s.index >= 0) this.engine.cancel(this.bidx, s.id)
    if (this.#left === 0) this.#finish()
  }

  #finish(): void {
    if (this.#finished) return
    this.#finished = true
    if (this.#onAbort !== undefined) this.signal?.removeEventListener('abort', this.#onAbort)
    if (this.write) this.owner._writeDone(this.#seq)
    this.owner._release()
    const results = this.#results
    if (this.#failed === 0) return this.#resolve(results as number[])
    const n = results.length
    const what = this.#syscall
    const attach = (e: DirectIoError): void => {
      Object.defineProperty(e, 'results', { value: Object.freeze(results.slice()), enumerable: true })
    }
    if (this.#aborted) {
      const e = new DirectIoError(`${what}Many was aborted (${this.owner.path}): ${this.#failed} of ${n} ops cancelled, never started or failed`, {
        code: 'ABORT_ERR',
        syscall: what,
        path: this.owner.path,
        hint: 'the AbortSignal was aborted; error.results says what each op did (bytes, its error, or ABORT_ERR when it was cancelled or never started)',
        cause: (this.signal as AbortSignal).reason,
      })
      attach(e)
      return this.#reject(e)
    }
    const first = results.find((r) => typeof r !== 'number') as DirectIoError
    const e = new DirectIoError(`${this.#failed} of ${n} ${what}s failed; first: ${first.message}`, {
      code: first.code,
      errno: first.errno,
      syscall: first.syscall,
      path: this.owner.path,
      position: first.position,
      length: first.length,
      hint: `${first.hint}${first.hint ? '; ' : ''}error.results says what each op did (bytes, or its error)`,
      cause: first,
    })
    attach(e)
    this.#reject(e)
  }
}
