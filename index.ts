/**
 * odirect: real Linux direct I/O (O_DIRECT) for JavaScript.
 *
 * ```ts
 * import { open } from 'odirect'
 * await using fh = await open('/data/file', 'w+')
 * const buf = fh.alloc(1 << 20)           // aligned for this file
 * await fh.write(buf, 0)
 * await fh.read(buf, 0)
 * ```
 * @packageDocumentation
 */
import { BACKENDS, type BackendName, getEngine } from './src/engine'
import { DirectIoError, kernelError, misuse } from './src/errors'
import { type Alignment, FileHandle } from './src/handle'
import { native } from './src/native'

export { addressOf, allocAligned, MAX_IO_LENGTH, PAGE_SIZE } from './src/buffers'
export { DirectIoError, type DirectIoErrorInit, type MisuseCode } from './src/errors'
export {
  constants,
  FileHandle,
  type Alignment,
  type HandleStats,
  type ManyError,
  type ManyOp,
  type OpOptions,
  type ReadOptions,
  type ReadResult,
  type ReadVResult,
  type ReadWriteOptions,
  type WriteResult,
  type WriteVResult,
} from './src/handle'
export type { BackendName } from './src/engine'
export { RegisteredBuffers } from './src/registered'

export type OpenFlags = 'r' | 'r+' | 'rs+' | 'w' | 'wx' | 'xw' | 'w+' | 'wx+' | 'xw+'
export type DirectMode = 'require' | 'prefer' | 'off'

export interface OpenOptions {
  /**
   * 'require' (default): O_DIRECT or a typed error. 'prefer': fall back to buffered I/O when the
   * filesystem refuses O_DIRECT (then `fh.direct === false`, `fh.fallbackReason` says why, and the
   * page cache is dropped behind each op). 'off': buffered I/O through the same engine.
   */
  direct?: DirectMode
  /** 'auto' (default, or the ODIRECT_BACKEND environment variable): io_uring, then aio, then threadpool. */
  backend?: 'auto' | BackendName
  /** O_DSYNC: each write returns once its data is on stable storage. */
  dsync?: boolean
  /** O_NOATIME (silently dropped when not the file's owner). */
  noatime?: boolean
  /** Permission bits for a created file (default 0o666, minus the umask). */
  mode?: number
}

const OPTION_KEYS = new Set(['direct', 'backend', 'dsync', 'noatime', 'mode'])

