// Whole-file helpers with fs/promises' shapes, all with direct I/O (the page cache untouched):
// readFile, writeFile (optionally atomic: temp file + datasync + rename) and copyFile (holes kept,
// same file refused, optional sha256 verification, progress). Any data length: the last block is
// padded with zeros and the file truncated to the exact length. Files without positions (FIFOs,
// character devices, sockets) are read and written in place, in sequence, buffered (direct I/O
// does not apply to them), never replaced; files whose size says 0 (/proc) are read to their end.
// The signal is honoured at every wait; errors of the caller's code and of the runtime reach the
// caller as the same objects.
import { createHash } from 'node:crypto'

import { boolOption, callerCode, callerError, checkFlags, describe, type DirectMode, encodingArg, type FlagsArg, guardAsync, intOption, isDetached, isReadableFlags, modeOption, openFields, type PathLike, readOptions, signalOption, toPath } from './args'
import { MAX_IO_LENGTH } from './buffers'
import type { BackendName } from './engine'
import { DirectIoError, errno as E, kernelError, misuse } from './errors'
import { syncParentDir } from './dirsync'
import { AbortRace, commitTemp, isSequential, keepAttrs, kindName, pseudoFs, refuseProtectedFile, type Replaced, removeTemp, resolveLinks, SequentialFile, sequentialChunks, statIfExists, tempError, type TempFate, tempLetGo, tempOwned, tempTaken, tmpName } from './fileops'
import { FileHandle } from './handle'
import { native } from './native'
import { isFileHandle, open } from './open'
import { BlockWriter, writeConfig } from './streams/core'
import { readFully, writeFully } from './blocks'

const MiB = 1024 * 1024
const roundUp = (n: number, unit: number): number => Math.ceil(n / unit) * unit

/** Options shared by the helpers when they open a path. */
interface HelperOpenOptions {
  /** 'require' (default): O_DIRECT or a typed error; 'prefer': buffered I/O where the filesystem refuses O_DIRECT. */
  direct?: DirectMode
  /** I/O engine, default 'auto'. */
  backend?: 'auto' | BackendName
  /** Aborts the helper: ops in flight are cancelled, it rejects with an AbortError. */
  signal?: AbortSignal
}

export interface ReadFileOptions extends HelperOpenOptions {
  /** Decode to a string with this encoding; default: a Buffer. */
  encoding?: BufferEncoding | null
  /** Open flags (default 'r'). */
  flag?: FlagsArg
}

export interface WriteFileOptions extends HelperOpenOptions {
  /** Encoding of string data. Default 'utf8'. */
  encoding?: BufferEncoding | null
  /** Permission bits of a created file (default 0o666 minus the umask; atomic: the replaced file's). */
  mode?: number
  /** Open flags: 'w' (default), 'wx' (fail if it exists), 'r+', or fs.constants bits (O_WRONLY | O_CREAT: no truncation)... */
  flag?: FlagsArg
  /** fdatasync before resolving (default false, as fs; true with `atomic`). */
  datasync?: boolean
  /** fs's name for datasync. */
  flush?: boolean
  /** Write a temp file in the same directory, datasync it, then rename it over `path`: readers see the old or the new file, never a mix. */
  atomic?: boolean
  /**
   * With `atomic`: give the new file the replaced file's extended attributes and POSIX ACLs, as an
   * in-place write keeps them (default true). An attribute that cannot be set is a typed error,
   * the file untouched; false replaces it without them.
   */
  xattrs?: boolean
}

export interface CopyProgress {
  phase: 'copy' | 'verify'
  /** Bytes of the source handled so far (data written plus holes skipped; re-read when verifying). */
  bytesDone: number
  totalBytes: number
}

export interface CopyFileOptions extends HelperOpenOptions {
  /** Called after each chunk (at most once per chunk; keep it cheap). */
  onProgress?: (p: CopyProgress) => void
  /** Re-read the copy with direct I/O before it is renamed into place and compare sha256 with the source's. */
  verify?: boolean
  /** Keep holes: aligned all-zero blocks are not written (the destination is truncated to size). Default true. */
  sparse?: boolean
  /** Bytes per I/O (rounded up to the block size). Default 1 MiB. */
  chunkSize?: number
  /** Fail with EEXIST if the destination exists (fs's COPYFILE_EXCL). */
  exclusive?: boolean
  /**
   * Give the copy the replaced destination's extended attributes and POSIX ACLs, as fs.copyFile
   * (writing in place) keeps them (default true). An attribute that cannot be set is a typed
   * error, the destination untouched; false replaces it without them.
   */
  xattrs?: boolean
}

export interface CopyResult {
  /** Size of the copy. */
  bytes: number
  /** Bytes actually written (zero blocks of a sparse copy are skipped). */
  bytesWritten: number
  /** sha256 of the data, when `verify` was asked. */
  sha256?: string
  /** Whether each side really used O_DIRECT, and why not (with direct: 'prefer'). */
  source: { direct: boolean; fallbackReason: string }
  destination: { direct: boolean; fallbackReason: string; path: string }
}

const HELPER_OPEN_KEYS = ['direct', 'backend', 'signal']

/** fs's options argument: an object, or an encoding string. */
function helperOptions(options: unknown, known: string[], example: string): Record<string, unknown> {
  return typeof options === 'string' ? { encoding: options } : readOptions(options, known, example)
}

/**
 * `open`, raced against the abort (never started once it fired). An open the abort leaves in
 * flight is closed when it completes; `left.open` (when given) is then that close, for a caller
 * whose open creates a file (a temp file): it removes the file only after the open has made it.
 */
async function openRaced(abort: AbortRace, p: string, flags: FlagsArg, o: { direct: DirectMode; backend: 'auto' | BackendName; mode?: number }, left?: { open?: Promise<void> }): Promise<FileHandle> {
  abort.check()
  const opening = open(p, flags, o)
  try {
    return await abort.race(opening)
  } catch (e) {
    const closing = opening.then((fh) => fh.close()).catch(() => {})
    if (left !== undefined) left.open = closing
    throw e
  }
}

/**
 * Reads a whole file with direct I/O, as fs/promises' readFile: a Buffer, or a string with an
 * encoding. `path` may be a FileHandle: read from its current position to the end, which moves
 * the position there (as fs), left open. As fs, a regular file is read up to the size fstat
 * gives when the read starts (bytes appended meanwhile are left out); a file whose size says 0
 * (/proc) is read to its end; a FIFO or character device is read in sequence, buffered.
 */
export async function readFile(path: PathLike | FileHandle, options: (ReadFileOptions & { encoding: BufferEncoding }) | BufferEncoding): Promise<string>
export async function readFile(path: PathLike | FileHandle, options?: (ReadFileOptions & { encoding?: null }) | null): Promise<Buffer>
export async function readFile(path: PathLike | FileHandle, options?: ReadFileOptions | BufferEncoding | null): Promise<Buffer | string>
export function readFile(path: PathLike | FileHandle, options?: ReadFileOptions | BufferEncoding | null): Promise<Buffer | string> {
  return guardAsync('readFile', () => readFileImpl(path, options))
}

