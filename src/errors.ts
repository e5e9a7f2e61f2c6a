import { native } from './native'

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
  | 'ERR_INVALID_ARG_TYPE'
  | 'ERR_INVALID_ARG_VALUE'
  | 'ERR_OUT_OF_RANGE'
  | 'ABORT_ERR'

export interface DirectIoErrorInit {
  code: string
  errno?: number
  syscall?: string
  path?: string
  position?: number
  length?: number
  hint?: string
  cause?: unknown
}

/**
 * Every error odirect throws or rejects with. `code` is a kernel errno name ('EIO', 'ENOSPC',
 * 'EINVAL'...) for failures the kernel reported, or an `ERR_ODIRECT_*` / Node-style code for
 * misuse caught before any system call. `hint` says how to fix it.
 */
export class DirectIoError extends Error {
  readonly code: string
  /** Negative errno, as in Node's fs errors (-5 for EIO); undefined for misuse errors. */
  readonly errno?: number
  readonly syscall?: string
  readonly path?: string
  readonly position?: number
  readonly length?: number
  readonly hint: string

  constructor(message: string, init: DirectIoErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause })
    this.name = init.code === 'ABORT_ERR' ? 'AbortError' : 'DirectIoError'
    this.code = init.code
    if (init.errno !== undefined) this.errno = init.errno
    if (init.syscall !== undefined) this.syscall = init.syscall
    if (init.path !== undefined) this.path = init.path
    if (init.position !== undefined) this.position = init.position
    if (init.length !== undefined) this.length = init.length
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

/** A kernel error from a positive errno value. */
export function kernelError(errno: number, ctx: KernelErrorContext, detail?: string): DirectIoError {
  const info = native.errnoInfo(errno, ctx.syscall)
  const where = [ctx.path, ctx.position !== undefined ? `position ${ctx.position}` : undefined, ctx.length !== undefined ? `length ${ctx.length}` : undefined]
    .filter((x) => x !== undefined)
    .join(', ')
  const msg = `${info.code}: ${detail ?? info.message}, ${ctx.syscall}${where ? ` (${where})` : ''}${info.hint ? ` — ${info.hint}` : ''}`
  return new DirectIoError(msg, { code: info.code, errno: -errno, hint: info.hint, ...ctx })
}

export function abortError(signal: AbortSignal, ctx: KernelErrorContext): DirectIoError {
  return new DirectIoError(`The operation was aborted (${ctx.syscall}${ctx.path ? ` on ${ctx.path}` : ''})`, {
    code: 'ABORT_ERR',
    hint: 'the AbortSignal passed to this operation was aborted; the buffer is free to reuse',
    cause: signal.reason,
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
