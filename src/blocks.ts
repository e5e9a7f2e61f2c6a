// The block-aligned read and write loops of the whole-file helpers (files.ts) and the write
// streams (streams/core.ts): one op after another until the range is done, going on after a
// short op the way O_DIRECT allows (from the block holding the first byte not moved).
import { errno as E, kernelError } from './errors'
import type { FileHandle } from './handle'

/** Reads `len` bytes at `pos` into `buf[off..]`, going on after short reads; stops at end of file. Returns the bytes read. */
export async function readFully(fh: FileHandle, buf: ArrayBufferView, off: number, len: number, pos: number, signal: AbortSignal | undefined): Promise<number> {
  let done = 0
  const unit = fh.direct ? fh.alignment.offset : 1
  while (done < len) {
    const { bytesRead } = await fh.read(buf, { offset: off + done, length: len - done, position: pos + done, signal })
    if (bytesRead === 0) break
    done += bytesRead
    // A direct read returns a partial block only at the end of file.
    if (done % unit !== 0) break
  }
  return done
}

/**
 * Writes `len` bytes of `buf[off..]` at `pos`. A short write (ENOSPC on the way, FUSE) goes on
 * from the block holding the first byte not written, rewriting its head when the count was not
 * block aligned; one that moved no whole block fails with EIO.
 */
export async function writeFully(fh: FileHandle, buf: ArrayBufferView, off: number, len: number, pos: number, signal: AbortSignal | undefined): Promise<void> {
  let done = 0
  const unit = fh.direct ? fh.alignment.offset : 1
  while (done < len) {
    const { bytesWritten } = await fh.write(buf, { offset: off + done, length: len - done, position: pos + done, signal })
    const next = Math.floor((done + bytesWritten) / unit) * unit
    if (bytesWritten <= 0 || next <= done) {
      throw kernelError(E.EIO, { syscall: 'write', path: fh.path, position: pos + done, length: len - done }, `the kernel wrote ${bytesWritten} of ${len - done} bytes, not a whole block`)
    }
    done = next
  }
}