async function readFileImpl(path: PathLike | FileHandle, options?: ReadFileOptions | BufferEncoding | null): Promise<Buffer | string> {
  const o = helperOptions(options, ['encoding', 'flag', ...HELPER_OPEN_KEYS], "{ encoding: 'utf8' }")
  const encoding = encodingArg(o.encoding, undefined, "e.g. 'utf8'")
  const signal = signalOption(o)
  const given = isFileHandle(path)
  const oo = openFields({ direct: o.direct, backend: o.backend })
  if (given && (o.flag !== undefined || o.direct !== undefined || o.backend !== undefined)) throw misuse('ERR_INVALID_ARG_VALUE', 'flag, direct and backend only apply when readFile opens a path', 'pass them to open()')
  const p = given ? path.path : toPath(path)
  const flag = given ? 'r' : checkFlags(o.flag ?? 'r', p)
  // Refused before the open: a write-only flag ('w', O_WRONLY | O_TRUNC) would truncate the file
  // it cannot read (node:fs opens it, truncating, then fails EBADF).
  if (!isReadableFlags(flag)) throw misuse('ERR_ODIRECT_FLAGS', `readFile needs to read, and flags '${flag}' open ${p} write-only`, "use 'r' (the default), 'r+' or 'w+'", { path: p })
  const abort = new AbortRace(signal, p, 'read')
  try {
    abort.check()
    let data: Buffer
    if (given) {
      const start = path.position
      data = await readFrom(path, start, abort, signal)
      path._seek(start + data.byteLength)
    } else {
      const st = await abort.race(statIfExists(p))
      if (st !== undefined && isSequential(st)) data = await readSequential(p, abort)
      else {
        const fh = await openRaced(abort, p, flag, oo)
        try {
          data = await readFrom(fh, 0, abort, signal)
        } finally {
          await fh.close()
        }
      }
    }
    return encoding === undefined ? data : data.toString(encoding)
  } finally {
    abort.dispose()
  }
}

/**
 * Reads from `start` to the end of the file. As node:fs, a regular file is read up to the size
 * fstat gives now: the blocks covering [start, size), so a file that grows meanwhile (an active
 * log) is not chased (one that shrank ends at the short read). A size of 0 (procfs) or a file
 * that is not regular is read to its end: one block more than the size, growing while reads come
 * back full.
 */
async function readFrom(fh: FileHandle, start: number, abort: AbortRace, signal: AbortSignal | undefined): Promise<Buffer> {
  const unit = fh.alignment.offset
  const base = fh.direct ? Math.floor(start / unit) * unit : start
  const st = await abort.race(fh.stat())
  const size = st.size
  if (st.isFile() && size > 0) return readUpTo(fh, start, base, size, abort, signal)
  let buf = fh.alloc(Math.max(unit, roundUp(Math.max(0, size - base) + 1, unit)))
  let total = 0
  for (;;) {
    abort.check()
    if (total === buf.byteLength) {
      const bigger = fh.alloc(Math.min(buf.byteLength * 2, Math.floor(MAX_IO_LENGTH / unit) * unit))
      if (bigger.byteLength <= buf.byteLength) throw misuse('ERR_OUT_OF_RANGE', `${fh.path} is larger than readFile can hold (${MAX_IO_LENGTH} bytes)`, 'read it with createReadStream()')
      bigger.set(buf)
      buf = bigger
    }
    const len = Math.min(buf.byteLength - total, 64 * MiB)
    const n = await abort.race(readFully(fh, buf, total, len, base + total, signal, size))
    total += n
    if (n < len) break
  }
  return buf.subarray(Math.min(start - base, total), total)
}

/** readFrom for a regular file of `size` > 0 bytes: the blocks from `base` covering [start, size), cut at `size`. */
async function readUpTo(fh: FileHandle, start: number, base: number, size: number, abort: AbortRace, signal: AbortSignal | undefined): Promise<Buffer> {
  if (start >= size) return Buffer.alloc(0)
  const unit = fh.alignment.offset
  const want = size - base
  if (roundUp(want, unit) > Math.floor(MAX_IO_LENGTH / unit) * unit) throw misuse('ERR_OUT_OF_RANGE', `${fh.path} is larger than readFile can hold (${MAX_IO_LENGTH} bytes)`, 'read it with createReadStream()')
  const buf = fh.alloc(roundUp(want, unit))
  let total = 0
  while (total < buf.byteLength) {
    abort.check()
    const len = Math.min(buf.byteLength - total, 64 * MiB)
    const n = await abort.race(readFully(fh, buf, total, len, base + total, signal, size))
    total += n
    if (n < len) break
  }
  const end = Math.min(total, want)
  return buf.subarray(Math.min(start - base, end), end)
}

/** A FIFO, character device or socket, read to its end in sequence. */
async function readSequential(p: string, abort: AbortRace): Promise<Buffer> {
  const f = await SequentialFile.open(p, false, abort)
  const parts: Buffer[] = []
  let total = 0
  try {
    for await (const c of sequentialChunks(f, 64 * 1024, abort)) {
      total += c.byteLength
      // A device without an end (/dev/zero) must not eat the memory: fs stops at its limit too.
      if (total > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `${p} gives more than readFile can hold (${MAX_IO_LENGTH} bytes)`, 'read it with createReadStream()', { path: p })
      parts.push(Buffer.from(c))
    }
  } finally {
    await f.close(abort)
  }
  return Buffer.concat(parts)
}

function toBytes(data: unknown, encoding: BufferEncoding): Uint8Array | undefined {
  if (typeof data === 'string') return Buffer.from(data, encoding)
  if (ArrayBuffer.isView(data)) {
    // A view whose ArrayBuffer was transferred: no bytes to write (see whileWritten).
    if (data.byteLength === 0 && isDetached(data)) throw misuse('ERR_ODIRECT_DETACHED', "writeFile's data is detached (its ArrayBuffer was transferred)", "keep the data's ArrayBuffer as it is until writeFile settles")
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  }
  return undefined
}

type WriteData = string | ArrayBufferView | Iterable<string | ArrayBufferView> | AsyncIterable<string | ArrayBufferView>

/** Refuses writeFile `data` that is not a string, a view or an (async) iterable (ERR_INVALID_ARG_TYPE). */
function checkWriteData(data: unknown): void {
  if (typeof data === 'string') return
  if (ArrayBuffer.isView(data)) {
    // Detached already (by a getter of the options, read before this): refused before the open
    // too (was: after it, 'w' had emptied the file; adversary-s22b).
    toBytes(data, 'utf8')
    return
  }
  const isIterable = data !== null && typeof data === 'object' && (Symbol.asyncIterator in data || Symbol.iterator in data)
  if (!isIterable) throw misuse('ERR_INVALID_ARG_TYPE', `data must be a string, Buffer, TypedArray, DataView or an (async) iterable of them, got ${describe(data)}`, 'e.g. Buffer.from(text)')
}

/**
 * The chunks of writeFile's `data`, as bytes. An iterable is the caller's code: what its
 * iterator throws reaches the caller unchanged; it is closed (`return()`) when writing stops early.
 */
