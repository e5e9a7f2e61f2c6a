// open(), the backend policy and probe(): what index.ts re-exports. Paths may be strings, Buffers
// (UTF-8) or file: URLs, with Node's error codes for bad URLs.
import { BACKENDS, type BackendName, getEngine, engineInfo } from './engine'
import { describeValue, DirectIoError, kernelError, misuse } from './errors'
import { guardAsync } from './guard'
import { type Alignment, FileHandle } from './handle'
import { native } from './native'
import * as nodePath from 'node:path'

import { checkFlags, checkOpenOptions, type FlagsArg, isCreatingFlags, isReadableFlags, isWritableFlags, type OpenOptions } from './options'

export type { DirectMode, FlagsArg, OpenFlags, OpenOptions } from './options'

/** What open() and the helpers take as a path: a string, a Buffer (UTF-8 bytes) or a file: URL. */
export type PathLike = string | Buffer | URL

const isUrl = (p: unknown): p is URL => {
  try {
    return typeof URL !== 'undefined' && p instanceof URL
  } catch {
    return false
  }
}

const isBytes = (p: unknown): p is Uint8Array => {
  try {
    return p instanceof Uint8Array
  } catch {
    return false
  }
}

/** `v instanceof FileHandle`, false (not a throw) for a revoked Proxy. */
export const isFileHandle = (v: unknown): v is FileHandle => {
  try {
    return v instanceof FileHandle
  } catch {
    return false
  }
}

function urlToPath(u: URL): string {
  let protocol: string, hostname: string, pathname: string
  try {
    protocol = u.protocol
    hostname = u.hostname
    pathname = u.pathname
  } catch (e) {
    throw misuse('ERR_INVALID_URL', 'the URL could not be read', 'pass new URL("file:///path")', { cause: e })
  }
  if (protocol !== 'file:') throw misuse('ERR_INVALID_URL_SCHEME', `the URL must be of scheme file, got ${describeValue(protocol)}`, 'pass a file: URL or a path')
  if (hostname !== '' && hostname !== 'localhost') {
    throw misuse('ERR_INVALID_FILE_URL_HOST', `file URL host must be "localhost" or empty on Linux, got ${describeValue(hostname)}`, 'use file:///path (a remote host cannot be opened)')
  }
  if (/%2f/i.test(pathname)) throw misuse('ERR_INVALID_FILE_URL_PATH', 'file URL path must not include encoded / characters', 'use a literal /')
  let p: string
  try {
    p = decodeURIComponent(pathname)
  } catch (e) {
    throw misuse('ERR_INVALID_URL', `the file URL's path is not valid percent-encoded UTF-8: ${describeValue(pathname)}`, 'encode the path with encodeURIComponent or pathToFileURL()', { cause: e })
  }
  return p
}

/**
 * A path argument as a string: strings as is, Buffers/Uint8Arrays decoded as UTF-8, file: URLs
 * converted (Node's ERR_INVALID_URL_SCHEME / ERR_INVALID_FILE_URL_HOST / ERR_INVALID_URL).
 */
