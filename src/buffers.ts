import { misuse } from './errors'
import { coded, countArg, describe } from './args'
import { native } from './native'

/** Bytes that fit in one read or write (the kernel's MAX_RW_COUNT; Rust `consts::MAX_IO_LENGTH`). */
export const MAX_IO_LENGTH: number = native.MAX_IO_LENGTH

export const PAGE_SIZE: number = native.pageSize()

/**
 * Address of the first byte of a view (or ArrayBuffer), as a number. Throws ERR_INVALID_ARG_TYPE
 * for anything else and ERR_ODIRECT_DETACHED for a detached buffer.
 */
export function addressOf(view: ArrayBufferView | ArrayBuffer): number {
  try {
    return addressOfInner(view)
  } catch (e) {
    throw coded(e, 'addressOf')
  }
}

function addressOfInner(view: ArrayBufferView | ArrayBuffer): number {
  const isView = ArrayBuffer.isView(view)
  if (!isView && !(view instanceof ArrayBuffer)) {
    throw misuse('ERR_INVALID_ARG_TYPE', `addressOf needs a Buffer, TypedArray, DataView or ArrayBuffer, got ${describe(view)}`, 'pass the buffer whose address you want')
  }
  const a = native.addressOf(view)
  if (a < 0) {
    const len = isView ? (view as ArrayBufferView).byteLength : (view as ArrayBuffer).byteLength
    if (len === 0) throw misuse('ERR_ODIRECT_DETACHED', 'the buffer is detached or empty: it has no address', 'pass a buffer with at least one byte')
    throw misuse('ERR_INVALID_ARG_TYPE', 'addressOf could not read the buffer', 'pass a Buffer, TypedArray, DataView or ArrayBuffer')
  }
  return a
}

const isPow2 = (n: number): boolean => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0

/**
 * Allocates `size` zeroed bytes whose address is a multiple of `alignment` (a power of two,
 * default: the page size), as a `Buffer`.
 *
 * The memory is odirect's own (an external ArrayBuffer over an aligned native allocation): it is
 * freed only when the ArrayBuffer is collected AND the last op using it has completed, so
 * transferring, posting or detaching the buffer while I/O is pending cannot let the kernel write
 * into freed memory, and ops on it go to the kernel without a copy. Where the runtime refuses
 * external buffers (Electron's V8 sandbox) it is an over-allocated V8 ArrayBuffer viewed at an
 * aligned offset instead, and ops on it go through odirect's bounce buffers.
 */
export function allocAligned(size: number, alignment: number = PAGE_SIZE): Buffer {
  try {
    return allocAlignedInner(size, alignment)
  } catch (e) {
    throw coded(e, 'allocAligned')
  }
}

/**
 * For odirect's own streams, which overwrite the memory before showing any of it: as
 * allocAligned, but a block reused from this process's freed ones keeps its old bytes (no memset).
 * @internal
 */
export function allocForOverwrite(size: number, alignment: number): Buffer {
  return allocAlignedInner(size, alignment, false)
}

/**
 * For registered buffers under a small RLIMIT_MEMLOCK: as allocAligned, but never on a
 * transparent huge page (io_uring charges a pinned huge page's whole 2 MiB to the limit).
 * @internal
 */
export function allocSmallPages(size: number, alignment: number): Buffer {
  return allocAlignedInner(size, alignment, true, true)
}

function allocAlignedInner(size: number, alignment: number, zeroed = true, smallPages = false): Buffer {
  countArg(size, 'size', MAX_IO_LENGTH, 'pass the number of bytes to allocate, e.g. 1 << 20 (at most what one I/O can move; allocate several buffers for more)')
  if (typeof alignment !== 'number' || !isPow2(alignment) || alignment > 1 << 30) {
    throw misuse('ERR_INVALID_ARG_VALUE', `alignment must be a power of two up to 1 GiB, got ${describe(alignment)}`, 'use 512, 4096 (the default) or fh.alignment.memory')
  }
  let owned: ArrayBuffer | null
  try {
    owned = native.allocOwned(size, alignment, zeroed, smallPages)
  } catch (e) {
    throw misuse('ERR_ODIRECT_NOMEM', `cannot allocate ${size} bytes aligned to ${alignment}: ${(e as Error).message}`, 'allocate less, or free buffers you no longer use', { cause: e })
  }
  if (owned !== null) return Buffer.from(owned, 0, size)
  let ab: ArrayBuffer
  try {
    ab = new ArrayBuffer(size + alignment)
  } catch (e) {
    throw misuse('ERR_ODIRECT_NOMEM', `cannot allocate ${size} bytes: ${(e as Error).message}`, 'allocate less, or free buffers you no longer use', { cause: e })
  }
  const base = native.addressOf(ab)
  const off = (alignment - (base % alignment)) % alignment
  return Buffer.from(ab, off, size)
}
