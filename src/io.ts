// The I/O state of one FileHandle and the record of each op in flight. A FileHandle validates its
// arguments (args.ts) and describes the op (OpDesc); HandleIo starts it on the engine and keeps
// what ops change as they complete: counters and latency, ops in flight (close() waits for them),
// the implicit file position, and the order of writes that sync/datasync/truncate/allocate wait
// behind. Op records (OpRecord here, the batches of many.ts) report to HandleIo only, never back
// into the FileHandle.
import { type Engine, type OpSink, RESULT_DETACHED } from './engine'
import { abortError, errno as E, kernelError, misuse, timeoutError } from './errors'
import { native } from './native'
import { Histogram, type Timed, Timeouts, unwatchSignal, watchSignal } from './ops'
import { RWF_DONTCACHE } from './args'

export type Syscall = 'read' | 'write' | 'readv' | 'writev' | 'fsync' | 'fdatasync' | 'fallocate' | 'ftruncate' | 'close'
export const KIND_READ = 0
export const KIND_WRITE = 1
export const KIND_OTHER = 2

/** What an op's promise resolves with. */
export const enum Shape {
  /** The result number. */
  Number,
  /** `{ bytesRead, buffer }`. */
  Read,
  /** `{ bytesWritten, buffer }`. */
  Write,
  /** `{ bytesRead, buffers }`. */
  ReadV,
  /** `{ bytesWritten, buffers }`. */
  WriteV,
}

/** One op, as the FileHandle describes it to HandleIo.start (all validated). */
export interface OpDesc {
  kind: number
  syscall: Syscall
  /** For errors (and, with `implicit`, the position the op runs at). */
  position?: number
  length?: number
  signal?: AbortSignal
  timeout?: number
  shape?: Shape
  /** The buffer(s) the result object carries (Shape.Read...). */
  result?: unknown
  /** The op ran at the handle's position, which advanced by `length`: a short op moves it back. */
  implicit?: boolean
  /**
   * Stages the op for `sink` and returns its id, or -1 when it completed in the call (Engine.rw; may
   * throw a capture error: nothing started). Absent: a single read/write of `buffer` (below),
   * staged by HandleIo itself with Engine.rw (no closure made per op).
   */
  submit?(sink: OpSink): number
  /** A single read/write without `submit`: its memory, where in it, the memory alignment the file needs, RWF_* flags. */
  buffer?: ArrayBufferView
  offset?: number
  memAlign?: number
  rwFlags?: number
  /**
   * The end of a linked chain (io_uring IOSQE_IO_LINK: writeMany's fdatasync): cancelled by its
   * chain (ECANCELED), the caller never sees it, so it is no op of fh.stats(): neither counted
   * nor in the latency histogram (was: taken out of the counts only, adversary-s21c).
   */
  chainEnd?: boolean
}

/** Where a handle's counters go. */
export interface IoStats {
  ops: number
  reads: number
  writes: number
  bytesRead: number
  bytesWritten: number
  errors: number
  bounced: number
}

/** What HandleIo needs to know of its file. */
export interface IoFile {
  path: string
  fd: number
  direct: boolean
  uncached: boolean
  fallbackReason: string
  /** Backend index (engine.ts backendIndex). */
  bidx: number
}

/**
 * One op in flight: its promise's settlement, bookkeeping, and what errors should say. Settling
 * does the op's follow-up through HandleIo (position, write ordering, page cache) and resolves
 * the final result object directly: one promise per op.
 */
class OpRecord implements OpSink {
  // Declared, set in the constructor: class field initializers compile to a separate function
  // (a call of its own on every op in the profile of the depth-1 loop).
  declare readonly io: HandleIo
  declare readonly d: OpDesc
  declare readonly resolve: (v: unknown) => void
  declare readonly reject: (e: unknown) => void
  declare id: number
  declare bounced: boolean
  declare watch: ReturnType<typeof watchSignal> | undefined
  declare timed: Timed | undefined
  declare wseq: number
  constructor(io: HandleIo, d: OpDesc, resolve: (v: unknown) => void, reject: (e: unknown) => void) {
    this.io = io
    this.d = d
    this.resolve = resolve
    this.reject = reject
    this.id = 0
    this.bounced = false
    this.watch = undefined
    this.timed = undefined
    this.wseq = 0
  }

