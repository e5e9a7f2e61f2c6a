import { EventEmitter } from 'node:events'
import type * as fsTypes from 'node:fs'

import { allocAligned, isDetached, MAX_IO_LENGTH, PAGE_SIZE } from './buffers'
import { type BackendName, backendIndex, type Engine, OP_CLOSE, OP_FALLOCATE, OP_FDATASYNC, OP_FSYNC, OP_FTRUNCATE, type OpSink, RESULT_DETACHED } from './engine'
import { FALLOC_KNOWN } from './constants'
import { abortError, DirectIoError, kernelError, misuse, timeoutError } from './errors'
import { native } from './native'
import { coded, describe, guard, guardAsync } from './guard'
import { checkSignal, checkTimeout, Histogram, Timeouts, unwatchSignal, watchSignal } from './ops'
import { ManyBatch } from './many'
import { registerBuffers, type RegisteredBuffers } from './registered'

/** What direct I/O needs for this file, and where odirect learned it. */
export interface Alignment {
  /** Buffer addresses must be multiples of this (odirect copies through an aligned buffer otherwise). */
  readonly memory: number
  /** Positions and lengths must be multiples of this. */
  readonly offset: number
  readonly logicalBlockSize: number
  readonly physicalBlockSize: number
  readonly source: 'statx' | 'ioctl' | 'sysfs' | 'fstat' | 'default'
  /** False when the filesystem says it cannot do direct I/O at all (statx offset alignment 0). */
  readonly directSupported: boolean
  /**
   * Untorn writes (`write(buf, { atomic: true })`, RWF_ATOMIC), from statx(STATX_WRITE_ATOMIC):
   * a direct write of a power-of-two length from `atomicWriteMin` to `atomicWriteMax` bytes, at
   * a position that is a multiple of its length, in at most `atomicWriteSegmentsMax` buffers,
   * lands whole or not at all across a power cut. 0 where the file has no atomic writes.
   */
  readonly atomicWriteMin: number
  readonly atomicWriteMax: number
  readonly atomicWriteSegmentsMax: number
}

/** odirect's per-op extras, accepted wherever fs/promises takes an options object. */
export interface OpOptions {
  /** Aborts the op: it is cancelled in the kernel where possible and rejects with an AbortError. */
  signal?: AbortSignal
  /** Cancels the op after this many milliseconds; it then rejects with ERR_ODIRECT_TIMEOUT. */
  timeout?: number
}

/** `fh.read(buffer, options)` / `fh.write(buffer, options)`, as in fs/promises. */
export interface ReadWriteOptions extends OpOptions {
  /** Where in `buffer` the data starts. Default 0. */
  offset?: number
  /** Bytes to move. Default: `buffer.byteLength - offset`. */
  length?: number
  /** File position; omitted, null or -1: the handle's current position, which then advances. */
  position?: number | bigint | null
  /**
   * Writes only: the data (and the metadata needed to read it) is durable when the write
   * resolves, as if an fdatasync followed, in one request (RWF_DSYNC: a FUA write where the
   * device has it). Default false.
   */
  dsync?: boolean
  /** Writes only: as `dsync`, plus all metadata, as if an fsync followed (RWF_SYNC). Default false. */
  sync?: boolean
  /**
   * Writes only: untorn (RWF_ATOMIC): after a power cut the range holds all of the new data or
   * none of it. Needs a direct handle and a size/position within `fh.alignment.atomicWrite*`;
   * otherwise the write is refused with ERR_ODIRECT_ATOMIC before any system call. Default false.
   */
  atomic?: boolean
}

/** Per-write durability options of `writev` and `writeMany`. */
export interface DurableWriteOptions {
  /** Each write is durable when it completes (RWF_DSYNC). */
  dsync?: boolean
  /** Each write is durable with all metadata when it completes (RWF_SYNC). */
  sync?: boolean
}

/** `fh.read({ buffer, ... })`, as in fs/promises. */
export interface ReadOptions<T extends ArrayBufferView = ArrayBufferView> extends ReadWriteOptions {
  buffer?: T
}

export interface ReadResult<T extends ArrayBufferView = ArrayBufferView> {
  bytesRead: number
  buffer: T
}

export interface WriteResult<T extends ArrayBufferView | string = ArrayBufferView> {
  bytesWritten: number
  buffer: T
}

export interface ReadVResult<T extends readonly ArrayBufferView[] = readonly ArrayBufferView[]> {
  bytesRead: number
  buffers: T
}

export interface WriteVResult<T extends readonly ArrayBufferView[] = readonly ArrayBufferView[]> {
  bytesWritten: number
  buffers: T
}

export interface ManyOp {
  buffer: ArrayBufferView
  position: number | bigint
}

/** Options of `readMany` / `writeMany`. */
export interface ManyOptions extends DurableWriteOptions {
  /**
   * writeMany only: an fdatasync after the writes; the promise resolves when all their data is
   * durable. On io_uring, for up to 16 writes (and no `window` smaller than the batch), the
   * writes and the fdatasync go in one submission as an IOSQE_IO_LINK chain (the writes then run
   * one after another); otherwise the fdatasync is issued once every write succeeded. A failed
   * write rejects with `results` naming it and the fdatasync never runs (cancelled in the chain:
   * the writes after the failed one report ECANCELED).
   * Default false.
   */
  datasync?: boolean
  /**
   * At most this many of the ops in flight at once: every op is validated at the call, the first
   * `window` are captured and go in, and each completion lets the next one in (a sliding window,
   * no barrier). An op's buffer is captured when it enters the window (a plain buffer is copied
   * to / from an aligned bounce buffer held only while the op is in flight), so memory stays
   * bounded by the window. Default: all of them, captured at the call (past the ring's completion
   * queue the engine windows them anyway).
   */
  window?: number
  /**
   * Aborts the batch: ops in the kernel are cancelled, ops not started yet never start. The
   * promise then rejects with an `ABORT_ERR` DirectIoError whose `results` says what each op did
   * (bytes, its own error, or `ABORT_ERR` for one cancelled or never started).
   */
  signal?: AbortSignal
}

/** Rejection of readMany/writeMany when some ops failed: what each op did, in order. */
export interface ManyError extends DirectIoError {
  /** Bytes moved by each op that succeeded, or the error of each op that failed. */
  readonly results: ReadonlyArray<number | DirectIoError>
}

export interface HandleStats {
  ops: number
  reads: number
  writes: number
  bytesRead: number
  bytesWritten: number
  errors: number
  inflight: number
  /** Ops whose memory was not odirect's aligned memory, copied through an aligned bounce buffer. */
  bounced: number
  /** How completions reach JS on this thread: 'libuv' (Node's loop) or 'thread' (reaper thread: Bun, Deno). */
  path: 'libuv' | 'thread'
  /** Latency percentiles over every op of this handle, in microseconds (log-linear histogram, <= 12.5% error). */
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number }
}

export { constants } from './constants'

