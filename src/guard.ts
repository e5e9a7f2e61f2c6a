// Every public entry point answers any JS value with a coded error: values that throw when
// looked at (revoked Proxies, throwing getters, objects without a primitive value) become a
// DirectIoError 'ERR_INVALID_ARG_VALUE' whose `cause` is what was thrown.
import { DirectIoError, misuse } from './errors'

/** `v` described without running any of its code (no toString, no getters). */
export function describe(v: unknown): string {
  switch (typeof v) {
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(v)
    case 'bigint':
      return `${v.toString()}n`
    case 'string':
      return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)
    case 'symbol':
      return 'a symbol'
    case 'function':
      return 'a function'
    default:
      if (v === null) return 'null'
      try {
        if (Array.isArray(v)) return 'an array'
        if (ArrayBuffer.isView(v)) return 'a typed array or DataView'
      } catch {
        return 'a revoked Proxy'
      }
      return 'an object'
  }
}

// Errors thrown by the caller's own code (an option getter, a Proxy trap, an iterable, a
// callback) or by the runtime on the caller's behalf (Deno's permission checks): they reach the
// caller as the very same object, as fs/promises does, never renamed.
const fromCaller = new WeakSet<object>()

/** Marks `e` as the caller's own error (passed through unchanged by `coded`); returns it. */
export function callerError<T>(e: T): T {
  if (e !== null && (typeof e === 'object' || typeof e === 'function')) fromCaller.add(e as object)
  return e
}

/** Runs the caller's code `fn`: whatever it throws is marked as the caller's own (see `callerError`). */
export function callerCode<T>(fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    throw callerError(e)
  }
}

/** `e` if it already carries a string `code` (or is the caller's own), else a coded wrapper saying where it came from. */
export function coded(e: unknown, where: string): unknown {
  if (e !== null && (typeof e === 'object' || typeof e === 'function') && fromCaller.has(e as object)) return e
  let code: unknown
  try {
    code = e !== null && typeof e === 'object' ? (e as { code?: unknown }).code : undefined
  } catch {
    code = undefined
  }
  if (typeof code === 'string' && e instanceof Error) return e
  let msg = 'a value threw when read'
  try {
    if (e instanceof Error && typeof e.message === 'string') msg = e.message
  } catch {
    // keep the generic text
  }
  return misuse('ERR_INVALID_ARG_VALUE', `${where}: an argument could not be used (${msg})`, 'pass plain values: numbers, strings, Buffers and plain option objects (not Proxies or objects with throwing getters)', { cause: e })
}

/** Runs `fn`, turning anything uncoded it throws into a coded error. */
export function guard<T>(where: string, fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    throw coded(e, where)
  }
}

/** As `guard` for promise-returning bodies: sync throws and rejections both come out coded. */
export function guardAsync<T>(where: string, fn: () => Promise<T>): Promise<T> {
  try {
    return fn().then(undefined, (e: unknown) => Promise.reject(coded(e, where)))
  } catch (e) {
    return Promise.reject(coded(e, where))
  }
}

export { DirectIoError }
