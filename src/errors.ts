import { readdirSync, readFileSync } from 'node:fs'
import { constants as osConstants } from 'node:os'

import { native } from './native'

export const errno = osConstants.errno
const errno_ = errno

/** Codes odirect uses for misuse caught before any system call (kernel errors use their errno code: 'EIO', 'ENOSPC'...). */
export type MisuseCode =
  | 'ERR_ODIRECT_ALIGNMENT'
  | 'ERR_ODIRECT_CLOSED'
  | 'ERR_ODIRECT_DETACHED'
  | 'ERR_ODIRECT_FLAGS'
  | 'ERR_ODIRECT_BACKEND'
  | 'ERR_ODIRECT_NOT_DIRECT'
  | 'ERR_ODIRECT_MEMLOCK'
  | 'ERR_ODIRECT_TIMEOUT'
  | 'ERR_ODIRECT_NOMEM'
  /** An option fs has that direct I/O cannot honour (the message names it). */
  | 'ERR_ODIRECT_UNSUPPORTED'
  /** copyFile / odirect cp with the source and destination the same file (same device and inode). */
  | 'ERR_ODIRECT_SAME_FILE'
  /** copyFile({ verify: true }): the copy's sha256 differs from the source's. */
  | 'ERR_ODIRECT_VERIFY'
  /** write({ atomic: true }) that the file cannot make untorn (no RWF_ATOMIC there, or the size/position/segments outside fh.alignment's atomicWrite limits). */
  | 'ERR_ODIRECT_ATOMIC'
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_INVALID_URL'
  | 'ERR_INVALID_URL_SCHEME'
  | 'ERR_INVALID_FILE_URL_HOST'
  | 'ERR_INVALID_FILE_URL_PATH'
  | 'ABORT_ERR'

/** Linux errno names, as `code` of errors the kernel reported. */
export type ErrnoCode =
  | 'E2BIG' | 'EACCES' | 'EADDRINUSE' | 'EADDRNOTAVAIL' | 'EAFNOSUPPORT' | 'EAGAIN' | 'EALREADY' | 'EBADF' | 'EBADMSG' | 'EBUSY'
  | 'ECANCELED' | 'ECHILD' | 'ECONNABORTED' | 'ECONNREFUSED' | 'ECONNRESET' | 'EDEADLK' | 'EDESTADDRREQ' | 'EDOM' | 'EDQUOT' | 'EEXIST'
  | 'EFAULT' | 'EFBIG' | 'EHOSTUNREACH' | 'EIDRM' | 'EILSEQ' | 'EINPROGRESS' | 'EINTR' | 'EINVAL' | 'EIO' | 'EISCONN' | 'EISDIR'
  | 'ELOOP' | 'EMFILE' | 'EMLINK' | 'EMSGSIZE' | 'EMULTIHOP' | 'ENAMETOOLONG' | 'ENETDOWN' | 'ENETRESET' | 'ENETUNREACH' | 'ENFILE'
  | 'ENOBUFS' | 'ENODATA' | 'ENODEV' | 'ENOENT' | 'ENOEXEC' | 'ENOLCK' | 'ENOLINK' | 'ENOMEM' | 'ENOMSG' | 'ENOPROTOOPT' | 'ENOSPC'
  | 'ENOSR' | 'ENOSTR' | 'ENOSYS' | 'ENOTCONN' | 'ENOTDIR' | 'ENOTEMPTY' | 'ENOTSOCK' | 'ENOTSUP' | 'ENOTTY' | 'ENXIO' | 'EOPNOTSUPP'
  | 'EOVERFLOW' | 'EPERM' | 'EPIPE' | 'EPROTO' | 'EPROTONOSUPPORT' | 'EPROTOTYPE' | 'ERANGE' | 'EROFS' | 'ESPIPE' | 'ESRCH' | 'ESTALE'
  | 'ETIME' | 'ETIMEDOUT' | 'ETXTBSY' | 'EWOULDBLOCK' | 'EXDEV' | 'EREMOTEIO' | 'EUCLEAN' | 'ENOMEDIUM' | 'EKEYEXPIRED'
  /** An errno this list does not name ('E' followed by the number). */
  | `E${number}`