async function* chunksOf(data: WriteData, encoding: BufferEncoding, abort: AbortRace): AsyncGenerator<Uint8Array> {
  const one = toBytes(data, encoding)
  if (one !== undefined) {
    yield one
    return
  }
  checkWriteData(data)
  interface AnyIterator {
    next(): unknown
    return?: () => unknown
  }
  const it = callerCode((): AnyIterator => {
    const d = data as unknown as Record<symbol, unknown>
    const make = (typeof d[Symbol.asyncIterator] === 'function' ? d[Symbol.asyncIterator] : d[Symbol.iterator]) as (this: unknown) => AnyIterator
    return make.call(d)
  })
  let done = false
  try {
    for (;;) {
      const next = Promise.resolve(callerCode(() => it.next())).catch((e: unknown) => {
        throw callerError(e)
      })
      const r = (await abort.race(next)) as IteratorResult<unknown>
      if (r.done === true) {
        done = true
        return
      }
      const b = toBytes(r.value, encoding)
      if (b === undefined) throw misuse('ERR_INVALID_ARG_TYPE', `writeFile chunks must be strings or ArrayBufferViews, got ${describe(r.value)}`, 'yield Buffers or strings')
      yield b
    }
  } finally {
    const ret = it.return
    if (!done && typeof ret === 'function') {
      try {
        void Promise.resolve(ret.call(it)).catch(() => {})
      } catch {
        // the iterator's return() threw: writing already stopped for another reason
      }
    }
  }
}

/**
 * writeFile's chunks, each checked again once it was written: a view whose bytes went away while
 * it was being written (its resizable ArrayBuffer resized smaller, or the buffer transferred,
 * after some of it was read) is refused, ERR_ODIRECT_DETACHED, and with `atomic` the destination
 * stays as it was. Found (adversary-s19): such a view was written as far as it still reached and
 * writeFile resolved (16 of a 64 MiB chunk; with `atomic` the old file replaced by that); node:fs
 * throws a RangeError there (one view) or never settles (an iterable). A view that shrank before
 * writeFile read any of it is written as it reads then, as node:fs writes it (adversary-s18).
 */
async function* whileWritten(chunks: AsyncGenerator<Uint8Array>, dst: string): AsyncGenerator<Uint8Array> {
  for await (const b of chunks) {
    const len = b.byteLength
    yield b
    if (b.byteLength !== len) {
      throw misuse('ERR_ODIRECT_DETACHED', `writeFile's data lost bytes while it was written (a view of ${len} bytes now has ${b.byteLength}): its ArrayBuffer was resized smaller or transferred`, `keep the data's ArrayBuffer as it is until writeFile settles; with { atomic } ${dst} is untouched, else it holds what was written before`, { path: dst })
    }
  }
}

/**
 * Writes `data` (a string, Buffer/TypedArray/DataView, or an (async) iterable of those) to a
 * file with direct I/O, as fs/promises' writeFile. The last block is zero padded and the file
 * truncated to the exact length. `atomic`: temp file + datasync + rename (then `flag` 'w' or
 * 'wx'). A FileHandle is written from its current position, which moves past the data (as fs).
 * An existing FIFO or character device is written in place, never replaced (a block device too,
 * even with `atomic`). The signal aborts at any moment: AbortError, no temp file left, and with
 * `atomic` the destination untouched (one written in place keeps what was written before the abort).
 */
export function writeFile(path: PathLike | FileHandle, data: WriteData, options?: WriteFileOptions | BufferEncoding | null): Promise<void> {
  return guardAsync('writeFile', async () => {
    await writeFileImpl(path, data, options)
  })
}

/**
 * `mode` less the bits the kernel drops when a process without CAP_FSETID truncates or writes the
 * file (should_remove_suid): set-user-ID, and set-group-ID where the group may execute it. Kept
 * as is by root (taken as having CAP_FSETID) and where the runtime has no geteuid.
 */
function dropPrivs(mode: number): number {
  const euid = typeof process !== 'undefined' && typeof process.geteuid === 'function' ? process.geteuid() : 0
  if (euid === 0) return mode
  return mode & ~0o4000 & ((mode & 0o2010) === 0o2010 ? ~0o2000 : ~0)
}

/**
 * Which of 'w' and 'wx' the (checked) flags mean, or undefined for any other: a string, or the
 * numeric fs.constants bits of the same open, O_WRONLY | O_CREAT | O_TRUNC ('w') and with O_EXCL
 * ('wx'; O_TRUNC then changes nothing), plus bits that change nothing here (O_CLOEXEC, always
 * set; O_DIRECT, which the `direct` option decides; O_NOCTTY). Other bits (O_SYNC, O_NOFOLLOW,
 * O_RDWR...) are not what an atomic replace does (was: every numeric form refused with atomic).
 */
function replaceFlag(flag: string): 'w' | 'wx' | undefined {
  if (flag === 'w') return 'w'
  if (flag === 'wx' || flag === 'xw') return 'wx'
  if (!/^\d+$/.test(flag)) return undefined
  // Linux's bits (node:fs's constants have no O_CLOEXEC): O_WRONLY, O_CREAT, O_EXCL, O_TRUNC.
  const n = Number(flag) & ~(0o2000000 | 0o40000 | 0o400) // O_CLOEXEC, O_DIRECT, O_NOCTTY
  if (n === (0o1 | 0o100 | 0o1000)) return 'w'
  if ((n & ~0o1000) === (0o1 | 0o100 | 0o200)) return 'wx'
  return undefined
}

