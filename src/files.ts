// Whole-file helpers with fs/promises' shapes, all with direct I/O (the page cache untouched):
// readFile, writeFile (optionally atomic: temp file + datasync + rename) and copyFile (holes kept,
// same file refused, optional sha256 verification, progress). Any data length: the last block is
// padded with zeros and the file truncated to the exact length.
import { createHash } from 'node:crypto'
import * as fsp from 'node:fs/promises'

import { MAX_IO_LENGTH } from './buffers'
import { syncParentDir } from './dirsync'
import type { BackendName } from './engine'
import { describeValue, DirectIoError, kernelError, misuse } from './errors'
import { guardAsync } from './guard'
import { FileHandle } from './handle'
import { native } from './native'
import { isFileHandle, open, type PathLike, toPath } from './open'
import { boolOption, checkFlags, type DirectMode, intOption, modeOption, type OpenFlags, openFields, readOptions, signalOption } from './options'
import { BlockWriter, writeConfig } from './streams/core'

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
  flag?: OpenFlags
}

export interface WriteFileOptions extends HelperOpenOptions {
  /** Encoding of string data. Default 'utf8'. */
  encoding?: BufferEncoding | null
  /** Permission bits of a created file (default 0o666 minus the umask; atomic: the replaced file's). */
  mode?: number
  /** Open flags: 'w' (default), 'wx' (fail if it exists), 'r+'... */
  flag?: OpenFlags
  /** fdatasync before resolving (default false, as fs; true with `atomic`). */
  datasync?: boolean
  /** fs's name for datasync. */
  flush?: boolean
  /** Write a temp file in the same directory, datasync it, then rename it over `path`: readers see the old or the new file, never a mix. */
  atomic?: boolean
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

function encodingOf(v: unknown, def: BufferEncoding | undefined): BufferEncoding | undefined {
  if (v === undefined) return def
  if (v === null || v === 'buffer') return undefined
  if (typeof v !== 'string' || !Buffer.isEncoding(v)) throw misuse('ERR_INVALID_ARG_VALUE', `encoding must be a Buffer encoding, got ${describeValue(v)}`, "e.g. 'utf8'")
  return v
}

const throwIfAborted = (signal: AbortSignal | undefined, path: string, syscall: string): void => {
  if (signal?.aborted) {
    throw new DirectIoError(`The operation was aborted (${syscall} on ${path})`, { code: 'ABORT_ERR', hint: 'the AbortSignal passed to this operation was aborted', cause: signal.reason, path, syscall })
  }
}

/** Reads `len` bytes at `pos` into `buf[off..]`, going on after short reads; stops at end of file. */
async function readFully(fh: FileHandle, buf: Buffer, off: number, len: number, pos: number, signal: AbortSignal | undefined): Promise<number> {
  let done = 0
  const unit = fh.direct ? fh.alignment.offset : 1
  while (done < len) {
    const { bytesRead } = await fh.read(buf, { offset: off + done, length: len - done, position: pos + done, ...(signal ? { signal } : {}) })
    if (bytesRead === 0) break
    done += bytesRead
    // A direct read returns a partial block only at the end of file.
    if (done % unit !== 0) break
  }
  return done
}

/** Writes `len` bytes of `buf[off..]` at `pos`, going on after short writes (from the block holding the first byte not written). */
async function writeFully(fh: FileHandle, buf: Buffer, off: number, len: number, pos: number, signal: AbortSignal | undefined): Promise<void> {
  let done = 0
  const unit = fh.direct ? fh.alignment.offset : 1
  while (done < len) {
    const { bytesWritten } = await fh.write(buf, { offset: off + done, length: len - done, position: pos + done, ...(signal ? { signal } : {}) })
    const next = Math.floor((done + bytesWritten) / unit) * unit
    if (bytesWritten <= 0 || next <= done) throw kernelError(5, { syscall: 'write', path: fh.path, position: pos + done, length: len - done }, `the kernel wrote ${bytesWritten} of ${len - done} bytes, not a whole block`)
    done = next
  }
}

/**
 * Reads a whole file with direct I/O, as fs/promises' readFile: a Buffer, or a string with an
 * encoding. `path` may be a FileHandle (read from position 0, left open).
 */
export async function readFile(path: PathLike | FileHandle, options: (ReadFileOptions & { encoding: BufferEncoding }) | BufferEncoding): Promise<string>
export async function readFile(path: PathLike | FileHandle, options?: (ReadFileOptions & { encoding?: null }) | null): Promise<Buffer>
export async function readFile(path: PathLike | FileHandle, options?: ReadFileOptions | BufferEncoding | null): Promise<Buffer | string>
export function readFile(path: PathLike | FileHandle, options?: ReadFileOptions | BufferEncoding | null): Promise<Buffer | string> {
  return guardAsync('readFile', () => readFileImpl(path, options))
}

async function readFileImpl(path: PathLike | FileHandle, options?: ReadFileOptions | BufferEncoding | null): Promise<Buffer | string> {
  const o = typeof options === 'string' ? { encoding: options } : readOptions(options, ['encoding', 'flag', ...HELPER_OPEN_KEYS], "{ encoding: 'utf8' }")
  const encoding = encodingOf(o.encoding, undefined)
  const signal = signalOption(o)
  const given = isFileHandle(path)
  const oo = openFields({ direct: o.direct, backend: o.backend })
  let fh: FileHandle
  if (given) {
    if (o.flag !== undefined || o.direct !== undefined || o.backend !== undefined) throw misuse('ERR_INVALID_ARG_VALUE', 'flag, direct and backend only apply when readFile opens a path', 'pass them to open()')
    fh = path
  } else {
    const p = toPath(path)
    throwIfAborted(signal, p, 'read')
    fh = await open(p, checkFlags(o.flag ?? 'r', p), { direct: oo.direct, backend: oo.backend })
  }
  try {
    const unit = fh.alignment.offset
    const size = (await fh.stat()).size
    // One block more than the size: a file that grew is noticed (the read comes back full).
    let buf = fh.alloc(Math.max(unit, roundUp(size + 1, unit)))
    let total = 0
    for (;;) {
      throwIfAborted(signal, fh.path, 'read')
      if (total === buf.byteLength) {
        const bigger = fh.alloc(Math.min(buf.byteLength * 2, Math.floor(MAX_IO_LENGTH / unit) * unit))
        if (bigger.byteLength <= buf.byteLength) throw misuse('ERR_OUT_OF_RANGE', `${fh.path} is larger than readFile can hold (${MAX_IO_LENGTH} bytes)`, 'read it with createReadStream()')
        bigger.set(buf)
        buf = bigger
      }
      const len = Math.min(buf.byteLength - total, 64 * MiB)
      const n = await readFully(fh, buf, total, len, total, signal)
      total += n
      if (n < len) break
    }
    const data = buf.subarray(0, total)
    return encoding === undefined ? data : data.toString(encoding)
  } finally {
    if (!given) await fh.close()
  }
}

function toBytes(data: unknown, encoding: BufferEncoding): Uint8Array | undefined {
  if (typeof data === 'string') return Buffer.from(data, encoding)
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  return undefined
}

let tmpCounter = 0
const tmpName = (dst: string): string => `${dst}.odirect-tmp-${typeof process !== 'undefined' ? process.pid : 0}-${++tmpCounter}`

/**
 * Writes `data` (a string, Buffer/TypedArray/DataView, or an (async) iterable of those) to a
 * file with direct I/O, as fs/promises' writeFile. The last block is zero padded and the file
 * truncated to the exact length. `atomic`: temp file + datasync + rename (then `flag` 'w' or 'wx').
 */
export function writeFile(
  path: PathLike | FileHandle,
  data: string | ArrayBufferView | Iterable<string | ArrayBufferView> | AsyncIterable<string | ArrayBufferView>,
  options?: WriteFileOptions | BufferEncoding | null,
): Promise<void> {
  return guardAsync('writeFile', () => writeFileImpl(path, data, options))
}

async function writeFileImpl(
  path: PathLike | FileHandle,
  data: string | ArrayBufferView | Iterable<string | ArrayBufferView> | AsyncIterable<string | ArrayBufferView>,
  options?: WriteFileOptions | BufferEncoding | null,
): Promise<void> {
  const o = typeof options === 'string' ? { encoding: options } : readOptions(options, ['encoding', 'mode', 'flag', 'datasync', 'flush', 'atomic', ...HELPER_OPEN_KEYS], "{ encoding: 'utf8', atomic: true }")
  const encoding = encodingOf(o.encoding, 'utf8') ?? 'utf8'
  const atomic = boolOption(o, 'atomic', false)
  let datasync = boolOption(o, 'datasync', false) || boolOption(o, 'flush', false) || atomic
  const signal = signalOption(o)
  const given = isFileHandle(path)
  if (given && (o.flag !== undefined || o.mode !== undefined || atomic || o.direct !== undefined || o.backend !== undefined)) {
    throw misuse('ERR_INVALID_ARG_VALUE', 'flag, mode, atomic, direct and backend only apply when writeFile opens a path', 'pass a path, or set them with open()')
  }
  const target = given ? path : toPath(path)
  const flag = checkFlags(o.flag ?? 'w', given ? path.path : (target as string), true)
  if (atomic && flag !== 'w' && flag !== 'wx' && flag !== 'xw') throw misuse('ERR_INVALID_ARG_VALUE', `atomic writes replace the file: flag must be 'w' or 'wx', got '${flag}'`, "use flag 'w' (replace) or 'wx' (only if absent)")
  const oo = openFields({ direct: o.direct, backend: o.backend })
  let mode = modeOption(o)
  const explicitMode = o.mode !== undefined
  let dst = typeof target === 'string' ? target : target.path
  throwIfAborted(signal, dst, 'write')
  let tmp: string | undefined
  if (atomic) {
    if (!explicitMode) {
      const st = await fsp.stat(dst).catch(() => undefined)
      if (st !== undefined) mode = st.mode & 0o7777
    }
    dst = typeof target === 'string' ? target : dst
    tmp = tmpName(dst)
  }
  datasync = datasync || atomic
  const wopts: Record<string, unknown> = { datasync, ...(signal ? { signal } : {}) }
  if (!given) Object.assign(wopts, { flags: tmp !== undefined ? 'wx' : flag, mode, direct: oo.direct, backend: oo.backend })
  const { target: t, cfg } = writeConfig(given ? target : (tmp ?? target), wopts)
  // The temp file's name need not be durable: the rename into place is synced below.
  if (tmp !== undefined) cfg.syncDir = false
  const core = new BlockWriter(t, cfg)
  try {
    await core.open()
    const one = toBytes(data, encoding)
    if (one !== undefined) await core.write(one)
    else if (data !== null && typeof data === 'object' && (Symbol.asyncIterator in data || Symbol.iterator in data)) {
      for await (const chunk of data as AsyncIterable<unknown>) {
        const b = toBytes(chunk, encoding)
        if (b === undefined) throw misuse('ERR_INVALID_ARG_TYPE', `writeFile chunks must be strings or ArrayBufferViews, got ${describeValue(chunk)}`, 'yield Buffers or strings')
        await core.write(b)
      }
    } else throw misuse('ERR_INVALID_ARG_TYPE', `data must be a string, Buffer, TypedArray, DataView or an (async) iterable of them, got ${describeValue(data)}`, 'e.g. Buffer.from(text)')
    await core.finish()
    if (tmp !== undefined) {
      if (flag === 'w') await fsp.rename(tmp, dst)
      else {
        await fsp.link(tmp, dst).catch((e: NodeJS.ErrnoException) => {
          throw e.code === 'EEXIST' ? kernelError(17, { syscall: 'link', path: dst }) : e
        })
        await fsp.unlink(tmp)
      }
      tmp = undefined
      await syncParentDir(dst)
    }
  } catch (e) {
    await core.destroy().catch(() => {})
    throw e
  } finally {
    if (tmp !== undefined) await fsp.rm(tmp, { force: true }).catch(() => {})
  }
}

function sameFileError(src: string, dst: string): DirectIoError {
  return misuse('ERR_ODIRECT_SAME_FILE', `${src} and ${dst} are the same file`, 'copy to a different file', { path: dst })
}

/**
 * Copies `src` to `dst` with direct I/O on both sides, as fs/promises' copyFile (the third
 * argument may be fs's mode number: COPYFILE_EXCL is honoured, COPYFILE_FICLONE_FORCE refused).
 * The copy goes to a temp file next to `dst`, datasynced, then renamed into place (a block
 * device destination is written in place). Holes are kept (`sparse`, default true), the same
 * file is refused (ERR_ODIRECT_SAME_FILE), `verify` compares sha256 before the rename.
 */
export function copyFile(src: PathLike, dst: PathLike, options?: CopyFileOptions | number): Promise<CopyResult> {
  return guardAsync('copyFile', () => copyFileImpl(src, dst, options))
}

async function copyFileImpl(src: PathLike, dst: PathLike, options?: CopyFileOptions | number): Promise<CopyResult> {
  let o: Record<string, unknown>
  if (typeof options === 'number') {
    if (!Number.isInteger(options) || options < 0 || options > 7) throw misuse('ERR_OUT_OF_RANGE', `mode must be a combination of fs.constants.COPYFILE_*, got ${describeValue(options)}`, 'e.g. fs.constants.COPYFILE_EXCL')
    if (options & 4) throw misuse('ERR_ODIRECT_UNSUPPORTED', 'COPYFILE_FICLONE_FORCE is not supported with direct I/O: a reflink shares blocks, it copies nothing', 'drop COPYFILE_FICLONE_FORCE (odirect copies the data)')
    o = { exclusive: (options & 1) !== 0 }
  } else o = readOptions(options, ['onProgress', 'verify', 'sparse', 'chunkSize', 'exclusive', ...HELPER_OPEN_KEYS], '{ verify: true }')
  const onProgress = o.onProgress
  if (onProgress !== undefined && typeof onProgress !== 'function') throw misuse('ERR_INVALID_ARG_TYPE', `onProgress must be a function, got ${describeValue(onProgress)}`, 'pass (p) => ...')
  const progress = onProgress as ((p: CopyProgress) => void) | undefined
  const verify = boolOption(o, 'verify', false)
  let sparse = boolOption(o, 'sparse', true)
  const exclusive = boolOption(o, 'exclusive', false)
  const chunkOpt = intOption(o, 'chunkSize', MiB, 1, 1024 * MiB, 'e.g. 1 << 20')
  const signal = signalOption(o)
  const oo = openFields({ direct: o.direct, backend: o.backend })
  const s = toPath(src, 'src')
  const d = toPath(dst, 'dst')
  throwIfAborted(signal, s, 'read')
  const input = await open(s, 'r', { direct: oo.direct, backend: oo.backend })
  let out: FileHandle | undefined
  let tmp: string | undefined
  try {
    const st = await input.stat()
    if (!st.isFile() && !st.isBlockDevice()) throw misuse('ERR_INVALID_ARG_VALUE', `${s} is not a regular file or block device`, 'copy a file')
    const dstSt = await fsp.stat(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined
      throw e
    })
    if (dstSt !== undefined) {
      if (dstSt.dev === st.dev && dstSt.ino === st.ino) throw sameFileError(s, d)
      if (st.isBlockDevice() && dstSt.isBlockDevice() && dstSt.rdev === st.rdev) throw sameFileError(s, d)
      if (dstSt.isDirectory()) throw kernelError(21, { syscall: 'open', path: d })
      if (exclusive) throw kernelError(17, { syscall: 'open', path: d })
    }
    const inPlace = dstSt?.isBlockDevice() === true
    // A device keeps whatever was in the blocks not written: no holes there.
    if (inPlace) sparse = false
    const size = st.size
    if (inPlace) out = await open(d, 'r+', { direct: oo.direct, backend: oo.backend })
    else {
      tmp = tmpName(d)
      out = await open(tmp, verify ? 'wx+' : 'wx', { direct: oo.direct, backend: oo.backend, mode: st.mode & 0o7777 })
    }
    const o2 = out
    // Granule: a multiple of both block sizes and of the page (the smallest hole worth keeping).
    const g = Math.max(input.alignment.offset, o2.alignment.offset, 4096)
    const chunk = Math.min(roundUp(chunkOpt, g), Math.max(g, roundUp(size, g)))
    const zeros = Buffer.alloc(g)
    const hash = verify ? createHash('sha256') : undefined
    const depth = 4
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
    const seekHoles = sparse && !verify && !inPlace
    const issue = (): void => {
      while (reads.length < depth && next < size && writeError === undefined) {
        if (seekHoles) {
          const d = native.seekData(input.fd, next, false)
          if (d === -1) {
            // Only a hole from here to the end: the final truncate makes it.
            done += size - next
            end = Math.max(end, size)
            next = size
            break
          }
          if (d > next) {
            const skip = Math.floor(d / g) * g
            if (skip > next) {
              done += skip - next
              next = skip
            }
          }
        }
        const pos = next
        next += chunk
        const buf = pool.pop() ?? o2.alloc(chunk)
        const n = readFully(input, buf, 0, Math.min(chunk, roundUp(size - pos, g)), pos, signal)
        n.catch(() => {})
        reads.push({ pos, buf, n })
      }
    }
    issue()
    while (reads.length > 0) {
      const r = reads.shift() as (typeof reads)[number]
      const n = await r.n
      if (writeError !== undefined) throw writeError
      end = Math.max(end, r.pos + n)
      hash?.update(r.buf.subarray(0, n))
      const padded = roundUp(n, g)
      r.buf.fill(0, n, padded)
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
          await writeFully(o2, r.buf, off, len, r.pos + off, signal)
          bytesWritten += Math.min(len, n - off)
        }
      })().then(
        () => {
          pool.push(r.buf)
          done += n
          progress?.({ phase: 'copy', bytesDone: done, totalBytes: size })
        },
        (e: unknown) => {
          if (writeError === undefined) writeError = e
        },
      )
      writes.add(w)
      void w.finally(() => writes.delete(w))
      while (writes.size >= depth) await Promise.race(writes)
      if (n < Math.min(chunk, size - r.pos)) break // the file shrank: stop at its end
      issue()
    }
    await Promise.all(writes)
    await Promise.allSettled(reads.map((r) => r.n))
    if (writeError !== undefined) throw writeError
    if (!inPlace) await o2.truncate(end, signal ? { signal } : undefined)
    await o2.datasync(signal ? { signal } : undefined)
    let sha256: string | undefined
    if (hash !== undefined) {
      sha256 = hash.digest('hex')
      const check = createHash('sha256')
      const buf = o2.alloc(chunk)
      for (let pos = 0; pos < end; pos += chunk) {
        throwIfAborted(signal, o2.path, 'read')
        const want = Math.min(chunk, end - pos)
        const n = await readFully(o2, buf, 0, roundUp(want, g), pos, signal)
        check.update(buf.subarray(0, Math.min(n, want)))
        progress?.({ phase: 'verify', bytesDone: pos + Math.min(n, want), totalBytes: end })
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
    await o2.close()
    out = undefined
    if (tmp !== undefined) {
      if (exclusive) {
        await fsp.link(tmp, d).catch((e: NodeJS.ErrnoException) => {
          throw e.code === 'EEXIST' ? kernelError(17, { syscall: 'link', path: d }) : e
        })
        await fsp.unlink(tmp)
      } else await fsp.rename(tmp, d)
      tmp = undefined
      await syncParentDir(d)
    }
    return result
  } finally {
    await out?.close().catch(() => {})
    await input.close().catch(() => {})
    if (tmp !== undefined) await fsp.rm(tmp, { force: true }).catch(() => {})
  }
}
