// Every argument check of the public API, written once: values are described without throwing
// (describe), the caller's own errors pass through unchanged and anything else uncoded becomes a
// coded DirectIoError (guard), options objects are read once (a getter or Proxy trap runs once;
// keys odirect does not know are ignored, as fs ignores them), and integers, positions, buffers,
// signals, timeouts, flags and paths each have one checker, so every entry point accepts and
// refuses the same values with the same code.
import { BACKENDS, type BackendName } from './engine'
import { misuse } from './errors'
import { native } from './native'

// ---------------------------------------------------------------------------------------------
// Describing values and coding what is thrown.

/**
 * A short description of any value for an error message; never throws (a Proxy whose traps throw,
 * an object without a prototype, a revoked Proxy, a Symbol all describe themselves).
 */
export function describe(v: unknown): string {
  try {
    if (v === null) return 'null'
    switch (typeof v) {
      case 'undefined':
        return 'undefined'
      case 'string':
        return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)
      case 'number':
      case 'boolean':
      case 'bigint':
        return `${typeof v} ${String(v)}${typeof v === 'bigint' ? 'n' : ''}`
      case 'symbol':
        return 'a symbol'
      case 'function':
        return 'a function'
    }
    if (Array.isArray(v)) return 'an array'
    if (ArrayBuffer.isView(v)) return `a ${Object.prototype.toString.call(v).slice(8, -1)}`
    const proto: unknown = Object.getPrototypeOf(v)
    if (proto === null) return 'an object with a null prototype'
    const ctor: unknown = (proto as { constructor?: unknown }).constructor
    const name = typeof ctor === 'function' ? (ctor as { name?: unknown }).name : undefined
    return typeof name === 'string' && name !== '' && name !== 'Object' ? `an instance of ${name}` : 'an object'
  } catch {
    return 'an unreadable value (a Proxy or object that throws)'
  }
}

// Errors thrown by the caller's own code (an option getter, a Proxy trap, an iterable, a
// callback) or by the runtime on the caller's behalf (Deno's permission checks): they reach the
// caller as the very same object, as fs/promises does, never renamed.
// The native exports object is in dictionary mode (many properties): a load from it is a generic
// LoadIC on every call, so the per-op paths read a copy made once here.
const MAX_IO_LENGTH: number = native.MAX_IO_LENGTH

const fromCaller = new WeakSet<object>()

/** Marks `e` as the caller's own error (passed through unchanged by `coded`); returns it. */
export function callerError<T>(e: T): T {
  if (e !== null && (typeof e === 'object' || typeof e === 'function')) fromCaller.add(e as object)
  return e
}

/** `o[key]`, what a getter or Proxy trap throws on the way marked as the caller's own (see `callerError`). */
export function callerGet(o: object, key: string | number): unknown {
  try {
    return (o as Record<string | number, unknown>)[key]
  } catch (e) {
    throw callerError(e)
  }
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

// ---------------------------------------------------------------------------------------------
// Options objects, flags and paths.

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

/** Options: a non-null object that is not a buffer or an array (arrays and views are refused everywhere). */
export function isOptionsObject(v: unknown): v is Record<string, unknown> {
  try {
    return v !== null && typeof v === 'object' && !ArrayBuffer.isView(v) && !Array.isArray(v)
  } catch {
    return false // a revoked Proxy
  }
}

/**
 * An options argument of a FileHandle method: undefined for undefined or null, the object itself
 * (its properties then read once each, where used) for an options object, else ERR_INVALID_ARG_TYPE.
 */
export function optionsArg(o: unknown, example: string): Record<string, unknown> | undefined {
  if (o === undefined || o === null) return undefined
  if (!isOptionsObject(o)) throw misuse('ERR_INVALID_ARG_TYPE', `options must be an object, got ${describe(o)}`, `pass e.g. ${example}`)
  return o
}

/**
 * Reads the options of `known` once each from an options object into a plain record, by property
 * access as fs reads its options: one the object inherits (`Object.create(defaults)`, a class's
 * getter) is given as much as its own (they were taken from its own keys only, and an inherited
 * `flag: 'wx'`, `exclusive`, `atomic`, a stream's `flags: 'r+'` and `start` were dropped: the
 * file was overwritten, truncated or written at 0: adversary-s22). Keys not in `known` are
 * ignored (never read), as fs ignores options it does not know; keys named in `unsupported`
 * (options fs has that direct I/O cannot honour) are refused when given, saying why. A getter
 * or Proxy trap that throws: its error reaches the caller as the same object, as with fs.
 */
export function readOptions(o: unknown, known: readonly string[], example: string, unsupported: Readonly<Record<string, string>> = {}): Record<string, unknown> {
  const given = optionsArg(o, example)
  const out = Object.create(null) as Record<string, unknown>
  if (given === undefined) return out
  // Only what the object has (`in`: own or inherited) is read: a strict config object whose get
  // trap throws for names it lacks is never asked for one it does not have.
  const has = (k: string): boolean => callerCode(() => k in given)
  for (const k of Object.keys(unsupported)) {
    if (has(k) && callerGet(given, k) !== undefined) {
      throw misuse('ERR_ODIRECT_UNSUPPORTED', `option '${k}' is not supported with direct I/O: ${unsupported[k]}`, `remove '${k}'`)
    }
  }
  for (const k of known) {
    if (!has(k)) continue
    const v = callerGet(given, k)
    if (v !== undefined) out[k] = v
  }
  return out
}

export function oneOf<T extends string>(o: Record<string, unknown>, key: string, allowed: readonly T[], def: T, hint: string): T {
  const v = o[key]
  if (v === undefined) return def
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw misuse(typeof v === 'string' ? 'ERR_INVALID_ARG_VALUE' : 'ERR_INVALID_ARG_TYPE', `${key} must be ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describe(v)}`, hint)
  }
  return v as T
}

