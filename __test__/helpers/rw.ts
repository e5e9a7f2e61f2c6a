// Position-first shorthands over the fs/promises forms (fh.read(buffer, { position })), resolving
// with the byte count, for specs whose checks are about positions and counts.
import type { FileHandle, OpOptions } from '../../dist/index.js'

export const rd = async (fh: FileHandle, buffer: ArrayBufferView, position: unknown, o: OpOptions = {}): Promise<number> =>
  (await fh.read(buffer, { ...o, position: position as number })).bytesRead
export const wr = async (fh: FileHandle, buffer: ArrayBufferView, position: unknown, o: OpOptions = {}): Promise<number> =>
  (await fh.write(buffer, { ...o, position: position as number })).bytesWritten
export const rdv = async (fh: FileHandle, buffers: ArrayBufferView[], position: number): Promise<number> => (await fh.readv(buffers, position)).bytesRead
export const wrv = async (fh: FileHandle, buffers: ArrayBufferView[], position: number): Promise<number> => (await fh.writev(buffers, position)).bytesWritten

/** Every chunk of a stream (Node or async-iterable web), concatenated. */
export async function collect(r: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of r) parts.push(c as Buffer)
  return Buffer.concat(parts)
}
