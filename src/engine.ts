// The JS half of the engine: one NativeEngine per JS environment, a map of pending ops, and the
// batch callback that settles them. Buffers are kept alive natively (N-API references) until the
// kernel has completed; this side only keeps the promise bookkeeping.
import { native, type NativeEngine } from './native'

export type BackendName = 'io_uring' | 'aio' | 'threadpool'
export const BACKENDS: readonly BackendName[] = ['io_uring', 'aio', 'threadpool']
export const backendIndex = (b: BackendName): number => BACKENDS.indexOf(b)

/** Who gets told when an op completes. */
export interface OpSink {
  /** result >= 0: bytes (or 0); result < 0: negated errno. */
  settle(result: number, latencyUs: number): void
  /** The op could not be submitted at all (nothing reached the kernel). */
  fail(error: unknown): void
}

/** Reads and writes gathered during one turn, per backend. */
interface RwQueue {
  writes: number[]
  ids: number[]
  fds: number[]
  views: ArrayBufferView[]
  positions: number[]
  bufIndexes: number[]
}

const emptyQueue = (): RwQueue => ({ writes: [], ids: [], fds: [], views: [], positions: [], bufIndexes: [] })

export class Engine {
  readonly native: NativeEngine
  private readonly pending = new Map<number, OpSink>()
  private nextId = 1
  private readonly started = new Map<BackendName, string>()
  private queues: Array<RwQueue | undefined> = []
  private flushScheduled = false
  private readonly flushBound = (): void => this.flush()

  constructor() {
    this.native = new native.NativeEngine((results: Float64Array) => this.onBatch(results))
  }

  private onBatch(results: Float64Array): void {
    for (let i = 0; i + 2 < results.length; i += 3) {
      const id = results[i]
      const sink = this.pending.get(id)
      if (sink === undefined) continue
      this.pending.delete(id)
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
  ensure(backend: BackendName, queueDepth = 0, threads = 0): string {
    let r = this.started.get(backend)
    if (r === undefined) {
      r = this.native.ensureBackend(backendIndex(backend), queueDepth, threads)
      // Only successes are cached: a failure may be transient (EAGAIN, memory).
      if (r === '') this.started.set(backend, r)
    }
    return r
  }

  /** Reserves an id for an op whose completion goes to `sink`. */
  track(sink: OpSink): number {
    const id = this.nextId++
    this.pending.set(id, sink)
    return id
  }

  /**
   * Queues a read or write; every op queued in this turn goes to the kernel in one native call
   * at the next microtask checkpoint (so 64 awaiting loops refill 64 ops with one crossing).
   * The queue holds the views strongly until then; natively, references hold them after.
   */
  queueRw(backend: number, write: boolean, id: number, fd: number, view: ArrayBufferView, position: number, bufIndex: number): void {
    let q = this.queues[backend]
    if (q === undefined) q = this.queues[backend] = emptyQueue()
    q.writes.push(write ? 1 : 0)
    q.ids.push(id)
    q.fds.push(fd)
    q.views.push(view)
    q.positions.push(position)
    q.bufIndexes.push(bufIndex)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(this.flushBound)
    }
  }

  private flush(): void {
    this.flushScheduled = false
    const queues = this.queues
    this.queues = []
    for (let b = 0; b < queues.length; b++) {
      const q = queues[b]
      if (q === undefined) continue
      try {
        this.native.rwMany(b, q.writes, q.ids, q.fds, q.views, q.positions, q.bufIndexes)
      } catch (e) {
        // Nothing of this batch was submitted: fail each op.
        for (const id of q.ids) {
          const sink = this.pending.get(id)
          this.pending.delete(id)
          sink?.fail(e)
        }
      }
    }
  }

  /** Forgets an id whose submission threw (nothing was queued). */
  untrack(id: number): void {
    this.pending.delete(id)
  }

  get inflight(): number {
    return this.pending.size
  }
}

let engine: Engine | undefined

export function getEngine(): Engine {
  if (engine === undefined) engine = new Engine()
  return engine
}
