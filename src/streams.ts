// Streams over direct I/O: Node `Readable` / `Writable` and WHATWG `ReadableStream` (bytes, BYOB)
// / `WritableStream`. Both flavours share one small core per direction: `BlockReader` keeps
// `readAhead` aligned reads in flight and hands out trimmed views; `BlockWriter` gathers chunks
// of any size into aligned blocks, keeps `writeBehind` writes in flight, pads the last block and
// truncates the file to the exact length.
import { setMaxListeners } from 'node:events'
import { Readable, Writable } from 'node:stream'

import type { DirectMode, OpenFlags } from '../index'
import * as odirect from '../index'
import { MAX_IO_LENGTH } from './buffers'
import { BACKENDS, type BackendName } from './engine'
import { abortError, DirectIoError, kernelError, misuse } from './errors'
import { FileHandle } from './handle'

/** Options used when the stream opens a path itself (refused together with a FileHandle). */
export interface StreamOpenOptions {
  /**
   * 'require' (default): O_DIRECT or a typed error. 'prefer': fall back to buffered I/O (with the
   * page cache dropped behind each op) where the filesystem refuses O_DIRECT. 'off': buffered.
   */
  direct?: DirectMode
  /** I/O engine: 'auto' (default), 'io_uring', 'aio' or 'threadpool'. */
  backend?: 'auto' | BackendName
}

/** Options of {@link createReadStream} and {@link readableWebStream}. */
export interface ReadStreamOptions extends StreamOpenOptions {
  /** Bytes per read, rounded up to a multiple of the file's block size. Default 1 MiB. */
  chunkSize?: number
  /** Reads kept in flight (and the most chunks held before the consumer takes them). Default 4. */
  readAhead?: number
  /** First byte to read (any offset; the read is widened to the block and the chunk trimmed). Default 0. */
  start?: number
  /** Last byte to read, inclusive, as in `fs.createReadStream`. Default: to end of file. */
  end?: number
  /** Aborting destroys the stream with an AbortError and cancels the reads in flight. */
  signal?: AbortSignal
}

/** Options of {@link createWriteStream} and {@link writableWebStream}. */
export interface WriteStreamOptions extends StreamOpenOptions {
  /** Bytes per write (the block chunks are gathered into), rounded up to the block size. Default 1 MiB. */
  chunkSize?: number
  /** Writes kept in flight before the stream applies backpressure. Default 4. */
  writeBehind?: number
  /** Flags used to open a path: 'w' (default), 'wx', 'w+', 'wx+', 'r+'. */
  flags?: OpenFlags
  /** File position of the first byte; must be a multiple of the block size. Default 0. */
  start?: number
  /** Aborting destroys the stream with an AbortError and cancels the writes in flight. */
  signal?: AbortSignal
  /** fdatasync before the stream finishes, so 'finish' means the data is durable. Default true. */
  datasync?: boolean
  /** Permission bits for a file the stream creates (default 0o666 minus the umask). */
  mode?: number
}

const MiB = 1024 * 1024
const MAX_DEPTH = 1024

const OPEN_KEYS = ['direct', 'backend']
const READ_KEYS = new Set(['chunkSize', 'readAhead', 'start', 'end', 'signal', ...OPEN_KEYS])
const WRITE_KEYS = new Set(['chunkSize', 'writeBehind', 'flags', 'start', 'signal', 'datasync', 'mode', ...OPEN_KEYS])
const WRITE_FLAGS = new Set<string>(['w', 'wx', 'xw', 'w+', 'wx+', 'xw+', 'r+', 'rs+'])

interface ReadConfig {
  chunkSize: number
  readAhead: number
  start: number
  /** Exclusive end (Infinity: to end of file). */
  stop: number
  signal: AbortSignal | undefined
  direct: DirectMode
  backend: 'auto' | BackendName
}

interface WriteConfig {
  chunkSize: number
  writeBehind: number
  flags: OpenFlags
  start: number
  signal: AbortSignal | undefined
  datasync: boolean
  direct: DirectMode
  backend: 'auto' | BackendName
  mode: number
}

type Target = string | FileHandle