export function toPath(p: unknown, what = 'path'): string {
  let s: string
  if (typeof p === 'string') s = p
  else if (isUrl(p)) s = urlToPath(p)
  else if (isBytes(p)) {
    if (p.buffer.byteLength === 0 && p.byteLength === 0) throw misuse('ERR_INVALID_ARG_VALUE', `${what} is an empty (or detached) Buffer`, 'pass a file path')
    try {
      s = new TextDecoder('utf-8', { fatal: true }).decode(p)
    } catch (e) {
      throw misuse('ERR_INVALID_ARG_VALUE', `${what} Buffer is not valid UTF-8`, 'odirect takes UTF-8 paths; pass a string', { cause: e })
    }
  } else throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a string, Buffer or file: URL, got ${describeValue(p)}`, 'pass a file path')
  if (s.length === 0) throw misuse('ERR_INVALID_ARG_VALUE', `${what} must not be empty`, 'pass a file path')
  if (s.includes('\0')) throw misuse('ERR_INVALID_ARG_VALUE', `${what} contains a NUL byte`, 'remove the NUL byte')
  return s
}

/** The backend policy: an explicit backend, else ODIRECT_BACKEND, else io_uring -> aio -> threadpool. */
export function chooseBackend(requested: 'auto' | BackendName, direct: boolean, path: string): BackendName {
  const engine = getEngine()
  const env = typeof process !== 'undefined' ? process.env.ODIRECT_BACKEND : undefined
  let wanted = requested
  if (wanted === 'auto' && env !== undefined && env !== '' && env !== 'auto') {
    if (!BACKENDS.includes(env as BackendName)) {
      throw misuse('ERR_ODIRECT_BACKEND', `ODIRECT_BACKEND=${env} is not a backend`, "set it to 'io_uring', 'aio', 'threadpool' or 'auto'")
    }
    wanted = env as BackendName
  }
  if (wanted !== 'auto') {
    const why = engine.ensure(wanted)
    if (why !== '') throw misuse('ERR_ODIRECT_BACKEND', `backend '${wanted}' is not available here: ${why}`, "use backend: 'auto' to fall back to one that works", { path })
    return wanted
  }
  const reasons: string[] = []
  for (const b of BACKENDS) {
    // Linux AIO is only asynchronous with O_DIRECT; for buffered handles skip to the pool.
    if (b === 'aio' && !direct) continue
    const why = engine.ensure(b)
    if (why === '') return b
    reasons.push(`${b}: ${why}`)
  }
  throw misuse('ERR_ODIRECT_BACKEND', `no I/O backend works here (${reasons.join('; ')})`, 'see odirect probe', { path })
}

/**
 * Opens a file (or block device) for direct I/O. `path`: a string, a Buffer or a file: URL. Flags
 * as in `fs`: 'r', 'r+', 'rs+', 'w', 'wx', 'w+', 'wx+', or numeric `fs.constants` bits
 * (`O_RDWR | O_CREAT` opens or creates without truncating). Append flags (and O_APPEND) are
 * refused: appends are not block aligned. The third argument: odirect's options, or (as
 * fs/promises) the mode of a created file.
 */
export function open(path: PathLike, flags: FlagsArg = 'r', options?: OpenOptions | number): Promise<FileHandle> {
  return guardAsync('open', () => openImpl(path, flags, options))
}

/** An open() failure from the kernel, with a hint that fits what was asked (ENOENT: file or directory missing). */
export function openError(errno: number, p: string, flags: string, syscall = 'open'): DirectIoError {
  const e = kernelError(errno, { syscall, path: p })
  if (errno !== 2 /* ENOENT */ || syscall !== 'open') return e
  const dir = nodePath.dirname(p)
  const hint = isCreatingFlags(flags)
    ? `the directory ${dir} does not exist (or a path component is missing): create it first`
    : `no such file or directory: check the path${isWritableFlags(flags) ? ", or open with 'w' to create the file" : ''}`
  return new DirectIoError(`ENOENT: ${native.errnoInfo(errno, syscall).message}, open (${p}) — ${hint}`, { code: 'ENOENT', errno: -errno, syscall, path: p, hint })
}

async function openImpl(path: PathLike, flags: FlagsArg, options?: OpenOptions | number): Promise<FileHandle> {
  const p = toPath(path)
  const f = checkFlags(flags, p)
  // fs/promises' third argument: the mode of a created file.
  const opts = checkOpenOptions(typeof options === 'number' ? { mode: options } : options)
  const r = await native.openFile(p, f, opts.direct, opts.dsync, opts.noatime, opts.mode)
  if (r.errno !== 0 || r.alignment == null) {
    const syscall = r.syscall || 'open'
    if (syscall === 'fcntl') {
      const k = kernelError(r.errno, { syscall, path: p }, r.message)
      throw new DirectIoError(`${p}: ${r.message} — open with { direct: 'prefer' } to fall back to buffered I/O, or use a filesystem with O_DIRECT (ext4, xfs, btrfs, tmpfs)`, {
        code: k.code,
        ...(k.errno === undefined ? {} : { errno: k.errno }),
        syscall,
        path: p,
        hint: "open with { direct: 'prefer' } to fall back to buffered I/O, or put the file on ext4, xfs, btrfs or tmpfs",
      })
    }
    if (syscall === 'preadv2') {
      const k = kernelError(r.errno, { syscall, path: p }, r.message)
      throw new DirectIoError(`${p}: ${r.message}`, {
        code: k.code,
        ...(k.errno === undefined ? {} : { errno: k.errno }),
        syscall,
        path: p,
        hint: "use direct: 'prefer' (O_DIRECT, else the best buffered mode there is) or 'off'; probe().uncached says where RWF_DONTCACHE works",
      })
    }
    throw openError(r.errno, p, f, syscall)
  }
  let backend: BackendName
  try {
    backend = chooseBackend(opts.backend, r.direct, p)
  } catch (e) {
    native.closeFdSync(r.fd)
    throw e
  }
  return new FileHandle(getEngine(), {
    path: p,
    fd: r.fd,
    flags: f,
    direct: r.direct,
    fallbackReason: r.fallbackReason,
    uncached: r.uncached,
    alignment: r.alignment as Alignment,
    backend,
    isBlockDevice: r.isBlockDevice,
    fsType: r.fsType,
    mayBlock: r.mayBlock,
    size: r.size,
    readable: isReadableFlags(f),
    writable: isWritableFlags(f),
  })
}

export interface ProbeReport {
  kernel: string
  /** kernel.io_uring_disabled (0, 1, 2), when the sysctl exists (Linux 6.6+). */
  ioUringDisabled?: number
  backends: Record<BackendName, { available: boolean; reason: string }>
  direct: { works: boolean; reason: string; tested: string }
  alignment?: Alignment
  /** Filesystem type of a file or directory ('ext4', 'tmpfs'...); '' for a block device (it has none). */
  fsType: string
  isBlockDevice: boolean
  /** How completions reach JS on this runtime ('libuv': Node's loop; 'thread': a reaper thread, Bun and Deno). */
  completionPath: 'libuv' | 'thread'
  /** Uncached buffered I/O (RWF_DONTCACHE, Linux 6.14+) works here: `direct: 'uncached'`, and the `'prefer'` fallback uses it. */
  uncached: { works: boolean; reason: string }
}

/** What odirect finds for `path` (a directory: a temp file is made and removed in it). */
export function probe(path: PathLike = '.'): Promise<ProbeReport> {
  return guardAsync('probe', () => probeImpl(path))
}

async function probeImpl(path: PathLike): Promise<ProbeReport> {
  const p = toPath(path)
  const r = await native.probePath(p)
  const backends = {} as Record<BackendName, { available: boolean; reason: string }>
  for (const b of r.backends) backends[b.name as BackendName] = { available: b.available, reason: b.reason }
  return {
    kernel: r.kernel,
    ...(r.ioUringDisabled != null ? { ioUringDisabled: r.ioUringDisabled } : {}),
    backends,
    direct: { works: r.direct.works, reason: r.direct.reason, tested: r.direct.tested },
    ...(r.alignment ? { alignment: r.alignment as Alignment } : {}),
    fsType: r.isBlockDevice ? '' : r.fsType,
    isBlockDevice: r.isBlockDevice,
    completionPath: engineInfo().path,
    uncached: { works: r.uncached, reason: r.uncachedReason },
  }
}
