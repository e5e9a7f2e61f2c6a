// The block-aligned read and write loops of the whole-file helpers (files.ts) and the write
// streams (streams/core.ts): one op after another until the range is done, going on after a
// short op the way O_DIRECT allows (from the block holding the first byte not moved).
import * as fsp from 'node:fs/promises'

import { DirectIoError, errno as E, fileSizeLimit, kernelError } from './errors'
import { MAX_IO_LENGTH } from './buffers'
import type { FileHandle } from './handle'

/**
 * Reads in a row of the same block, each asking for twice as much, that may return only bytes
 * read already before `readFully` gives up with EIO.
 */
const SHORT_RETRIES = 4

/**
 * Reads `len` bytes at `pos` into `buf[off..]`, going on after short reads; stops at end of file.
 * Returns the bytes read. `size` is the file's size if known (else it is asked with fstat when
 * needed): a direct read that ends inside a block before it was short, not the end of file.
 * Such a read goes on from the block holding the first byte not read (O_DIRECT alignment); a
 * read of that block that brings nothing new (a server answering every read with a share of
 * it) is asked again for twice as much, a few times, before EIO.
 */
export async function readFully(fh: FileHandle, buf: ArrayBufferView, off: number, len: number, pos: number, signal: AbortSignal | undefined, size?: number): Promise<number> {
  let done = 0
  const unit = fh.direct ? fh.alignment.offset : 1
  let known = size
  let tries = 0
  while (done < len) {
    const from = Math.floor(done / unit) * unit
    const room = len - from
    let n: number
    if (tries === 0) {
      n = (await fh.read(buf, { offset: off + from, length: room, position: pos + from, signal })).bytesRead
    } else {
      const more = fh.alloc(Math.min(Math.ceil(room / unit) * unit * 2 ** tries, Math.floor(MAX_IO_LENGTH / unit) * unit))
      n = Math.min((await fh.read(more, { position: pos + from, signal })).bytesRead, room)
      if (from + n > done) new Uint8Array(buf.buffer, buf.byteOffset + off + done, from + n - done).set(more.subarray(done - from, n))
    }
    if (n === 0) break
    if (from + n > done) {
      done = from + n
      tries = 0
      // A direct read returns a partial block at the end of file, or when it was short.
      if (done % unit === 0 || done >= len) continue
      known ??= (await fh.stat()).size
      if (pos + done >= known) break
      continue
    }
    // The same partial block again: nothing new.
    if (++tries > SHORT_RETRIES) {
      known = (await fh.stat()).size
      if (pos + done >= known) break
      throw kernelError(E.EIO, { syscall: 'read', path: fh.path, position: pos + done, length: len - done }, `${tries} reads from position ${pos + from} returned no byte past position ${pos + done}, before the end of file (${known} bytes)`)
    }
  }
  return done
}

/**
 * Writes `len` bytes of `buf[off..]` at `pos`. A short write (ENOSPC on the way, FUSE) goes on
 * from the block holding the first byte not written, rewriting its head when the count was not
 * block aligned; one that moved no whole block fails with EIO. Resolves to the number of writes
 * made (more than one: the first was short). `need` (default `len`): the bytes that matter, the
 * rest padding of the last block: a write that was short after them is done (RLIMIT_FSIZE cuts a
 * write at the limit, which the data ends before: the padding is not the caller's data and goes
 * past the limit, and the file is truncated to the data's end anyway). A direct write the limit
 * cut inside a block is refused (EINVAL) by block filesystems: then the whole blocks below the
 * limit are written direct and the data's last piece through a buffered descriptor, or, when the
 * data itself crosses the limit, it fails EFBIG naming the limit (so does a cut short write).
 */
export async function writeFully(fh: FileHandle, buf: ArrayBufferView, off: number, len: number, pos: number, signal: AbortSignal | undefined, need = len): Promise<number> {
  let done = 0
  let writes = 0
  const unit = fh.direct ? fh.alignment.offset : 1
  while (done < len) {
    let bytesWritten: number
    try {
      ;({ bytesWritten } = await fh.write(buf, { offset: off + done, length: len - done, position: pos + done, signal }))
    } catch (e) {
      // RLIMIT_FSIZE cuts a direct write at the limit; cut inside a block, the kernel refuses the
      // rest as unaligned (EINVAL): the error is that limit (EFBIG), where nothing was written.
      const limit = e instanceof DirectIoError && e.code === 'EINVAL' && !fh.isBlockDevice ? fileSizeLimit() : Infinity
      if (pos + len <= limit) throw e
      // Unless the data itself ends at or before the limit (only the padding of its last block
      // crosses it): the whole blocks below the limit go direct, the data's last piece buffered
      // (the caller's datasync flushes it with the rest; its truncate sets the length).
      if (pos + need > limit || !fh.direct) throw fileSizeError(fh, pos + done, len - done, e)
      const room = Math.floor((limit - pos - done) / unit) * unit
      if (room > 0) writes += await writeFully(fh, buf, off + done, room, pos + done, signal)
      if (need > done + room) await writeBuffered(fh, buf, off + done + room, need - done - room, pos + done + room)
      return writes + 1
    }
    writes++
    if (bytesWritten > 0 && done + bytesWritten >= need) break
    const next = Math.floor((done + bytesWritten) / unit) * unit
    if (bytesWritten <= 0 || next <= done) {
      // Cut short at the file size limit, before the end of a block.
      if (bytesWritten > 0 && !fh.isBlockDevice && pos + done + bytesWritten >= fileSizeLimit()) throw fileSizeError(fh, pos + done, len - done)
      throw kernelError(E.EIO, { syscall: 'write', path: fh.path, position: pos + done, length: len - done }, `the kernel wrote ${bytesWritten} of ${len - done} bytes, not a whole block`)
    }
    done = next
  }
  return writes
}

/** EFBIG for a write that RLIMIT_FSIZE cut inside a block (at `position`: the first byte not written). */
function fileSizeError(fh: FileHandle, position: number, length: number, cause?: unknown): DirectIoError {
  const e = kernelError(E.EFBIG, { syscall: 'write', path: fh.path, position, length }, `File too large: the write stops at the process's file size limit (${fileSizeLimit()} bytes) inside a block of ${fh.alignment.offset}`)
  if (cause !== undefined) Object.defineProperty(e, 'cause', { value: cause, configurable: true, writable: true })
  return e
}

/** Writes `len` bytes of `buf[off..]` at `pos` of `fh`'s file through a buffered descriptor of its own (node:fs). */
async function writeBuffered(fh: FileHandle, buf: ArrayBufferView, off: number, len: number, pos: number): Promise<void> {
  const h = await fsp.open(fh.path, 'r+')
  try {
    const view = new Uint8Array(buf.buffer, buf.byteOffset + off, len)
    let done = 0
    while (done < len) {
      const n = (await h.write(view, done, len - done, pos + done)).bytesWritten
      if (n <= 0) throw kernelError(E.EIO, { syscall: 'write', path: fh.path, position: pos + done, length: len - done }, `the kernel wrote ${n} bytes`)
      done += n
    }
  } finally {
    await h.close()
  }
}