  settle(result: number, latencyUs: number): void {
    const io = this.io
    const d = this.d
    if (this.watch !== undefined) unwatchSignal(d.signal as AbortSignal, this.watch)
    if (this.timed !== undefined) this.timed.live = false
    if (result === -E.ECANCELED && d.chainEnd === true) io.release()
    else io.completed(d.kind, result, latencyUs)
    if (this.wseq !== 0) io.writeDone(this.wseq)
    if (result >= 0) {
      const position = d.position as number
      if (d.implicit === true && result < (d.length as number)) io.rewind(position + result)
      io.dropCache(position, result)
      switch (d.shape) {
        case Shape.Read:
          return this.resolve({ bytesRead: result, buffer: d.result })
        case Shape.Write:
          return this.resolve({ bytesWritten: result, buffer: d.result })
        case Shape.ReadV:
          return this.resolve({ bytesRead: result, buffers: d.result })
        case Shape.WriteV:
          return this.resolve({ bytesWritten: result, buffers: d.result })
        default:
          return this.resolve(result)
      }
    }
    const ctx = { syscall: d.syscall, path: io.file.path, position: d.position, length: d.length }
    if (result === -E.ECANCELED || result === -E.EINTR) {
      if (this.timed?.fired) return this.reject(timeoutError(ctx))
      if (d.signal?.aborted) return this.reject(abortError(d.signal, ctx))
    }
    if (result === RESULT_DETACHED) {
      return this.reject(misuse('ERR_ODIRECT_DETACHED', `the buffer of this ${d.syscall} was detached or shrunk while the op was in flight: the data read is lost`, 'do not transfer, post or resize a buffer while an op on it is pending', ctx))
    }
    this.reject(kernelError(-result, ctx))
  }
}

/** What the Promise executor `grabSettlers` was last given (taken at once by HandleIo.start). */
let grabbedResolve: ((v: unknown) => void) | undefined
let grabbedReject: ((e: unknown) => void) | undefined
function grabSettlers(resolve: (v: unknown) => void, reject: (e: unknown) => void): void {
  grabbedResolve = resolve
  grabbedReject = reject
}

const timeoutsByEngine = new WeakMap<Engine, Timeouts>()
function engineTimeouts(e: Engine): Timeouts {
  let t = timeoutsByEngine.get(e)
  if (t === undefined) {
    t = new Timeouts(e)
    timeoutsByEngine.set(e, t)
  }
  return t
}

export class HandleIo {
  /** The implicit file position (reads and writes without one use and advance it). */
  position = 0
  /** Ops (and other waits close() must see end) in flight. */
  inflight = 0
  readonly stats: IoStats = { ops: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, errors: 0, bounced: 0 }
  readonly latency = new Histogram()
  #drained: (() => void) | undefined
  // Writes in flight (numbered in issue order), and barriers waiting for every write issued
  // before them (sync, datasync, truncate, allocate): each counts the writes in flight when it
  // was made, all numbered at or below its `seq`, and goes when the last of them is done.
  #wseq = 0
  #writesInFlight = 0
  readonly #barriers: Array<{ seq: number; left: number; go: () => void }> = []
  /** Ids of the handle's lock() waits (close() ends them). */
  readonly #lockWaits = new Set<number>()

  constructor(
    readonly engine: Engine,
    readonly file: IoFile,
    /**
     * The FileHandle: never called, only referenced, so that ops in flight keep it reachable
     * and its leak finalizer (which closes the fd) cannot run while the kernel uses the fd.
     */
    readonly owner: object,
  ) {}

  /** Starts the op `d` and returns its promise (rejected at once when its signal is already aborted). */
  start(d: OpDesc): Promise<unknown> {
    if (d.signal?.aborted) return Promise.reject(abortError(d.signal, { syscall: d.syscall, path: this.file.path, position: d.position, length: d.length }))
    // One executor for every op (it runs synchronously in the constructor): no closure per op.
    const p = new Promise<unknown>(grabSettlers)
    const rec = new OpRecord(this, d, grabbedResolve as (v: unknown) => void, grabbedReject as (e: unknown) => void)
    grabbedResolve = grabbedReject = undefined
    rec.id = d.submit !== undefined ? d.submit(rec) : this.#submitRw(d, rec)
    if (d.kind === KIND_WRITE) rec.wseq = this.writeStarted()
    if (rec.bounced) this.stats.bounced++
    this.inflight++
    // Completed in its staging call (a lone small op on tmpfs, see Engine.rw): settled now.
    if (rec.id < 0) {
      this.engine.settleDone()
      return p
    }
    const bidx = this.file.bidx
    if (d.signal !== undefined) rec.watch = watchSignal(d.signal, this.engine, bidx, rec.id)
    if (d.timeout !== undefined) rec.timed = engineTimeouts(this.engine).add(d.timeout, bidx, rec.id)
    return p
  }