export interface HandleInit {
  path: string
  fd: number
  flags: string
  direct: boolean
  fallbackReason: string
  /** Every op carries RWF_DONTCACHE (direct: 'uncached', or a 'prefer' fallback where the kernel has it). */
  uncached?: boolean
  alignment: Alignment
  backend: BackendName
  isBlockDevice: boolean
  fsType: string
  /** Submitting I/O on the file may sleep (FUSE, network filesystem, pipe...): its ops are punted off the JS thread. */
  mayBlock: boolean
  size: number
  readable: boolean
  writable: boolean
}

/**
 * A handle that is garbage-collected without close() would leak its descriptor: close it then,
 * with a warning, as Node's own FileHandle does. Ops in flight keep their handle reachable (their
 * records reference it), so this never runs while the kernel uses the fd.
 */
const leaked = new FinalizationRegistry<{ engine: Engine; fd: number; path: string }>(({ engine, fd, path }) => {
  // Only a descriptor the engine still tracks is closed: never a number reused since.
  if (!engine.native.closeSync(fd)) return
  if (typeof process !== 'undefined' && typeof process.emitWarning === 'function') {
    process.emitWarning(`odirect: closing file descriptor ${fd} (${path}) on garbage collection; call fh.close() or use 'await using'`, 'Warning')
  }
})

type Syscall = 'read' | 'write' | 'readv' | 'writev' | 'fsync' | 'fdatasync' | 'fallocate' | 'ftruncate' | 'close'
const KIND_READ = 0
const KIND_WRITE = 1
const KIND_OTHER = 2

const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v)

function toPosition(p: unknown, what = 'position'): number {
  if (typeof p === 'bigint') {
    if (p < 0n || p > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw misuse('ERR_OUT_OF_RANGE', `${what} ${p} is out of range`, 'positions must be >= 0 and <= Number.MAX_SAFE_INTEGER')
    }
    return Number(p)
  }
  if (typeof p !== 'number') {
    throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a number or bigint, got ${typeName(p)}`, 'pass a byte offset in the file')
  }
  if (!Number.isSafeInteger(p) || p < 0) {
    throw misuse('ERR_OUT_OF_RANGE', `${what} must be a non-negative safe integer, got ${describe(p)}`, 'pass a whole byte offset >= 0')
  }
  return p
}

/** fs semantics: null, undefined and -1 mean "the current position". */
const isImplicit = (p: unknown): boolean => p === undefined || p === null || p === -1 || p === -1n

function checkView(b: unknown, what = 'buffer'): ArrayBufferView {
  if (!ArrayBuffer.isView(b)) {
    throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a Buffer, Uint8Array, other TypedArray or DataView, got ${typeName(b)}`, 'allocate one with fh.alloc(size) or allocAligned(size)')
  }
  if (b.byteLength === 0 && isDetached(b)) {
    throw misuse('ERR_ODIRECT_DETACHED', `${what} is detached (its ArrayBuffer was transferred)`, 'use a buffer that is not transferred or posted to a worker while in use')
  }
  return b
}

function checkInt(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
    throw misuse(typeof v === 'number' ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG_TYPE', `${what} must be an integer, got ${typeof v === 'number' ? String(v) : typeName(v)}`, `pass an integer from ${min} to ${max}`)
  }
  if (v < min || v > max) throw misuse('ERR_OUT_OF_RANGE', `${what} must be from ${min} to ${max}, got ${v}`, `pass an integer from ${min} to ${max}`)
  return v
}

const isOptionsObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !ArrayBuffer.isView(v)

/** Reads an own data property without running user getters twice: one read, kept. */
function opt(o: Record<string, unknown> | undefined, k: string): unknown {
  return o === undefined ? undefined : o[k]
}

interface Parsed {
  buffer: ArrayBufferView
  offset: number
  length: number
  position: unknown
  signal: AbortSignal | undefined
  timeout: number | undefined
  /** pwritev2 flags (RWF_DSYNC / RWF_SYNC / RWF_ATOMIC) of a write; 0 otherwise. */
  rwFlags: number
}

const RWF_DSYNC = 0x2
const RWF_SYNC = 0x4
const RWF_ATOMIC = 0x40
const RWF_DONTCACHE = 0x80
/** writeMany({ datasync: true }) links at most this many writes and the fdatasync on io_uring (linked writes run one at a time); past it the fdatasync follows the batch. */
const LINK_MAX = 16

/** RWF_* flags from `{ dsync, sync, atomic }` (validated; refused on reads; `atomic` on write() only). */
function durabilityFlags(o: Record<string, unknown> | undefined, syscall: string): number {
  if (o === undefined) return 0
  let f = 0
  for (const [k, bit] of [['dsync', RWF_DSYNC], ['sync', RWF_SYNC], ['atomic', RWF_ATOMIC]] as const) {
    const v = o[k]
    if (v === undefined || v === false) continue
    if (v !== true) throw misuse('ERR_INVALID_ARG_TYPE', `option '${k}' must be a boolean, got ${typeName(v)}`, `pass ${k}: true`)
    if (!syscall.startsWith('write')) throw misuse('ERR_INVALID_ARG_VALUE', `option '${k}' only applies to writes, not ${syscall}`, k === 'atomic' ? 'drop it' : `drop ${k}, or use fh.datasync() / fh.sync()`)
    if (k === 'atomic' && syscall !== 'write') throw misuse('ERR_INVALID_ARG_VALUE', `option 'atomic' applies to write(), not ${syscall}`, 'use fh.write(buffer, { position, atomic: true })')
    f |= bit
  }
  return f
}

/** What an op's promise resolves with. */
const SHAPE_NUMBER = 0
const SHAPE_READ = 1
const SHAPE_WRITE = 2
const SHAPE_READV = 3
const SHAPE_WRITEV = 4

/**
 * One op in flight: its promise's settlement, bookkeeping, and what errors should say. Settling
 * does the op's follow-up (position, write ordering, page cache) and resolves the final result
 * object directly: one promise per op.
 */
class OpRecord implements OpSink {
  id = 0
  watch: ReturnType<typeof watchSignal> | undefined
  timed: ReturnType<Timeouts['add']> | undefined
  shape = SHAPE_NUMBER
  result: unknown = undefined
  implicit = false
  wseq = 0
  constructor(
    readonly fh: FileHandle,
    readonly kind: number,
    readonly syscall: Syscall,
    readonly position: number | undefined,
    readonly length: number | undefined,
    readonly signal: AbortSignal | undefined,
    readonly resolve: (v: unknown) => void,
    readonly reject: (e: unknown) => void,
  ) {}

