import { readFileSync } from 'node:fs'

import { countArg } from './args'
import { allocAligned, allocSmallPages, PAGE_SIZE } from './buffers'
import { type BackendName, backendIndex, type Engine } from './engine'
import { errno as E, kernelError, misuse } from './errors'

/** One registration per backend and engine: the kernel keeps one buffer table per ring. */
const active = new Map<BackendName, RegisteredBuffers>()

/**
 * Buffers pinned in memory: registered with io_uring (IORING_REGISTER_BUFFERS, so reads and writes
 * from them use READ_FIXED / WRITE_FIXED and skip per-op page pinning), or mlock'ed on the aio and
 * thread-pool backends. Use `buffers[i]` (or subarrays of them) with any handle on that backend.
 */
export class RegisteredBuffers {
  readonly backend: BackendName
  #buffers: readonly Buffer[]
  #engine: Engine
  #released = false
  #onRelease: (r: RegisteredBuffers) => void

  /** @internal */
  constructor(engine: Engine, backend: BackendName, buffers: Buffer[], onRelease: (r: RegisteredBuffers) => void) {
    this.#engine = engine
    this.backend = backend
    this.#buffers = Object.freeze(buffers)
    this.#onRelease = onRelease
  }

  /** The pinned buffers (empty once unregistered: the memory is released then). */
  get buffers(): readonly Buffer[] {
    return this.#buffers
  }

  get registered(): boolean {
    return !this.#released
  }

  /** Unpins the buffers (they stay usable as ordinary aligned buffers). Idempotent. */
  unregister(): void {
    if (this.#released) return
    this.#released = true
    if (active.get(this.backend) === this) active.delete(this.backend)
    // Nothing here keeps the memory any more: views the caller still holds keep theirs.
    this.#buffers = Object.freeze([])
    this.#onRelease(this)
    const errno = this.#engine.unregisterBuffers(backendIndex(this.backend))
    if (errno !== 0) throw kernelError(errno, { syscall: 'io_uring_register' })
  }

  [Symbol.dispose](): void {
    this.unregister()
  }
}

/** Most bytes one registration may pin (io_uring caps each buffer at 1 GiB; this caps the sum). */
export const MAX_REGISTERED_BYTES = 2 ** 34

/** The errnos of pinning past RLIMIT_MEMLOCK (io_uring: ENOMEM; mlock: ENOMEM, EPERM, EAGAIN). */
function isMemlock(errno: number): boolean {
  return errno === E.ENOMEM || errno === E.EPERM || errno === E.EAGAIN
}

/** ', N bytes': this process's soft RLIMIT_MEMLOCK, from /proc/self/limits ('' if unreadable). */
function memlockLimit(): string {
  try {
    const m = /^Max locked memory\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return m ? `, ${m[1]}${m[1] === 'unlimited' ? '' : ' bytes'}` : ''
  } catch {
    return ''
  }
}

export function registerBuffers(engine: Engine, backend: BackendName, count: number, size: number, alignment: number, onRelease: (r: RegisteredBuffers) => void = () => {}): RegisteredBuffers {
  countArg(count, 'count', 16384, 'io_uring takes at most 16384 registered buffers')
  countArg(size, 'size', 1 << 30, 'io_uring registers buffers of up to 1 GiB each')
  const len = Math.ceil(size / alignment) * alignment
  if (count * len > MAX_REGISTERED_BYTES) {
    throw misuse('ERR_OUT_OF_RANGE', `count x size is ${count} x ${len} = ${count * len} bytes, more than ${MAX_REGISTERED_BYTES} (16 GiB) odirect pins at once`, 'register fewer or smaller buffers')
  }
  const allocate = (alloc: (len: number, alignment: number) => Buffer): Buffer[] => {
    try {
      return Array.from({ length: count }, () => alloc(len, Math.max(PAGE_SIZE, alignment)))
    } catch (e) {
      if (e instanceof RangeError) {
        throw misuse('ERR_ODIRECT_NOMEM', `allocating ${count} x ${len} bytes for registered buffers failed: ${e.message}`, 'register fewer or smaller buffers, or raise the memory limit', { cause: e })
      }
      throw e
    }
  }
  let buffers = allocate(allocAligned)
  const prev = active.get(backend)
  if (prev !== undefined) prev.unregister()
  let errno = engine.registerBuffers(backendIndex(backend), buffers)
  if (backend === 'io_uring' && isMemlock(errno)) {
    // odirect's memory from 32 KiB up is on transparent huge pages, and io_uring charges each
    // pinned huge page's whole 2 MiB to RLIMIT_MEMLOCK (mlock, the other backends, charges
    // the bytes locked): once more on small pages, charged 4 KiB each.
    buffers = allocate(allocSmallPages)
    errno = engine.registerBuffers(backendIndex(backend), buffers)
  }
  if (errno !== 0) {
    const e = kernelError(errno, { syscall: backend === 'io_uring' ? 'io_uring_register' : 'mlock', length: count * len })
    if (isMemlock(errno)) {
      throw misuse(
        'ERR_ODIRECT_MEMLOCK',
        `pinning ${count} x ${len} bytes failed with ${e.code}: RLIMIT_MEMLOCK (locked-memory limit${memlockLimit()}) is too low`,
        'raise it: `ulimit -l unlimited` in the shell, `prlimit --memlock=unlimited --pid <pid>`, LimitMEMLOCK= in a systemd unit, --ulimit memlock=-1 for docker; or register fewer/smaller buffers, or do without registration' +
          (backend === 'io_uring' ? ' (io_uring charges memory on a transparent huge page per whole 2 MiB page; odirect already retried on small pages, charged 4 KiB each)' : ''),
        { errno: e.errno, syscall: e.syscall, length: count * len, cause: e },
      )
    }
    throw e
  }
  const reg = new RegisteredBuffers(engine, backend, buffers, onRelease)
  active.set(backend, reg)
  return reg
}