const roundUp = (n: number, unit: number): number => Math.ceil(n / unit) * unit

function checkTarget(t: unknown): Target {
  if (t instanceof FileHandle) return t
  if (typeof t === 'string' && t.length > 0) return t
  throw misuse('ERR_INVALID_ARG_TYPE', `pathOrHandle must be a non-empty path string or a FileHandle, got ${t === null ? 'null' : typeof t}`, "pass a path or a handle from open()")
}

function checkKeys(o: unknown, known: Set<string>): Record<string, unknown> {
  if (o === undefined || o === null) return {}
  if (typeof o !== 'object') throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${typeof o}`, 'pass e.g. { chunkSize: 1 << 20 }')
  for (const k of Object.keys(o)) {
    if (!known.has(k)) throw misuse('ERR_INVALID_ARG_VALUE', `unknown option '${k}'`, `known options: ${[...known].join(', ')}`)
  }
  return o as Record<string, unknown>
}

function intOption(o: Record<string, unknown>, key: string, def: number, min: number, max: number, hint: string): number {
  const v = o[key]
  if (v === undefined) return def
  if (typeof v !== 'number') throw misuse('ERR_INVALID_ARG_TYPE', `${key} must be a number, got ${typeof v}`, hint)
  if (!Number.isSafeInteger(v) || v < min || v > max) throw misuse('ERR_OUT_OF_RANGE', `${key} must be an integer from ${min} to ${max}, got ${v}`, hint)
  return v
}

function signalOption(o: Record<string, unknown>): AbortSignal | undefined {
  const s = o.signal
  if (s === undefined) return undefined
  if (s === null || typeof s !== 'object' || typeof (s as AbortSignal).aborted !== 'boolean' || typeof (s as AbortSignal).addEventListener !== 'function') {
    throw misuse('ERR_INVALID_ARG_TYPE', 'signal must be an AbortSignal', 'pass AbortController.signal or AbortSignal.timeout(ms)')
  }
  return s as AbortSignal
}

function openOptions(o: Record<string, unknown>, target: Target, extra: readonly string[]): { direct: DirectMode; backend: 'auto' | BackendName } {
  if (target instanceof FileHandle) {
    for (const k of [...OPEN_KEYS, ...extra]) {
      if (o[k] !== undefined) throw misuse('ERR_INVALID_ARG_VALUE', `option '${k}' only applies when the stream opens a path, not to a FileHandle`, `pass it to open() instead, or pass a path`)
    }
  }
  const direct = o.direct ?? 'require'
  if (direct !== 'require' && direct !== 'prefer' && direct !== 'off') {
    throw misuse('ERR_INVALID_ARG_VALUE', `direct must be 'require', 'prefer' or 'off', got ${String(direct)}`, "use 'require' for O_DIRECT or an error")
  }
  const backend = o.backend ?? 'auto'
  if (backend !== 'auto' && !BACKENDS.includes(backend as BackendName)) {
    throw misuse('ERR_INVALID_ARG_VALUE', `backend must be 'auto', 'io_uring', 'aio' or 'threadpool', got ${String(backend)}`, "use 'auto' unless you need a specific engine")
  }
  return { direct, backend: backend as 'auto' | BackendName }
}

function readConfig(target: Target, opts: unknown): ReadConfig {
  const o = checkKeys(opts, READ_KEYS)
  const chunkSize = intOption(o, 'chunkSize', MiB, 1, MAX_IO_LENGTH, 'e.g. 1 << 20 (it is rounded up to the block size)')
  const readAhead = intOption(o, 'readAhead', 4, 1, MAX_DEPTH, 'e.g. 4 reads in flight')
  const start = intOption(o, 'start', 0, 0, Number.MAX_SAFE_INTEGER, 'the first byte offset to read, >= 0')
  let stop = Infinity
  if (o.end !== undefined && o.end !== Infinity) {
    const end = intOption(o, 'end', 0, 0, Number.MAX_SAFE_INTEGER - 1, 'the last byte offset to read (inclusive), or Infinity')
    if (end < start) throw misuse('ERR_OUT_OF_RANGE', `end (${end}) must be >= start (${start})`, 'end is inclusive, as in fs.createReadStream')
    stop = end + 1
  }
  return { chunkSize, readAhead, start, stop, signal: signalOption(o), ...openOptions(o, target, []) }
}

function writeConfig(target: Target, opts: unknown): WriteConfig {
  const o = checkKeys(opts, WRITE_KEYS)
  const chunkSize = intOption(o, 'chunkSize', MiB, 1, MAX_IO_LENGTH, 'e.g. 1 << 20 (it is rounded up to the block size)')
  const writeBehind = intOption(o, 'writeBehind', 4, 1, MAX_DEPTH, 'e.g. 4 writes in flight')
  const start = intOption(o, 'start', 0, 0, Number.MAX_SAFE_INTEGER, 'a byte offset that is a multiple of the block size')
  const flags = o.flags ?? 'w'
  if (typeof flags !== 'string' || !WRITE_FLAGS.has(flags)) {
    throw misuse('ERR_ODIRECT_FLAGS', `flags must be one of ${[...WRITE_FLAGS].join(', ')} for a write stream, got ${String(flags)}`, "use 'w' to create or truncate, 'r+' to overwrite in place")
  }
  const datasync = o.datasync ?? true
  if (typeof datasync !== 'boolean') throw misuse('ERR_INVALID_ARG_TYPE', `datasync must be a boolean, got ${typeof datasync}`, 'pass datasync: true or false')
  const mode = intOption(o, 'mode', 0o666, 0, 0o7777, 'e.g. 0o644')
  return { chunkSize, writeBehind, flags: flags as OpenFlags, start, signal: signalOption(o), datasync, mode, ...openOptions(o, target, ['flags', 'mode']) }
}

/** An internal AbortController that cancels the core's ops on destroy or on the user's abort. */
function linkSignal(depth: number): AbortController {
  const ac = new AbortController()
  setMaxListeners(depth + 8, ac.signal)
  return ac
}

/** Calls `fn(error)` once when `signal` aborts (now, if already aborted); returns an unsubscribe. */
function watchAbort(signal: AbortSignal | undefined, path: string, syscall: string, fn: (e: DirectIoError) => void): () => void {
  if (signal === undefined) return () => {}
  const on = (): void => fn(abortError(signal, { syscall, path }))
  if (signal.aborted) {
    queueMicrotask(on)
    return () => {}
  }
  signal.addEventListener('abort', on, { once: true })
  return () => signal.removeEventListener('abort', on)
}

type Settled = { ok: true; n: number } | { ok: false; err: unknown }

interface ReadSlot {
  pos: number
  len: number
  buf: Uint8Array
  /** Leading bytes already delivered (a continuation after a short read). */
  skip: number
  done: Promise<Settled>
}

/** Base of both cores: opening (or adopting) the handle, op tracking and teardown. */
abstract class Core {
  protected fh: FileHandle | undefined
  protected readonly owned: boolean
  protected readonly ac: AbortController
  protected readonly pending = new Set<Promise<unknown>>()
  protected dead = false
  #opening: Promise<FileHandle> | undefined
  #destroying: Promise<void> | undefined

  constructor(
    readonly target: Target,
    depth: number,
  ) {
    this.owned = typeof target === 'string'
    this.ac = linkSignal(depth)
  }

  get path(): string {
    return typeof this.target === 'string' ? this.target : this.target.path
  }

  get handle(): FileHandle | undefined {
    return this.fh
  }

  open(): Promise<FileHandle> {
    if (this.#opening === undefined) {
      this.#opening = this.doOpen().then((fh) => {
        this.fh = fh
        return fh
      })
    }
    return this.#opening
  }

  protected abstract doOpen(): Promise<FileHandle>

  protected track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p)
    const drop = (): void => {
      this.pending.delete(p)
    }
    p.then(drop, drop)
    return p
  }

  protected checkHandle(fh: FileHandle, write: boolean): void {
    if (fh.closed) throw misuse('ERR_ODIRECT_CLOSED', `file handle for ${fh.path} is closed`, 'pass an open handle', { path: fh.path })
    if (write && !fh.writable) {
      throw misuse('ERR_ODIRECT_FLAGS', `file handle for ${fh.path} was opened read-only (flags '${fh.flags}'), a write stream needs it writable`, "open it with 'r+', 'w' or 'w+'", { path: fh.path })
    }
    if (!write && !fh.readable) {
      throw misuse('ERR_ODIRECT_FLAGS', `file handle for ${fh.path} was opened write-only (flags '${fh.flags}'), a read stream needs it readable`, "open it with 'r', 'r+' or 'w+'", { path: fh.path })
    }
  }

  protected get opSignal(): AbortSignal {
    return this.ac.signal
  }

  /** Cancels what is in flight, waits for it, and closes the file if the stream opened it. Idempotent. */
  destroy(): Promise<void> {
    if (this.#destroying === undefined) {
      this.dead = true
      this.onDestroy()
      this.#destroying = (async () => {
        if (this.pending.size > 0) this.ac.abort()
        let fh: FileHandle | undefined
        try {
          fh = await this.#opening
        } catch {
          fh = undefined
        }
        while (this.pending.size > 0) await Promise.allSettled([...this.pending])
        if (this.owned && fh !== undefined) await fh.close()
      })()
    }
    return this.#destroying
  }

  protected onDestroy(): void {}
}

/** Reads a range of a file in aligned chunks, `readAhead` in flight, in order. */
class BlockReader extends Core {
  readonly #cfg: ReadConfig
  #queue: ReadSlot[] = []
  #next = 0
  #stopAligned = Infinity
  #chunk = 0
  #unit = 0
  #size = 0
  #eof = false
  #bytesRead = 0

  constructor(target: Target, cfg: ReadConfig) {
    super(target, cfg.readAhead)
    this.#cfg = cfg
  }

  get bytesRead(): number {
    return this.#bytesRead
  }

  protected async doOpen(): Promise<FileHandle> {
    const c = this.#cfg
    let fh: FileHandle
    if (typeof this.target === 'string') fh = await odirect.open(this.target, 'r', { direct: c.direct, backend: c.backend })
    else {
      fh = this.target
      this.checkHandle(fh, false)
    }
    try {
      const unit = fh.alignment.offset
      this.#unit = unit
      this.#chunk = Math.min(roundUp(c.chunkSize, unit), Math.floor(MAX_IO_LENGTH / unit) * unit)
      this.#next = Math.floor(c.start / unit) * unit
      this.#stopAligned = c.stop === Infinity ? Infinity : roundUp(c.stop, unit)
      this.#size = (await fh.stat()).size
    } catch (e) {
      if (this.owned) await fh.close().catch(() => {})
      throw e
    }
    return fh
  }

  #issue(fh: FileHandle, pos: number, len: number, skip: number): ReadSlot {
    const mem = fh.alloc(len)
    const buf = mem.byteLength === len ? mem : mem.subarray(0, len)
    const done = this.track(
      fh.read(buf, { position: pos, signal: this.opSignal }).then(
        (r): Settled => ({ ok: true, n: r.bytesRead }),
        (err: unknown): Settled => ({ ok: false, err }),
      ),
    )
    return { pos, len, buf, skip, done }
  }

  #fill(fh: FileHandle): void {
    while (!this.#eof && !this.dead && this.#queue.length < this.#cfg.readAhead && this.#next < this.#stopAligned) {
      const pos = this.#next
      const len = Math.min(this.#chunk, this.#stopAligned - pos)
      this.#next += len
      this.#queue.push(this.#issue(fh, pos, len, 0))
    }
  }

  #end(): void {
    // Reads issued past the end return 0; they are left to settle (destroy waits for them).
    this.#eof = true
    this.#queue = []
  }

  /** The next chunk (a Buffer view over its own aligned memory), or null at the end. */
  async pull(): Promise<Buffer<ArrayBuffer> | null> {
    const fh = this.fh ?? (await this.open())
    for (;;) {
      if (this.dead) return null
      this.#fill(fh)
      const slot = this.#queue[0]
      if (slot === undefined) return null
      const r = await slot.done
      if (this.dead) return null
      this.#queue.shift()
      if (!r.ok) {
        this.#end()
        throw r.err
      }
      const n = r.n
      const at = slot.pos + n
      if (at > this.#size) this.#size = at
      if (n >= slot.len) this.#fill(fh)
      else if (at >= this.#size) this.#end()
      else if (n > slot.skip) {
        // Short read before the end of file (FUSE, NFS, a signal): read the rest of the slot,
        // from the block holding the first missing byte.
        const p = fh.direct ? Math.floor(at / this.#unit) * this.#unit : at
        this.#queue.unshift(this.#issue(fh, p, slot.pos + slot.len - p, at - p))
      } else {
        // No progress: the file shrank, or the kernel keeps returning partial blocks.
        this.#size = (await fh.stat()).size
        if (at < this.#size) {
          throw kernelError(5, { syscall: 'read', path: fh.path, position: at, length: slot.pos + slot.len - at }, `read returned no data at position ${at}, before the end of file (${this.#size} bytes)`)
        }
        this.#end()
      }
      const lo = Math.max(slot.skip, this.#cfg.start - slot.pos)
      const hi = Math.min(n, this.#cfg.stop - slot.pos)
      if (hi > lo) {
        this.#bytesRead += hi - lo
        return Buffer.from(slot.buf.buffer as ArrayBuffer, slot.buf.byteOffset + lo, hi - lo)
      }
      if (this.#eof) return null
    }
  }

  protected override onDestroy(): void {
    this.#queue = []
  }
}

interface WriteEntry {
  logical: number
  state: 'pending' | 'ok' | 'failed'
}

/** Gathers chunks into aligned blocks and writes them, `writeBehind` in flight. */
class BlockWriter extends Core {
  readonly #cfg: WriteConfig
  #chunk = 0
  #unit = 0
  #pos = 0
  #total = 0
  #origSize = 0
  #cur: Uint8Array | undefined
  #fill = 0
  #pool: Uint8Array[] = []
  #entries: WriteEntry[] = []
  #error: unknown
  #wake: (() => void) | undefined
  #bytesWritten = 0
  #finished = false
  /** Told about the first failed write at once, so the stream errors without waiting for the next chunk. */
  onError: ((e: unknown) => void) | undefined

  constructor(target: Target, cfg: WriteConfig) {
    super(target, cfg.writeBehind)
    this.#cfg = cfg
  }

  /** Bytes confirmed written, in order (see DirectWriteStream.bytesWritten). */
  get bytesWritten(): number {
    return this.#bytesWritten
  }

  protected async doOpen(): Promise<FileHandle> {
    const c = this.#cfg
    let fh: FileHandle
    if (typeof this.target === 'string') fh = await odirect.open(this.target, c.flags, { direct: c.direct, backend: c.backend, mode: c.mode })
    else {
      fh = this.target
      this.checkHandle(fh, true)
    }
    try {
      const unit = fh.alignment.offset
      if (c.start % unit !== 0) {
        throw misuse('ERR_ODIRECT_ALIGNMENT', `start ${c.start} is not a multiple of ${unit} bytes, the block size of ${fh.path}`, `use a start that is a multiple of ${unit}`, { path: fh.path, position: c.start })
      }
      this.#unit = unit
      this.#chunk = Math.min(roundUp(c.chunkSize, unit), Math.floor(MAX_IO_LENGTH / unit) * unit)
      this.#pos = c.start
      this.#origSize = (await fh.stat()).size
    } catch (e) {
      if (this.owned) await fh.close().catch(() => {})
      throw e
    }
    return fh
  }

  #check(): void {
    if (this.#error !== undefined) throw this.#error
    if (this.dead || this.#finished) {
      throw misuse('ERR_ODIRECT_CLOSED', `write stream for ${this.path} is ${this.dead ? 'destroyed' : 'finished'}`, 'create a new stream', { path: this.path })
    }
  }

  #notify(): void {
    const w = this.#wake
    this.#wake = undefined
    w?.()
  }

  async #writeBlock(fh: FileHandle, buf: Uint8Array, len: number, pos: number): Promise<void> {
    let done = 0
    while (done < len) {
      const n = (await fh.write(buf.subarray(done, len), { position: pos + done, signal: this.opSignal })).bytesWritten
      // A short write (ENOSPC on the way, FUSE): go on from the block holding the first byte not
      // written, rewriting its head when the count was not block aligned.
      const next = fh.direct ? Math.floor((done + n) / this.#unit) * this.#unit : done + n
      if (n <= 0 || next <= done) {
        throw kernelError(5, { syscall: 'write', path: fh.path, position: pos + done, length: len - done }, `the kernel wrote ${n} of ${len - done} bytes, not a whole block`)
      }
      done = next
    }
  }

  #submit(fh: FileHandle, buf: Uint8Array, len: number, logical: number): void {
    const entry: WriteEntry = { logical, state: 'pending' }
    this.#entries.push(entry)
    const pos = this.#pos
    this.#pos += len
    this.track(
      this.#writeBlock(fh, buf, len, pos).then(
        () => {
          entry.state = 'ok'
          if (buf.byteLength === this.#chunk) this.#pool.push(buf)
          while (this.#entries.length > 0 && this.#entries[0].state === 'ok') this.#bytesWritten += (this.#entries.shift() as WriteEntry).logical
          this.#notify()
        },
        (e: unknown) => {
          entry.state = 'failed'
          const first = this.#error === undefined && !this.dead
          if (this.#error === undefined) this.#error = e
          this.#notify()
          if (first) queueMicrotask(() => this.onError?.(e))
        },
      ),
    )
  }

  /** Waits until fewer than `limit` blocks are unconfirmed (or an error). */
  async #room(limit: number): Promise<void> {
    while (this.#entries.length > limit && this.#error === undefined && !this.dead) {
      await new Promise<void>((r) => (this.#wake = r))
    }
    this.#check()
  }

  /** Copies `chunk` into blocks, submitting each full one; resolves once there is room for more. */
  async write(chunk: ArrayBufferView): Promise<void> {
    this.#check()
    if (!ArrayBuffer.isView(chunk)) {
      throw misuse('ERR_INVALID_ARG_TYPE', `chunks must be Uint8Array, Buffer or another ArrayBufferView, got ${chunk === null ? 'null' : typeof chunk}`, 'write bytes, e.g. Buffer.from(text)')
    }
    const fh = this.fh ?? (await this.open())
    const src = chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    let off = 0
    while (off < src.byteLength) {
      if (this.#cur === undefined) {
        this.#cur = this.#pool.pop() ?? fh.alloc(this.#chunk)
        this.#fill = 0
      }
      const n = Math.min(src.byteLength - off, this.#chunk - this.#fill)
      this.#cur.set(n === src.byteLength ? src : src.subarray(off, off + n), this.#fill)
      this.#fill += n
      off += n
      this.#total += n
      if (this.#fill === this.#chunk) {
        const buf = this.#cur
        this.#cur = undefined
        this.#submit(fh, buf, this.#chunk, this.#chunk)
        await this.#room(this.#cfg.writeBehind - 1)
      }
    }
  }

  /** Writes the last partial block (zero padded), waits for every write, sets the exact length, datasyncs, closes if owned. */
  async finish(): Promise<void> {
    this.#check()
    const fh = this.fh ?? (await this.open())
    const end = this.#cfg.start + this.#total
    let blockEnd = end
    if (this.#cur !== undefined && this.#fill > 0) {
      const fill = this.#fill
      const blockLen = roundUp(fill, this.#unit)
      let buf = this.#cur
      this.#cur = undefined
      buf.fill(0, fill, blockLen)
      if (this.#origSize > end) {
        // Overwriting in place ('r+'): keep the file's bytes after ours in the last block.
        const old = fh.alloc(blockLen)
        await this.track(fh.read(old, { position: this.#pos, signal: this.opSignal }))
        this.#check()
        old.set(buf.subarray(0, fill))
        buf = old
      }
      blockEnd = this.#pos + blockLen
      this.#submit(fh, buf, blockLen, fill)
    }
    await this.#room(0)
    const finalSize = Math.max(this.#origSize, end)
    if (blockEnd > finalSize && !fh.isBlockDevice) {
      await this.track(fh.truncate(finalSize, { signal: this.opSignal }))
      this.#check()
    }
    if (this.#cfg.datasync) {
      await this.track(fh.datasync({ signal: this.opSignal }))
      this.#check()
    }
    this.#finished = true
    if (this.owned) await fh.close()
  }

  protected override onDestroy(): void {
    this.#notify()
  }
}

/**
 * A Node `Readable` over a file read with direct I/O. Chunks are Buffers, each a view over its
 * own aligned memory (safe to keep). See {@link createReadStream}.
 */
export class DirectReadStream extends Readable {
  readonly #core: BlockReader
  readonly #unwatch: () => void

  /** Same as {@link createReadStream}. */
  constructor(pathOrHandle: string | FileHandle, options?: ReadStreamOptions) {
    const target = checkTarget(pathOrHandle)
    const cfg = readConfig(target, options)
    super()
    this.#core = new BlockReader(target, cfg)
    this.#unwatch = watchAbort(cfg.signal, this.#core.path, 'read', (e) => this.destroy(e))
  }

  /** Path of the file. */
  get path(): string {
    return this.#core.path
  }

  /** The handle reading the file, once open (the one passed in, or the stream's own). */
  get handle(): FileHandle | undefined {
    return this.#core.handle
  }

  /** Bytes delivered so far (after trimming to start/end). */
  get bytesRead(): number {
    return this.#core.bytesRead
  }

  override _construct(callback: (error?: Error | null) => void): void {
    this.#core.open().then(
      () => callback(),
      (e: Error) => callback(e),
    )
  }

  override _read(): void {
    this.#core.pull().then(
      (chunk) => {
        if (!this.destroyed) this.push(chunk)
      },
      (e: Error) => this.destroy(e),
    )
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#unwatch()
    this.#core.destroy().then(
      () => callback(error),
      (e: Error) => callback(error ?? e),
    )
  }
}

/**
 * A Node `Writable` writing a file with direct I/O. Takes chunks of any size (Buffer, Uint8Array,
 * strings); see {@link createWriteStream}.
 */
export class DirectWriteStream extends Writable {
  readonly #core: BlockWriter
  readonly #unwatch: () => void

  /** Same as {@link createWriteStream}. */
  constructor(pathOrHandle: string | FileHandle, options?: WriteStreamOptions) {
    const target = checkTarget(pathOrHandle)
    const cfg = writeConfig(target, options)
    super()
    this.#core = new BlockWriter(target, cfg)
    this.#core.onError = (e) => this.destroy(e as Error)
    this.#unwatch = watchAbort(cfg.signal, this.#core.path, 'write', (e) => this.destroy(e))
  }

  /** Path of the file. */
  get path(): string {
    return this.#core.path
  }

  /** The handle writing the file, once open (the one passed in, or the stream's own). */
  get handle(): FileHandle | undefined {
    return this.#core.handle
  }

  /**
   * Bytes confirmed written, counted in order: a block counts once the kernel completed its write
   * and every block before it did too (with O_DIRECT: on the device; the final datasync flushes
   * its cache). Never counts padding, nor anything at or after a block that failed.
   */
  get bytesWritten(): number {
    return this.#core.bytesWritten
  }

  override _construct(callback: (error?: Error | null) => void): void {
    this.#core.open().then(
      () => callback(),
      (e: Error) => callback(e),
    )
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#core.write(chunk).then(
      () => callback(),
      (e: Error) => callback(e),
    )
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#core.finish().then(
      () => {
        this.#unwatch()
        callback()
      },
      (e: Error) => callback(e),
    )
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#unwatch()
    this.#core.destroy().then(
      () => callback(error),
      (e: Error) => callback(error ?? e),
    )
  }
}

/**
 * Reads a file (or a byte range of it) with direct I/O as a Node `Readable`, keeping `readAhead`
 * aligned reads of `chunkSize` in flight and bypassing the page cache. Works with
 * `stream.pipeline` and `for await`. Given a path, the stream opens and closes the file; given a
 * FileHandle, it leaves it open. Errors (typed {@link DirectIoError}s) destroy the stream.
 *
 * ```ts
 * for await (const chunk of createReadStream('/data/big.bin', { start: 100, end: 1_000_099 })) use(chunk)
 * ```
 */
export function createReadStream(pathOrHandle: string | FileHandle, options?: ReadStreamOptions): DirectReadStream {
  return new DirectReadStream(pathOrHandle, options)
}

/**
 * Writes a file with direct I/O as a Node `Writable`: chunks of any size are gathered into aligned
 * blocks of `chunkSize`, `writeBehind` writes are kept in flight, the last block is padded with
 * zeros and the file then truncated to its exact length, and (by default) the data is datasynced
 * before 'finish'. Errors destroy the stream; `bytesWritten` tells how much was confirmed.
 */
export function createWriteStream(pathOrHandle: string | FileHandle, options?: WriteStreamOptions): DirectWriteStream {
  return new DirectWriteStream(pathOrHandle, options)
}

/**
 * Reads a file with direct I/O as a WHATWG `ReadableStream` of bytes (`type: 'bytes'`): works with
 * default readers (chunks are transferred, no copy) and BYOB readers (`getReader({ mode: 'byob' })`,
 * data copied into the caller's view). Same options and semantics as {@link createReadStream}.
 */
export function readableWebStream(pathOrHandle: string | FileHandle, options?: ReadStreamOptions): ReadableStream<Uint8Array> {
  const target = checkTarget(pathOrHandle)
  const cfg = readConfig(target, options)
  const core = new BlockReader(target, cfg)
  let leftover: Buffer<ArrayBuffer> | null = null
  let unwatch = (): void => {}
  const teardown = (): Promise<void> => {
    unwatch()
    return core.destroy()
  }
  const failed = async (e: unknown): Promise<never> => {
    await teardown().catch(() => {})
    throw e
  }
  const source: UnderlyingByteSource = {
    type: 'bytes',
    async start(controller: ReadableByteStreamController) {
      unwatch = watchAbort(cfg.signal, core.path, 'read', (e) => {
        try {
          controller.error(e)
        } catch {
          // already closed or errored
        }
        void teardown().catch(() => {})
      })
      await core.open().catch(failed)
    },
    async pull(controller: ReadableByteStreamController) {
      if (leftover === null) {
        const chunk = await core.pull().catch(failed)
        if (chunk === null) {
          await teardown()
          controller.close()
          controller.byobRequest?.respond(0)
          return
        }
        leftover = chunk
      }
      const req = controller.byobRequest
      const view = req?.view
      if (req && view) {
        const dst = new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
        const n = Math.min(dst.byteLength, leftover.byteLength)
        dst.set(n === leftover.byteLength ? leftover : leftover.subarray(0, n))
        leftover = n < leftover.byteLength ? leftover.subarray(n) : null
        req.respond(n)
      } else {
        const chunk = leftover
        leftover = null
        controller.enqueue(chunk)
      }
    },
    cancel() {
      return teardown()
    },
  }
  return new ReadableStream(source)
}

/**
 * Writes a file with direct I/O as a WHATWG `WritableStream<Uint8Array>`. Same options and
 * semantics as {@link createWriteStream}: `close()` resolves once the padded last block is
 * written, the length set and (by default) the data datasynced.
 */
export function writableWebStream(pathOrHandle: string | FileHandle, options?: WriteStreamOptions): WritableStream<Uint8Array> {
  const target = checkTarget(pathOrHandle)
  const cfg = writeConfig(target, options)
  const core = new BlockWriter(target, cfg)
  let unwatch = (): void => {}
  const teardown = (): Promise<void> => {
    unwatch()
    return core.destroy()
  }
  const failed = async (e: unknown): Promise<never> => {
    await teardown().catch(() => {})
    throw e
  }
  return new WritableStream<Uint8Array>({
    async start(controller) {
      const fail = (e: unknown): void => {
        try {
          controller.error(e)
        } catch {
          // already closed or errored
        }
        void teardown().catch(() => {})
      }
      core.onError = fail
      unwatch = watchAbort(cfg.signal, core.path, 'write', fail)
      await core.open().catch(failed)
    },
    async write(chunk) {
      await core.write(chunk).catch(failed)
    },
    async close() {
      await core.finish().catch(failed)
      unwatch()
    },
    abort() {
      return teardown()
    },
  })
}
