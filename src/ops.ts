// Per-op bookkeeping shared by every handle of an engine, kept cheap on purpose: one abort
// listener per AbortSignal (however many ops share it), one timer per distinct timeout value
// (deadlines of one value expire in submission order, so a FIFO per value is a timer wheel with
// one slot), and a log-linear latency histogram whose percentiles are computed only when asked.

/** Something that can be cancelled by id (the engine). */
export interface Canceller {
  cancel(backend: number, id: number): void
}

interface Watched {
  backend: number
  id: number
  live: boolean
}

/** One abort listener per signal; ops register a cheap record that completion marks dead. */
const watchers = new WeakMap<AbortSignal, Set<Watched>>()

export function watchSignal(signal: AbortSignal, c: Canceller, backend: number, id: number): Watched {
  let set = watchers.get(signal)
  if (set === undefined) {
    const s = new Set<Watched>()
    set = s
    watchers.set(signal, s)
    try {
      signal.addEventListener(
        'abort',
        () => {
          watchers.delete(signal)
          for (const w of s) if (w.live) c.cancel(w.backend, w.id)
          s.clear()
        },
        { once: true },
      )
    } catch {
      // A signal-like object whose addEventListener worked when the call was validated
      // (args.ts signalArg) and throws now: the op is staged already, so it runs to its end
      // (its promise settles as usual) without following the signal.
      watchers.delete(signal)
    }
  }
  const w: Watched = { backend, id, live: true }
  set.add(w)
  return w
}

export function unwatchSignal(signal: AbortSignal, w: Watched): void {
  w.live = false
  watchers.get(signal)?.delete(w)
}

/** A deadline: the op clears `live` when it completes first; `fired` says the timer cancelled it. */
export interface Timed {
  deadline: number
  backend: number
  id: number
  live: boolean
  fired: boolean
}

/** FIFO per timeout value with one timer each. */
export class Timeouts {
  #queues = new Map<number, { items: Timed[]; head: number; timer: ReturnType<typeof setTimeout> | undefined }>()
  readonly #c: Canceller

  constructor(c: Canceller) {
    this.#c = c
  }

  add(ms: number, backend: number, id: number): Timed {
    let q = this.#queues.get(ms)
    if (q === undefined) {
      q = { items: [], head: 0, timer: undefined }
      this.#queues.set(ms, q)
    }
    const t: Timed = { deadline: Date.now() + ms, backend, id, live: true, fired: false }
    q.items.push(t)
    if (q.timer === undefined) this.#arm(ms)
    return t
  }

  #arm(ms: number): void {
    const q = this.#queues.get(ms)
    if (q === undefined) return
    while (q.head < q.items.length && !q.items[q.head].live) q.head++
    if (q.head >= q.items.length) {
      this.#queues.delete(ms)
      return
    }
    if (q.head > 1024 && q.head * 2 > q.items.length) {
      q.items = q.items.slice(q.head)
      q.head = 0
    }
    const wait = Math.max(0, q.items[q.head].deadline - Date.now())
    q.timer = setTimeout(() => {
      q.timer = undefined
      const now = Date.now()
      while (q.head < q.items.length) {
        const t = q.items[q.head]
        if (t.live && t.deadline > now) break
        q.head++
        if (t.live) {
          t.fired = true
          this.#c.cancel(t.backend, t.id)
        }
      }
      this.#arm(ms)
    }, wait)
    // Timers never keep the process alive on their own: the op in flight does.
    ;(q.timer as { unref?: () => void }).unref?.()
  }
}

const SUB = 8
/** Buckets of the histogram (Rust `consts::LATENCY_BUCKETS`, which computes them the same way). */
export const BUCKETS = 1 + 40 * SUB

/** Latency histogram (microseconds), log-linear with 8 steps per power of two (<= 12.5% error). */
export class Histogram {
  #counts = new Uint32Array(BUCKETS)
  #n = 0
  #sum = 0
  #max = 0

  add(us: number): void {
    this.addMany(us, 1)
  }

  /** `n` samples of `us` each (n > 1: a native batch's mean latency per op). */
  addMany(us: number, n: number): void {
    // Integer math only (clz32, shifts): this runs once per op.
    let i = 0
    if (us >= 1) {
      const v = us < 0x7fffffff ? us | 0 : 0x7fffffff
      const e = 31 - Math.clz32(v)
      const sub = e >= 3 ? (v >>> (e - 3)) & 7 : (v << (3 - e)) & 7
      i = 1 + e * SUB + sub
    }
    this.#counts[i] += n
    this.#n += n
    this.#sum += us * n
    if (us > this.#max) this.#max = us
  }

  /**
   * Merges per-op latencies counted natively (a typed readMany/writeMany, see
   * NativeEngine.batchTake): `stats` holds a count per bucket (the same buckets as `addMany`),
   * then the number of samples, their sum and their maximum.
   */
  addCounted(stats: Float64Array): void {
    const n = stats[BUCKETS]
    if (!(n > 0)) return
    const counts = this.#counts
    for (let i = 0; i < BUCKETS; i++) if (stats[i] !== 0) counts[i] += stats[i]
    this.#n += n
    this.#sum += stats[BUCKETS + 1]
    if (stats[BUCKETS + 2] > this.#max) this.#max = stats[BUCKETS + 2]
  }

  #value(i: number): number {
    if (i === 0) return 0.5
    const e = Math.floor((i - 1) / SUB)
    const sub = (i - 1) % SUB
    return 2 ** e * (1 + (sub + 0.5) / SUB)
  }

  summary(): { p50: number; p90: number; p99: number; max: number; mean: number; count: number } {
    const n = this.#n
    if (n === 0) return { p50: 0, p90: 0, p99: 0, max: 0, mean: 0, count: 0 }
    const pct = (p: number): number => {
      const want = Math.max(1, Math.ceil((p / 100) * n))
      let seen = 0
      for (let i = 0; i < BUCKETS; i++) {
        seen += this.#counts[i]
        if (seen >= want) return Math.min(this.#max, this.#value(i))
      }
      return this.#max
    }
    return { p50: pct(50), p90: pct(90), p99: pct(99), max: this.#max, mean: this.#sum / n, count: n }
  }
}