/** Every `code` a {@link DirectIoError} can have: a typo such as 'ERR_ODIRECT_ALIGNMNT' does not compile. */
export type DirectIoErrorCode = MisuseCode | ErrnoCode

export interface DirectIoErrorInit {
  code: DirectIoErrorCode
  errno?: number
  syscall?: string
  path?: string
  position?: number
  length?: number
  hint?: string
  cause?: unknown
  /** writeFile / write streams: bytes of the data confirmed written before the failure. */
  bytesWritten?: number
}

/**
 * Every error odirect throws or rejects with. `code` is a kernel errno name ('EIO', 'ENOSPC',
 * 'EINVAL'...) for failures the kernel reported, or an `ERR_ODIRECT_*` / Node-style code for
 * misuse caught before any system call. `hint` says how to fix it.
 */
export class DirectIoError extends Error {
  readonly code: DirectIoErrorCode
  /** Negative errno, as in Node's fs errors (-5 for EIO); undefined for misuse errors. */
  readonly errno?: number
  readonly syscall?: string
  readonly path?: string
  readonly position?: number
  readonly length?: number
  readonly hint: string
  /** writeFile: bytes of the data confirmed written (in order, from the start) before the failure. */
  readonly bytesWritten?: number

  constructor(message: string, init: DirectIoErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause })
    this.name = init.code === 'ABORT_ERR' ? 'AbortError' : 'DirectIoError'
    this.code = init.code
    if (init.errno !== undefined) this.errno = init.errno
    if (init.syscall !== undefined) this.syscall = init.syscall
    if (init.path !== undefined) this.path = init.path
    if (init.position !== undefined) this.position = init.position
    if (init.length !== undefined) this.length = init.length
    if (init.bytesWritten !== undefined) this.bytesWritten = init.bytesWritten
    this.hint = init.hint ?? ''
  }
}

/** A misuse error (no system call was made). */
export function misuse(code: MisuseCode, message: string, hint: string, extra: Partial<DirectIoErrorInit> = {}): DirectIoError {
  return new DirectIoError(`${message}${hint ? ` — ${hint}` : ''}`, { ...extra, code, hint })
}

export interface KernelErrorContext {
  syscall: string
  path?: string
  position?: number
  length?: number
}

/**
 * This process's file size limit (RLIMIT_FSIZE, `ulimit -f`: writes past it fail EFBIG, or are cut
 * short at it), in bytes: Infinity when there is none or it cannot be read. Asked only on a
 * failure's path (EFBIG, or a write the kernel cut short or refused).
 */
export function fileSizeLimit(): number {
  try {
    const m = /^Max file size\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    const n = m === null || m[1] === 'unlimited' ? Infinity : Number(m[1])
    return Number.isFinite(n) ? n : Infinity
  } catch {
    return Infinity
  }
}

/** EFBIG's hint, naming the process's file size limit when it has one (the usual cause then). */
function efbigHint(hint: string): string {
  const limit = fileSizeLimit()
  return limit === Infinity ? hint : `this process may not write past byte ${limit} of any file (RLIMIT_FSIZE, \`ulimit -f\`): raise that limit, or write less; else ${hint}`
}

/**
 * `[tasks, limit]`: the processes and threads of this process's real user (what RLIMIT_NPROC
 * counts: /proc/PID/status `Threads` of each process whose real Uid is ours) and this process's
 * soft RLIMIT_NPROC; undefined when there is no limit or /proc cannot say. Asked only on an
 * ECANCELED that no signal, timeout or close explains.
 */
