// Node stream adapters over the direct-I/O core: `Readable` / `Writable` with fs's options.
import { finished, Readable, Writable } from 'node:stream'

import { guard, isCreatingFlags, type PathLike } from '../args'
import type { FileHandle } from '../handle'
import { isFileHandle } from '../open'
import { misuse } from '../errors'
import { AbortRace, isSequential, kindName, pseudoFs, refuseProtectedFile, resolveLinks, SequentialFile, statIfExists } from '../fileops'
import { BlockReader, BlockWriter, type ReadConfig, type ReadStreamOptions, readConfig, type Target, watchAbort, type WriteStreamOptions, writeConfig } from './core'

/** Calls `fn` when a FileHandle target emits 'close'; returns an unsubscribe (a no-op for paths). */
function onHandleClose(target: Target, fn: () => void): () => void {
  if (!isFileHandle(target)) return () => {}
  target.once('close', fn)
  return () => target.off('close', fn)
}

const handleClosed = (target: Target): boolean => isFileHandle(target) && target.closed

/**
 * What a listener or callback of the caller's throws when a stream settles one of its own
 * promises (a 'data' listener, a write callback) is an uncaught exception, as from node:fs's
 * callbacks, not an unhandled rejection (which Bun ends the process on past 'uncaughtException').
 */
const uncaught = (e: unknown): void =>
  queueMicrotask(() => {
    throw e
  })

const closedUnder = (path: string): Error =>
  misuse('ERR_ODIRECT_CLOSED', `the file handle for ${path} was closed while the stream was writing: data not yet written is lost`, 'close the handle after the stream finishes, or let the stream close it (autoClose)', { path })

/**
 * For a path that is a FIFO or character device (no positions, no direct I/O), or to write, a
 * kernel pseudo-file (a cgroup control, a sysfs attribute, /proc/sys: each write a command, no
 * O_DIRECT, no padding, no fsync; as writeFile writes it): the file opened in sequence through
 * node:fs, as fs's streams would; undefined for anything else (the engine's).
 */
export async function openSequential(target: Target, positioned: boolean, write: boolean, abort: AbortRace, flags?: string): Promise<SequentialFile | undefined> {
  if (typeof target !== 'string') return undefined
  const st = await statIfExists(target)
  if (st === undefined) return undefined
  // Their files have no blocks: a file with blocks needs no statfs.
  const pseudo = write && st.isFile() && st.blocks === 0 ? await pseudoFs(target) : undefined
  if (!isSequential(st) && pseudo === undefined) return undefined
  const kind = pseudo !== undefined ? `a file of ${pseudo} (a kernel pseudo filesystem)` : kindName(st)
  if (positioned) throw misuse('ERR_ODIRECT_UNSUPPORTED', `start and end need positions, and ${target} is ${kind}, read and written in sequence`, 'use it without start and end', { path: target })
  // Another user's FIFO in a sticky world-writable directory (/tmp) that fs.createWriteStream's
  // open (O_CREAT: 'w', the default) is refused by the kernel's fs.protected_fifos: this open has
  // no O_CREAT, which the kernel does not check, so it is refused here (as writeFile's; see
  // refuseProtectedFile). Flags without O_CREAT ('r+') open it as fs's stream does.
  if (write && st.isFIFO() && flags !== undefined && createsFile(flags)) await abort.race(resolveLinks(target).then((at) => refuseProtectedFile(at, st)))
  return SequentialFile.open(target, write, abort)
}

/** Whether open flags carry O_CREAT ('w', 'a' and their forms, or numeric flags with it). */
function createsFile(flags: string): boolean {
  return isCreatingFlags(flags) || flags.startsWith('a')
}

/** What Readable's `[Symbol.asyncIterator]()` returns (its chunks typed as Node types them). */
type ReadableIterator = ReturnType<Readable[typeof Symbol.asyncIterator]>

