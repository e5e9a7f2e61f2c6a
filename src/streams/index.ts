// Streams over direct I/O, and the FileHandle stream methods of Node's FileHandle
// (`fh.createReadStream()`, `fh.createWriteStream()`, `fh.readableWebStream()`), added to the
// prototype here so that src/handle.ts does not depend on the stream modules.
import { FileHandle } from '../handle'
import type { ReadStreamOptions, WriteStreamOptions } from './core'
import { DirectReadStream, DirectWriteStream } from './node'
import { readableWebStream } from './web'

export type { FsStreamOptions, ReadStreamOptions, StreamOpenOptions, WriteStreamOptions } from './core'
export { createReadStream, createWriteStream, DirectReadStream, DirectWriteStream } from './node'
export { readableWebStream, writableWebStream } from './web'

/** Options of `fh.createReadStream()`: as createReadStream's, minus what the handle fixed. */
export type HandleReadStreamOptions = Omit<ReadStreamOptions, 'fd' | 'flags' | 'mode' | 'direct' | 'backend'>
/** Options of `fh.createWriteStream()`: as createWriteStream's, minus what the handle fixed. */
export type HandleWriteStreamOptions = Omit<WriteStreamOptions, 'fd' | 'flags' | 'mode' | 'direct' | 'backend'>
/** Options of `fh.readableWebStream()`; `type: 'bytes'` (Node's option) is accepted, and the only kind. */
export type HandleWebStreamOptions = Omit<HandleReadStreamOptions, 'encoding' | 'emitClose' | 'reuseChunks'> & { type?: 'bytes' }

declare module '../handle' {
  interface FileHandle {
    /**
     * A Node `Readable` over this handle, as Node's `filehandle.createReadStream()`: reads from
     * `start` (default 0: odirect handles have no shared stream position), closes the handle at
     * the end unless `autoClose: false`.
     */
    createReadStream(options?: HandleReadStreamOptions): DirectReadStream
    /** A Node `Writable` over this handle, as Node's `filehandle.createWriteStream()`; closes it at the end unless `autoClose: false`. */
    createWriteStream(options?: HandleWriteStreamOptions): DirectWriteStream
    /** A bytes `ReadableStream` over this handle, as Node's `filehandle.readableWebStream()`; leaves the handle open. */
    readableWebStream(options?: HandleWebStreamOptions): ReadableStream<Uint8Array>
  }
}

Object.defineProperties(FileHandle.prototype, {
  createReadStream: {
    configurable: true,
    writable: true,
    value: function createReadStreamMethod(this: FileHandle, options?: HandleReadStreamOptions): DirectReadStream {
      return new DirectReadStream(this, options, true)
    },
  },
  createWriteStream: {
    configurable: true,
    writable: true,
    value: function createWriteStreamMethod(this: FileHandle, options?: HandleWriteStreamOptions): DirectWriteStream {
      return new DirectWriteStream(this, options, true)
    },
  },
  readableWebStream: {
    configurable: true,
    writable: true,
    value: function readableWebStreamMethod(this: FileHandle, options?: HandleWebStreamOptions): ReadableStream<Uint8Array> {
      return readableWebStream(this, options)
    },
  },
})
