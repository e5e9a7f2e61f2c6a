// Option checks, written once for open(), the streams and the whole-file helpers. Every value is
// read once (a getter or Proxy trap runs once), and every odd value (an object without a
// prototype, a Proxy that throws, a detached view, a Symbol) is refused with a coded
// DirectIoError whose message is built with describeValue(), which cannot throw.
import { BACKENDS, type BackendName } from './engine'
import { describeValue, misuse } from './errors'
import { callerCode } from './guard'
import { native } from './native'

export type OpenFlags = 'r' | 'r+' | 'rs+' | 'w' | 'wx' | 'xw' | 'w+' | 'wx+' | 'xw+'
export type DirectMode = 'require' | 'prefer' | 'off' | 'uncached'

export interface OpenOptions {
  /**
   * 'require' (default): O_DIRECT or a typed error. 'prefer': fall back to buffered I/O when the
   * filesystem refuses O_DIRECT (then `fh.direct === false`, `fh.fallbackReason` says why, and the
   * page cache is dropped behind each op: by the kernel with RWF_DONTCACHE where it has it, then
   * `fh.uncached === true`, else with POSIX_FADV_DONTNEED). 'off': buffered I/O through the same
   * engine. 'uncached': buffered I/O with RWF_DONTCACHE on every op (Linux 6.14+): any length and
   * alignment, the pages dropped by the kernel behind each op; a typed error where the filesystem
   * lacks it (see probe().uncached).
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

export interface CheckedOpenOptions {
  direct: DirectMode
  backend: 'auto' | BackendName
  dsync: boolean
  noatime: boolean
  mode: number
}

export const OPEN_KEYS = ['direct', 'backend', 'dsync', 'noatime', 'mode'] as const

/**
 * Copies the own enumerable properties of an options object once into a plain record. Keys not
 * in `known` are ignored (never read), as fs ignores options it does not know; keys named in
 * `unsupported` (options fs has that direct I/O cannot honour) are refused, saying why. A getter
 * or Proxy trap that throws: its error reaches the caller as the same object, as with fs.
 */
export function readOptions(o: unknown, known: readonly string[], example: string, unsupported: Readonly<Record<string, string>> = {}): Record<string, unknown> {
  if (o === undefined || o === null) return Object.create(null) as Record<string, unknown>
  let plain: boolean
  try {
    plain = typeof o === 'object' && !ArrayBuffer.isView(o) && !Array.isArray(o)
  } catch {
    plain = false // a revoked Proxy
  }
  if (!plain) {
    throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${describeValue(o)}`, `pass e.g. ${example}`)
  }
  const out = Object.create(null) as Record<string, unknown>
  const keys = callerCode(() => Object.keys(o as object))
  for (const k of keys) {
    if (Object.prototype.hasOwnProperty.call(unsupported, k)) {
      throw misuse('ERR_ODIRECT_UNSUPPORTED', `option '${k}' is not supported with direct I/O: ${unsupported[k]}`, `remove '${k}'`)
    }
    if (!known.includes(k)) continue
    out[k] = callerCode(() => (o as Record<string, unknown>)[k])
  }
  return out
}

export function oneOf<T extends string>(o: Record<string, unknown>, key: string, allowed: readonly T[], def: T, hint: string): T {
  const v = o[key]
  if (v === undefined) return def
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw misuse(typeof v === 'string' ? 'ERR_INVALID_ARG_VALUE' : 'ERR_INVALID_ARG_TYPE', `${key} must be ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describeValue(v)}`, hint)
  }
  return v as T
}

export function boolOption(o: Record<string, unknown>, key: string, def: boolean): boolean {
  const v = o[key]
  if (v === undefined) return def
  if (typeof v !== 'boolean') throw misuse('ERR_INVALID_ARG_TYPE', `${key} must be a boolean, got ${describeValue(v)}`, `pass ${key}: true or false`)
  return v
}

export function intOption(o: Record<string, unknown>, key: string, def: number, min: number, max: number, hint: string): number {
  const v = o[key]
  if (v === undefined) return def
  if (typeof v !== 'number') throw misuse('ERR_INVALID_ARG_TYPE', `${key} must be a number, got ${describeValue(v)}`, hint)
  if (!Number.isSafeInteger(v) || v < min || v > max) throw misuse('ERR_OUT_OF_RANGE', `${key} must be an integer from ${min} to ${max}, got ${describeValue(v)}`, hint)
  return v
}

export function signalOption(o: Record<string, unknown>): AbortSignal | undefined {
  const s = o.signal
  if (s === undefined) return undefined
  let ok = false
  try {
    ok = s !== null && typeof s === 'object' && typeof (s as AbortSignal).aborted === 'boolean' && typeof (s as AbortSignal).addEventListener === 'function'
  } catch {
    ok = false
  }
  if (!ok) throw misuse('ERR_INVALID_ARG_TYPE', `signal must be an AbortSignal, got ${describeValue(s)}`, 'pass AbortController.signal or AbortSignal.timeout(ms)')
  return s as AbortSignal
}

export function modeOption(o: Record<string, unknown>, def = 0o666): number {
  return intOption(o, 'mode', def, 0, 0o7777, 'e.g. 0o644')
}

/** The open() options, checked. */
export function checkOpenOptions(o: unknown): CheckedOpenOptions {
  return openFields(readOptions(o, OPEN_KEYS, "{ direct: 'require' }"))
}

/** The open() fields of an already read options record (streams and helpers share them). */
export function openFields(o: Record<string, unknown>): CheckedOpenOptions {
  return {
    direct: oneOf<DirectMode>(o, 'direct', ['require', 'prefer', 'off', 'uncached'], 'require', "use 'require' for O_DIRECT or an error, 'prefer' to fall back to buffered I/O, 'uncached' for RWF_DONTCACHE buffered I/O"),
    backend: oneOf<'auto' | BackendName>(o, 'backend', ['auto', ...BACKENDS], 'auto', "use 'auto' unless you need a specific engine"),
    dsync: boolOption(o, 'dsync', false),
    noatime: boolOption(o, 'noatime', false),
    mode: modeOption(o),
  }
}

/** The flags forms fs's name for them take: a flag string, or fs.constants O_* bits. */
export type FlagsArg = OpenFlags | number

const FLAGS_HINT = "use 'r', 'r+', 'w', 'wx', 'w+' or 'wx+', or fs.constants bits such as O_RDWR | O_CREAT (open or create without truncating)"

/**
 * Checks open flags with the native parser (the one source of truth): a flag string, or numeric
 * fs.constants bits (O_APPEND refused). `needWrite` refuses read-only flags. Returns the string
 * the native open takes (numbers as their decimal digits).
 */
export function checkFlags(flags: unknown, path?: string, needWrite = false): OpenFlags {
  const extra = path === undefined ? {} : { path }
  let s: string
  if (typeof flags === 'number') {
    if (!Number.isSafeInteger(flags) || flags < 0 || flags > 0x7fffffff) throw misuse('ERR_OUT_OF_RANGE', `numeric flags must be open(2) bits (a non-negative integer), got ${describeValue(flags)}`, FLAGS_HINT, extra)
    s = String(flags)
  } else if (typeof flags === 'string') s = flags
  else throw misuse('ERR_ODIRECT_FLAGS', `flags must be a string or fs.constants bits, got ${describeValue(flags)}`, FLAGS_HINT, extra)
  const bad = native.checkFlags(s)
  if (bad !== '') throw misuse('ERR_ODIRECT_FLAGS', bad, FLAGS_HINT, extra)
  if (needWrite && !isWritableFlags(s)) {
    throw misuse('ERR_ODIRECT_FLAGS', `flags '${s}' open read-only, this needs to write`, "use 'w' to create or truncate, 'r+' to overwrite in place", extra)
  }
  return s as OpenFlags
}

const O_ACCMODE = 3
const numericFlags = (flags: string): number | undefined => (/^\d+$/.test(flags) ? Number(flags) : undefined)
export const isWritableFlags = (flags: string): boolean => {
  const n = numericFlags(flags)
  return n === undefined ? flags !== 'r' : (n & O_ACCMODE) !== 0
}
export const isReadableFlags = (flags: string): boolean => {
  const n = numericFlags(flags)
  return n === undefined ? flags.startsWith('r') || flags.includes('+') : (n & O_ACCMODE) !== 1
}
/** Whether the flags create the file when it is missing ('w...', or O_CREAT). */
export const isCreatingFlags = (flags: string): boolean => {
  const n = numericFlags(flags)
  return n === undefined ? flags.includes('w') : (n & 0o100) !== 0
}