/** `exactMode`: copyFile's (through copySequential): the replacement gets exactly this mode, no umask, as fs.copyFile's fchmod. */
async function writeFileImpl(path: PathLike | FileHandle, data: WriteData, options?: WriteFileOptions | BufferEncoding | null, exactMode?: number): Promise<Written> {
  const o = helperOptions(options, ['encoding', 'mode', 'flag', 'datasync', 'flush', 'atomic', 'xattrs', ...HELPER_OPEN_KEYS], "{ encoding: 'utf8', atomic: true }")
  const encoding = encodingArg(o.encoding, 'utf8', "e.g. 'utf8'") ?? 'utf8'
  const atomic = boolOption(o, 'atomic', false)
  const xattrs = boolOption(o, 'xattrs', true)
  const datasync = boolOption(o, 'datasync', false) || boolOption(o, 'flush', false) || atomic
  const signal = signalOption(o)
  const given = isFileHandle(path)
  if (given && (o.flag !== undefined || o.mode !== undefined || atomic || o.direct !== undefined || o.backend !== undefined)) {
    throw misuse('ERR_INVALID_ARG_VALUE', 'flag, mode, atomic, direct and backend only apply when writeFile opens a path', 'pass a path, or set them with open()')
  }
  const dst = given ? path.path : toPath(path)
  const flag = checkFlags(o.flag ?? 'w', dst, true)
  const as = replaceFlag(flag)
  const exclusive = as === 'wx'
  if (atomic && as === undefined) throw misuse('ERR_INVALID_ARG_VALUE', `atomic writes replace the file: flag must be 'w' or 'wx' (or their bits, O_WRONLY | O_CREAT | O_TRUNC, | O_EXCL), got '${flag}'`, "use flag 'w' (replace) or 'wx' (only if absent)")
  const oo = openFields({ direct: o.direct, backend: o.backend })
  // As node:fs: data of a wrong type is refused before the open ('w' would truncate the file first).
  checkWriteData(data)
  // A string is encoded once, here: the length of its bytes is then exact for the reservation of
  // an atomic write (Buffer.byteLength is an estimate for 'base64', 'base64url' and 'hex': line
  // breaks, spaces and characters that are not hex count; adversary-s18).
  const payload: WriteData = typeof data === 'string' ? Buffer.from(data, encoding) : data
  const abort = new AbortRace(signal, dst, 'write')
  try {
    abort.check()
    const chunks = whileWritten(chunksOf(payload, encoding, abort), dst)
    if (given) {
      const start = path.position
      // fs writes at any position: a handle left inside a block (by readFile to an end that is not
      // a block multiple, or a writeFile of such a length) is written from that block's start,
      // with the block's bytes before the position read back first (zeros past the file's end).
      const unit = path.direct ? path.alignment.offset : 1
      const head = start % unit
      const src = head === 0 ? chunks : prepend(await headOf(path, start - head, head, abort, signal), chunks)
      const w = await writeBlocks(path, { start: start - head, datasync }, src, abort, true, 0, signal, head)
      path._seek(start + w.total)
      return w
    }
    const st = await abort.race(statIfExists(dst))
    if (st !== undefined && exclusive) throw kernelError(E.EEXIST, { syscall: 'open', path: dst })
    if (st !== undefined && isSequential(st)) {
      // Another user's FIFO in /tmp that the kernel would not let fs.writeFile open (see refuseProtectedFile).
      if (st.isFIFO()) await abort.race(resolveLinks(dst).then((at) => refuseProtectedFile(at, st)))
      const total = await writeSequential(dst, chunks, abort)
      return { total, direct: false, fallbackReason: `${dst} is ${kindName(st)}: written in place, in sequence` }
    }
    // A file of a kernel pseudo filesystem (a sysfs attribute, /proc/sys): written in place, in
    // sequence, buffered, as node:fs writes it (its size is no size, it has no O_DIRECT, no
    // truncation and no temp file can be made next to it; each write is one command), with or
    // without `atomic`, as a device. Their files have no blocks: a file with blocks needs no statfs.
    const pseudo = st?.isFile() === true && st.blocks === 0 ? await abort.race(pseudoFs(dst)) : undefined
    if (pseudo !== undefined) {
      const total = await writeSequential(dst, chunks, abort)
      return { total, direct: false, fallbackReason: `${dst} is a file of ${pseudo} (a kernel pseudo filesystem): written in place, in sequence` }
    }
    // A block device cannot be replaced by a rename: it is written in place, atomic or not, and
    // opened readable ('r+': truncating means nothing there), as its last block is completed with
    // the device's own bytes after the data.
    if (!atomic || st?.isBlockDevice() === true || st?.isDirectory() === true) {
      const mode = modeOption(o)
      // A file created through a dangling symbolic link is the file the link names (O_CREAT
      // follows it; O_EXCL does not): its new entry is in that file's directory, the one to sync
      // (the link's own directory may be another: durability-s16.spec).
      const created = datasync && st === undefined && !exclusive ? await abort.race(resolveLinks(dst)) : dst
      const w = await writeBlocks(dst, { flags: atomic || st?.isBlockDevice() === true ? 'r+' : flag, mode, direct: oo.direct, backend: oo.backend, datasync }, chunks, abort, created === dst)
      if (created !== dst) await syncParentDir(created)
      return w
    }
    // The replaced file's mode, less what the kernel drops at fs.writeFile's O_TRUNC and writes by
    // a process without CAP_FSETID: set-user-ID, and set-group-ID where group-executable (the
    // data's writes drop them from the temp file too, but no data writes nothing: an empty
    // replacement kept them; adversary-s19b). Root (CAP_FSETID) keeps them, as in place.
    const mode = exactMode ?? (o.mode !== undefined ? modeOption(o) : st !== undefined ? dropPrivs(st.mode & 0o7777) : 0o666)
    // A symbolic link is followed: the file it names is replaced, the link stays a link ('wx': a
    // link, even dangling, is something at dst: EEXIST, as O_CREAT | O_EXCL).
    // A link whose text is no path to the file (see resolveLinks' `named`) is refused.
    const target = exclusive ? dst : await abort.race(resolveLinks(dst, st))
    const tmp = tmpName(target)
    // What the replaced file keeps (see keepAttrs): the mode exactly (an in-place write leaves
    // it; the temp file's create applied the umask), unless `mode` was given (then as created).
    const replaced: Replaced | undefined = st?.isFile() === true ? { path: target, uid: st.uid, gid: st.gid } : undefined
    const keepMode = exactMode ?? (replaced !== undefined && o.mode === undefined ? mode : undefined)
    // Another user's file in /tmp that the kernel would not let fs.writeFile open (see refuseProtectedFile).
    if (replaced !== undefined && st !== undefined) await abort.race(refuseProtectedFile(target, st))
    // The temp file's open when an abort left it in flight: it may create the file after the abort.
    const tmpOpen: { open?: Promise<void> } = {}
    let fh: FileHandle | undefined
    let w: Written
    try {
      // The temp file's name need not be durable: commitTemp syncs the directory after the rename.
      // Held before its open (removed at exit from then on): an exit while the open is in flight
      // (its file made, the promise not yet resumed) left the temp file (adversary-s22b).
      tempOwned(tmp)
      fh = await openRaced(abort, tmp, 'wx', { ...oo, mode }, tmpOpen)
      // The data's length, when it is one string or buffer: reserved up front (see reserveSpace).
      const known = ArrayBuffer.isView(payload) ? payload.byteLength : 0
      const prepare = (h: FileHandle): Promise<void> => keepAttrs(h.fd, replaced, keepMode, xattrs)
      w = await writeBlocks(fh, { start: 0, datasync: true }, chunks, abort, false, known, signal, 0, prepare, tmp)
    } catch (e) {
      // Another's temp file (see tempTaken) is not ours to remove; one whose open the abort left
      // in flight is removed once that open is done (it would create the file after).
      if (!tempTaken(e, tmp)) {
        await tmpOpen.open
        await removeTemp(tmp, fh !== undefined && !fh.closed ? fh.fd : undefined)
      } else tempLetGo(tmp)
      await fh?.close().catch(() => {})
      throw tempError(e, target)
    }
    // The temp file stays open until its rename is done: a temp file its directory's move left
    // elsewhere is found through its descriptor and removed (see removeTemp). Nothing is in
    // flight on it: the close only releases the descriptor (the data is synced; a close error
    // after the rename would not undo it).
    try {
      // The last moment to abort: after it, the rename replaces the destination.
      abort.check()
      await commitTemp(tmp, target, exclusive)
    } catch (e) {
      throw tempError(e, target, await removeTemp(tmp, fh.fd))
    } finally {
      await fh.close().catch(() => {})
    }
    return w
  } finally {
    abort.dispose()
  }
}

