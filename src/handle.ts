import { EventEmitter } from 'node:events'
import type * as fsTypes from 'node:fs'

import { callerError, callerGet, coded, countArg, datasyncOption, describe, encodingArg, guard, guardAsync, intArg, isImplicitPosition, isOptionsObject, lockExclusive, optionsArg, positionArg, RWF_ATOMIC, type RwArgs, rwArgs, rwFlags, signalArg, timeoutArg, viewArg } from './args'
import { allocAligned, MAX_IO_LENGTH, PAGE_SIZE } from './buffers'
import { FALLOC_KNOWN } from './constants'
import { type BackendName, backendIndex, type Engine, OP_CLOSE, OP_FALLOCATE, OP_FDATASYNC, OP_FSYNC, OP_FTRUNCATE } from './engine'
import { abortError, DirectIoError, errno as E, kernelError, misuse } from './errors'
import { HandleIo, KIND_OTHER, KIND_READ, KIND_WRITE, type OpDesc, Shape, type Syscall } from './io'
import { type AtEnd, type BatchDesc, BatchWindow, isManyArrays, keptOps, type ManyArrays, manyArrays, rerunCancelled, spreadResults, startMany, windowId } from './many'
import { native } from './native'
import { registerBuffers, type RegisteredBuffers } from './registered'
import { fstat } from './stat'

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
   * the writes after the failed one report ECANCELED). A write that moves fewer bytes than asked
   * (a device's end, RLIMIT_FSIZE) ends the chain too: the writes after it run again unlinked,
   * then the fdatasync, and the call resolves with every count, as on the other backends.
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
   *
   * A `BatchWindow` (typed-array form, odirect memory): the batch shares that window with the
   * other batches given it, starting its ops as soon as the ones called before it leave room, so
   * a queue of batches keeps the device busy without draining between them.
   */
  window?: number | BatchWindow
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
  /** Latency percentiles over every op of this handle, in microseconds (log-linear histogram, <= 12.5% error); `count`: how many ops they cover. */
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number; count: number }
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
 * records reference its HandleIo, which holds it), so this never runs while the kernel uses the fd.
 */
const leaked = new FinalizationRegistry<{ engine: Engine; fd: number; path: string }>(({ engine, fd, path }) => {
  // Only a descriptor the engine still tracks is closed: never a number reused since.
  if (!engine.native.closeSync(fd)) return
  if (typeof process !== 'undefined' && typeof process.emitWarning === 'function') {
    process.emitWarning(`odirect: closing file descriptor ${fd} (${path}) on garbage collection; call fh.close() or use 'await using'`, 'Warning')
  }
})

