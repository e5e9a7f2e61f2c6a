import { addressOf, allocAligned, isDetached, MAX_IO_LENGTH, PAGE_SIZE } from './buffers'
import { type BackendName, backendIndex, type Engine, type OpSink } from './engine'
import { abortError, DirectIoError, kernelError, misuse } from './errors'
import { native } from './native'
import { registerBuffers, registeredIndex, type RegisteredBuffers } from './registered'

/** What direct I/O needs for this file, and where odirect learned it. */
export interface Alignment {
  /** Buffer addresses must be multiples of this. */
  readonly memory: number
  /** Positions and lengths must be multiples of this. */
  readonly offset: number
  readonly logicalBlockSize: number
  readonly physicalBlockSize: number
  readonly source: 'statx' | 'ioctl' | 'sysfs' | 'fstat' | 'default'
}

export interface OpOptions {
  /** Aborts the op: it is cancelled in the kernel where possible and rejects with an AbortError. */
  signal?: AbortSignal
}

export interface ReadOptions extends OpOptions {
  buffer: ArrayBufferView
  /** File position; omitted or null: the handle's current position, which then advances. */
  position?: number | bigint | null
}

export interface ManyOp {
  buffer: ArrayBufferView
  position: number | bigint
}

export interface HandleStats {
  ops: number
  reads: number
  writes: number
  bytesRead: number
  bytesWritten: number
  errors: number
  inflight: number
  /** Latency percentiles over the most recent 4096 ops, in microseconds. */
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number }
}

export interface Stats {
  size: number
  blocks: number
  blksize: number
  mode: number
  ino: number
  dev: number
  nlink: number
  uid: number
  gid: number
  atimeMs: number
  mtimeMs: number
  ctimeMs: number
  isFile(): boolean
  isBlockDevice(): boolean
}

export interface HandleInit {
  path: string
  fd: number
  flags: string
  direct: boolean
  fallbackReason: string
  alignment: Alignment
  backend: BackendName
  isBlockDevice: boolean
  fsType: string
  size: number
  readable: boolean
  writable: boolean
}

const LAT_WINDOW = 4096

/**
 * A handle that is garbage-collected without close() would leak its descriptor: close it then,
 * with a warning, as Node's own FileHandle does. Ops in flight keep their handle reachable (their
 * settle callbacks reference it), so this never runs while the kernel uses the fd.
 */
const leaked = new FinalizationRegistry<{ fd: number; path: string }>(({ fd, path }) => {
  native.closeFdSync(fd)
  if (typeof process !== 'undefined' && typeof process.emitWarning === 'function') {
    process.emitWarning(`odirect: closing file descriptor ${fd} (${path}) on garbage collection; call fh.close() or use 'await using'`, 'Warning')
  }
})
const S_IFMT = 0o170000
const S_IFREG = 0o100000

type Syscall = 'read' | 'write' | 'readv' | 'writev' | 'fsync' | 'fdatasync' | 'fallocate' | 'ftruncate' | 'close'

function toPosition(p: unknown, what = 'position'): number {
  if (typeof p === 'bigint') {
    if (p < 0n || p > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw misuse('ERR_OUT_OF_RANGE', `${what} ${p} is out of range`, 'positions must be >= 0 and <= Number.MAX_SAFE_INTEGER')
    }
    return Number(p)
  }
  if (typeof p !== 'number') {
    throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a number or bigint, got ${typeof p}`, 'pass a byte offset in the file')
  }
  if (!Number.isSafeInteger(p) || p < 0) {
    throw misuse('ERR_OUT_OF_RANGE', `${what} must be a non-negative safe integer, got ${p}`, 'pass a whole byte offset >= 0')
  }
  return p
}

function checkView(b: unknown, what = 'buffer'): ArrayBufferView {
  if (!ArrayBuffer.isView(b)) {
    throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a Uint8Array, Buffer, other TypedArray or DataView, got ${b === null ? 'null' : typeof b}`, 'allocate one with fh.alloc(size) or allocAligned(size)')
  }
  if (isDetached(b)) {
    throw misuse('ERR_ODIRECT_DETACHED', `${what} is detached (its ArrayBuffer was transferred)`, 'use a buffer that is not transferred or posted to a worker while in use')
  }
  if (b.byteLength === 0) {
    throw misuse('ERR_OUT_OF_RANGE', `${what} has zero length`, 'pass a buffer of at least one block (fh.alignment.offset bytes)')
  }
  if (b.byteLength > MAX_IO_LENGTH) {
    throw misuse('ERR_OUT_OF_RANGE', `${what} is ${b.byteLength} bytes, more than ${MAX_IO_LENGTH} that one I/O can move`, 'split the transfer into several ops')
  }
  return b
}