  settle(result: number, latencyUs: number): void {
    const fh = this.fh
    if (this.watch !== undefined) unwatchSignal(this.signal as AbortSignal, this.watch)
    if (this.timed !== undefined) fh._timeouts().done(this.timed)
    fh._done(this.kind, result, latencyUs)
    if (this.wseq !== 0) fh._writeDone(this.wseq)
    if (result >= 0) {
      const position = this.position as number
      if (this.implicit && result < (this.length as number)) fh._rewind(position + result)
      fh._dropCache(position, result)
      switch (this.shape) {
        case SHAPE_READ:
          return this.resolve({ bytesRead: result, buffer: this.result })
        case SHAPE_WRITE:
          return this.resolve({ bytesWritten: result, buffer: this.result })
        case SHAPE_READV:
          return this.resolve({ bytesRead: result, buffers: this.result })
        case SHAPE_WRITEV:
          return this.resolve({ bytesWritten: result, buffers: this.result })
        default:
          return this.resolve(result)
      }
    }
    const ctx = { syscall: this.syscall, path: fh.path, position: this.position, length: this.length }
    if (result === -125 /* ECANCELED */ || result === -4 /* EINTR */) {
      if (this.timed?.fired) return this.reject(timeoutError(ctx))
      if (this.signal?.aborted) return this.reject(abortError(this.signal, ctx))
    }
    if (result === RESULT_DETACHED) {
      return this.reject(misuse('ERR_ODIRECT_DETACHED', `the buffer of this ${this.syscall} was detached or shrunk while the op was in flight: the data read is lost`, 'do not transfer, post or resize a buffer while an op on it is pending', ctx))
    }
    this.reject(kernelError(-result, ctx))
  }
}

/**
 * An open file, shaped after `fs/promises` FileHandle: `read`, `write`, `readv`, `writev`,
 * `datasync`, `sync`, `truncate`, `stat`, `close` take fs's argument forms and resolve with fs's
 * result shapes; plus `alloc`, `allocate`, `readMany`, `writeMany`, `registerBuffers`, `stats`.
 * Direct-I/O rules (aligned positions and lengths) are checked before any system call. As
 * Node's FileHandle it is an EventEmitter: 'close' is emitted once the descriptor is closed.
 */
export class FileHandle extends EventEmitter {
  readonly path: string
  readonly fd: number
  readonly flags: string
  /** True when O_DIRECT is really in effect. */
  readonly direct: boolean
  /** Why direct I/O is off although it was asked for (`direct: 'prefer'` fallback); '' otherwise. */
  readonly fallbackReason: string
  /**
   * Buffered I/O with RWF_DONTCACHE on every op (`direct: 'uncached'`, or the `'prefer'`
   * fallback where the kernel has it): the kernel drops the pages behind each op.
   */
  readonly uncached: boolean
  readonly alignment: Alignment
  /** The engine running this handle's I/O. */
  readonly backend: BackendName
  readonly isBlockDevice: boolean
  /** Filesystem type ('ext4', 'tmpfs'...), when known. */
  readonly fsType: string
  readonly readable: boolean
  readonly writable: boolean

  #engine: Engine
  #bidx: number
  #position = 0
  #closing: Promise<void> | undefined
  #inflight = 0
  #drained: (() => void) | undefined
  #lat = new Histogram()
  #pools = new Set<RegisteredBuffers>()
  #stats = { ops: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, errors: 0, bounced: 0 }
  // Writes in flight by sequence number (insertion order = issue order), and barriers waiting
  // for every write issued before them (sync, datasync, truncate, allocate).
  #wseq = 0
  #writesPending = new Map<number, true>()
  #barriers: Array<{ seq: number; go: () => void }> = []
  /** Ids of this handle's lock() waits (close() ends them). */
  #lockWaits = new Set<number>()

  /** @internal Use `open()`. */
  constructor(engine: Engine, init: HandleInit) {
    super()
    this.#engine = engine
    this.path = init.path
    this.fd = init.fd
    this.flags = init.flags
    this.direct = init.direct
    this.fallbackReason = init.fallbackReason
    this.uncached = init.uncached === true
    this.alignment = Object.freeze({ ...init.alignment, directSupported: init.alignment.directSupported ?? true })
    this.backend = init.backend
    this.#bidx = backendIndex(init.backend)
    this.isBlockDevice = init.isBlockDevice
    this.fsType = init.fsType
    this.readable = init.readable
    this.writable = init.writable
    engine.native.adopt(init.fd, init.mayBlock, init.direct)
    leaked.register(this, { engine, fd: init.fd, path: init.path }, this)
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closing !== undefined
  }

  /** Ops of this handle submitted and not yet settled (O(1)). */
  get inflight(): number {
    return this.#inflight
  }