/** writeMany({ datasync: true }) links at most this many writes and the fdatasync on io_uring (linked writes run one at a time); past it the fdatasync follows the batch. */
const LINK_MAX = 16

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

  /** The op machinery: counters, ops in flight, position, write ordering (io.ts). */
  readonly #io: HandleIo
  #closing: Promise<void> | undefined
  /** Methods made of several ops running (see `_method`): while any does, close() waits and ops still go out. */
  #methods = 0
  readonly #pools = new Set<RegisteredBuffers>()
  readonly #defaultBuffer = (): ArrayBufferView => this.alloc(16384)
  /**
   * Address alignment the kernel needs for this file (1: none, buffered I/O). A field, not a
   * private getter: V8 reads a private accessor through a runtime call (LoadPrivateGetter) on
   * every op.
   */
  readonly #memAlign: number

  /** @internal Use `open()`. */
  constructor(engine: Engine, init: HandleInit) {
    super()
    this.path = init.path
    this.fd = init.fd
    this.flags = init.flags
    this.direct = init.direct
    this.fallbackReason = init.fallbackReason
    this.uncached = init.uncached === true
    this.alignment = Object.freeze({ ...init.alignment, directSupported: init.alignment.directSupported ?? true })
    this.#memAlign = init.direct ? Math.max(this.alignment.memory, 1) : 1
    this.backend = init.backend
    this.isBlockDevice = init.isBlockDevice
    this.fsType = init.fsType
    this.readable = init.readable
    this.writable = init.writable
    const file = { path: init.path, fd: init.fd, direct: init.direct, uncached: this.uncached, fallbackReason: init.fallbackReason, bidx: backendIndex(init.backend) }
    this.#io = new HandleIo(engine, file, this)
    engine.native.adopt(init.fd, init.mayBlock, init.direct)
    leaked.register(this, { engine, fd: init.fd, path: init.path }, this)
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closing !== undefined
  }

  /** Ops of this handle submitted and not yet settled (O(1)). */
  get inflight(): number {
    return this.#io.inflight
  }

  /**
   * A zeroed buffer usable for direct I/O on this file: its address is aligned to the page size
   * (or more if the file needs it) and its length is `size` rounded up to `alignment.offset`.
   * A `Buffer` where the runtime has one.
   */
  alloc(size: number): Buffer {
    return guard('fh.alloc', () => {
      countArg(size, 'size', MAX_IO_LENGTH, 'pass the number of bytes, e.g. 1 << 20')
      const unit = this.alignment.offset
      const len = Math.min(Math.ceil(size / unit) * unit, Math.floor(MAX_IO_LENGTH / unit) * unit)
      return allocAligned(len, Math.max(PAGE_SIZE, this.alignment.memory))
    })
  }

  #checkOpen(syscall: string): void {
    if (this.#closing !== undefined && this.#methods === 0) {
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

  /**
   * A read of a block-multiple length refused for its position (`refusal`) at `at`: nothing to
   * read when `at` is at or past the end of the file, so it resolves with `empty` (0 bytes), as
   * node:fs and the kernel's own O_DIRECT read there do. A file whose size is not a block
   * multiple leaves the position there after its short last read, and the loop fs's docs show
   * (`while ((await fh.read(buf, 0, n, null)).bytesRead > 0)`, or with `pos += bytesRead`) then
   * ended in ERR_ODIRECT_ALIGNMENT instead of its 0-byte read. Inside the file the refusal stands.
   */
  async #readAtEnd<R>(refusal: unknown, at: number, empty: R): Promise<R> {
    const io = this.#io
    // Counted in flight so close() waits for it and the fd cannot be reused under it (as stat()).
    io.hold()
    let size = -1
    try {
      const st = await native.statFd(this.fd)
      if (st.errno === 0) size = st.size
    } finally {
      io.release()
    }
    if (size >= 0 && at >= size) return empty
    throw refusal
  }

  /**
   * (s21c) readMany's ops `skip` (in order), of block-multiple lengths and refused for their
   * positions only: at or past the end of the file they read 0 bytes, as fh.read there
   * (#readAtEnd). One fstat for the call, on this refusal path only; then `run` starts the batch
   * of the ops it keeps (before the fstat's hold is let go: a close() called meanwhile waits for
   * the batch). Any of them inside the file: its alignment error (`refuse(i)`), nothing read.
   */
  readonly #manyAtEnd: AtEnd = async (n, skip, position, refuse, run) => {
    const io = this.#io
    io.hold()
    try {
      const st = await native.statFd(this.fd)
      const size = st.errno === 0 ? st.size : -1
      for (const i of skip) if (size < 0 || position(i) < size) throw refuse(i)
      return run(keptOps(n, skip))
    } finally {
      io.release()
    }
  }

  /** A read or write of `q`, resolving with `shape` around `result`. */
  #rw(write: boolean, q: RwArgs, shape: Shape, result: unknown): Promise<unknown> {
    const syscall = write ? 'write' : 'read'
    this.#checkOpen(syscall)
    this.#checkMode(write, syscall)
    const io = this.#io
    const implicit = isImplicitPosition(q.position)
    const at = implicit ? io.position : positionArg(q.position)
    const len = q.length
    if (len === 0) return Promise.resolve(shape === Shape.Read ? { bytesRead: 0, buffer: result } : { bytesWritten: 0, buffer: result })
    try {
      this.#checkAligned(len, at, syscall)
    } catch (e) {
      // A read whose length is right and whose position is not (see #readAtEnd).
      if (write || len % this.alignment.offset !== 0) throw e
      return this.#readAtEnd(e, at, { bytesRead: 0, buffer: result })
    }
    if ((q.rwFlags & RWF_ATOMIC) !== 0) this.#checkAtomic(len, at)
    const { buffer, offset, rwFlags: flags } = q
    const memAlign = this.#memAlign
    // Advanced before the op starts: an op completed inside its own call (Engine.rw) settles in
    // io.start, where a short one moves the position back to where its data ended.
    if (implicit) io.position += len
    let p: Promise<unknown>
    try {
      p = io.start({
        kind: write ? KIND_WRITE : KIND_READ,
        syscall,
        position: at,
        length: len,
        signal: q.signal,
        timeout: q.timeout,
        shape,
        result,
        implicit,
        // No `submit`: HandleIo stages it with Engine.rw (no closure per op).
        buffer,
        offset,
        memAlign,
        rwFlags: flags,
      })
    } catch (e) {
      // Nothing started (a capture error).
      if (implicit) io.position -= len
      throw e
    }
    return p
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
      const q = rwArgs('read', a, b, c, d, this.#defaultBuffer)
      return this.#rw(false, q, Shape.Read, q.buffer) as Promise<ReadResult<ArrayBufferView>>
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
        const enc = encodingArg(c ?? undefined, 'utf8', "use 'utf8', 'latin1', 'hex', 'base64'...") ?? 'utf8'
        const bytes = Buffer.byteLength(a, enc)
        if (bytes === 0) return Promise.resolve({ bytesWritten: 0, buffer: a })
        const buf = this.alloc(bytes)
        buf.write(a, 0, enc)
        return this.#rw(true, rwArgs('write', buf, 0, bytes, b, this.#defaultBuffer), Shape.Write, a) as Promise<WriteResult<string>>
      }
      const q = rwArgs('write', a, b, c, d, this.#defaultBuffer)
      return this.#rw(true, q, Shape.Write, q.buffer) as Promise<WriteResult<ArrayBufferView>>
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  #rwv(write: boolean, buffers: unknown, where: unknown, options?: unknown, link = false): Promise<unknown> {
    const syscall = write ? 'writev' : 'readv'
    this.#checkOpen(syscall)
    this.#checkMode(write, syscall)
    const flags = rwFlags(optionsArg(options, '{ dsync: true }'), syscall)
    if (!Array.isArray(buffers)) {
      throw misuse('ERR_INVALID_ARG_TYPE', `${syscall} needs an array of buffers, got ${describe(buffers)}`, 'pass [buf1, buf2, ...] made with fh.alloc()')
    }
    let n: number
    try {
      n = buffers.length
    } catch (e) {
      throw callerError(e) // a Proxy's `length` trap: the caller's code
    }
    if (n > 1024) throw misuse('ERR_OUT_OF_RANGE', `${syscall} takes at most 1024 buffers (IOV_MAX), got ${n}`, 'split into several calls')
    const io = this.#io
    const implicit = isImplicitPosition(where)
    const at = implicit ? io.position : positionArg(where)
    // A private copy, each element read once: later getters cannot swap what was validated.
    const views: ArrayBufferView[] = []
    const lengths: number[] = []
    let total = 0
    let refusal: unknown
    for (let i = 0; i < n; i++) {
      const v = viewArg(callerGet(buffers, i), `buffers[${i}]`)
      const len = v.byteLength
      try {
        this.#checkAligned(len, at, syscall, `buffers[${i}] length`)
      } catch (e) {
        // A read's position (its lengths right): nothing to read at or past the end (see #readAtEnd).
        if (write || len % this.alignment.offset !== 0) throw e
        refusal ??= e
      }
      views.push(v)
      lengths.push(len)
      total += len
    }
    if (total > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `${syscall} of ${total} bytes is more than one I/O can move (${MAX_IO_LENGTH})`, 'split into several calls')
    if (total === 0) return Promise.resolve(write ? { bytesWritten: 0, buffers } : { bytesRead: 0, buffers })
    if (refusal !== undefined) return this.#readAtEnd(refusal, at, { bytesRead: 0, buffers })
    const memAlign = this.#memAlign
    const p = io.start({
      kind: write ? KIND_WRITE : KIND_READ,
      syscall,
      position: at,
      length: total,
      shape: write ? Shape.WriteV : Shape.ReadV,
      result: buffers,
      implicit,
      submit: (sink) => {
        const id = io.flagged(io.engine.rwv(io.file.bidx, write, this.fd, views, lengths, at, memAlign, sink), flags)
        if (link) io.engine.setLink(id)
        return id
      },
    })
    if (implicit) io.position += total
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
      const datasync = isOptionsObject(options) && datasyncOption(options)
      const linked = datasync && this.backend === 'io_uring'
      const p = this.#rwv(true, buffers, position, options, linked) as Promise<WriteVResult<T>>
      return datasync ? this.#thenDatasync(p, linked) : p
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  /**
   * readMany / writeMany. `datasync` (writeMany { datasync: true }): the batch, then an
   * fdatasync: on io_uring linked to the writes (one submission) when they all go in at once (no
   * window smaller than the batch, at most LINK_MAX ops), else once they all succeeded. Decided
   * here from the options as read once: a `window` getter that answered a big window first and 1
   * after (read twice before) had the fdatasync linked after the first write only, the others
   * written after it, and the call resolved with them not durable.
   */
  #many(write: boolean, ops: unknown, options: unknown, datasync = false): Promise<number[] | Int32Array> {
    const syscall = write ? 'write' : 'read'
    this.#checkOpen(syscall)
    this.#checkMode(write, syscall)
    const o = optionsArg(options, '{ window: 64 }')
    let window = Infinity
    let shared: BatchWindow | undefined
    let flags = 0
    let signal: AbortSignal | undefined
    if (o !== undefined) {
      const w = callerGet(o, 'window')
      if (w instanceof BatchWindow) {
        if (windowId(w) === 0) throw misuse('ERR_INVALID_ARG_TYPE', `${syscall}Many: options.window is not a BatchWindow made by its constructor`, 'pass new BatchWindow(size), or a number')
        shared = w
        window = w.size
      } else if (w !== undefined) window = intArg(w, 'window', 1, 1 << 20, 'pass an integer from 1 to 1048576, or a BatchWindow')
      flags = rwFlags(o, `${syscall}Many`)
      if (!write && callerGet(o, 'datasync') !== undefined) throw misuse('ERR_INVALID_ARG_VALUE', "option 'datasync' only applies to writeMany", 'drop it')
      signal = signalArg(callerGet(o, 'signal'))
    }
    const kind = write ? KIND_WRITE : KIND_READ
    if (isManyArrays(ops)) {
      const unit = this.direct ? this.alignment.offset : 1
      const checkAligned = (len: number, p: number, what: string): void => this.#checkAligned(len, p, syscall, what)
      const q = manyArrays(this.#io, { write, kind, memAlign: this.#memAlign, unit, window, shared, signal, rwFlags: flags, checkAligned, atEnd: write ? undefined : this.#manyAtEnd }, ops)
      return datasync ? this.#thenDatasync(q, false) : q
    }
    if (shared !== undefined) throw misuse('ERR_INVALID_ARG_VALUE', `${syscall}Many: a BatchWindow applies to the typed-array form ({ memory, offsets, lengths, positions })`, 'pass the typed-array form with fh.alloc memory, or a number as window')
    if (!Array.isArray(ops)) throw misuse('ERR_INVALID_ARG_TYPE', `${syscall}Many needs an array of { buffer, position }, got ${describe(ops)}`, 'pass [{ buffer, position }, ...]')
    // What a Proxy's `length` trap throws is the caller's own (was: renamed ERR_INVALID_ARG_VALUE).
    let n: number
    try {
      n = ops.length
    } catch (e) {
      throw callerError(e)
    }
    if (n > 1 << 20) throw misuse('ERR_OUT_OF_RANGE', `${syscall}Many takes at most ${1 << 20} ops, got ${n}`, 'split into several calls')
    if (n === 0) return datasync ? this.#thenDatasync(Promise.resolve([]), false) : Promise.resolve([])
    // Made at their final length (then filled in order): pushing grew each of them a dozen
    // times per 512-op call (GrowFast*Elements + ArrayPrototypePush, 0.7% of the JS thread's
    // samples in the array form at depth 64 on tmpfs).
    const views = new Array<ArrayBufferView>(n)
    const lengths = new Array<number>(n)
    const positions = new Array<number>(n)
    const unit = this.direct ? this.alignment.offset : 1
    let skip: number[] | undefined
    for (let i = 0; i < n; i++) {
      const op: unknown = callerGet(ops, i)
      if (!isOptionsObject(op)) throw misuse('ERR_INVALID_ARG_TYPE', `ops[${i}] must be { buffer, position }, got ${describe(op)}`, 'pass [{ buffer, position }, ...]')
      // Each property read once. The common case (a non-empty view, a whole number position,
      // both aligned) is accepted without making the `ops[i]...` labels, a string each per op;
      // anything else goes through the labelled checks, which accept or refuse it as before.
      // What a getter or Proxy trap throws is the caller's own.
      let buffer: unknown
      let position: unknown
      try {
        buffer = op.buffer
        position = op.position
      } catch (e) {
        throw callerError(e)
      }
      const v = ArrayBuffer.isView(buffer) && buffer.byteLength > 0 ? buffer : viewArg(buffer, `ops[${i}].buffer`)
      const p = typeof position === 'number' && Number.isSafeInteger(position) && position >= 0 ? position : positionArg(position, `ops[${i}].position`)
      const len = v.byteLength
      if (len === 0) throw misuse('ERR_OUT_OF_RANGE', `ops[${i}].buffer has zero length`, 'pass a buffer of at least one block (fh.alignment.offset bytes)')
      if (len > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `ops[${i}].buffer is more than ${MAX_IO_LENGTH} bytes`, 'split the transfer into several ops')
      if (len % unit !== 0 || p % unit !== 0) {
        // (s21c) A read refused for its position only: 0 bytes at or past the end (#manyAtEnd).
        if (!write && len % unit === 0) (skip ??= []).push(i)
        else this.#checkAligned(len, p, syscall, `ops[${i}].buffer length`)
      }
      views[i] = v
      lengths[i] = len
      positions[i] = p
    }
    if (signal?.aborted) return Promise.reject(abortError(signal, { syscall, path: this.path }))
    if (skip !== undefined) {
      const refuse = (i: number): unknown => {
        try {
          this.#checkAligned(lengths[i], positions[i], syscall, `ops[${i}].buffer length`)
        } catch (e) {
          return e
        }
      }
      return this.#manyAtEnd(n, skip, (i) => positions[i], refuse, (keep) => {
        // Aborted during the fstat: nothing starts (a batch would not hear an abort already made).
        if (signal?.aborted && keep.length > 0) return Promise.reject(abortError(signal, { syscall, path: this.path }))
        const pick = <T>(a: T[]): T[] => keep.map((i) => a[i])
        const d: BatchDesc = { write, kind, views: pick(views), lengths: pick(lengths), positions: pick(positions), memAlign: this.#memAlign, window, signal, rwFlags: flags, link: false }
        return spreadResults(keep.length === 0 ? Promise.resolve([]) : startMany(this.#io, d), n, keep, this.path, signal)
      })
    }
    // Linked writes run one after another: worth it for the few writes of a commit.
    const link = datasync && this.backend === 'io_uring' && window >= n && n <= LINK_MAX
    const d: BatchDesc = { write, kind, views, lengths, positions, memAlign: this.#memAlign, window, signal, rwFlags: flags, link }
    const p = startMany(this.#io, d)
    return datasync ? this.#thenDatasync(p, link, link ? d : undefined) : p
  }

  /**
   * Many reads in one submission (one system call for the whole batch on io_uring; past the
   * ring's size the rest are submitted as earlier ones complete). Resolves with the bytes read
   * by each, in order. If any fails, rejects after all have completed with a DirectIoError whose
   * `results` holds each op's bytes or error.
   */
  readMany(ops: readonly ManyOp[], options?: ManyOptions): Promise<number[]>
  /**
   * The typed-array form: op i reads `lengths[i]` bytes at `positions[i]` into `memory` at
   * `offsets[i]`; resolves with `results` (bytes read by each op; fewer than asked at end of
   * file). With `fh.alloc` memory the engine runs the whole batch (its window refilled natively,
   * one completion for all): no object or promise per op. Errors as above (`error.results`, and
   * `results[i]` = -errno).
   */
  readMany(ops: ManyArrays, options?: ManyOptions): Promise<Int32Array>
  readMany(ops: readonly ManyOp[] | ManyArrays, options?: ManyOptions): Promise<number[] | Int32Array> {
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
  writeMany(ops: readonly ManyOp[], options?: ManyOptions): Promise<number[]>
  /** The typed-array form (see `readMany`): op i writes `lengths[i]` bytes of `memory` from `offsets[i]` at `positions[i]`. */
  writeMany(ops: ManyArrays, options?: ManyOptions): Promise<Int32Array>
  writeMany(ops: readonly ManyOp[] | ManyArrays, options?: ManyOptions): Promise<number[] | Int32Array> {
    try {
      return this.#many(true, ops, options, isOptionsObject(options) && datasyncOption(options))
    } catch (e) {
      return Promise.reject(coded(e, 'FileHandle'))
    }
  }

  /** An op without memory (fsync, fdatasync, ftruncate, fallocate) of this handle, for HandleIo. */
  #simpleOp(syscall: Syscall, op: number, a: number, b: number, mode: number, more: Partial<OpDesc> = {}): OpDesc {
    const io = this.#io
    return { kind: KIND_OTHER, syscall, ...more, submit: (sink) => io.engine.simple(io.file.bidx, op, this.fd, a, b, mode, sink) }
  }

  /**
   * `p`, then an fdatasync. `linked`: the writes of `p` were just staged linked (io_uring,
   * IOSQE_IO_LINK) and the fdatasync is staged now as the chain's end: one submission; it
   * starts once they all succeeded, and a failed write cancels it (p rejects with the write's
   * own error). Otherwise the fdatasync goes in once `p` resolved, never after a failed write.
   * `batch`: the linked writeMany's batch, whose writes cancelled by a short one run again.
   */
  #thenDatasync<T>(p: Promise<T>, linked: boolean, batch?: BatchDesc): Promise<T> {
    // The fdatasync is part of this call: counted in flight from now until it is done, so a
    // close() called meanwhile waits for it (it was refused ERR_ODIRECT_CLOSED after the writes).
    const io = this.#io
    const fdatasync = (): Promise<unknown> => io.startAfterWrites(this.#simpleOp('fdatasync', OP_FDATASYNC, 0, 0, 0))
    if (linked) {
      // Cancelled by its chain (a failed or short write before it), the caller never sees it (the
      // write's error, or the fdatasync made after the short write, or after the re-run of the
      // writes it cancelled): no op of fh.stats(), its latency not in the histogram (`chainEnd`).
      const sync = io.start(this.#simpleOp('fdatasync', OP_FDATASYNC, 0, 0, 0, { chainEnd: true }))
      sync.catch(() => undefined)
      // Held once the fdatasync is staged (a throw from its staging must not leave a hold that
      // close() would wait for forever).
      io.hold()
      // A batch's writes count as one write in flight until any of them cancelled by a short one
      // ran again: a barrier (fh.datasync, truncate) called meanwhile waits for those too.
      let seq = batch === undefined ? 0 : io.writeStarted()
      const writesDone = (): void => {
        if (seq !== 0) io.writeDone(seq)
        seq = 0
      }
      return p
        .then(
          async (r) => {
            writesDone()
            try {
              await sync
            } catch (e) {
              // Every write succeeded (p resolved), yet the chain's fdatasync was cancelled: one of
              // them moved fewer bytes than asked (it reached a block device's end, RLIMIT_FSIZE), and
              // the kernel ends a chain at a short transfer. Its bytes are written and the call
              // resolves with the short count, as on the other backends, once they are durable (was:
              // the call rejected ECANCELED from an fdatasync that never ran, the counts lost).
              if (!(e instanceof DirectIoError && e.code === 'ECANCELED' && e.syscall === 'fdatasync')) throw e
              await fdatasync()
            }
            return r
          },
          async (e: unknown) => {
            // A short write in the middle of the chain cancelled the writes linked after it (and
            // the fdatasync): they run again unlinked, then the fdatasync, and the call answers as
            // aio and the thread pool do, which run them all (was: rejected, those writes ECANCELED).
            const again = batch === undefined ? undefined : rerunCancelled(io, batch, e)
            if (again === undefined) throw e
            let r: number[]
            try {
              r = await again
            } finally {
              writesDone()
            }
            await fdatasync()
            return r as T
          },
        )
        .finally(() => {
          writesDone()
          io.release()
        })
    }
    io.hold()
    return p
      .then(async (r) => {
        await fdatasync()
        return r
      })
      .finally(() => io.release())
  }

  /**
   * @internal Runs `body`, a method of this handle made of several ops (fh.readFile,
   * fh.writeFile), as one thing in flight from its start to its end, as node:fs's FileHandle
   * counts its methods: a close() called meanwhile waits for it, and until it ends the handle's
   * ops still go out (as node:fs's, whose descriptor stays open until its deferred close; its own
   * ops cannot be told from others' without an AsyncLocalStorage, which on Node 20/22 puts a
   * hook on every promise of the process: +28-78% per fh.read measured). A method started
   * after close() rejects ERR_ODIRECT_CLOSED, and so does any op once no method runs.
   */
  _method<T>(syscall: string, body: () => Promise<T>): Promise<T> {
    if (this.#closing !== undefined) {
      return Promise.reject(misuse('ERR_ODIRECT_CLOSED', `file handle for ${this.path} is closed (${syscall})`, 'open the file again; close() is final', { path: this.path, syscall }))
    }
    const io = this.#io
    io.hold()
    this.#methods++
    const done = (): void => {
      this.#methods--
      io.release()
    }
    let p: Promise<T>
    try {
      p = body()
    } catch (e) {
      done()
      return Promise.reject(coded(e, 'FileHandle'))
    }
    return p.finally(done)
  }

  /** An op without memory, after every write issued before it; `options`: `{ signal, timeout }`. */
  async #simple(syscall: Syscall, op: number, a: number, b: number, mode: number, ctx: { position?: number; length?: number }, options: unknown): Promise<void> {
    this.#checkOpen(syscall)
    const o = optionsArg(options, '{ signal, timeout }')
    const signal = signalArg(o?.signal)
    const timeout = timeoutArg(o?.timeout)
    await this.#io.startAfterWrites(this.#simpleOp(syscall, op, a, b, mode, { ...ctx, signal, timeout }))
  }

  /** fsync: data and metadata reach stable storage; covers every write issued before it on this handle. */
  sync(options?: OpOptions): Promise<void> {
    return guardAsync('fh.sync', () => this.#simple('fsync', OP_FSYNC, 0, 0, 0, {}, options))
  }

  /** fdatasync: data (and the metadata needed to read it) reach stable storage; covers every write issued before it on this handle. */
  datasync(options?: OpOptions): Promise<void> {
    return guardAsync('fh.datasync', () => this.#simple('fdatasync', OP_FDATASYNC, 0, 0, 0, {}, options))
  }

  /** Sets the file's length (ftruncate), after every write issued before it. Any length works. */
  truncate(length: number | bigint = 0, options?: OpOptions): Promise<void> {
    return guardAsync('fh.truncate', async () => {
      const len = positionArg(length, 'length')
      await this.#simple('ftruncate', OP_FTRUNCATE, len, 0, 0, { length: len }, options)
    })
  }

  /**
   * Reserves disk space (fallocate): later writes in [offset, offset + length) cannot fail with
   * ENOSPC. `mode`: 0 (allocate and extend the size) or `constants.FALLOC_FL_*` bits.
   */
  allocate(offset: number | bigint, length: number | bigint, mode = 0, options?: OpOptions): Promise<void> {
    return guardAsync('fh.allocate', async () => {
      const off = positionArg(offset, 'offset')
      const len = positionArg(length, 'length')
      if (len === 0) throw misuse('ERR_OUT_OF_RANGE', 'allocate length must be > 0', 'pass the number of bytes to reserve')
      if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0xff || (mode & ~FALLOC_KNOWN) !== 0) {
        throw misuse('ERR_OUT_OF_RANGE', `mode must be 0 or a combination of constants.FALLOC_FL_* bits, got ${describe(mode)}`, 'use 0, or constants.FALLOC_FL_KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE...')
      }
      await this.#simple('fallocate', OP_FALLOCATE, off, len, mode, { position: off, length: len }, options)
    })
  }

  /** fstat, as fs/promises: an `fs.Stats` (`BigIntStats` with `{ bigint: true }`). For block devices `size` is the device size. */
  stat(options?: { bigint?: false }): Promise<fsTypes.Stats>
  stat(options: { bigint: true }): Promise<fsTypes.BigIntStats>
  stat(options?: { bigint?: boolean }): Promise<fsTypes.Stats | fsTypes.BigIntStats> {
    return guardAsync('fh.stat', async () => {
      this.#checkOpen('fstat')
      const bigint = optionsArg(options, '{ bigint: true } or nothing')?.bigint === true
      // Counted as in flight so close() waits for it and the fd cannot be reused under it.
      this.#io.hold()
      try {
        return await fstat(this.fd, this.path, bigint)
      } finally {
        this.#io.release()
      }
    })
  }

  /**
   * Pins `count` aligned buffers of `size` bytes (rounded up to the block size) for this handle's
   * backend: io_uring registered buffers (READ_FIXED / WRITE_FIXED), or mlock on aio and the
   * thread pool. Reads and writes from these buffers (or views inside them) on any handle of the
   * same backend then use the pinned pages. One registration per backend: a new one replaces the
   * old. Fails with ERR_ODIRECT_MEMLOCK when RLIMIT_MEMLOCK is too low, saying how to raise it.
   */
  registerBuffers(count: number, size: number): RegisteredBuffers {
    return guard('fh.registerBuffers', () => {
      this.#checkOpen('io_uring_register')
      const reg = registerBuffers(this.#io.engine, this.backend, count, size, Math.max(this.alignment.offset, this.alignment.memory), (r) => this.#pools.delete(r))
      this.#pools.add(reg)
      return reg
    })
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
      const exclusive = lockExclusive(options)
      const signal = signalArg((options ?? undefined)?.signal)
      if (signal?.aborted) throw abortError(signal, { syscall: 'fcntl', path: this.path })
      const r = await this.#io.lock(exclusive, signal)
      if (r === -E.ECANCELED) {
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
      const errno = native.tryLockFd(this.fd, lockExclusive(options))
      if (errno === 0) return true
      if (errno === E.EAGAIN) return false
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
    return this.#io.position
  }

  /** @internal Moves the handle's position (readFile(fh) / writeFile(fh) advance it, as fs). */
  _seek(to: number): void {
    this.#io.position = to
  }

  /** Counters and latency percentiles for this handle (percentiles computed on call, from a histogram). */
  stats(): HandleStats {
    const io = this.#io
    return { ...io.stats, inflight: io.inflight, path: io.engine.native.path as 'libuv' | 'thread', latencyUs: io.latency.summary() }
  }

  /**
   * Closes the handle. Ops already submitted run to completion first (their promises settle
   * normally); ops started after `close()` reject with ERR_ODIRECT_CLOSED. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      leaked.unregister(this)
      this.#closing = (async () => {
        const io = this.#io
        // A lock() wait may never end by itself: close() ends it (it rejects ERR_ODIRECT_CLOSED).
        io.cancelLocks()
        // close() may run inside another call of this handle (an option getter, a Proxy trap,
        // an engine call's caller between staging ops and counting them in flight): that call
        // counts its ops synchronously, so let the current job end before looking, then wait
        // until nothing is in flight. Looking at once closed the descriptor under a windowed
        // batch's later ops, which then read or wrote whichever file took its number next
        // (adversary-s16b.spec).
        await undefined
        while (io.inflight > 0) await io.drained()
        // Pins taken through this handle end with it.
        for (const p of [...this.#pools]) {
          try {
            p.unregister()
          } catch {
            // Unpinning failed (engine shut down): nothing left to release.
          }
        }
        await new Promise<number>((resolve, reject) => {
          io.engine.simple(io.file.bidx, OP_CLOSE, this.fd, 0, 0, 0, {
            settle: (result: number) => (result < 0 && result !== -E.EBADF ? reject(kernelError(-result, { syscall: 'close', path: this.path })) : resolve(result)),
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

export { DirectIoError }