/**
 * An open file. Shaped after `fs/promises` FileHandle: `read`, `write`, `readv`, `writev`,
 * `datasync`, `sync`, `truncate`, `stat`, `close`, plus `alloc`, `allocate`, `readMany`,
 * `writeMany` and `stats`. Data ops resolve with the number of bytes moved.
 */
export class FileHandle {
  readonly path: string
  readonly fd: number
  readonly flags: string
  /** True when O_DIRECT is really in effect. */
  readonly direct: boolean
  /** Why direct I/O is off although it was asked for (`direct: 'prefer'` fallback); '' otherwise. */
  readonly fallbackReason: string
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
  #lat = new Float64Array(LAT_WINDOW)
  #latN = 0
  #pools: RegisteredBuffers[] = []
  #stats = { ops: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, errors: 0 }

  /** @internal Use `open()`. */
  constructor(engine: Engine, init: HandleInit) {
    this.#engine = engine
    this.path = init.path
    this.fd = init.fd
    this.flags = init.flags
    this.direct = init.direct
    this.fallbackReason = init.fallbackReason
    this.alignment = Object.freeze({ ...init.alignment })
    this.backend = init.backend
    this.#bidx = backendIndex(init.backend)
    this.isBlockDevice = init.isBlockDevice
    this.fsType = init.fsType
    this.readable = init.readable
    this.writable = init.writable
    leaked.register(this, { fd: init.fd, path: init.path }, this)
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closing !== undefined
  }