/** The `head` bytes of `fh`'s file at `from` (a block start), for a write that starts `head` bytes into that block. */
async function headOf(fh: FileHandle, from: number, head: number, abort: AbortRace, signal: AbortSignal | undefined): Promise<Buffer> {
  if (!fh.readable) {
    throw misuse(
      'ERR_ODIRECT_ALIGNMENT',
      `the handle's position ${from + head} is inside a block of ${fh.alignment.offset} bytes of ${fh.path}: writing there needs the block's bytes before it, and the handle was opened write-only (flags '${fh.flags}')`,
      "open the file with 'r+' or 'w+', or write from a position that is a multiple of fh.alignment.offset",
      { path: fh.path, position: from + head },
    )
  }
  const b = fh.alloc(fh.alignment.offset)
  await abort.race(readFully(fh, b, 0, b.byteLength, from, signal))
  return Buffer.from(b.subarray(0, head))
}

/** `first`, then the chunks of `rest`. */
async function* prepend(first: Uint8Array, rest: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield first
  yield* rest
}

/** What a write did: bytes, and whether it really used O_DIRECT (and why not). */
interface Written {
  total: number
  direct: boolean
  fallbackReason: string
}

/**
 * Writes the chunks through a BlockWriter (aligned blocks, write-behind) to a path or handle; returns
 * the bytes written. `head`: the first chunk's first bytes are the file's own (see headOf), not
 * counted as the data's. `prepare`: run on the opened file before any data is written. `temp`: the
 * path of the temp file `target` (its handle, which the caller closes) writes: reserved up front
 * (`reserve`) and removed at once when writing fails.
 */
async function writeBlocks(target: string | FileHandle, wopts: Record<string, unknown>, chunks: AsyncIterable<Uint8Array>, abort: AbortRace, syncDir = true, reserve = 0, signal?: AbortSignal, head = 0, prepare?: (fh: FileHandle) => Promise<void>, temp?: string): Promise<Written> {
  const { target: t, cfg } = writeConfig(target, wopts)
  cfg.syncDir = syncDir
  cfg.alone = true
  const core = new BlockWriter(t, cfg)
  let total = 0
  let opened = false
  try {
    const fh = await abort.race(core.open())
    opened = true
    // Before any data: the attributes the file must have (a temp file's, see keepAttrs), and the
    // refusals that come with them (an immutable or mount-point destination: before the space is
    // reserved, as copyBlocks does, so that a full disk does not hide them behind ENOSPC). Not
    // raced against the abort: it works on the descriptor, which must stay open until it is done.
    if (prepare !== undefined) {
      await prepare(fh)
      abort.check()
    }
    // A temp file being created whose length is known (see reserveSpace).
    if (reserve > 0 && temp !== undefined) await abort.race(reserveSpace(fh, reserve, temp, signal))
    for await (const b of chunks) {
      await abort.race(core.write(b))
      total += b.byteLength
    }
    await abort.race(core.finish())
    // A temp file written shorter than its reservation (a view whose resizable ArrayBuffer shrank
    // after the call): the reservation set its size, which finish cuts only where it padded a
    // last block: cut to the data and synced again (a file of the data's length, as node:fs
    // writes it, not zeros after it).
    if (temp !== undefined && reserve > total - head) {
      await abort.race(fh.truncate(total - head))
      await abort.race(fh.datasync())
    }
    return { total: total - head, direct: fh.direct, fallbackReason: fh.fallbackReason }
  } catch (e) {
    // A temp file is removed before the close, which waits for the writes in flight: on a slow
    // device that can take long, and a process killed meanwhile (a second Ctrl-C) would leave it
    // (as copyBlocks). Not before its open completed: the open would create it after.
    const fh = core.handle
    if (temp !== undefined && opened) await removeTemp(temp, fh !== undefined && !fh.closed ? fh.fd : undefined)
    await core.destroy().catch(() => {})
    throw withBytesWritten(abort.settle(e), Math.max(0, core.bytesInOrder - head))
  }
}

/**
 * copyFile and writeFile { atomic } reserve the temp file's known size up front (fallocate mode 0,
 * unwritten extents, the size set): every direct write then lands inside the file's size. A
 * direct write past the end of a file (a new file) cannot be issued without blocking on ext4 and
 * xfs (the size must be updated): io_uring hands each to an io-wq worker, one at a time per inode
 * (260 hand-offs per 512 MiB). A full disk fails ENOSPC before any byte is written. The temp file
 * is renamed into place only when complete, so a crash leaves the temp name, never a final file
 * of the wrong size. Read per call; ODIRECT_PREALLOCATE=0 turns it off. A filesystem that refuses
 * fallocate (EOPNOTSUPP, ENOSYS: some FUSE, old tmpfs) goes on without it.
 */
async function reserveSpace(fh: FileHandle, size: number, path: string, signal: AbortSignal | undefined): Promise<void> {
  if (process.env.ODIRECT_PREALLOCATE === '0' || size <= 0 || fh.isBlockDevice) return
  try {
    await fh.allocate(0, size, 0, signal ? { signal } : undefined)
  } catch (e) {
    if (!(e instanceof DirectIoError)) throw e
    if (e.code === 'EOPNOTSUPP' || e.code === 'ENOTSUP' || e.code === 'ENOSYS') return
    if (e.code !== 'ENOSPC') throw e
    throw new DirectIoError(`ENOSPC: no space left on the device for the ${size} bytes of ${path}, fallocate (reserved before any byte was written)`, {
      code: 'ENOSPC',
      errno: e.errno,
      syscall: 'fallocate',
      path,
      length: size,
      bytesWritten: 0,
      hint: `the file system has less than ${size} bytes free: nothing was written and the destination is untouched; free space or write elsewhere (ODIRECT_PREALLOCATE=0 skips the up-front reservation)`,
      cause: e,
    })
  }
}

/** A kernel error of a whole-file write (ENOSPC, EIO...) says how much of the data had been written before it. */
function withBytesWritten(e: unknown, written: number): unknown {
  if (!(e instanceof DirectIoError) || e.errno === undefined || e.bytesWritten !== undefined) return e
  return new DirectIoError(`${e.message} (${written} bytes of the data were written before the error)`, {
    code: e.code,
    errno: e.errno,
    hint: e.hint,
    bytesWritten: written,
    cause: e,
    ...(e.syscall === undefined ? {} : { syscall: e.syscall }),
    ...(e.path === undefined ? {} : { path: e.path }),
    ...(e.position === undefined ? {} : { position: e.position }),
    ...(e.length === undefined ? {} : { length: e.length }),
  })
}

/** Writes the chunks in place into a FIFO, character device or socket (opened without O_CREAT or O_TRUNC). */
async function writeSequential(dst: string, chunks: AsyncIterable<Uint8Array>, abort: AbortRace): Promise<number> {
  const f = await SequentialFile.open(dst, true, abort)
  let total = 0
  try {
    for await (const b of chunks) {
      await f.write(b, abort)
      total += b.byteLength
    }
  } finally {
    await f.close(abort)
  }
  return total
}

