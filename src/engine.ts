// The JS half of the engine: one NativeEngine per JS environment, a table of pending ops (array
// slots indexed by op id), and the batch callback that settles them.
//
// Every submission method captures what it submits before it returns: the native side reads the
// views' pointers and lengths in the same call (no user code can run in between) and stages the
// op; staged ops reach the kernel together at the next microtask checkpoint (one native crossing
// and one system call per event-loop turn), or at once when the queue is full.
import { misuse } from './errors'
import { native, type NativeEngine } from './native'

export type BackendName = 'io_uring' | 'aio' | 'threadpool'
export const BACKENDS: readonly BackendName[] = ['io_uring', 'aio', 'threadpool']
export const backendIndex = (b: BackendName): number => BACKENDS.indexOf(b)

/** Who gets told when an op completes. */
export interface OpSink {
  /** result >= 0: bytes (or 0); result < 0: negated errno (or a RESULT_* code below). */
  settle(result: number, latencyUs: number): void
}

/** The op's buffer was detached or shrunk before its data could be copied back (bounced reads). */
export const RESULT_DETACHED = -1_000_001

/** Simple (memoryless) op kinds, as the native side numbers them. */
export const OP_FSYNC = 0
export const OP_FDATASYNC = 1
export const OP_FALLOCATE = 2
export const OP_FTRUNCATE = 3
export const OP_CLOSE = 4

/** Native capture failures (returned instead of an id). */
function captureError(code: number, what: string): Error {
  switch (code) {
    case -1:
      return misuse('ERR_ODIRECT_DETACHED', `${what} is detached (its ArrayBuffer was transferred) or was shrunk below the op's length`, 'use a buffer that is not transferred, posted to a worker or resized while an op is being submitted')
    default:
      return misuse('ERR_INVALID_ARG_VALUE', `${what} could not be captured for I/O (code ${code})`, 'pass a Uint8Array, Buffer, other TypedArray or DataView')
  }
}

export class Engine {
  readonly native: NativeEngine
  #sinks: Array<OpSink | undefined> = []
  #inflight = 0
  readonly #started = new Map<BackendName, string>()
  #flushScheduled = false
  readonly #flushBound = (): void => this.#flush()
  // Phase-1 adapter state (the old native API: ids chosen here, views queued until the flush).
  #nextId = 1
  #queues: Array<{ writes: number[]; ids: number[]; fds: number[]; views: ArrayBufferView[]; positions: number[]; bufIndexes: number[] } | undefined> = []

  constructor() {
    this.native = new native.NativeEngine((results: Float64Array) => this.#onBatch(results))
  }

  #onBatch(results: Float64Array): void {
    const sinks = this.#sinks
    for (let i = 0; i + 2 < results.length; i += 3) {
      const id = results[i]
      const sink = sinks[id]
      if (sink === undefined) continue
      sinks[id] = undefined
      this.#inflight--
      try {
        sink.settle(results[i + 1], results[i + 2])
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

  #track(sink: OpSink): number {
    const id = this.#nextId++
    this.#sinks[id] = sink
    this.#inflight++
    return id
  }

  #queue(backend: number, write: boolean, id: number, fd: number, view: ArrayBufferView, position: number): void {
    let q = this.#queues[backend]
    if (q === undefined) q = this.#queues[backend] = { writes: [], ids: [], fds: [], views: [], positions: [], bufIndexes: [] }
    q.writes.push(write ? 1 : 0)
    q.ids.push(id)
    q.fds.push(fd)
    q.views.push(view)
    q.positions.push(position)
    q.bufIndexes.push(-1)
    this.#schedule()
  }

  /** Stages one read (write = false) or write of `length` bytes of `view` from `offset`, at `position`; returns the op id. */
  rw(backend: number, write: boolean, fd: number, view: ArrayBufferView, offset: number, length: number, position: number, sink: OpSink): number {
    if (view.byteLength < offset + length) throw captureError(-1, 'buffer')
    const sub = offset === 0 && length === view.byteLength ? view : new Uint8Array(view.buffer, view.byteOffset + offset, length)
    const id = this.#track(sink)
    this.#queue(backend, write, id, fd, sub, position)
    return id
  }

  /** Stages many reads or writes on one fd; all are captured or none (throws). */
  rwMany(backend: number, write: boolean, fd: number, views: readonly ArrayBufferView[], positions: readonly number[], sinks: readonly OpSink[]): number[] {
    for (let i = 0; i < views.length; i++) if (views[i].byteLength === 0) throw captureError(-1, `ops[${i}].buffer`)
    const ids: number[] = []
    for (let i = 0; i < views.length; i++) {
      const id = this.#track(sinks[i])
      ids.push(id)
      this.#queue(backend, write, id, fd, views[i], positions[i])
    }
    return ids
  }

  /** Stages a vectored read or write; returns the op id. */
  rwv(backend: number, write: boolean, fd: number, views: readonly ArrayBufferView[], position: number, sink: OpSink): number {
    for (let i = 0; i < views.length; i++) if (views[i].byteLength === 0) throw captureError(-1, `buffers[${i}]`)
    const id = this.#track(sink)
    try {
      this.native.rwv(backend, write, id, fd, views.slice(), position)
    } catch (e) {
      this.#sinks[id] = undefined
      this.#inflight--
      throw e
    }
    return id
  }

  /** Stages an op without memory (OP_*); returns the op id. */
  simple(backend: number, op: number, fd: number, a: number, b: number, mode: number, sink: OpSink): number {
    this.#flush()
    const id = this.#track(sink)
    try {
      this.native.simple(backend, op, id, fd, a, b, mode)
    } catch (e) {
      this.#sinks[id] = undefined
      this.#inflight--
      throw e
    }
    return id
  }

  /** Asks the kernel to cancel op `id` (it still completes, usually with ECANCELED). */
  cancel(backend: number, id: number): void {
    if (this.#sinks[id] === undefined) return
    this.#flush()
    this.native.cancel(backend, id)
  }

  #flush(): void {
    this.#flushScheduled = false
    const queues = this.#queues
    this.#queues = []
    for (let b = 0; b < queues.length; b++) {
      const q = queues[b]
      if (q === undefined) continue
      try {
        this.native.rwMany(b, q.writes, q.ids, q.fds, q.views, q.positions, q.bufIndexes)
      } catch {
        for (const id of q.ids) {
          const sink = this.#sinks[id]
          this.#sinks[id] = undefined
          this.#inflight--
          sink?.settle(-22, 0)
        }
      }
    }
  }

  /** Ops staged or in the kernel whose completion has not reached JS yet. */
  get inflight(): number {
    return this.#inflight
  }

  /** Registers (pins) buffers; returns 0 or an errno. */
  registerBuffers(backend: number, views: ArrayBufferView[]): number {
    return this.native.registerBuffers(backend, views)
  }

  unregisterBuffers(backend: number): number {
    return this.native.unregisterBuffers(backend)
  }
}

let engine: Engine | undefined

export function getEngine(): Engine {
  if (engine === undefined) engine = new Engine()
  return engine
}