  /**
   * A zeroed buffer usable for direct I/O on this file: its address is aligned to the page size
   * (or more if the file needs it) and its length is `size` rounded up to `alignment.offset`.
   */
  alloc(size: number): Uint8Array {
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) {
      throw misuse('ERR_OUT_OF_RANGE', `size must be a positive integer, got ${String(size)}`, 'pass the number of bytes, e.g. 1 << 20')
    }
    const unit = this.alignment.offset
    const len = Math.ceil(size / unit) * unit
    return allocAligned(len, Math.max(PAGE_SIZE, this.alignment.memory))
  }

  #checkOpen(syscall: string): void {
    if (this.#closing !== undefined) {
      throw misuse('ERR_ODIRECT_CLOSED', `file handle for ${this.path} is closed (${syscall})`, 'open the file again; close() is final', { path: this.path, syscall })
    }
  }

  #checkAligned(view: ArrayBufferView, position: number, syscall: string, what = 'buffer'): void {
    if (!this.direct) return
    const a = this.alignment
    const addr = addressOf(view)
    if (addr % a.memory !== 0) {
      throw misuse(
        'ERR_ODIRECT_ALIGNMENT',
        `${what} address is not a multiple of ${a.memory} bytes, which O_DIRECT on ${this.path} requires (${syscall})`,
        `allocate it with fh.alloc(size) or allocAligned(size, ${Math.max(PAGE_SIZE, a.memory)})`,
        { path: this.path, position, length: view.byteLength, syscall },
      )
    }
    if (view.byteLength % a.offset !== 0) {
      throw misuse(
        'ERR_ODIRECT_ALIGNMENT',
        `${what} length ${view.byteLength} is not a multiple of ${a.offset} bytes, the block size O_DIRECT on ${this.path} requires (${syscall})`,
        `round the length up to a multiple of ${a.offset} (fh.alloc rounds for you)`,
        { path: this.path, position, length: view.byteLength, syscall },
      )
    }
    if (position % a.offset !== 0) {
      throw misuse(
        'ERR_ODIRECT_ALIGNMENT',
        `position ${position} is not a multiple of ${a.offset} bytes, the block size O_DIRECT on ${this.path} requires (${syscall})`,
        `use positions that are multiples of fh.alignment.offset (${a.offset})`,
        { path: this.path, position, length: view.byteLength, syscall },
      )
    }
  }

  #record(kind: 'read' | 'write' | 'other', result: number, latencyUs: number): void {
    const s = this.#stats
    s.ops++
    if (result < 0) s.errors++
    else if (kind === 'read') {
      s.reads++
      s.bytesRead += result
    } else if (kind === 'write') {
      s.writes++
      s.bytesWritten += result
    }
    this.#lat[this.#latN++ % LAT_WINDOW] = latencyUs
  }

  /** Submits one op through `submit(id)` and returns its promise. */
  #run(
    syscall: Syscall,
    ctx: { position?: number; length?: number },
    signal: AbortSignal | undefined,
    submit: (id: number) => void,
    after?: (result: number) => void,
  ): Promise<number> {
    if (signal !== undefined && signal !== null) {
      if (typeof signal !== 'object' || typeof (signal as AbortSignal).aborted !== 'boolean') {
        return Promise.reject(misuse('ERR_INVALID_ARG_TYPE', 'signal must be an AbortSignal', 'pass AbortController.signal or AbortSignal.timeout(ms)'))
      }
      if (signal.aborted) return Promise.reject(abortError(signal, { syscall, path: this.path, ...ctx }))
    }
    const kind = syscall === 'read' || syscall === 'readv' ? 'read' : syscall === 'write' || syscall === 'writev' ? 'write' : 'other'
    return new Promise<number>((resolve, reject) => {
      let onAbort: (() => void) | undefined
      const sink: OpSink = {
        settle: (result, latencyUs) => {
          if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
          this.#record(kind, result, latencyUs)
          this.#opDone()
          if (result >= 0) {
            after?.(result)
            resolve(result)
          } else if (signal?.aborted && (result === -125 /* ECANCELED */ || result === -4 /* EINTR */)) {
            reject(abortError(signal, { syscall, path: this.path, ...ctx }))
          } else {
            reject(kernelError(-result, { syscall, path: this.path, ...ctx }))
          }
        },
        fail: (e) => {
          if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
          this.#opDone()
          reject(e)
        },
      }
      const id = this.#engine.track(sink)
      try {
        submit(id)
      } catch (e) {
        this.#engine.untrack(id)
        reject(e instanceof DirectIoError ? e : misuse('ERR_INVALID_ARG_VALUE', String((e as Error).message ?? e), 'check the arguments'))
        return
      }
      this.#inflight++
      if (signal) {
        onAbort = () => this.#engine.native.cancel(this.#bidx, id)
        signal.addEventListener('abort', onAbort, { once: true })
      }
    })
  }

  #opDone(): void {
    this.#inflight--
    if (this.#inflight === 0 && this.#drained !== undefined) {
      const d = this.#drained
      this.#drained = undefined
      d()
    }
  }

  #dropCache(position: number, length: number): void {
    // Buffered fallback ('prefer' without O_DIRECT support): spare the page cache anyway.
    if (!this.direct && this.fallbackReason !== '') native.dropCache(this.fd, position, length)
  }

  #rw(write: boolean, bufferOrOpts: unknown, positionArg: unknown, opts: OpOptions | undefined): Promise<number> {
    const syscall = write ? 'write' : 'read'
    try {
      this.#checkOpen(syscall)
      let buffer: unknown = bufferOrOpts
      let pos: unknown = positionArg
      let signal = opts?.signal
      if (bufferOrOpts !== null && typeof bufferOrOpts === 'object' && !ArrayBuffer.isView(bufferOrOpts)) {
        const o = bufferOrOpts as ReadOptions
        buffer = o.buffer
        pos = o.position
        signal = o.signal
      }
      const view = checkView(buffer)
      const implicit = pos === undefined || pos === null
      const position = implicit ? this.#position : toPosition(pos)
      this.#checkAligned(view, position, syscall)
      if (implicit) this.#position += view.byteLength
      return this.#run(
        syscall,
        { position, length: view.byteLength },
        signal,
        (id) => this.#engine.queueRw(this.#bidx, write, id, this.fd, view, position, registeredIndex(view, this.backend)),
        (n) => {
          if (implicit && n < view.byteLength) this.#position = Math.min(this.#position, position + n)
          this.#dropCache(position, n)
        },
      )
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Reads into `buffer` at `position` (or the handle's position when omitted). Resolves with the
   * bytes read: fewer than asked near end of file, 0 at or past it.
   */
  read(buffer: ArrayBufferView, position?: number | bigint | null, options?: OpOptions): Promise<number>
  read(options: ReadOptions): Promise<number>
  read(a: ArrayBufferView | ReadOptions, position?: number | bigint | null, options?: OpOptions): Promise<number> {
    return this.#rw(false, a, position, options)
  }

  /** Writes all of `buffer` at `position` (or the handle's position). Resolves with bytes written. */
  write(buffer: ArrayBufferView, position?: number | bigint | null, options?: OpOptions): Promise<number>
  write(options: ReadOptions): Promise<number>
  write(a: ArrayBufferView | ReadOptions, position?: number | bigint | null, options?: OpOptions): Promise<number> {
    return this.#rw(true, a, position, options)
  }

  #rwv(write: boolean, buffers: unknown, positionArg: unknown, opts: OpOptions | undefined): Promise<number> {
    const syscall = write ? 'writev' : 'readv'
    try {
      this.#checkOpen(syscall)
      if (!Array.isArray(buffers) || buffers.length === 0) {
        throw misuse('ERR_INVALID_ARG_TYPE', `${syscall} needs a non-empty array of buffers`, 'pass [buf1, buf2, ...] made with fh.alloc()')
      }
      if (buffers.length > 1024) {
        throw misuse('ERR_OUT_OF_RANGE', `${syscall} takes at most 1024 buffers (IOV_MAX), got ${buffers.length}`, 'split into several calls')
      }
      const implicit = positionArg === undefined || positionArg === null
      const position = implicit ? this.#position : toPosition(positionArg)
      // A private copy: the native side holds this array (and so every view) until completion.
      const views: ArrayBufferView[] = []
      let total = 0
      for (let i = 0; i < buffers.length; i++) {
        const v = checkView(buffers[i], `buffers[${i}]`)
        this.#checkAligned(v, position, syscall, `buffers[${i}]`)
        views.push(v)
        total += v.byteLength
      }
      if (total > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `${syscall} of ${total} bytes is more than one I/O can move (${MAX_IO_LENGTH})`, 'split into several calls')
      if (implicit) this.#position += total
      return this.#run(
        syscall,
        { position, length: total },
        opts?.signal,
        (id) => this.#engine.native.rwv(this.#bidx, write, id, this.fd, views, position),
        (n) => this.#dropCache(position, n),
      )
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /** Scatter read into several buffers from one position. */
  readv(buffers: readonly ArrayBufferView[], position?: number | bigint | null, options?: OpOptions): Promise<number> {
    return this.#rwv(false, buffers, position, options)
  }

  /** Gather write from several buffers at one position. */
  writev(buffers: readonly ArrayBufferView[], position?: number | bigint | null, options?: OpOptions): Promise<number> {
    return this.#rwv(true, buffers, position, options)
  }

  #many(write: boolean, ops: unknown): Promise<number[]> {
    const syscall = write ? 'write' : 'read'
    try {
      this.#checkOpen(syscall)
      if (!Array.isArray(ops)) throw misuse('ERR_INVALID_ARG_TYPE', `${syscall}Many needs an array of { buffer, position }`, 'pass [{ buffer, position }, ...]')
      if (ops.length === 0) return Promise.resolve([])
      const views: ArrayBufferView[] = []
      const positions: number[] = []
      for (let i = 0; i < ops.length; i++) {
        const o = ops[i] as ManyOp
        if (o === null || typeof o !== 'object') throw misuse('ERR_INVALID_ARG_TYPE', `ops[${i}] must be { buffer, position }`, 'pass [{ buffer, position }, ...]')
        const v = checkView(o.buffer, `ops[${i}].buffer`)
        const p = toPosition(o.position, `ops[${i}].position`)
        this.#checkAligned(v, p, syscall, `ops[${i}].buffer`)
        views.push(v)
        positions.push(p)
      }
      const n = ops.length
      const results: number[] = new Array<number>(n)
      let left = n
      let firstError: unknown
      return new Promise<number[]>((resolve, reject) => {
        const ids: number[] = []
        for (let i = 0; i < n; i++) {
          const at = positions[i]
          const len = views[i].byteLength
          ids.push(
            this.#engine.track({
              settle: (result, latencyUs) => {
                this.#record(write ? 'write' : 'read', result, latencyUs)
                this.#opDone()
                if (result >= 0) {
                  results[i] = result
                  this.#dropCache(at, result)
                } else if (firstError === undefined) {
                  firstError = kernelError(-result, { syscall, path: this.path, position: at, length: len })
                }
                if (--left === 0) {
                  if (firstError !== undefined) reject(firstError)
                  else resolve(results)
                }
              },
              fail: (e) => {
                this.#opDone()
                if (firstError === undefined) firstError = e
                if (--left === 0) reject(firstError)
              },
            }),
          )
        }
        for (let i = 0; i < n; i++) {
          this.#engine.queueRw(this.#bidx, write, ids[i], this.fd, views[i], positions[i], registeredIndex(views[i], this.backend))
        }
        this.#inflight += n
      })
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Many reads in one submission (one system call for the whole batch on io_uring). Resolves with
   * the bytes read by each, in order; rejects with the first error after all have completed.
   */
  readMany(ops: readonly ManyOp[]): Promise<number[]> {
    return this.#many(false, ops)
  }

  /** Many writes in one submission; see `readMany`. */
  writeMany(ops: readonly ManyOp[]): Promise<number[]> {
    return this.#many(true, ops)
  }

  #simple(syscall: Syscall, op: number, a: number, b: number, mode: number, ctx: { position?: number; length?: number }, options?: OpOptions): Promise<number> {
    try {
      this.#checkOpen(syscall)
      return this.#run(syscall, ctx, options?.signal, (id) => this.#engine.native.simple(this.#bidx, op, id, this.fd, a, b, mode))
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /** fsync: data and metadata reach stable storage. */
  async sync(options?: OpOptions): Promise<void> {
    await this.#simple('fsync', 0, 0, 0, 0, {}, options)
  }

  /** fdatasync: data (and the metadata needed to read it) reach stable storage. */
  async datasync(options?: OpOptions): Promise<void> {
    await this.#simple('fdatasync', 1, 0, 0, 0, {}, options)
  }

  /** Sets the file's length (ftruncate). Any length works; only I/O has to be aligned. */
  async truncate(length: number | bigint = 0, options?: OpOptions): Promise<void> {
    const len = toPosition(length, 'length')
    await this.#simple('ftruncate', 3, len, 0, 0, { length: len }, options)
  }

  /**
   * Reserves disk space (fallocate): later writes in [offset, offset + length) cannot fail with
   * ENOSPC. `mode` is fallocate's mode bits (0: allocate and extend the size; 1: KEEP_SIZE).
   */
  async allocate(offset: number | bigint, length: number | bigint, mode = 0, options?: OpOptions): Promise<void> {
    const off = toPosition(offset, 'offset')
    const len = toPosition(length, 'length')
    if (len === 0) throw misuse('ERR_OUT_OF_RANGE', 'allocate length must be > 0', 'pass the number of bytes to reserve')
    if (!Number.isInteger(mode) || mode < 0) throw misuse('ERR_INVALID_ARG_VALUE', `mode must be a non-negative integer, got ${String(mode)}`, 'use 0, or 1 (FALLOC_FL_KEEP_SIZE)')
    await this.#simple('fallocate', 2, off, len, mode, { position: off, length: len }, options)
  }

  /** fstat. For block devices `size` is the device size. */
  async stat(): Promise<Stats> {
    this.#checkOpen('fstat')
    // Counted as in flight so close() waits for it and the fd cannot be reused under it.
    this.#inflight++
    let s: Awaited<ReturnType<typeof native.statFd>>
    try {
      s = await native.statFd(this.fd)
    } finally {
      this.#opDone()
    }
    if (s.errno !== 0) throw kernelError(s.errno, { syscall: 'fstat', path: this.path })
    const { errno: _e, isBlockDevice, ...rest } = s
    return {
      ...rest,
      isFile: () => (s.mode & S_IFMT) === S_IFREG,
      isBlockDevice: () => isBlockDevice,
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
    this.#checkOpen('io_uring_register')
    const reg = registerBuffers(this.#engine, this.backend, count, size, Math.max(this.alignment.offset, this.alignment.memory))
    this.#pools.push(reg)
    return reg
  }

  /** Counters and latency percentiles for this handle. */
  stats(): HandleStats {
    const n = Math.min(this.#latN, LAT_WINDOW)
    const lat = Array.from(this.#lat.subarray(0, n)).sort((x, y) => x - y)
    const pct = (p: number): number => (n === 0 ? 0 : lat[Math.min(n - 1, Math.floor((p / 100) * n))])
    const mean = n === 0 ? 0 : lat.reduce((s, x) => s + x, 0) / n
    return { ...this.#stats, inflight: this.#inflight, latencyUs: { p50: pct(50), p90: pct(90), p99: pct(99), max: n === 0 ? 0 : lat[n - 1], mean } }
  }

  /**
   * Closes the handle. Ops already submitted run to completion first (their promises settle
   * normally); ops started after `close()` reject with ERR_ODIRECT_CLOSED. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      leaked.unregister(this)
      this.#closing = (async () => {
        if (this.#inflight > 0) await new Promise<void>((r) => (this.#drained = r))
        // Pins taken through this handle end with it.
        for (const p of this.#pools.splice(0)) {
          try {
            p.unregister()
          } catch {
            // Unpinning failed (engine shut down): nothing left to release.
          }
        }
        await new Promise<number>((resolve, reject) => {
          const id = this.#engine.track({
            settle: (result) => (result < 0 && result !== -9 /* EBADF */ ? reject(kernelError(-result, { syscall: 'close', path: this.path })) : resolve(result)),
            fail: reject,
          })
          try {
            this.#engine.native.simple(this.#bidx, 4, id, this.fd, 0, 0, 0)
          } catch (e) {
            this.#engine.untrack(id)
            reject(e)
          }
        })
      })()
    }
    return this.#closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

export { DirectIoError }