export function boolOption(o: Record<string, unknown>, key: string, def: boolean): boolean {
  const v = callerGet(o, key)
  if (v === undefined) return def
  if (typeof v !== 'boolean') throw misuse('ERR_INVALID_ARG_TYPE', `${key} must be a boolean, got ${describe(v)}`, `pass ${key}: true or false`)
  return v
}

/**
 * An integer argument from `min` to `max`: ERR_INVALID_ARG_TYPE when not a number,
 * ERR_OUT_OF_RANGE when not a safe integer or outside the range.
 */
export function intArg(v: unknown, what: string, min: number, max: number, hint = `pass an integer from ${min} to ${max}`): number {
  if (typeof v !== 'number') throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a number, got ${describe(v)}`, hint)
  if (!Number.isSafeInteger(v) || v < min || v > max) throw misuse('ERR_OUT_OF_RANGE', `${what} must be an integer from ${min} to ${max}, got ${describe(v)}`, hint)
  return v
}

/**
 * A size or count from 1 to `max` (allocation sizes, buffer counts): anything else, a value that
 * is not a number included, is ERR_OUT_OF_RANGE.
 */
export function countArg(v: unknown, what: string, max: number, hint: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v > max) throw misuse('ERR_OUT_OF_RANGE', `${what} must be an integer from 1 to ${max}, got ${describe(v)}`, hint)
  return v
}

export function intOption(o: Record<string, unknown>, key: string, def: number, min: number, max: number, hint: string): number {
  const v = o[key]
  return v === undefined ? def : intArg(v, key, min, max, hint)
}

/**
 * An AbortSignal argument: undefined for none; else, as Node checks it, an object with an
 * `aborted` property (not read here: the op reads it once, when it starts) and an
 * `addEventListener` method, so a signal of another realm or a compatible polyfill works;
 * anything else ERR_INVALID_ARG_TYPE.
 */
export function signalArg(s: unknown): AbortSignal | undefined {
  if (s === undefined) return undefined
  let ok = false
  try {
    ok = s !== null && typeof s === 'object' && 'aborted' in s && typeof (s as AbortSignal).addEventListener === 'function'
  } catch {
    ok = false
  }
  if (!ok) throw misuse('ERR_INVALID_ARG_TYPE', `signal must be an AbortSignal, got ${describe(s)}`, 'pass AbortController.signal or AbortSignal.timeout(ms)')
  const signal = s as AbortSignal
  const add = signal.addEventListener
  if (!((add === eventTargetAdd || add === abortSignalAdd) && isRuntimeSignal(signal))) {
    // A signal-like object of its own (a polyfill, another realm's signal, a Proxy of one): its
    // addEventListener must work, or an op would start that its signal cannot follow (the call
    // rejecting while the op runs on, its own failure then an unhandled rejection). Tried now,
    // before anything starts.
    const probe = (): void => {}
    try {
      signal.addEventListener('abort', probe, { once: true })
    } catch (e) {
      throw misuse('ERR_INVALID_ARG_TYPE', `signal must be an AbortSignal: its addEventListener threw (${e instanceof Error ? e.message : describe(e)})`, 'pass AbortController.signal or AbortSignal.timeout(ms)', { cause: e })
    }
    unlisten(signal, probe)
  }
  return signal
}

/** The runtime's own addEventListener of signals (EventTarget's; Deno's AbortSignal has one of its own): known to work. */
const eventTargetAdd = typeof EventTarget === 'function' ? EventTarget.prototype.addEventListener : undefined
const abortSignalAdd = typeof AbortSignal === 'function' ? AbortSignal.prototype.addEventListener : undefined
const abortedGetter = typeof AbortSignal === 'function' ? Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted')?.get : undefined

/** Whether `s` is one of this realm's AbortSignals (its `aborted` getter's brand check passes: not a Proxy or a look-alike). */
function isRuntimeSignal(s: AbortSignal): boolean {
  try {
    abortedGetter?.call(s)
    return abortedGetter !== undefined
  } catch {
    return false
  }
}

/**
 * Removes `listener` from `signal` (any object with `aborted` and `addEventListener` is taken as
 * one): a `removeEventListener` that throws or is missing must not keep an op, a batch or a
 * stream from settling. (The listener then stays; it does nothing once its op settled.)
 */
export function unlisten(signal: AbortSignal | undefined, listener: (() => void) | undefined): void {
  if (signal === undefined || listener === undefined) return
  try {
    signal.removeEventListener?.('abort', listener)
  } catch {
    // see above
  }
}

export function signalOption(o: Record<string, unknown>): AbortSignal | undefined {
  return signalArg(o.signal)
}

/** A per-op `timeout` in milliseconds (undefined or null: none), rounded up to a whole millisecond. */
export function timeoutArg(t: unknown): number | undefined {
  if (t === undefined || t === null) return undefined
  if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0 || t > 2 ** 31 - 1) {
    throw misuse('ERR_OUT_OF_RANGE', `timeout must be a number of milliseconds from 1 to ${2 ** 31 - 1}, got ${describe(t)}`, 'pass e.g. { timeout: 5000 }')
  }
  return Math.ceil(t)
}

/** A Buffer encoding (`encoding` of writeFile, readFile, the streams, fh.write(string)); null and 'buffer': none. */
export function encodingArg(v: unknown, def: BufferEncoding | undefined, hint = "e.g. 'utf8', 'hex', 'base64', or null for Buffers"): BufferEncoding | undefined {
  if (v === undefined) return def
  if (v === null || v === 'buffer') return undefined
  if (typeof v !== 'string' || !Buffer.isEncoding(v)) throw misuse('ERR_INVALID_ARG_VALUE', `encoding must be a Buffer encoding, got ${describe(v)}`, hint)
  return v
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
    if (!Number.isSafeInteger(flags) || flags < 0 || flags > 0x7fffffff) throw misuse('ERR_OUT_OF_RANGE', `numeric flags must be open(2) bits (a non-negative integer), got ${describe(flags)}`, FLAGS_HINT, extra)
    s = String(flags)
  } else if (typeof flags === 'string') s = flags
  else throw misuse('ERR_ODIRECT_FLAGS', `flags must be a string or fs.constants bits, got ${describe(flags)}`, FLAGS_HINT, extra)
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

function urlToPath(u: URL): string {
  let protocol: string, hostname: string, pathname: string
  try {
    protocol = u.protocol
    hostname = u.hostname
    pathname = u.pathname
  } catch (e) {
    throw misuse('ERR_INVALID_URL', 'the URL could not be read', 'pass new URL("file:///path")', { cause: e })
  }
  if (protocol !== 'file:') throw misuse('ERR_INVALID_URL_SCHEME', `the URL must be of scheme file, got ${describe(protocol)}`, 'pass a file: URL or a path')
  if (hostname !== '' && hostname !== 'localhost') {
    throw misuse('ERR_INVALID_FILE_URL_HOST', `file URL host must be "localhost" or empty on Linux, got ${describe(hostname)}`, 'use file:///path (a remote host cannot be opened)')
  }
  if (/%2f/i.test(pathname)) throw misuse('ERR_INVALID_FILE_URL_PATH', 'file URL path must not include encoded / characters', 'use a literal /')
  let p: string
  try {
    p = decodeURIComponent(pathname)
  } catch (e) {
    throw misuse('ERR_INVALID_URL', `the file URL's path is not valid percent-encoded UTF-8: ${describe(pathname)}`, 'encode the path with encodeURIComponent or pathToFileURL()', { cause: e })
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
  } else throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a string, Buffer or file: URL, got ${describe(p)}`, 'pass a file path')
  if (s.length === 0) throw misuse('ERR_INVALID_ARG_VALUE', `${what} must not be empty`, 'pass a file path')
  if (s.includes('\0')) throw misuse('ERR_INVALID_ARG_VALUE', `${what} contains a NUL byte`, 'remove the NUL byte')
  return s
}


// ---------------------------------------------------------------------------------------------
// FileHandle arguments: positions, buffers, per-write flags, lock kinds.

/** A file position or length: a number or bigint from 0 to Number.MAX_SAFE_INTEGER. */
export function positionArg(p: unknown, what = 'position'): number {
  if (typeof p === 'bigint') {
    if (p < 0n || p > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw misuse('ERR_OUT_OF_RANGE', `${what} ${p} is out of range`, 'positions must be >= 0 and <= Number.MAX_SAFE_INTEGER')
    }
    return Number(p)
  }
  if (typeof p !== 'number') throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a number or bigint, got ${describe(p)}`, 'pass a byte offset in the file')
  if (!Number.isSafeInteger(p) || p < 0) throw misuse('ERR_OUT_OF_RANGE', `${what} must be a non-negative safe integer, got ${describe(p)}`, 'pass a whole byte offset >= 0')
  return p
}