function sameFileError(src: string, dst: string): DirectIoError {
  return misuse('ERR_ODIRECT_SAME_FILE', `${src} and ${dst} are the same file`, 'copy to a different file', { path: dst })
}

/**
 * Copies `src` to `dst` with direct I/O on both sides, as fs/promises' copyFile (the third
 * argument may be fs's mode number: COPYFILE_EXCL is honoured, COPYFILE_FICLONE_FORCE refused).
 * The copy goes to a temp file next to `dst`, datasynced, then renamed into place; a block
 * device destination is written in place, and so is an existing FIFO, character device or socket
 * (as GNU cp: it stays what it is). Holes are kept (`sparse`, default true), the same file is
 * refused (ERR_ODIRECT_SAME_FILE), `verify` compares sha256 before the rename. A source whose
 * size says 0 (/proc) is read to its end; a FIFO or character device source is read in sequence.
 */
export function copyFile(src: PathLike, dst: PathLike, options?: CopyFileOptions | number): Promise<CopyResult> {
  return guardAsync('copyFile', () => copyFileImpl(src, dst, options))
}

interface CopyPlan {
  s: string
  d: string
  verify: boolean
  sparse: boolean
  exclusive: boolean
  chunkOpt: number
  signal: AbortSignal | undefined
  abort: AbortRace
  oo: { direct: DirectMode; backend: 'auto' | BackendName }
  /** onProgress, called as the caller's code: what it throws stops the copy and reaches the caller unchanged. */
  progress: (p: CopyProgress) => void
  /** The file the copy replaces, links resolved (see keepAttrs). */
  replaced?: Replaced
  /** Keep the replaced file's extended attributes and ACLs. */
  xattrs: boolean
}

async function copyFileImpl(src: PathLike, dst: PathLike, options?: CopyFileOptions | number): Promise<CopyResult> {
  let o: Record<string, unknown>
  if (typeof options === 'number') {
    if (!Number.isInteger(options) || options < 0 || options > 7) throw misuse('ERR_OUT_OF_RANGE', `mode must be a combination of fs.constants.COPYFILE_*, got ${describe(options)}`, 'e.g. fs.constants.COPYFILE_EXCL')
    if (options & 4) throw misuse('ERR_ODIRECT_UNSUPPORTED', 'COPYFILE_FICLONE_FORCE is not supported with direct I/O: a reflink shares blocks, it copies nothing', 'drop COPYFILE_FICLONE_FORCE (odirect copies the data)')
    o = { exclusive: (options & 1) !== 0 }
  } else o = readOptions(options, ['onProgress', 'verify', 'sparse', 'chunkSize', 'exclusive', 'xattrs', ...HELPER_OPEN_KEYS], '{ verify: true }')
  const onProgress = o.onProgress
  if (onProgress !== undefined && typeof onProgress !== 'function') throw misuse('ERR_INVALID_ARG_TYPE', `onProgress must be a function, got ${describe(onProgress)}`, 'pass (p) => ...')
  const cb = onProgress as ((p: CopyProgress) => void) | undefined
  const signal = signalOption(o)
  const s = toPath(src, 'src')
  const d = toPath(dst, 'dst')
  const plan: CopyPlan = {
    s,
    d,
    verify: boolOption(o, 'verify', false),
    sparse: boolOption(o, 'sparse', true),
    exclusive: boolOption(o, 'exclusive', false),
    xattrs: boolOption(o, 'xattrs', true),
    chunkOpt: intOption(o, 'chunkSize', MiB, 1, 1024 * MiB, 'e.g. 1 << 20'),
    signal,
    abort: new AbortRace(signal, s, 'read'),
    oo: openFields({ direct: o.direct, backend: o.backend }),
    progress: (p) => {
      if (cb !== undefined) callerCode(() => cb(p))
    },
  }
  try {
    plan.abort.check()
    const srcSt = await plan.abort.race(statIfExists(s))
    const dstSt = await plan.abort.race(statIfExists(d))
    if (srcSt !== undefined && dstSt !== undefined) {
      if (dstSt.dev === srcSt.dev && dstSt.ino === srcSt.ino) throw sameFileError(s, d)
      if ((srcSt.isBlockDevice() || srcSt.isCharacterDevice()) && dstSt.rdev === srcSt.rdev && (dstSt.mode & 0o170000) === (srcSt.mode & 0o170000)) throw sameFileError(s, d)
    }
    if (dstSt?.isDirectory() === true) throw kernelError(E.EISDIR, { syscall: 'open', path: d })
    if (dstSt !== undefined && plan.exclusive) throw kernelError(E.EEXIST, { syscall: 'open', path: d })
    if (srcSt?.isDirectory() === true) throw kernelError(E.EISDIR, { syscall: 'read', path: s })
    const seqSrc = srcSt !== undefined && isSequential(srcSt)
    // A kernel pseudo-file (a cgroup control, a sysfs attribute, /proc/sys): written in place, in
    // sequence, as writeFile writes it (copySequential, through writeFileImpl); no temp file can
    // be made next to it. Its files have no blocks: a file with blocks needs no statfs.
    const pseudo = dstSt?.isFile() === true && dstSt.blocks === 0 ? await plan.abort.race(pseudoFs(d)) : undefined
    const seqDst = dstSt !== undefined && (isSequential(dstSt) || pseudo !== undefined)
    if (plan.verify && (seqSrc || seqDst)) {
      const which = pseudo !== undefined ? `${d} is a file of ${pseudo} (a kernel pseudo filesystem, whose reads give the kernel's state)` : seqDst ? `${d} is ${kindName(dstSt)}` : `${s} is ${kindName(srcSt as import('node:fs').Stats)}`
      throw misuse('ERR_ODIRECT_UNSUPPORTED', `verify needs to read the data twice, and ${which}, which cannot be read again`, 'copy without verify, or to/from a regular file')
    }
    // A destination that is a symbolic link: the file it names gets the copy, the link stays
    // (exclusive: a link, even dangling, is something at dst: EEXIST, as O_CREAT | O_EXCL). One
    // whose text is no path to the file is refused (see resolveLinks' `named`). A FIFO, device
    // or pseudo-file is written in place through the path as given, whose links the kernel
    // follows: a /dev/stdout that is a pipe or socket links to 'pipe:[N]', no path at all.
    if (!plan.exclusive && !seqDst) plan.d = await plan.abort.race(resolveLinks(d, dstSt))
    if (dstSt?.isFile() === true) plan.replaced = { path: plan.d, uid: dstSt.uid, gid: dstSt.gid }
    if (seqSrc || seqDst) return await copySequential(plan, seqSrc, dstSt)
    // Another user's file in /tmp that the kernel would not let fs.copyFile open (see refuseProtectedFile).
    if (plan.replaced !== undefined && dstSt !== undefined) await plan.abort.race(refuseProtectedFile(plan.d, dstSt))
    return await copyBlocks(plan, dstSt?.isBlockDevice() === true)
  } finally {
    plan.abort.dispose()
  }
}