  /**
   * A zeroed buffer usable for direct I/O on this file: its address is aligned to the page size
   * (or more if the file needs it) and its length is `size` rounded up to `alignment.offset`.
   * A `Buffer` where the runtime has one.
   */
  alloc(size: number): Buffer {
    return guard('fh.alloc', () => this.#alloc(size))
  }

  #alloc(size: number): Buffer {
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size > MAX_IO_LENGTH) {
      throw misuse('ERR_OUT_OF_RANGE', `size must be an integer from 1 to ${MAX_IO_LENGTH}, got ${typeof size === 'number' ? String(size) : typeName(size)}`, 'pass the number of bytes, e.g. 1 << 20')
    }
    const unit = this.alignment.offset
    const len = Math.min(Math.ceil(size / unit) * unit, Math.floor(MAX_IO_LENGTH / unit) * unit)
    return allocAligned(len, Math.max(PAGE_SIZE, this.alignment.memory))
  }

  /** @internal */
  _timeouts(): Timeouts {
    return engineTimeouts(this.#engine)
  }

  /** @internal Called once per settled op. */
  _done(kind: number, result: number, latencyUs: number): void {
    const s = this.#stats
    s.ops++
    if (result < 0) s.errors++
    else if (kind === KIND_READ) {
      s.reads++
      s.bytesRead += result
    } else if (kind === KIND_WRITE) {
      s.writes++
      s.bytesWritten += result
    }
    this.#lat.add(latencyUs)
    this.#inflight--
    if (this.#inflight === 0 && this.#drained !== undefined) {
      const d = this.#drained
      this.#drained = undefined
      d()
    }
  }

  #checkOpen(syscall: string): void {
    if (this.#closing !== undefined) {
      throw misuse('ERR_ODIRECT_CLOSED', `file handle for ${this.path} is closed (${syscall})`, 'open the file again; close() is final', { path: this.path, syscall })
    }
  }

  #checkMode(write: boolean, syscall: string): void {
    if (write && !this.writable) {
      throw misuse('ERR_ODIRECT_FLAGS', `file handle for ${this.path} was opened read-only (flags '${this.flags}'), ${syscall} needs it writable`, "open it with 'r+', 'w' or 'w+'", { path: this.path, syscall })
    }
    if (!write && !this.readable) {
      throw misuse('ERR_ODIRECT_FLAGS', `file handle for ${this.path} was opened write-only (flags '${this.flags}'), ${syscall} needs it readable`, "open it with 'r', 'r+' or 'w+'", { path: this.path, syscall })
    }
  }

  #checkAligned(length: number, position: number, syscall: string, what = 'length'): void {
    if (!this.direct) return
    const unit = this.alignment.offset
    if (length % unit !== 0) {
      throw misuse(
        'ERR_ODIRECT_ALIGNMENT',
        `${what} ${length} is not a multiple of ${unit} bytes, the block size O_DIRECT on ${this.path} requires (${syscall})`,
        `round the length up to a multiple of ${unit} (fh.alloc rounds for you); for a file whose size is not a multiple, write the last block padded and truncate`,
        { path: this.path, position, length, syscall },
      )
    }
    if (position % unit !== 0) {
      throw misuse(
        'ERR_ODIRECT_ALIGNMENT',
        `position ${position} is not a multiple of ${unit} bytes, the block size O_DIRECT on ${this.path} requires (${syscall})`,
        `use positions that are multiples of fh.alignment.offset (${unit})`,
        { path: this.path, position, length, syscall },
      )
    }
  }

  /**
   * Runs `submit` (which stages the op and returns its id) for a new op record, and returns the
   * op's promise. Validation happened before; `submit` may still throw a capture error.
   */
  #start(
    kind: number,
    syscall: Syscall,
    position: number | undefined,
    length: number | undefined,
    signal: AbortSignal | undefined,
    timeout: number | undefined,
    submit: (rec: OpRecord) => number,
    shape = SHAPE_NUMBER,
    result: unknown = undefined,
    implicit = false,
  ): Promise<unknown> {
    if (signal?.aborted) return Promise.reject(abortError(signal, { syscall, path: this.path, position, length }))
    let res!: (v: unknown) => void
    let rej!: (e: unknown) => void
    const p = new Promise<unknown>((a, b) => {
      res = a
      rej = b
    })
    const rec = new OpRecord(this, kind, syscall, position, length, signal, res, rej)
    rec.shape = shape
    rec.result = result
    rec.implicit = implicit
    rec.id = submit(rec)
    if (kind === KIND_WRITE) {
      rec.wseq = ++this.#wseq
      this.#writesPending.set(rec.wseq, true)
    }
    this.#noteBounced()
    this.#inflight++
    if (signal !== undefined) rec.watch = watchSignal(signal, this.#engine, this.#bidx, rec.id)
    if (timeout !== undefined) rec.timed = this._timeouts().add(timeout, this.#bidx, rec.id)
    return p
  }

  #noteBounced(): void {
    this.#stats.bounced += this.#engine.bounced
    this.#engine.bounced = 0
  }

  /** Address alignment the kernel needs for this file (1: none, buffered I/O). */
  get #memAlign(): number {
    return this.direct ? Math.max(this.alignment.memory, 1) : 1
  }

  /** @internal */
  _dropCache(position: number, length: number): void {
    // Buffered fallback ('prefer' without O_DIRECT support): spare the page cache anyway.
    if (!this.direct && !this.uncached && this.fallbackReason !== '' && length > 0) native.dropCache(this.fd, position, length)
  }

  /** Parses fs/promises' read/write argument forms. */
  #parse(syscall: 'read' | 'write', a: unknown, b: unknown, c: unknown, d: unknown): Parsed {
    // The buffer is measured before any option is read: an option getter that detaches or
    // shrinks it then makes the native capture (which re-measures) refuse the op.
    let o: Record<string, unknown> | undefined
    let buffer: unknown
    if (isOptionsObject(a)) {
      // read({ buffer, offset, length, position, signal, timeout })
      if (syscall === 'write') throw misuse('ERR_INVALID_ARG_TYPE', `buffer must be a Buffer, TypedArray, DataView or string, got ${typeName(a)}`, 'call fh.write(buffer, offset, length, position) or fh.write(buffer, { position })')
      o = a
      buffer = opt(o, 'buffer')
      if (buffer === undefined) buffer = this.alloc(16384)
    } else {
      buffer = a
      if (buffer === undefined && syscall === 'read') buffer = this.alloc(16384)
      if (isOptionsObject(b)) o = b
    }
    const view = checkView(buffer)
    const size = view.byteLength
    let offset: unknown
    let length: unknown
    let position: unknown
    if (o !== undefined) {
      // read(buffer, { offset, length, position, signal, timeout }) or read({ buffer, ... })
      // Plain property reads (each getter runs once), kept monomorphic for the hot path.
      offset = o.offset
      length = o.length
      position = o.position
    } else {
      offset = b
      length = c
      position = d
      if (isOptionsObject(c) || isOptionsObject(d)) {
        throw misuse(
          'ERR_INVALID_ARG_TYPE',
          `${syscall}(buffer, offset, length, position) takes numbers (fs/promises' form); got an object as ${isOptionsObject(c) ? 'length' : 'position'}`,
          `pass options as the second argument: fh.${syscall}(buffer, { position, signal, timeout })`,
        )
      }
    }
    const off = offset === undefined || offset === null ? 0 : checkInt(offset, 'offset', 0, size)
    const len = length === undefined || length === null ? size - off : checkInt(length, 'length', 0, size - off)
    if (len > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `length ${len} is more than ${MAX_IO_LENGTH} bytes, the most one I/O can move`, 'split the transfer into several ops')
    return { buffer: view, offset: off, length: len, position, signal: o === undefined ? undefined : checkSignal(o.signal), timeout: o === undefined ? undefined : checkTimeout(o.timeout), rwFlags: durabilityFlags(o, syscall) }
  }

  /** Refuses (before any system call) an atomic write the file cannot make untorn. */
  #checkAtomic(len: number, position: number): void {
    const a = this.alignment
    const refuse = (why: string, hint: string): never => {
      throw misuse('ERR_ODIRECT_ATOMIC', `write({ atomic: true }) of ${len} bytes at ${position} on ${this.path}: ${why}`, hint, { syscall: 'write', path: this.path, position, length: len })
    }
    if (!this.direct) refuse('the handle is not direct (atomic writes need O_DIRECT)', "open with direct: 'require'")
    if (a.atomicWriteMax === 0) refuse('this file has no atomic writes (statx STATX_WRITE_ATOMIC reports none: the filesystem, device or kernel lacks them)', 'use a filesystem with atomic writes (e.g. XFS or ext4 with bigalloc on a device with atomic write units, Linux 6.11+), or journal the data yourself')
    if ((len & (len - 1)) !== 0 || len < a.atomicWriteMin || len > a.atomicWriteMax) refuse(`the length must be a power of two from ${a.atomicWriteMin} to ${a.atomicWriteMax} bytes`, 'split the write into atomic units (fh.alignment.atomicWriteMin..atomicWriteMax)')
    if (position % len !== 0) refuse(`the position must be a multiple of the length (natural alignment)`, `write at a multiple of ${len}`)
  }

  /** Sets a staged op's RWF_* flags (plus RWF_DONTCACHE on an uncached handle); returns its id. */
  #flagged(id: number, rwFlags: number): number {
    const f = this.uncached ? rwFlags | RWF_DONTCACHE : rwFlags
    if (f !== 0) this.#engine.setRwFlags(id, f)
    return id
  }

  #rw(write: boolean, q: Parsed, shape: number, result: unknown): Promise<unknown> {
    const syscall = write ? 'write' : 'read'
    this.#checkOpen(syscall)
    this.#checkMode(write, syscall)
    const implicit = isImplicit(q.position)
    const position = implicit ? this.#position : toPosition(q.position)
    const len = q.length
    if (len === 0) return Promise.resolve(shape === SHAPE_READ ? { bytesRead: 0, buffer: result } : { bytesWritten: 0, buffer: result })
    this.#checkAligned(len, position, syscall)
    if ((q.rwFlags & RWF_ATOMIC) !== 0) this.#checkAtomic(len, position)
    const view = q.buffer
    const p = this.#start(
      write ? KIND_WRITE : KIND_READ,
      syscall,
      position,
      len,
      q.signal,
      q.timeout,
      (rec) => this.#flagged(this.#engine.rw(this.#bidx, write, this.fd, view, q.offset, len, position, this.#memAlign, rec), q.rwFlags),
      shape,
      result,
      implicit,
    )
    if (implicit) this.#position += len
    return p
  }

  /** @internal A short implicit-position op moves the position back to where its data ended. */
  _rewind(to: number): void {
    this.#position = Math.min(this.#position, to)
  }

  /** @internal */
  _writeDone(seq: number): void {
    this.#writeDone(seq)
  }

  #writeDone(seq: number): void {
    this.#writesPending.delete(seq)
    const b = this.#barriers
    if (b.length === 0) return
    let first = Infinity
    for (const k of this.#writesPending.keys()) {
      first = k
      break
    }
    while (b.length > 0 && b[0].seq < first) b.shift()?.go()
  }

  /** Resolves once every write issued on this handle before the call has completed. */
  #afterWrites(): Promise<void> | undefined {
    if (this.#writesPending.size === 0) return undefined
    const seq = this.#wseq
    return new Promise<void>((go) => this.#barriers.push({ seq, go }))
  }

  /**
   * Reads into `buffer` as fs/promises does: `read(buffer, offset?, length?, position?)`,
   * `read(buffer, { offset, length, position, signal, timeout })` or `read({ buffer, ... })`.
   * Position omitted, null or -1: the handle's current position, which advances. Resolves with
   * `{ bytesRead, buffer }`; bytesRead is short near the end of the file, 0 at or past it.
   */
  read<T extends ArrayBufferView = Buffer>(buffer?: T, offset?: number | null, length?: number | null, position?: number | bigint | null): Promise<ReadResult<T>>
  read<T extends ArrayBufferView = Buffer>(buffer: T, options?: ReadWriteOptions): Promise<ReadResult<T>>
  read<T extends ArrayBufferView = Buffer>(options?: ReadOptions<T>): Promise<ReadResult<T>>
  read(a?: unknown, b?: unknown, c?: unknown, d?: unknown): Promise<ReadResult<ArrayBufferView>> {
    try {
      const q = this.#parse('read', a, b, c, d)
      return this.#rw(false, q, SHAPE_READ, q.buffer) as Promise<ReadResult<ArrayBufferView>>
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  /**
   * Writes from `buffer` as fs/promises does: `write(buffer, offset?, length?, position?)`,
   * `write(buffer, { offset, length, position, signal, timeout })`, or
   * `write(string, position?, encoding?)`. Resolves with `{ bytesWritten, buffer }`.
   */
  write<T extends ArrayBufferView>(buffer: T, offset?: number | null, length?: number | null, position?: number | bigint | null): Promise<WriteResult<T>>
  write<T extends ArrayBufferView>(buffer: T, options?: ReadWriteOptions): Promise<WriteResult<T>>
  write(data: string, position?: number | bigint | null, encoding?: BufferEncoding): Promise<WriteResult<string>>
  write(a: unknown, b?: unknown, c?: unknown, d?: unknown): Promise<WriteResult<ArrayBufferView | string>> {
    try {
      if (typeof a === 'string') {
        const enc = c === undefined || c === null ? 'utf8' : c
        if (typeof enc !== 'string' || !Buffer.isEncoding(enc)) throw misuse('ERR_INVALID_ARG_VALUE', `encoding must be a Buffer encoding, got ${describe(enc)}`, "use 'utf8', 'latin1', 'hex', 'base64'...")
        const bytes = Buffer.byteLength(a, enc)
        if (bytes === 0) return Promise.resolve({ bytesWritten: 0, buffer: a })
        const buf = this.alloc(bytes)
        buf.write(a, 0, enc)
        const q = this.#parse('write', buf, 0, bytes, b)
        return this.#rw(true, q, SHAPE_WRITE, a) as Promise<WriteResult<string>>
      }
      const q = this.#parse('write', a, b, c, d)
      return this.#rw(true, q, SHAPE_WRITE, q.buffer) as Promise<WriteResult<ArrayBufferView>>
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  #rwv(write: boolean, buffers: unknown, positionArg: unknown, options?: unknown, link = false): Promise<unknown> {
    const syscall = write ? 'writev' : 'readv'
    this.#checkOpen(syscall)
    this.#checkMode(write, syscall)
    if (options !== undefined && options !== null && !isOptionsObject(options)) throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${typeName(options)}`, 'pass { dsync: true }')
    const rwFlags = durabilityFlags((options ?? undefined) as Record<string, unknown> | undefined, syscall)
    if (!Array.isArray(buffers)) {
      throw misuse('ERR_INVALID_ARG_TYPE', `${syscall} needs an array of buffers, got ${typeName(buffers)}`, 'pass [buf1, buf2, ...] made with fh.alloc()')
    }
    const n = buffers.length
    if (n > 1024) throw misuse('ERR_OUT_OF_RANGE', `${syscall} takes at most 1024 buffers (IOV_MAX), got ${n}`, 'split into several calls')
    const implicit = isImplicit(positionArg)
    const position = implicit ? this.#position : toPosition(positionArg)
    // A private copy, each element read once: later getters cannot swap what was validated.
    const views: ArrayBufferView[] = []
    const lengths: number[] = []
    let total = 0
    for (let i = 0; i < n; i++) {
      const v = checkView(buffers[i], `buffers[${i}]`)
      const len = v.byteLength
      this.#checkAligned(len, position, syscall, `buffers[${i}] length`)
      views.push(v)
      lengths.push(len)
      total += len
    }
    if (total > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `${syscall} of ${total} bytes is more than one I/O can move (${MAX_IO_LENGTH})`, 'split into several calls')
    if (total === 0) return Promise.resolve(write ? { bytesWritten: 0, buffers } : { bytesRead: 0, buffers })
    const p = this.#start(
      write ? KIND_WRITE : KIND_READ,
      syscall,
      position,
      total,
      undefined,
      undefined,
      (rec) => {
        const id = this.#flagged(this.#engine.rwv(this.#bidx, write, this.fd, views, lengths, position, this.#memAlign, rec), rwFlags)
        if (link) this.#engine.setLink(id)
        return id
      },
      write ? SHAPE_WRITEV : SHAPE_READV,
      buffers,
      implicit,
    )
    if (implicit) this.#position += total
    return p
  }

  /** Scatter read into several buffers from one position: `{ bytesRead, buffers }`. */
  readv<T extends readonly ArrayBufferView[]>(buffers: T, position?: number | bigint | null): Promise<ReadVResult<T>> {
    try {
      return this.#rwv(false, buffers, position) as Promise<ReadVResult<T>>
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  /**
   * Gather write from several buffers at one position: `{ bytesWritten, buffers }`.
   * `options.dsync` / `sync`: durable on completion (RWF_DSYNC / RWF_SYNC). `options.datasync`:
   * then an fdatasync (on io_uring linked to the write in one submission), never run if the
   * write failed.
   */
  writev<T extends readonly ArrayBufferView[]>(buffers: T, position?: number | bigint | null, options?: DurableWriteOptions & { datasync?: boolean }): Promise<WriteVResult<T>> {
    try {
      let datasync = false
      if (isOptionsObject(options) && options.datasync !== undefined) {
        if (typeof options.datasync !== 'boolean') throw misuse('ERR_INVALID_ARG_TYPE', `option 'datasync' must be a boolean, got ${typeName(options.datasync)}`, 'pass datasync: true')
        datasync = options.datasync
      }
      const linked = datasync && this.backend === 'io_uring'
      const p = this.#rwv(true, buffers, position, options, linked) as Promise<WriteVResult<T>>
      return datasync ? this.#thenDatasync(p, linked) : p
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  #many(write: boolean, ops: unknown, options: unknown, link = false): Promise<number[]> {
    const syscall = write ? 'write' : 'read'
    this.#checkOpen(syscall)
    this.#checkMode(write, syscall)
    let window = Infinity
    let rwFlags = 0
    let signal: AbortSignal | undefined
    if (options !== undefined && options !== null) {
      if (!isOptionsObject(options)) throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${typeName(options)}`, 'pass { window: 64 }')
      const w = options.window
      if (w !== undefined) window = checkInt(w, 'window', 1, 1 << 20)
      rwFlags = durabilityFlags(options, `${syscall}Many`)
      if (!write && options.datasync !== undefined) throw misuse('ERR_INVALID_ARG_VALUE', "option 'datasync' only applies to writeMany", 'drop it')
      signal = checkSignal(options.signal)
    }
    if (!Array.isArray(ops)) throw misuse('ERR_INVALID_ARG_TYPE', `${syscall}Many needs an array of { buffer, position }, got ${typeName(ops)}`, 'pass [{ buffer, position }, ...]')
    const n = ops.length
    if (n > 1 << 20) throw misuse('ERR_OUT_OF_RANGE', `${syscall}Many takes at most ${1 << 20} ops, got ${n}`, 'split into several calls')
    if (n === 0) return Promise.resolve([])
    const views: ArrayBufferView[] = []
    const lengths: number[] = []
    const positions: number[] = []
    for (let i = 0; i < n; i++) {
      const o: unknown = ops[i]
      if (!isOptionsObject(o)) throw misuse('ERR_INVALID_ARG_TYPE', `ops[${i}] must be { buffer, position }, got ${typeName(o)}`, 'pass [{ buffer, position }, ...]')
      const v = checkView(o.buffer, `ops[${i}].buffer`)
      const p = toPosition(o.position, `ops[${i}].position`)
      if (v.byteLength === 0) throw misuse('ERR_OUT_OF_RANGE', `ops[${i}].buffer has zero length`, 'pass a buffer of at least one block (fh.alignment.offset bytes)')
      if (v.byteLength > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `ops[${i}].buffer is more than ${MAX_IO_LENGTH} bytes`, 'split the transfer into several ops')
      this.#checkAligned(v.byteLength, p, syscall, `ops[${i}].buffer length`)
      views.push(v)
      lengths.push(v.byteLength)
      positions.push(p)
    }
    if (signal?.aborted) return Promise.reject(abortError(signal, { syscall, path: this.path }))
    return new ManyBatch(this, this.#engine, this.#bidx, write, write ? KIND_WRITE : KIND_READ, views, lengths, positions, this.#memAlign, window, signal, rwFlags, link).promise
  }

  /** @internal Counts something in flight that is not one engine op (close() waits for it). */
  _hold(): void {
    this.#hold()
  }

  /** @internal */
  _release(): void {
    this.#release()
  }

  /** @internal Sets the per-op flags of a staged op (RWF_DSYNC..., RWF_DONTCACHE on an uncached handle). */
  _flagged(id: number, rwFlags: number): number {
    return this.#flagged(id, rwFlags)
  }

  /** @internal Takes the engine's count of bounced ops into this handle's stats. */
  _noteBounced(): void {
    this.#noteBounced()
  }

  /** @internal */
  _writeStarted(): number {
    const seq = ++this.#wseq
    this.#writesPending.set(seq, true)
    return seq
  }

  /**
   * Many reads in one submission (one system call for the whole batch on io_uring; past the
   * ring's size the rest are submitted as earlier ones complete). Resolves with the bytes read
   * by each, in order. If any fails, rejects after all have completed with a DirectIoError whose
   * `results` holds each op's bytes or error.
   */
  readMany(ops: readonly ManyOp[], options?: ManyOptions): Promise<number[]> {
    try {
      return this.#many(false, ops, options)
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  /**
   * Many writes in one submission; see `readMany` (`error.results` says which writes landed).
   * `{ datasync: true }`: then one fdatasync, only if every write succeeded (see ManyOptions);
   * resolves when all the data is durable. `{ dsync: true }`: each write durable on its own.
   */
  writeMany(ops: readonly ManyOp[], options?: ManyOptions): Promise<number[]> {
    try {
      let datasync = false
      if (isOptionsObject(options) && options.datasync !== undefined) {
        if (typeof options.datasync !== 'boolean') throw misuse('ERR_INVALID_ARG_TYPE', `option 'datasync' must be a boolean, got ${typeName(options.datasync)}`, 'pass datasync: true')
        datasync = options.datasync
      }
      const n = Array.isArray(ops) ? ops.length : 0
      const windowed = isOptionsObject(options) && typeof options.window === 'number' && options.window < n
      // Linked writes run one after another: worth it for the few writes of a commit.
      const linked = datasync && this.backend === 'io_uring' && !windowed && n > 0 && n <= LINK_MAX
      const p = this.#many(true, ops, options, linked)
      return datasync ? this.#thenDatasync(p, linked) : p
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  /**
   * `p`, then an fdatasync. `linked`: the writes of `p` were just staged linked (io_uring,
   * IOSQE_IO_LINK) and the fdatasync is staged now as the chain's end: one submission; it
   * starts once they all succeeded, and a failed write cancels it (p rejects with the write's
   * own error). Otherwise the fdatasync goes in once `p` resolved, never after a failed write.
   */
  #thenDatasync<T>(p: Promise<T>, linked: boolean): Promise<T> {
    if (linked) {
      const sync = this.#start(KIND_OTHER, 'fdatasync', undefined, undefined, undefined, undefined, (rec) => this.#engine.simple(this.#bidx, OP_FDATASYNC, this.fd, 0, 0, 0, rec))
      sync.catch(() => {})
      return p.then(async (r) => {
        await sync
        return r
      })
    }
    return p.then(async (r) => {
      await this.datasync()
      return r
    })
  }

  async #simple(syscall: Syscall, op: number, a: number, b: number, mode: number, ctx: { position?: number; length?: number }, options: unknown): Promise<number> {
    this.#checkOpen(syscall)
    if (options !== undefined && options !== null && !isOptionsObject(options)) throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${typeName(options)}`, 'pass { signal, timeout }')
    const o = options as Record<string, unknown> | undefined
    const signal = checkSignal(opt(o ?? undefined, 'signal'))
    const timeout = checkTimeout(opt(o ?? undefined, 'timeout'))
    // Every write issued before this call reaches the kernel and completes first.
    const wait = this.#afterWrites()
    if (wait === undefined) {
      return this.#start(KIND_OTHER, syscall, ctx.position, ctx.length, signal, timeout, (rec) => this.#engine.simple(this.#bidx, op, this.fd, a, b, mode, rec)) as Promise<number>
    }
    // Started before any close(): counted in flight while it waits, so a close() meanwhile waits
    // for it, and it goes out (on the still-open descriptor) before the count drops.
    this.#hold()
    try {
      await wait
      return await (this.#start(KIND_OTHER, syscall, ctx.position, ctx.length, signal, timeout, (rec) => this.#engine.simple(this.#bidx, op, this.fd, a, b, mode, rec)) as Promise<number>)
    } finally {
      this.#release()
    }
  }

  /** Counts something in flight that is not an op of the engine (close() waits for it). */
  #hold(): void {
    this.#inflight++
  }

  #release(): void {
    this.#inflight--
    if (this.#inflight === 0 && this.#drained !== undefined) {
      const d = this.#drained
      this.#drained = undefined
      d()
    }
  }

  /** fsync: data and metadata reach stable storage; covers every write issued before it on this handle. */
  sync(options?: OpOptions): Promise<void> {
    return guardAsync('fh.sync', async () => {
      await this.#simple('fsync', OP_FSYNC, 0, 0, 0, {}, options)
    })
  }

  /** fdatasync: data (and the metadata needed to read it) reach stable storage; covers every write issued before it on this handle. */
  datasync(options?: OpOptions): Promise<void> {
    return guardAsync('fh.datasync', async () => {
      await this.#simple('fdatasync', OP_FDATASYNC, 0, 0, 0, {}, options)
    })
  }

  /** Sets the file's length (ftruncate), after every write issued before it. Any length works. */
  truncate(length: number | bigint = 0, options?: OpOptions): Promise<void> {
    return guardAsync('fh.truncate', async () => {
      const len = toPosition(length, 'length')
      await this.#simple('ftruncate', OP_FTRUNCATE, len, 0, 0, { length: len }, options)
    })
  }

  /**
   * Reserves disk space (fallocate): later writes in [offset, offset + length) cannot fail with
   * ENOSPC. `mode`: 0 (allocate and extend the size) or `constants.FALLOC_FL_*` bits.
   */
  allocate(offset: number | bigint, length: number | bigint, mode = 0, options?: OpOptions): Promise<void> {
    return guardAsync('fh.allocate', () => this.#allocate(offset, length, mode, options))
  }

  async #allocate(offset: unknown, length: unknown, mode: unknown, options: unknown): Promise<void> {
    const off = toPosition(offset, 'offset')
    const len = toPosition(length, 'length')
    if (len === 0) throw misuse('ERR_OUT_OF_RANGE', 'allocate length must be > 0', 'pass the number of bytes to reserve')
    if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0xff || ((mode as number) & ~FALLOC_KNOWN) !== 0) {
      throw misuse('ERR_OUT_OF_RANGE', `mode must be 0 or a combination of constants.FALLOC_FL_* bits, got ${describe(mode)}`, 'use 0, or constants.FALLOC_FL_KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE...')
    }
    await this.#simple('fallocate', OP_FALLOCATE, off, len, mode as number, { position: off, length: len }, options)
  }

  /** fstat, as fs/promises: an `fs.Stats` (`BigIntStats` with `{ bigint: true }`). For block devices `size` is the device size. */
  stat(options?: { bigint?: false }): Promise<fsTypes.Stats>
  stat(options: { bigint: true }): Promise<fsTypes.BigIntStats>
  stat(options?: { bigint?: boolean }): Promise<fsTypes.Stats | fsTypes.BigIntStats> {
    return guardAsync('fh.stat', () => this.#stat(options))
  }

  async #stat(options: unknown): Promise<fsTypes.Stats | fsTypes.BigIntStats> {
    this.#checkOpen('fstat')
    if (options !== undefined && options !== null && !isOptionsObject(options)) throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${typeName(options)}`, 'pass { bigint: true } or nothing')
    const bigint = (options as { bigint?: unknown } | null | undefined)?.bigint === true
    // Counted as in flight so close() waits for it and the fd cannot be reused under it.
    this.#hold()
    try {
      const fs = nodeFs()
      let st: fsTypes.Stats | fsTypes.BigIntStats
      try {
        st = await new Promise<fsTypes.Stats | fsTypes.BigIntStats>((resolve, reject) =>
          fs.fstat(this.fd, { bigint }, (err: NodeJS.ErrnoException | null, s: fsTypes.Stats | fsTypes.BigIntStats) => {
            if (err) reject(err)
            else resolve(s)
          }),
        )
      } catch (e) {
        // Deno's node:fs only knows descriptors it opened itself (EBADF for ours): fstat natively.
        const errno = typeof (e as NodeJS.ErrnoException).errno === 'number' ? Math.abs((e as NodeJS.ErrnoException).errno as number) : 5
        if (errno !== 9) throw kernelError(errno, { syscall: 'fstat', path: this.path })
        const n = await native.statFd(this.fd)
        if (n.errno !== 0) throw kernelError(n.errno, { syscall: 'fstat', path: this.path })
        return nativeStats(n, bigint)
      }
      if (st.isBlockDevice()) {
        const s = await native.statFd(this.fd)
        if (s.errno === 0) (st as { size: number | bigint }).size = bigint ? BigInt(s.size) : s.size
      }
      return st
    } finally {
      this.#release()
    }
  }

  /**
   * Pins `count` aligned buffers of `size` bytes (rounded up to the block size) for this handle's
   * backend: io_uring registered buffers (READ_FIXED / WRITE_FIXED), or mlock on aio and the
   * thread pool. Reads and writes from these buffers (or views inside them) on any handle of the
   * same backend then use the pinned pages. One registration per backend: a new one replaces the
   * old. Fails with ERR_ODIRECT_MEMLOCK when RLIMIT_MEMLOCK is too low, saying how to raise it.
   */
  registerBuffers(count: number, size: number): RegisteredBuffers {
    return guard('fh.registerBuffers', () => this.#registerBuffers(count, size))
  }

  #registerBuffers(count: number, size: number): RegisteredBuffers {
    this.#checkOpen('io_uring_register')
    const reg = registerBuffers(this.#engine, this.backend, count, size, Math.max(this.alignment.offset, this.alignment.memory), (r) => this.#pools.delete(r))
    this.#pools.add(reg)
    return reg
  }

  /**
   * Takes a whole-file lock for this handle (an open file description lock; `flock` on kernels
   * without them), waiting until it is free. `{ exclusive: false }` takes a shared one. Locks
   * are per open file: two handles on one file conflict, as two processes do. The wait runs on a
   * thread of its own (never libuv's pool, so it starves neither `open()` nor node:fs) and ends
   * at once on `signal` (ABORT_ERR), on `close()` of this handle (ERR_ODIRECT_CLOSED), and at
   * worker or process exit. It polls (1 ms doubling to 20 ms), so it may take the lock up to
   * 20 ms after the holder lets go, and waiters are not served in order.
   */
  lock(options?: { exclusive?: boolean; signal?: AbortSignal }): Promise<void> {
    return guardAsync('fh.lock', async () => {
      this.#checkOpen('fcntl')
      const exclusive = lockKind(options)
      const signal = checkSignal(opt((options ?? undefined) as Record<string, unknown> | undefined, 'signal'))
      if (signal?.aborted) throw abortError(signal, { syscall: 'fcntl', path: this.path })
      let id = -1
      let watch: ReturnType<typeof watchSignal> | undefined
      this.#hold()
      let r: number
      try {
        r = await new Promise<number>((resolve) => {
          id = this.#engine.lock(this.fd, exclusive, { settle: resolve })
          if (id < 0) return resolve(id)
          this.#lockWaits.add(id)
          if (signal !== undefined) watch = watchSignal(signal, this.#engine, this.#bidx, id)
        })
      } finally {
        this.#lockWaits.delete(id)
        if (watch !== undefined) unwatchSignal(signal as AbortSignal, watch)
        this.#release()
      }
      if (r === -125 /* ECANCELED */) {
        if (signal?.aborted) throw abortError(signal, { syscall: 'fcntl', path: this.path })
        throw misuse('ERR_ODIRECT_CLOSED', `file handle for ${this.path} was closed while lock() waited`, 'a lock() wait ends when its handle closes; keep the handle open until the lock is taken', { path: this.path, syscall: 'fcntl' })
      }
      if (r < 0) throw kernelError(-r, { syscall: 'fcntl', path: this.path })
    })
  }

  /** Takes the lock if it is free now: true when taken, false when another handle or process holds it. */
  tryLock(options?: { exclusive?: boolean }): boolean {
    return guard('fh.tryLock', () => {
      this.#checkOpen('fcntl')
      const errno = native.tryLockFd(this.fd, lockKind(options))
      if (errno === 0) return true
      if (errno === 11 /* EAGAIN */) return false
      throw kernelError(errno, { syscall: 'fcntl', path: this.path })
    })
  }

  /** Releases this handle's lock (closing the handle releases it too). */
  unlock(): void {
    guard('fh.unlock', () => {
      this.#checkOpen('fcntl')
      const errno = native.unlockFd(this.fd)
      if (errno !== 0) throw kernelError(errno, { syscall: 'fcntl', path: this.path })
    })
  }

  /** The position reads and writes without one use (and advance), as fs's file position. */
  get position(): number {
    return this.#position
  }

  /** @internal Moves the handle's position (readFile(fh) / writeFile(fh) advance it, as fs). */
  _seek(to: number): void {
    this.#position = to
  }

  /** Counters and latency percentiles for this handle (percentiles computed on call, from a histogram). */
  stats(): HandleStats {
    return { ...this.#stats, inflight: this.#inflight, path: this.#engine.native.path as 'libuv' | 'thread', latencyUs: this.#lat.summary() }
  }

  /**
   * Closes the handle. Ops already submitted run to completion first (their promises settle
   * normally); ops started after `close()` reject with ERR_ODIRECT_CLOSED. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      leaked.unregister(this)
      this.#closing = (async () => {
        // A lock() wait may never end by itself: close() ends it (it rejects ERR_ODIRECT_CLOSED).
        for (const id of this.#lockWaits) this.#engine.cancel(this.#bidx, id)
        if (this.#inflight > 0) await new Promise<void>((r) => (this.#drained = r))
        // Pins taken through this handle end with it.
        for (const p of [...this.#pools]) {
          try {
            p.unregister()
          } catch {
            // Unpinning failed (engine shut down): nothing left to release.
          }
        }
        await new Promise<number>((resolve, reject) => {
          this.#engine.simple(this.#bidx, OP_CLOSE, this.fd, 0, 0, 0, {
            settle: (result: number) => (result < 0 && result !== -9 /* EBADF */ ? reject(kernelError(-result, { syscall: 'close', path: this.path })) : resolve(result)),
          })
        })
        // As Node's FileHandle: 'close' once the descriptor is closed (a listener's throw is its own).
        this.emit('close')
      })()
    }
    return this.#closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