  /**
   * Stages the single read/write `d` (fields validated by the FileHandle). Flags given at staging,
   * nothing linked after: a lone op is submitted (or even completed) in this call, unless it has a
   * signal (aborted in the same tick, an op must never reach the kernel) or a timeout (its timer is
   * set after staging).
   */
  #submitRw(d: OpDesc, sink: OpSink): number {
    const f = this.file
    const alone = d.signal === undefined && d.timeout === undefined
    return this.engine.rw(f.bidx, d.kind === KIND_WRITE, f.fd, d.buffer as ArrayBufferView, d.offset as number, d.length as number, d.position as number, d.memAlign as number, sink, this.rwFlags(d.rwFlags as number), alone)
  }

  /** Starts `d` once every write issued before the call has completed (a barrier: sync, truncate...). */
  async startAfterWrites(d: OpDesc): Promise<unknown> {
    const wait = this.#afterWrites()
    if (wait === undefined) return this.start(d)
    // Started before any close(): counted in flight while it waits, so a close() meanwhile waits
    // for it, and it goes out (on the still-open descriptor) before the count drops.
    this.hold()
    try {
      await wait
      return await this.start(d)
    } finally {
      this.release()
    }
  }

  /** Sets a staged op's RWF_* flags (plus RWF_DONTCACHE on an uncached handle); returns its id. */
  flagged(id: number, rwFlags: number): number {
    const f = this.rwFlags(rwFlags)
    if (f !== 0) this.engine.setRwFlags(id, f)
    return id
  }

  /** An op's RWF_* flags as the kernel gets them (plus RWF_DONTCACHE on an uncached handle). */
  rwFlags(rwFlags: number): number {
    return this.file.uncached ? rwFlags | RWF_DONTCACHE : rwFlags
  }

  /** Counts one completed op (bytes, errors, latency) and takes it out of the ops in flight (unless `inflight` is false: out already). */
  completed(kind: number, result: number, latencyUs: number, inflight = true): void {
    const s = this.stats
    s.ops++
    if (result < 0) s.errors++
    else if (kind === KIND_READ) {
      s.reads++
      s.bytesRead += result
    } else if (kind === KIND_WRITE) {
      s.writes++
      s.bytesWritten += result
    }
    this.latency.add(latencyUs)
    if (inflight) this.release()
  }

  /** Counts something in flight that is not one engine op (close() waits for it). */
  hold(): void {
    this.inflight++
  }

  release(): void {
    this.inflight--
    if (this.inflight === 0 && this.#drained !== undefined) {
      const d = this.#drained
      this.#drained = undefined
      d()
    }
  }

  /** Resolves once nothing is in flight. */
  drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve()
    return new Promise<void>((r) => (this.#drained = r))
  }

  /** A short implicit-position op moves the position back to where its data ended. */
  rewind(to: number): void {
    this.position = Math.min(this.position, to)
  }

  /** Buffered fallback ('prefer' without O_DIRECT support): spares the page cache anyway. */
  dropCache(position: number, length: number): void {
    const f = this.file
    if (!f.direct && !f.uncached && f.fallbackReason !== '' && length > 0) native.dropCache(f.fd, position, length)
  }

  /** A write (or batch of writes) starts: its sequence number, for writeDone. */
  writeStarted(): number {
    this.#writesInFlight++
    return ++this.#wseq
  }

  writeDone(seq: number): void {
    this.#writesInFlight--
    const b = this.#barriers
    if (b.length === 0) return
    // The barriers made after this write started (seq at or above its own) counted it. A later
    // barrier counts every write an earlier one still waits for: they go in order.
    for (let i = b.length - 1; i >= 0 && b[i].seq >= seq; i--) b[i].left--
    while (b.length > 0 && b[0].left === 0) b.shift()?.go()
  }

  /** Resolves once every write issued on this handle before the call has completed. */
  #afterWrites(): Promise<void> | undefined {
    if (this.#writesInFlight === 0) return undefined
    const seq = this.#wseq
    const left = this.#writesInFlight
    return new Promise<void>((go) => this.#barriers.push({ seq, left, go }))
  }

  /**
   * Waits (on a thread of its own) for the whole-file lock; resolves with 0 or -errno
   * (-ECANCELED when `signal` aborted it or cancelLocks() ended it). Counted in flight.
   */
  async lock(exclusive: boolean, signal: AbortSignal | undefined): Promise<number> {
    const { engine, file } = this
    let id = -1
    let watch: ReturnType<typeof watchSignal> | undefined
    this.hold()
    try {
      return await new Promise<number>((resolve) => {
        id = engine.lock(file.fd, exclusive, { settle: resolve })
        if (id < 0) return resolve(id)
        this.#lockWaits.add(id)
        if (signal !== undefined) watch = watchSignal(signal, engine, file.bidx, id)
      })
    } finally {
      this.#lockWaits.delete(id)
      if (watch !== undefined) unwatchSignal(signal as AbortSignal, watch)
      this.release()
    }
  }

  /** Ends every lock() wait of the handle (they resolve -ECANCELED). */
  cancelLocks(): void {
    for (const id of this.#lockWaits) this.engine.cancel(this.file.bidx, id)
  }
}