/**
 * `it`'s chunks, each handed to `release` once the consumer resumes the loop (asks for the next
 * chunk, breaks or throws); leaving the loop ends `it` as Node's own iterator does (the stream is
 * destroyed).
 */
async function* giveBack(it: ReadableIterator, release: (chunk: unknown) => void): ReadableIterator {
  try {
    for (;;) {
      const r = await it.next()
      if (r.done === true) return undefined
      try {
        yield r.value
      } finally {
        release(r.value)
      }
    }
  } finally {
    await it.return?.()
  }
}

/** fs's 'open' (with the descriptor) and 'ready' events, once the file is open. */
function announceOpen(stream: Readable | Writable, fd: number): void {
  stream.emit('open', fd)
  stream.emit('ready')
}

/** fs's stream.close(callback) for a readable: destroy, and call back once closed. */
function closeStream(stream: Readable, callback?: (error?: Error | null) => void): void {
  if (typeof callback === 'function') {
    if (stream.closed) queueMicrotask(() => callback())
    else finished(stream, (e) => callback(e === undefined || (e as { code?: string }).code === 'ERR_STREAM_PREMATURE_CLOSE' ? null : e))
  }
  stream.destroy()
}

/**
 * A Node `Readable` over a file read with direct I/O. Chunks are Buffers, each a view over its
 * own aligned memory (safe to keep). See {@link createReadStream}.
 */
/** Read streams on which an iterator helper that keeps chunks past the next pull was called. */
const keepers = new WeakSet<Readable>()

export class DirectReadStream extends Readable {
  readonly #core: BlockReader
  readonly #unwatch: () => void
  readonly #cfg: ReadConfig
  /** A FIFO or character device path: read in sequence through node:fs (no positions, no direct I/O). */
  #seq: SequentialFile | undefined
  readonly #seqAbort: AbortRace
  #seqBytes = 0
  /** Destinations of pipe()/pipeline() (recorded so that reuseChunks can see whether they kept a chunk). */
  readonly #dests = new Set<NodeJS.WritableStream>()

  /** Same as {@link createReadStream}. */
  constructor(pathOrHandle: PathLike | FileHandle | null | undefined, options?: ReadStreamOptions | BufferEncoding, /** @internal */ handleAutoClose = false) {
    const { target, cfg } = readConfig(pathOrHandle, options, handleAutoClose)
    super({ emitClose: cfg.emitClose, ...(cfg.encoding === undefined ? {} : { encoding: cfg.encoding }) })
    this.#core = new BlockReader(target, cfg)
    this.#cfg = cfg
    // The signal races a FIFO's open too: one without its other end waits in the kernel until a
    // peer comes, and the stream's destroy waits for its open (adversary-s19b: an aborted stream
    // never settled); aborted, the open is given back (SequentialFile.open: releaseFifoOpen).
    this.#seqAbort = new AbortRace(cfg.signal, this.#core.path, 'read')
    const unwatch = watchAbort(cfg.signal, this.#core.path, 'read', (e) => this.destroy(e))
    // As fs: a FileHandle closed under the stream ends it (quietly: reading was the stream's job only).
    const unhandle = onHandleClose(target, () => this.destroy())
    this.#unwatch = () => {
      unwatch()
      unhandle()
      this.#seqAbort.dispose()
    }
  }

  /** Path of the file. */
  get path(): string {
    return this.#core.path
  }

  /** The file descriptor once open (as fs's stream.fd), null before. */
  get fd(): number | null {
    return this.#seq?.fd ?? this.#core.handle?.fd ?? null
  }

  /** True until the file is open (as fs's stream.pending). */
  get pending(): boolean {
    return this.#seq === undefined && this.#core.handle === undefined
  }

  /** Destroys the stream (as fs's stream.close()); `callback` runs once it has closed. */
  close(callback?: (error?: Error | null) => void): void {
    closeStream(this, callback)
  }