/** fs semantics: null, undefined and -1 mean "the current position". */
export const isImplicitPosition = (p: unknown): boolean => p === undefined || p === null || p === -1 || p === -1n

/** True when the view has no bytes because its ArrayBuffer was detached (transferred). */
export function isDetached(view: ArrayBufferView): boolean {
  const b = view.buffer as ArrayBuffer & { detached?: boolean }
  if (typeof b.detached === 'boolean') return b.detached
  return view.byteLength === 0 && b.byteLength === 0 && native.isDetached(view)
}

/** A buffer argument: an ArrayBufferView that is not detached. */
export function viewArg(b: unknown, what = 'buffer'): ArrayBufferView {
  if (!ArrayBuffer.isView(b)) {
    throw misuse('ERR_INVALID_ARG_TYPE', `${what} must be a Buffer, Uint8Array, other TypedArray or DataView, got ${describe(b)}`, 'allocate one with fh.alloc(size) or allocAligned(size)')
  }
  if (b.byteLength === 0 && isDetached(b)) {
    throw misuse('ERR_ODIRECT_DETACHED', `${what} is detached (its ArrayBuffer was transferred)`, 'use a buffer that is not transferred or posted to a worker while in use')
  }
  return b
}

export const RWF_DSYNC = 0x2
export const RWF_SYNC = 0x4
export const RWF_ATOMIC = 0x40
export const RWF_DONTCACHE = 0x80