function checkOptions(o: unknown): OpenOptions {
  if (o === undefined || o === null) return {}
  if (typeof o !== 'object') throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${typeof o}`, "pass e.g. { direct: 'require' }")
  for (const k of Object.keys(o)) {
    if (!OPTION_KEYS.has(k)) throw misuse('ERR_INVALID_ARG_VALUE', `unknown option '${k}'`, `known options: ${[...OPTION_KEYS].join(', ')}`)
  }
  const opts = o as OpenOptions
  if (opts.direct !== undefined && !['require', 'prefer', 'off'].includes(opts.direct)) {
    throw misuse('ERR_INVALID_ARG_VALUE', `direct must be 'require', 'prefer' or 'off', got ${String(opts.direct)}`, "use 'require' for O_DIRECT or an error")
  }
  if (opts.backend !== undefined && opts.backend !== 'auto' && !BACKENDS.includes(opts.backend)) {
    throw misuse('ERR_INVALID_ARG_VALUE', `backend must be 'auto', 'io_uring', 'aio' or 'threadpool', got ${String(opts.backend)}`, "use 'auto' unless you need a specific engine")
  }
  for (const k of ['dsync', 'noatime'] as const) {
    if (opts[k] !== undefined && typeof opts[k] !== 'boolean') throw misuse('ERR_INVALID_ARG_TYPE', `${k} must be a boolean`, `pass ${k}: true or false`)
  }
  if (opts.mode !== undefined && (!Number.isInteger(opts.mode) || opts.mode < 0 || opts.mode > 0o7777)) {
    throw misuse('ERR_OUT_OF_RANGE', `mode must be an integer from 0 to 0o7777, got ${String(opts.mode)}`, 'e.g. 0o644')
  }
  return opts
}

function chooseBackend(requested: 'auto' | BackendName, direct: boolean, path: string): BackendName {
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
 * Opens a file (or block device) for direct I/O. Flags as in `fs`: 'r', 'r+', 'w', 'wx', 'w+',
 * 'wx+'. Append flags are refused: appends are not block aligned.
 */
export async function open(path: string | URL, flags: OpenFlags = 'r', options?: OpenOptions): Promise<FileHandle> {
  const p = path instanceof URL ? decodeURIComponent(path.pathname) : path
  if (typeof p !== 'string' || p.length === 0) throw misuse('ERR_INVALID_ARG_TYPE', `path must be a non-empty string or file: URL, got ${typeof p}`, 'pass a file path')
  if (p.includes('\0')) throw misuse('ERR_INVALID_ARG_VALUE', 'path contains a NUL byte', 'remove the NUL byte')
  if (typeof flags !== 'string') throw misuse('ERR_ODIRECT_FLAGS', `flags must be a string, got ${typeof flags}`, "use 'r', 'r+', 'w', 'wx', 'w+' or 'wx+'")
  const bad = native.checkFlags(flags)
  if (bad !== '') throw misuse('ERR_ODIRECT_FLAGS', bad, '', { path: p })
  const opts = checkOptions(options)
  const direct = opts.direct ?? 'require'
  const r = await native.openFile(p, flags, direct, opts.dsync ?? false, opts.noatime ?? false, opts.mode ?? 0o666)
  if (r.errno !== 0 || r.alignment == null) {
    const syscall = r.syscall || 'open'
    if (syscall === 'fcntl') {
      const fs = kernelError(r.errno, { syscall, path: p }, r.message)
      throw new DirectIoError(`${p}: ${r.message} — open with { direct: 'prefer' } to fall back to buffered I/O, or use a filesystem with O_DIRECT (ext4, xfs, btrfs, tmpfs)`, {
        code: fs.code,
        errno: fs.errno,
        syscall,
        path: p,
        hint: "open with { direct: 'prefer' } to fall back to buffered I/O, or put the file on ext4, xfs, btrfs or tmpfs",
      })
    }
    throw kernelError(r.errno, { syscall, path: p })
  }
  let backend: BackendName
  try {
    backend = chooseBackend(opts.backend ?? 'auto', r.direct, p)
  } catch (e) {
    native.closeFdSync(r.fd)
    throw e
  }
  const readable = flags.startsWith('r') || flags.includes('+')
  const writable = flags !== 'r'
  return new FileHandle(getEngine(), {
    path: p,
    fd: r.fd,
    flags,
    direct: r.direct,
    fallbackReason: r.fallbackReason,
    alignment: r.alignment as Alignment,
    backend,
    isBlockDevice: r.isBlockDevice,
    fsType: r.fsType,
    size: r.size,
    readable,
    writable,
  })
}

export interface ProbeReport {
  kernel: string
  /** kernel.io_uring_disabled (0, 1, 2), when the sysctl exists (Linux 6.6+). */
  ioUringDisabled?: number
  backends: Record<BackendName, { available: boolean; reason: string }>
  direct: { works: boolean; reason: string; tested: string }
  alignment?: Alignment
  fsType: string
  isBlockDevice: boolean
}

/** What odirect finds for `path` (a directory: a temp file is made and removed in it). */
export async function probe(path: string = '.'): Promise<ProbeReport> {
  if (typeof path !== 'string' || path.length === 0) throw misuse('ERR_INVALID_ARG_TYPE', 'path must be a non-empty string', 'pass a directory, file or block device')
  const r = await native.probePath(path)
  const backends = {} as Record<BackendName, { available: boolean; reason: string }>
  for (const b of r.backends) backends[b.name as BackendName] = { available: b.available, reason: b.reason }
  return {
    kernel: r.kernel,
    ...(r.ioUringDisabled != null ? { ioUringDisabled: r.ioUringDisabled } : {}),
    backends,
    direct: { works: r.direct.works, reason: r.direct.reason, tested: r.direct.tested },
    ...(r.alignment ? { alignment: r.alignment as Alignment } : {}),
    fsType: r.fsType,
    isBlockDevice: r.isBlockDevice,
  }
}
export * from './src/streams'