function nprocUse(): [number, number] | undefined {
  try {
    const m = /^Max processes\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    if (m === null || m[1] === 'unlimited') return undefined
    const limit = Number(m[1])
    const uid = String(process.getuid?.() ?? -1)
    let tasks = 0
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue
      let st: string
      try {
        st = readFileSync(`/proc/${pid}/status`, 'utf8')
      } catch {
        continue // gone meanwhile
      }
      if (/^Uid:\s+(\d+)/m.exec(st)?.[1] === uid) tasks += Number(/^Threads:\s+(\d+)/m.exec(st)?.[1] ?? 1)
    }
    return Number.isFinite(limit) ? [tasks, limit] : undefined
  } catch {
    return undefined
  }
}

/**
 * ECANCELED's hint. An op odirect did not cancel that completes ECANCELED on io_uring: the kernel
 * hands the ops that would block (O_DIRECT writes that extend a file, fsync...) to io-wq worker
 * threads, and when it cannot start one (this user at RLIMIT_NPROC: each is a thread of this
 * process) it cancels the op. Named when the user is at its limit (was: only the AbortSignal,
 * close() and linked-chain causes, none of which applied).
 */
let nprocSeen: { use: [number, number] | undefined } | undefined
function ecanceledHint(hint: string): string {
  // One /proc scan (2.5 ms over 109 processes at load 4) for a burst of such errors (a batch's, a
  // chain's): the answer is kept until the event loop's next turn.
  if (nprocSeen === undefined) {
    nprocSeen = { use: nprocUse() }
    setImmediate(() => (nprocSeen = undefined))
  }
  const use = nprocSeen.use
  if (use === undefined || use[0] < use[1]) return hint
  return `io_uring's io-wq could not start a worker thread for this op: this user has ${use[0]} processes and threads, at its limit RLIMIT_NPROC = ${use[1]} (\`ulimit -u\`); raise it (\`ulimit -u\`, \`prlimit --nproc=N --pid <pid>\`, LimitNPROC= in a systemd unit) or open with { backend: 'aio' } or 'threadpool' (ODIRECT_BACKEND=aio), which start no such threads; else ${hint}`
}

/** A kernel error from a positive errno value. */
export function kernelError(errno: number, ctx: KernelErrorContext, detail?: string): DirectIoError {
  const native_ = native.errnoInfo(errno, ctx.syscall)
  const info =
    errno === errno_.EFBIG && native_.hint
      ? { ...native_, hint: efbigHint(native_.hint) }
      : errno === errno_.ECANCELED && native_.hint
        ? { ...native_, hint: ecanceledHint(native_.hint) }
        : native_
  const where = [ctx.path, ctx.position !== undefined ? `position ${ctx.position}` : undefined, ctx.length !== undefined ? `length ${ctx.length}` : undefined]
    .filter((x) => x !== undefined)
    .join(', ')
  const msg = `${info.code}: ${detail ?? info.message}, ${ctx.syscall}${where ? ` (${where})` : ''}${info.hint ? ` — ${info.hint}` : ''}`
  return new DirectIoError(msg, { code: info.code as ErrnoCode, errno: -errno, hint: info.hint, ...ctx })
}

/** `signal.reason`, or what reading it threw (a signal-like object's getter). */
export function reasonOf(signal: AbortSignal): unknown {
  try {
    return signal.reason
  } catch (e) {
    return e
  }
}

export function abortError(signal: AbortSignal, ctx: KernelErrorContext): DirectIoError {
  return new DirectIoError(`The operation was aborted (${ctx.syscall}${ctx.path ? ` on ${ctx.path}` : ''})`, {
    code: 'ABORT_ERR',
    hint: 'the AbortSignal passed to this operation was aborted; the buffer is free to reuse',
    cause: reasonOf(signal),
    ...ctx,
  })
}

export function timeoutError(ctx: Partial<KernelErrorContext>): DirectIoError {
  return new DirectIoError(`The operation timed out (${ctx.syscall ?? 'op'}${ctx.path ? ` on ${ctx.path}` : ''})`, {
    code: 'ERR_ODIRECT_TIMEOUT',
    hint: 'the op was cancelled after its { timeout } elapsed; the device or filesystem may be slow or hung',
    ...ctx,
  })
}