/** RWF_* flags from `{ dsync, sync, atomic }` (validated; refused on reads; `atomic` on write() only). */
export function rwFlags(o: Record<string, unknown> | undefined, syscall: string): number {
  if (o === undefined) return 0
  // Plain property reads, each once and in this order (a read through a variable key is a
  // megamorphic lookup on every op); each is checked before the next is read. What a getter
  // throws is the caller's own (odirect's checks throw coded errors, passed on as they are).
  try {
    return rwFlag(o.dsync, 'dsync', RWF_DSYNC, syscall) | rwFlag(o.sync, 'sync', RWF_SYNC, syscall) | rwFlag(o.atomic, 'atomic', RWF_ATOMIC, syscall)
  } catch (e) {
    throw callerError(e)
  }
}

function rwFlag(v: unknown, k: 'dsync' | 'sync' | 'atomic', bit: number, syscall: string): number {
  if (v === undefined || v === false) return 0
  if (v !== true) throw misuse('ERR_INVALID_ARG_TYPE', `option '${k}' must be a boolean, got ${describe(v)}`, `pass ${k}: true`)
  if (!syscall.startsWith('write')) throw misuse('ERR_INVALID_ARG_VALUE', `option '${k}' only applies to writes, not ${syscall}`, k === 'atomic' ? 'drop it' : `drop ${k}, or use fh.datasync() / fh.sync()`)
  if (k === 'atomic' && syscall !== 'write') throw misuse('ERR_INVALID_ARG_VALUE', `option 'atomic' applies to write(), not ${syscall}`, 'use fh.write(buffer, { position, atomic: true })')
  return bit
}