/** Direct-I/O copy of a regular file or block device into a temp file (renamed into place) or a block device (in place). */
async function copyBlocks(plan: CopyPlan, inPlace: boolean): Promise<CopyResult> {
  const { s, d, verify, exclusive, signal, abort, oo, progress } = plan
  const input = await openRaced(abort, s, 'r', oo)
  let out: FileHandle | undefined
  let tmp: string | undefined
  // The temp file's open when an abort left it in flight: it may create the file after the abort.
  const tmpOpen: { open?: Promise<void> } = {}
  // Where a temp file whose rename failed was found and removed, when its directory had moved.
  let removedAt: TempFate
  try {
    const st = await abort.race(input.stat())
    if (!st.isFile() && !st.isBlockDevice()) throw misuse('ERR_INVALID_ARG_VALUE', `${s} is not a regular file or block device`, 'copy a file')
    // A device keeps whatever was in the blocks not written: no holes there.
    const sparse = plan.sparse && !inPlace
    const size = st.size
    // A regular file whose size says 0 may still have data (/proc, some FUSE): read it to its end.
    const unknownSize = size === 0 && st.isFile()
    const limit = unknownSize ? Infinity : size
    if (inPlace) out = await openRaced(abort, d, 'r+', oo)
    else {
      tmp = tmpName(d)
      // Held before its open (see writeFile's).
      tempOwned(tmp)
      out = await openRaced(abort, tmp, verify ? 'wx+' : 'wx', { ...oo, mode: st.mode & 0o7777 }, tmpOpen).catch((e: unknown) => {
        // Another's temp file (see tempTaken): not ours to remove.
        if (tempTaken(e, tmp as string)) {
          tempLetGo(tmp as string)
          tmp = undefined
        }
        throw e
      })
      // Before any data (see keepAttrs): what fs.copyFile keeps of the file it overwrites, and the
      // source's mode exactly (fs.copyFile's fchmod: no umask). Not raced against the abort: it
      // works on the descriptor, which must stay open until it is done.
      await keepAttrs(out.fd, plan.replaced, st.mode & 0o7777, plan.xattrs)
      abort.check()
      // The source's size, reserved up front (see reserveSpace), unless that would allocate its
      // holes: a sparse copy of a source with holes keeps them as holes (a reservation would make
      // them allocated unwritten extents, taking the space the holes save; reserving each data
      // range would cost a fallocate per extent). A source without holes (SEEK_HOLE at 0 finds
      // its end; a filesystem without SEEK_HOLE says so too) or a copy with sparse: false is
      // reserved whole. Zero blocks of a source without holes then stay allocated (unwritten) in
      // the copy, as they were in the source.
      if (st.isFile() && !unknownSize && (!sparse || native.seekData(input.fd, 0, true) >= size)) await abort.race(reserveSpace(out, size, d, signal))
    }
    const o2 = out
    // Granule: a multiple of both block sizes and of the page (the smallest hole worth keeping).
    const g = Math.max(input.alignment.offset, o2.alignment.offset, 4096)
    const chunk = unknownSize ? roundUp(plan.chunkOpt, g) : Math.min(roundUp(plan.chunkOpt, g), Math.max(g, roundUp(size, g)))
    const zeros = Buffer.alloc(g)
    const hash = verify ? createHash('sha256') : undefined
    // Pseudo-files are read in order, one read at a time (their contents are made as they are read).
    const depth = unknownSize ? 1 : 4
    const pool: Buffer[] = []
    const writes = new Set<Promise<void>>()
    let writeError: unknown
    let bytesWritten = 0
    let done = 0
    let next = 0
    let end = 0
    const reads: Array<{ pos: number; buf: Buffer; n: Promise<number> }> = []
    // Holes of the source are found with SEEK_DATA and never read (when not verifying: the hash
    // covers every byte). Where the filesystem has no SEEK_DATA it reports the whole file as data.
    const seekHoles = sparse && !verify && !unknownSize
    // SEEK_DATA found no data from some offset on: a hole to the end of the file as it is when
    // the copy ends (another process may have cut it meanwhile: then it ends there, and the copy
    // gets no tail of zeros the file never had at its end).
    let holeToEnd = false
    const issue = (): void => {
      while (reads.length < depth && next < limit && writeError === undefined) {
        if (seekHoles) {
          const at = native.seekData(input.fd, next, false)
          if (at === -1) {
            // Only a hole from here to the end (or the end is here): the final truncate makes it.
            done += size - next
            holeToEnd = true
            next = size
            break
          }
          if (at > next) {
            const skip = Math.floor(at / g) * g
            if (skip > next) {
              done += skip - next
              next = skip
            }
          }
        }
        const pos = next
        next += chunk
        const buf = pool.pop() ?? o2.alloc(chunk)
        const n = readFully(input, buf, 0, Math.min(chunk, roundUp(limit - pos, g)), pos, signal, unknownSize ? undefined : size)
        n.catch(() => {})
        reads.push({ pos, buf, n })
      }
    }
    issue()
    while (reads.length > 0) {
      const r = reads.shift() as (typeof reads)[number]
      const n = await abort.race(r.n)
      if (writeError !== undefined) throw writeError
      end = Math.max(end, r.pos + n)
      hash?.update(r.buf.subarray(0, n))
      const padded = roundUp(n, g)
      r.buf.fill(0, n, padded)
      if (inPlace && padded > n) {
        // A device keeps its bytes after the data (as cp and dd conv=notrunc keep them: a boot
        // sector written must not wipe the partition table after it): the last granule is
        // completed with what the device holds there, not with zeros.
        const from = padded - g
        const old = o2.alloc(g)
        const got = await abort.race(readFully(o2, old, 0, g, r.pos + from, signal))
        if (got > n - from) r.buf.set(old.subarray(n - from, got), n)
      }
      // Runs of non-zero granules are written; zero granules are left as holes.
      const runs: Array<[number, number]> = []
      let runStart = -1
      for (let off = 0; off < padded; off += g) {
        const zero = sparse && zeros.equals(r.buf.subarray(off, off + g))
        if (!zero && runStart < 0) runStart = off
        if (zero && runStart >= 0) {
          runs.push([runStart, off - runStart])
          runStart = -1
        }
      }
      if (runStart >= 0) runs.push([runStart, padded - runStart])
      const w = (async () => {
        for (const [off, len] of runs) {
          // The padding after the data need not land (RLIMIT_FSIZE may stop a write there).
          await writeFully(o2, r.buf, off, len, r.pos + off, signal, Math.min(len, n - off))
          bytesWritten += Math.min(len, n - off)
        }
        pool.push(r.buf)
        done += n
        // Never after the copy stopped (an abort, another chunk's error): the caller heard the end.
        if (abort.error === undefined && writeError === undefined) progress({ phase: 'copy', bytesDone: done, totalBytes: unknownSize ? done : size })
      })().catch((e: unknown) => {
        if (writeError === undefined) writeError = e
      })
      writes.add(w)
      void w.finally(() => writes.delete(w))
      while (writes.size >= depth) await abort.race(Promise.race(writes))
      if (writeError !== undefined) throw writeError
      if (n < Math.min(chunk, limit - r.pos)) break // the end of the file (or it shrank): stop there
      issue()
    }
    await abort.race(Promise.all(writes))
    await Promise.allSettled(reads.map((r) => r.n))
    if (writeError !== undefined) throw writeError
    if (holeToEnd) end = Math.max(end, Math.min(size, (await abort.race(input.stat())).size))
    if (!inPlace) await o2.truncate(end, signal ? { signal } : undefined)
    await o2.datasync(signal ? { signal } : undefined)
    let sha256: string | undefined
    if (hash !== undefined) {
      sha256 = hash.digest('hex')
      const check = createHash('sha256')
      const buf = o2.alloc(chunk)
      for (let pos = 0; pos < end; pos += chunk) {
        abort.check()
        const want = Math.min(chunk, end - pos)
        const n = await readFully(o2, buf, 0, roundUp(want, g), pos, signal, end)
        check.update(buf.subarray(0, Math.min(n, want)))
        progress({ phase: 'verify', bytesDone: pos + Math.min(n, want), totalBytes: end })
      }
      const got = check.digest('hex')
      if (got !== sha256) throw misuse('ERR_ODIRECT_VERIFY', `verification failed: sha256 of the copy is ${got}, of ${s} ${sha256}`, 'the copy was removed; check the destination device', { path: d })
    }
    const result: CopyResult = {
      bytes: end,
      bytesWritten,
      source: { direct: input.direct, fallbackReason: input.fallbackReason },
      destination: { direct: o2.direct, fallbackReason: o2.fallbackReason, path: d },
      ...(sha256 === undefined ? {} : { sha256 }),
    }
    // The temp file stays open until its rename is done: a temp file its directory's move left
    // elsewhere is found through its descriptor and removed (see removeTemp).
    if (tmp !== undefined) {
      // The last moment to abort: after it, the rename replaces the destination.
      abort.check()
      const t = tmp
      tmp = undefined
      try {
        await commitTemp(t, d, exclusive)
      } catch (e) {
        removedAt = await removeTemp(t, o2.fd)
        throw e
      } finally {
        // Nothing in flight: the close only releases the descriptor (the data is synced; a close
        // error after the rename would not undo it).
        out = undefined
        await o2.close().catch(() => {})
      }
    } else {
      await o2.close()
      out = undefined
    }
    return result
  } catch (e) {
    throw tempError(abort.settle(e), d, removedAt)
  } finally {
    if (tmp !== undefined) {
      // Removed once an open the abort left in flight is done (it would create the file after),
      // and before the closes, which wait for the reads and writes in flight: on a slow device
      // that can take long, and a process killed meanwhile (a second Ctrl-C) would leave it.
      await tmpOpen.open
      await removeTemp(tmp, out !== undefined && !out.closed ? out.fd : undefined)
    }
    await out?.close().catch(() => {})
    await input.close().catch(() => {})
  }
}

