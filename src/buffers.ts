import { misuse } from './errors'
import { native } from './native'

/** Bytes that fit in one read or write (the kernel's MAX_RW_COUNT). */
export const MAX_IO_LENGTH = 0x7ffff000

export const PAGE_SIZE: number = native.pageSize()

const bases = new WeakMap<ArrayBufferLike, number>()

/** Address of the first byte of a view (V8 backing stores do not move; cached per buffer). */
export function addressOf(view: ArrayBufferView): number {
  const buf = view.buffer
  let base = bases.get(buf)
  if (base === undefined) {
    base = native.addressOf(view) - view.byteOffset
    bases.set(buf, base)
  }
  return base + view.byteOffset
}

const isPow2 = (n: number): boolean => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0

/**
 * Allocates `size` zeroed bytes whose address is a multiple of `alignment` (a power of two,
 * default: the page size). The memory is an ordinary V8 ArrayBuffer, over-allocated and viewed
 * at an aligned offset, so it works where external buffers are refused (Electron's V8 sandbox)
 * and in Bun and Deno; the view's `.buffer` is larger than the view.
 */
export function allocAligned(size: number, alignment: number = PAGE_SIZE): Buffer {
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) {
    throw misuse('ERR_OUT_OF_RANGE', `size must be a positive integer, got ${String(size)}`, 'pass the number of bytes to allocate, e.g. 1 << 20')
  }
  if (size > MAX_IO_LENGTH) {
    throw misuse('ERR_OUT_OF_RANGE', `size ${size} is larger than ${MAX_IO_LENGTH}, the most one I/O can move`, 'allocate several smaller buffers')
  }
  if (typeof alignment !== 'number' || !isPow2(alignment) || alignment > 1 << 30) {
    throw misuse('ERR_INVALID_ARG_VALUE', `alignment must be a power of two up to 1 GiB, got ${String(alignment)}`, 'use 512, 4096 (the default) or fh.alignment.memory')
  }
  const ab = new ArrayBuffer(size + alignment)
  const base = native.addressOf(ab)
  const off = (alignment - (base % alignment)) % alignment
  const view = Buffer.from(ab, off, size)
  bases.set(ab, base)
  return view
}

/** True when the view has no bytes because its ArrayBuffer was detached (transferred). */
export function isDetached(view: ArrayBufferView): boolean {
  const b = view.buffer as ArrayBuffer & { detached?: boolean }
  if (typeof b.detached === 'boolean') return b.detached
  return view.byteLength === 0 && b.byteLength === 0 && native.isDetached(view)
}