/** `{ datasync }` of writev / writeMany: a boolean, default false. */
export function datasyncOption(o: Record<string, unknown> | undefined): boolean {
  return o === undefined ? false : boolOption(o, 'datasync', false)
}

/** `{ exclusive }` of lock() / tryLock(): true (the default) for an exclusive lock. */
export function lockExclusive(options: unknown): boolean {
  const o = optionsArg(options, '{ exclusive: false } for a shared lock')
  return o === undefined ? true : boolOption(o, 'exclusive', true)
}

/** What `fh.read` / `fh.write` were asked, from fs/promises' argument forms. */
export interface RwArgs {
  buffer: ArrayBufferView
  offset: number
  length: number
  /** As given: implicit (see isImplicitPosition) or checked by the handle with position(). */
  position: unknown
  signal: AbortSignal | undefined
  timeout: number | undefined
  /** pwritev2 flags (RWF_DSYNC / RWF_SYNC / RWF_ATOMIC) of a write; 0 otherwise. */
  rwFlags: number
}

/**
 * Parses fs/promises' read/write argument forms: `(buffer, offset?, length?, position?)`,
 * `(buffer, { offset, length, position, ... })` and, for reads, `({ buffer, ... })`.
 * `defaultBuffer` makes the buffer of a read that names none.
 */
export function rwArgs(syscall: 'read' | 'write', a: unknown, b: unknown, c: unknown, d: unknown, defaultBuffer: () => ArrayBufferView): RwArgs {
  // The buffer is measured before any option is read: an option getter that detaches or
  // shrinks it then makes the native capture (which re-measures) refuse the op.
  let o: Record<string, unknown> | undefined
  let buffer: unknown
  if (isOptionsObject(a)) {
    // read({ buffer, offset, length, position, signal, timeout })
    if (syscall === 'write') throw misuse('ERR_INVALID_ARG_TYPE', `buffer must be a Buffer, TypedArray, DataView or string, got ${describe(a)}`, 'call fh.write(buffer, offset, length, position) or fh.write(buffer, { position })')
    o = a
    try {
      buffer = o.buffer
    } catch (e) {
      throw callerError(e)
    }
    if (buffer === undefined) buffer = defaultBuffer()
  } else {
    buffer = a
    if (buffer === undefined && syscall === 'read') buffer = defaultBuffer()
    if (isOptionsObject(b)) o = b
  }
  const v = viewArg(buffer)
  const size = v.byteLength
  let offset: unknown
  let length: unknown
  let pos: unknown
  if (o !== undefined) {
    // Plain property reads (each getter runs once), kept monomorphic for the hot path; what a
    // getter or Proxy trap throws is the caller's own.
    try {
      offset = o.offset
      length = o.length
      pos = o.position
    } catch (e) {
      throw callerError(e)
    }
  } else {
    offset = b
    length = c
    pos = d
    if (isOptionsObject(c) || isOptionsObject(d)) {
      throw misuse(
        'ERR_INVALID_ARG_TYPE',
        `${syscall}(buffer, offset, length, position) takes numbers (fs/promises' form); got an object as ${isOptionsObject(c) ? 'length' : 'position'}`,
        `pass options as the second argument: fh.${syscall}(buffer, { position, signal, timeout })`,
      )
    }
  }
  const off = offset === undefined || offset === null ? 0 : intArg(offset, 'offset', 0, size)
  const len = length === undefined || length === null ? size - off : intArg(length, 'length', 0, size - off)
  if (len > MAX_IO_LENGTH) throw misuse('ERR_OUT_OF_RANGE', `length ${len} is more than ${MAX_IO_LENGTH} bytes, the most one I/O can move`, 'split the transfer into several ops')
  let signal: AbortSignal | undefined
  let timeout: number | undefined
  if (o !== undefined) {
    // Named reads (not callerGet's keyed one) on the hot path; each checked before the next is read.
    let sv: unknown
    let tv: unknown
    try {
      sv = o.signal
    } catch (e) {
      throw callerError(e)
    }
    signal = signalArg(sv)
    try {
      tv = o.timeout
    } catch (e) {
      throw callerError(e)
    }
    timeout = timeoutArg(tv)
  }
  return { buffer: v, offset: off, length: len, position: pos, signal, timeout, rwFlags: rwFlags(o, syscall) }
}
