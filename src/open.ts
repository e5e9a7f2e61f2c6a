// open(), configureEngine(), the backend policy and probe(): what index.ts re-exports. Paths may be
// strings, Buffers (UTF-8) or file: URLs (checked by args.ts toPath, with Node's codes for bad URLs).
import { BACKENDS, type BackendName, type Engine, type EngineOptions, getEngine as startEngine, engineInfo } from './engine'
import { checkFlags, checkOpenOptions, describe, type FlagsArg, guardAsync, intArg, isCreatingFlags, isReadableFlags, isWritableFlags, type OpenOptions, optionsArg, type PathLike, toPath } from './args'
import { DirectIoError, errno as E, kernelError, misuse } from './errors'
import { type Alignment, FileHandle } from './handle'
import { native } from './native'
import * as nodePath from 'node:path'

export type { DirectMode, FlagsArg, OpenFlags, OpenOptions, PathLike } from './args'

/** `v instanceof FileHandle`, false (not a throw) for a revoked Proxy. */
export const isFileHandle = (v: unknown): v is FileHandle => {
  try {
    return v instanceof FileHandle
  } catch {
    return false
  }
}

/**
 * This thread's engine, started on the first call. Its start makes descriptors (an eventfd, the
 * ring): a full descriptor table fails it with the kernel's errno in the native message
 * ("eventfd: Too many open files (os error 24)"), which is turned into the typed kernel error
 * (EMFILE with its hint) instead of an uncoded GenericFailure. A failed start is not kept: the
 * next call tries again.
 */
function getEngine(path?: string): Engine {
  try {
    return startEngine()
  } catch (e) {
    if (e instanceof DirectIoError || !(e instanceof Error)) throw e
    const m = /^(\w+): .*\(os error (\d+)\)/.exec(e.message)
    if (m === null) throw misuse('ERR_ODIRECT_BACKEND', `the I/O engine could not start: ${e.message}`, 'see odirect probe', { cause: e })
    throw kernelError(Number(m[2]), { syscall: m[1], ...(path === undefined ? {} : { path }) })
  }
}

/** Configures this thread's engine; call before opening files with the io_uring backend. */
export function configureEngine(options: EngineOptions): void {
  const o = optionsArg(options, '{ sqpoll: 50 }')
  if (o === undefined) throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${describe(options)}`, 'pass e.g. { sqpoll: 50 }')
  // Every option is checked before any is applied: a refused call changes nothing.
  const sq = o.sqpoll
  if (sq !== undefined) intArg(sq, 'sqpoll', 0, 60_000, 'an integer number of milliseconds, e.g. { sqpoll: 50 }')
  const wait = o.waitMicros
  if (wait !== undefined) intArg(wait, 'waitMicros', 0, 1000, 'an integer number of microseconds from 0 (off) to 1000, e.g. { waitMicros: 50 }')
  if (sq !== undefined) {
    const why = getEngine().native.setSqpoll(sq as number)
    if (why !== '') throw misuse('ERR_ODIRECT_BACKEND', why, 'call configureEngine() before the first open() on this thread')
  }
  if (wait !== undefined) getEngine().native.setWaitMicros(wait as number)
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
  if (errno !== E.ENOENT || syscall !== 'open') return e
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
  // The engine takes the descriptor as the open completes: closed at teardown even when this
  // environment (a terminated worker) never runs the code below.
  const engine = getEngine(p)
  // The backend is settled before the open (adversary-s22): refused after it (an ODIRECT_BACKEND
  // typo, `backend: 'io_uring'` where a seccomp profile blocks io_uring), the open had already
  // emptied the file ('w', O_TRUNC) or created it ('wx' then failed EEXIST on a retry). Each
  // answer the open may give (direct or not) must have a backend; 'prefer' where only one of them
  // has one is still decided after the open.
  const modes = opts.direct === 'require' ? [true] : opts.direct === 'prefer' ? [true, false] : [false]
  const chosen = modes.map((d): { backend?: BackendName; refusal?: unknown } => {
    try {
      return { backend: chooseBackend(opts.backend, d, p) }
    } catch (e) {
      return { refusal: e }
    }
  })
  if (chosen.every((c) => c.backend === undefined)) throw chosen[0].refusal
  const r = await native.openFile(p, f, opts.direct, opts.dsync, opts.noatime, opts.mode, engine.native)
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
    backend = chosen[modes.indexOf(r.direct)]?.backend ?? chooseBackend(opts.backend, r.direct, p)
  } catch (e) {
    // Closed and no longer tracked by the engine (a later descriptor may get the number).
    engine.native.closeSync(r.fd)
    throw e
  }
  return new FileHandle(engine, {
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
