/**
 * odirect: real Linux direct I/O (O_DIRECT) for JavaScript, shaped like `node:fs/promises`.
 *
 * ```ts
 * import { open } from 'odirect'
 * const fh = await open('/data/file', 'w+')
 * try {
 *   const buf = fh.alloc(1 << 20)           // aligned for this file
 *   await fh.write(buf, 0, buf.length, 0)   // fs's (buffer, offset, length, position)
 *   const { bytesRead } = await fh.read(buf, 0, buf.length, 0)
 * } finally {
 *   await fh.close()
 * }
 * ```
 * This file is the public barrel only: the code lives in src/.
 * @packageDocumentation
 */
export { addressOf, allocAligned, MAX_IO_LENGTH, PAGE_SIZE } from './src/buffers'
export { engineInfo, type BackendName, type EngineInfo, type EngineOptions } from './src/engine'
export { DirectIoError, type DirectIoErrorCode, type DirectIoErrorInit, type ErrnoCode, type MisuseCode } from './src/errors'
export { copyFile, type CopyFileOptions, type CopyProgress, type CopyResult, readFile, type ReadFileOptions, writeFile, type WriteFileOptions } from './src/files'
export { constants } from './src/constants'
export {
  FileHandle,
  type Alignment,
  type DurableWriteOptions,
  type HandleStats,
  type ManyError,
  type ManyOp,
  type ManyOptions,
  type OpOptions,
  type ReadOptions,
  type ReadResult,
  type ReadVResult,
  type ReadWriteOptions,
  type WriteResult,
  type WriteVResult,
} from './src/handle'
export { BatchWindow, type ManyArrays } from './src/many'
export { configureEngine, open, type PathLike, probe, type ProbeReport } from './src/open'
export type { DirectMode, FlagsArg, OpenFlags, OpenOptions } from './src/args'
export { RegisteredBuffers } from './src/registered'
export {
  createReadStream,
  createWriteStream,
  DirectReadStream,
  DirectWriteStream,
  type FsStreamOptions,
  type HandleReadStreamOptions,
  type HandleWebStreamOptions,
  type HandleWriteStreamOptions,
  readableWebStream,
  type ReadStreamOptions,
  type StreamOpenOptions,
  writableWebStream,
  type WriteStreamOptions,
} from './src/streams'