const S_IFMT = 0o170000
type NativeStat = Awaited<ReturnType<typeof native.statFd>>

/** An fs.Stats-shaped object from a native fstat (where node:fs cannot fstat our descriptor). */
function nativeStats(n: NativeStat, bigint: boolean): fsTypes.Stats | fsTypes.BigIntStats {
  const type = (t: number) => () => (n.mode & S_IFMT) === t
  const num = (v: number): number | bigint => (bigint ? BigInt(Math.trunc(v)) : v)
  const o: Record<string, unknown> = {
    dev: num(n.dev),
    ino: num(n.ino),
    mode: num(n.mode),
    nlink: num(n.nlink),
    uid: num(n.uid),
    gid: num(n.gid),
    rdev: num(0),
    size: num(n.size),
    blksize: num(n.blksize),
    blocks: num(n.blocks),
    atimeMs: num(n.atimeMs),
    mtimeMs: num(n.mtimeMs),
    ctimeMs: num(n.ctimeMs),
    birthtimeMs: num(n.ctimeMs),
    atime: new Date(n.atimeMs),
    mtime: new Date(n.mtimeMs),
    ctime: new Date(n.ctimeMs),
    birthtime: new Date(n.ctimeMs),
    isFile: type(0o100000),
    isDirectory: type(0o040000),
    isBlockDevice: () => n.isBlockDevice,
    isCharacterDevice: type(0o020000),
    isSymbolicLink: type(0o120000),
    isFIFO: type(0o010000),
    isSocket: type(0o140000),
  }
  if (bigint) {
    o.atimeNs = BigInt(Math.trunc(n.atimeMs * 1e6))
    o.mtimeNs = BigInt(Math.trunc(n.mtimeMs * 1e6))
    o.ctimeNs = BigInt(Math.trunc(n.ctimeMs * 1e6))
    o.birthtimeNs = o.ctimeNs
  }
  return o as unknown as fsTypes.Stats | fsTypes.BigIntStats
}

function lockKind(options: unknown): boolean {
  if (options === undefined || options === null) return true
  if (!isOptionsObject(options)) throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${typeName(options)}`, 'pass { exclusive: true } or { exclusive: false }')
  const ex = (options as { exclusive?: unknown }).exclusive
  if (ex === undefined) return true
  if (typeof ex !== 'boolean') throw misuse('ERR_INVALID_ARG_TYPE', `exclusive must be a boolean, got ${typeName(ex)}`, 'pass { exclusive: false } for a shared lock')
  return ex
}

let fsMod: typeof fsTypes | undefined
function nodeFs(): typeof fsTypes {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  if (fsMod === undefined) fsMod = require('node:fs') as typeof fsTypes
  return fsMod
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

export { DirectIoError }