  /** The handle reading the file, once open (the one passed in, or the stream's own). */
  get handle(): FileHandle | undefined {
    return this.#core.handle
  }

  /** Bytes delivered so far (after trimming to start/end). */
  get bytesRead(): number {
    return this.#core.bytesRead + this.#seqBytes
  }

  override _construct(callback: (error?: Error | null) => void): void {
    if (handleClosed(this.#core.target)) {
      // A FileHandle closed before the stream started: nothing to read, the stream just ends (as fs).
      callback()
      this.destroy()
      return
    }
    this.#openRead().then(
      (fd) => {
        callback()
        announceOpen(this, fd)
      },
      (e: Error) => callback(e),
    ).catch(uncaught)
  }

  /** Opens the file: a FIFO or character device path in sequence through node:fs, anything else with the engine. */
  async #openRead(): Promise<number> {
    this.#seq = await openSequential(this.#core.target, this.#cfg.start !== 0 || this.#cfg.stop !== Infinity, false, this.#seqAbort)
    return this.#seq?.fd ?? (await this.#core.open()).fd
  }

  override _read(): void {
    const seq = this.#seq
    if (seq !== undefined) {
      const buf = Buffer.allocUnsafe(Math.min(this.#cfg.chunkSize, 1 << 20))
      seq.read(buf, this.#seqAbort).then(
        (n) => {
          this.#seqBytes += n
          if (!this.destroyed) this.push(n === 0 ? null : buf.subarray(0, n))
        },
        (e: Error) => this.destroy(e),
      ).catch(uncaught)
      return
    }
    // Chunks that never come back (no reuseChunks, no encoding) are handed over (see core.ts).
    this.#core.pull(!this.#reuses() && this.readableEncoding === null).then(
      (chunk) => {
        if (this.destroyed) return
        this.push(chunk)
        // With an encoding the chunk was decoded into a string as it was pushed: its memory can
        // take the next read whatever the consumer does.
        if (this.readableEncoding !== null) this.#core.recycle(chunk)
      },
      (e: Error) => this.destroy(handleClosed(this.#core.target) ? undefined : e),
    ).catch(uncaught)
  }

  /**
   * With `reuseChunks`, in flowing mode ('data' listeners, pipe, pipeline): once every listener
   * has returned, the chunk goes back to the reader. (In paused mode `read()` emits 'data' before
   * its caller has the chunk: nothing is given back there.)
   */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    const r = super.emit(event, ...args)
    if (event === 'data' && this.#reuses() && this.readableFlowing === true && !this.#pipedKeeps()) this.#core.recycle(args[0])
    return r
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    this.#dests.add(destination)
    return super.pipe(destination, options)
  }

  override unpipe(destination?: NodeJS.WritableStream): this {
    if (destination === undefined) this.#dests.clear()
    else this.#dests.delete(destination)
    return super.unpipe(destination)
  }

  /**
   * Whether a piped destination still holds bytes after its write() returned (a file write
   * stream, zlib, a socket: they work on the chunk later). Then the chunk is not reused, whatever
   * `reuseChunks` promised.
   */
  #pipedKeeps(): boolean {
    for (const d of this.#dests) {
      const len = (d as { writableLength?: unknown }).writableLength
      if (typeof len !== 'number' || len > 0) return true
      // A Duplex (PassThrough, a Transform passing chunks on) holding them on its readable side.
      const out = (d as { readableLength?: unknown }).readableLength
      if (typeof out === 'number' && out > 0) return true
    }
    return false
  }

  /** Whether chunks go back to the reader: `reuseChunks`, and no iterator helper keeping them was called. */
  #reuses(): boolean {
    return this.#cfg.reuseChunks && !keepers.has(this)
  }

  /** With `reuseChunks`: a chunk goes back to the reader when the loop asks for the next one (or leaves). */
  override [Symbol.asyncIterator](): ReadableIterator {
    const it = super[Symbol.asyncIterator]()
    return this.#reuses() ? giveBack(it, (c) => this.#core.recycle(c)) : it
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#unwatch()
    const seq = this.#seq
    this.#seq = undefined
    Promise.all([this.#core.destroy(), seq?.close(this.#seqAbort)]).then(
      () => callback(error),
      (e: Error) => callback(error ?? e),
    ).catch(uncaught)
  }
}


// Readable's iterator helpers that hold chunks past the source's next pull (toArray, reduce's
// accumulator, map/filter/flatMap with concurrency, the streams take/drop/map... return) turn
// `reuseChunks` off for the stream: a chunk they keep is never read into again. (forEach, some,
// every and find go through map/filter.)
for (const name of ['toArray', 'reduce', 'map', 'filter', 'flatMap', 'drop', 'take', 'asIndexedPairs'] as const) {
  const base = (Readable.prototype as unknown as Record<string, unknown>)[name]
  if (typeof base !== 'function') continue
  Object.defineProperty(DirectReadStream.prototype, name, {
    configurable: true,
    writable: true,
    value: function (this: Readable, ...args: unknown[]): unknown {
      keepers.add(this)
      return (base as (...a: unknown[]) => unknown).apply(this, args)
    },
  })
}

/**
 * A Node `Writable` writing a file with direct I/O. Takes chunks of any size (Buffer, Uint8Array,
 * strings); see {@link createWriteStream}.
 */
export class DirectWriteStream extends Writable {
  readonly #core: BlockWriter
  readonly #unwatch: () => void
  readonly #start: number
  /** The stream's open flags (see openSequential: another user's FIFO). */
  readonly #flags: string
  /** A FIFO or character device path: written in sequence through node:fs (no positions, no direct I/O). */
  #seq: SequentialFile | undefined
  readonly #seqAbort: AbortRace
  #seqBytes = 0

  /** Same as {@link createWriteStream}. */
  constructor(pathOrHandle: PathLike | FileHandle | null | undefined, options?: WriteStreamOptions | BufferEncoding, /** @internal */ handleAutoClose = false) {
    const { target, cfg } = writeConfig(pathOrHandle, options, handleAutoClose)
    super({ emitClose: cfg.emitClose, defaultEncoding: cfg.encoding ?? 'utf8' })
    this.#core = new BlockWriter(target, cfg)
    this.#core.onError = (e) => this.destroy(e as Error)
    this.#start = cfg.start
    this.#flags = cfg.flags
    // The signal races a FIFO's open too: one without its other end waits in the kernel until a
    // peer comes, and the stream's destroy waits for its open (adversary-s19b: an aborted stream
    // never settled); aborted, the open is given back (SequentialFile.open: releaseFifoOpen).
    this.#seqAbort = new AbortRace(cfg.signal, this.#core.path, 'write')
    const unwatch = watchAbort(cfg.signal, this.#core.path, 'write', (e) => this.destroy(e))
    // A FileHandle closed under the stream: what was not written yet cannot be, an 'error' says so.
    const unhandle = onHandleClose(target, () => {
      if (!this.writableEnded && !this.destroyed) this.destroy(closedUnder(this.#core.path))
    })
    this.#unwatch = () => {
      unwatch()
      unhandle()
      this.#seqAbort.dispose()
    }
  }

  /** Path of the file. */
  get path(): string {
    return this.#core.path
  }

  /** The file descriptor once open (as fs's stream.fd), null before. */
  get fd(): number | null {
    return this.#seq?.fd ?? this.#core.handle?.fd ?? null
  }

  /** True until the file is open (as fs's stream.pending). */
  get pending(): boolean {
    return this.#seq === undefined && this.#core.handle === undefined
  }

  /** Ends the stream, then closes it (as fs's stream.close()); `callback` runs once it has closed. */
  close(callback?: (error?: Error | null) => void): void {
    if (typeof callback === 'function') {
      if (this.closed) queueMicrotask(() => callback())
      else finished(this, (e) => callback(e ?? null))
    }
    // As fs: end() flushes what was written, then the stream closes itself; a second close() waits for that.
    if (this.destroyed) return
    if (!this.writableEnded) this.end()
    else if (this.writableFinished) this.destroy()
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
    return this.#core.bytesWritten + this.#seqBytes
  }

  /**
   * Bytes of chunks the stream took over and wrote in place, with no copy (`transferChunks`; 0
   * without it): counted when the chunk is taken, before its write completes.
   */
  get bytesTransferred(): number {
    return this.#core.bytesTransferred
  }

  override _construct(callback: (error?: Error | null) => void): void {
    if (handleClosed(this.#core.target)) {
      callback(closedUnder(this.#core.path))
      return
    }
    this.#openWrite().then(
      (fd) => {
        callback()
        announceOpen(this, fd)
      },
      (e: Error) => callback(e),
    ).catch(uncaught)
  }

  async #openWrite(): Promise<number> {
    this.#seq = await openSequential(this.#core.target, this.#start !== 0, true, this.#seqAbort, this.#flags)
    return this.#seq?.fd ?? (await this.#core.open()).fd
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const seq = this.#seq
    const done = seq !== undefined ? seq.write(chunk, this.#seqAbort).then(() => void (this.#seqBytes += chunk.byteLength)) : this.#core.write(chunk)
    done.then(
      () => callback(),
      (e: Error) => callback(e),
    ).catch(uncaught)
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.#seq !== undefined) {
      this.#unwatch()
      callback()
      return
    }
    this.#core.finish().then(
      () => {
        this.#unwatch()
        callback()
      },
      (e: Error) => callback(e),
    ).catch(uncaught)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#unwatch()
    const seq = this.#seq
    this.#seq = undefined
    Promise.all([this.#core.destroy(), seq?.close(this.#seqAbort)]).then(
      () => callback(error),
      (e: Error) => callback(error ?? e),
    ).catch(uncaught)
  }
}

/**
 * Reads a file (or a byte range of it) with direct I/O as a Node `Readable`, keeping `readAhead`
 * aligned reads of `chunkSize` in flight and bypassing the page cache. Works with
 * `stream.pipeline` and `for await`. Given a path (string, Buffer or file: URL), the stream opens
 * and closes the file; given a FileHandle as first argument, it leaves it open (fs's `fd` option
 * and `fh.createReadStream()` close it unless `autoClose: false`). fs's options are taken:
 * `highWaterMark` (= chunkSize), `encoding`, `fd`, `autoClose`, `emitClose`, `flags`, `mode`,
 * `start`, `end`, `signal`; `fs` is refused (ERR_ODIRECT_UNSUPPORTED). Errors (typed {@link DirectIoError}s) destroy the stream.
 *
 * ```ts
 * for await (const chunk of createReadStream('/data/big.bin', { start: 100, end: 1_000_099 })) use(chunk)
 * ```
 */
export function createReadStream(pathOrHandle: PathLike | FileHandle | null | undefined, options?: ReadStreamOptions | BufferEncoding): DirectReadStream {
  return guard('createReadStream', () => new DirectReadStream(pathOrHandle, options))
}

/**
 * Writes a file with direct I/O as a Node `Writable`: chunks of any size are gathered into aligned
 * blocks of `chunkSize`, `writeBehind` writes are kept in flight, the last block is padded with
 * zeros and the file then truncated to its exact length, and (by default) the data is datasynced
 * before 'finish'. Errors destroy the stream; `bytesWritten` tells how much was confirmed.
 */
export function createWriteStream(pathOrHandle: PathLike | FileHandle | null | undefined, options?: WriteStreamOptions | BufferEncoding): DirectWriteStream {
  return guard('createWriteStream', () => new DirectWriteStream(pathOrHandle, options))
}