/**
 * A copy where one side has no positions: a FIFO or character device source is read in
 * sequence; an existing FIFO, character device or socket destination is written in place (as
 * GNU cp: opened without O_CREAT or O_TRUNC, so it stays what it is). A regular destination
 * still gets the temp file and rename (or is written in place if it is a block device).
 */
async function copySequential(plan: CopyPlan, seqSrc: boolean, dstSt: import('node:fs').Stats | undefined): Promise<CopyResult> {
  const { s, d, abort, oo, progress } = plan
  let done = 0
  let srcInfo = { direct: false, fallbackReason: `${s} is read in sequence: direct I/O does not apply to it` }
  const counted = async function* (chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const c of chunks) {
      yield c
      done += c.byteLength
      progress({ phase: 'copy', bytesDone: done, totalBytes: done })
    }
  }
  const source = async function* (): AsyncGenerator<Uint8Array> {
    if (seqSrc) {
      const f = await SequentialFile.open(s, false, abort)
      try {
        yield* sequentialChunks(f, plan.chunkOpt, abort)
      } finally {
        await f.close(abort)
      }
      return
    }
    const input = await openRaced(abort, s, 'r', oo)
    srcInfo = { direct: input.direct, fallbackReason: input.fallbackReason }
    try {
      const chunk = roundUp(plan.chunkOpt, input.alignment.offset)
      const buf = input.alloc(chunk)
      for (let pos = 0; ; pos += chunk) {
        abort.check()
        const n = await abort.race(readFully(input, buf, 0, chunk, pos, plan.signal))
        if (n > 0) yield buf.subarray(0, n)
        if (n < chunk) return
      }
    } finally {
      await input.close().catch(() => {})
    }
  }
  let destination: CopyResult['destination']
  if (dstSt !== undefined && isSequential(dstSt)) {
    // Another user's FIFO in /tmp that the kernel would not let fs.copyFile open (see
    // refuseProtectedFile), where its links lead.
    await abort.race(resolveLinks(d).then((at) => refuseProtectedFile(at, dstSt)))
    await writeSequential(d, counted(source()), abort)
    destination = { direct: false, fallbackReason: `${d} is ${kindName(dstSt)}, written in place in sequence: direct I/O does not apply to it`, path: d }
  } else {
    const st = await abort.race(statIfExists(s))
    const mode = st !== undefined ? st.mode & 0o7777 : 0o666
    const w = await writeFileImpl(d, counted(source()), { flag: plan.exclusive ? 'wx' : 'w', atomic: true, mode, xattrs: plan.xattrs, ...oo, ...(plan.signal ? { signal: plan.signal } : {}) }, mode)
    destination = { direct: w.direct, fallbackReason: w.fallbackReason, path: d }
  }
  return { bytes: done, bytesWritten: done, source: srcInfo, destination }
}

declare module './handle' {
  interface FileHandle {
    /** As Node's `filehandle.readFile()`: `readFile(fh, options)`, from the handle's current position. */
    readFile(options: (ReadFileOptions & { encoding: BufferEncoding }) | BufferEncoding): Promise<string>
    readFile(options?: (ReadFileOptions & { encoding?: null }) | null): Promise<Buffer>
    /** As Node's `filehandle.writeFile()`: `writeFile(fh, data, options)`, at the handle's current position. */
    writeFile(data: WriteData, options?: WriteFileOptions | BufferEncoding | null): Promise<void>
  }
}

Object.defineProperties(FileHandle.prototype, {
  readFile: {
    configurable: true,
    writable: true,
    value: function readFileMethod(this: FileHandle, options?: ReadFileOptions | BufferEncoding | null): Promise<Buffer | string> {
      // One thing in flight from start to end: a close() called meanwhile waits for it (handle.ts _method).
      return this._method('read', () => readFile(this, options))
    },
  },
  writeFile: {
    configurable: true,
    writable: true,
    value: function writeFileMethod(this: FileHandle, data: WriteData, options?: WriteFileOptions | BufferEncoding | null): Promise<void> {
      return this._method('write', () => writeFile(this, data, options))
    },
  },
})
