// WHATWG stream adapters over the direct-I/O core: a bytes `ReadableStream` (default and BYOB
// readers) and a `WritableStream<Uint8Array>`.
import { misuse } from '../errors'
import type { FileHandle } from '../handle'
import type { PathLike } from '../open'
import { BlockReader, BlockWriter, type ReadStreamOptions, readConfig, watchAbort, type WriteStreamOptions, writeConfig } from './core'

function noNodeOnly(cfg: { encoding: BufferEncoding | undefined }, o: unknown): void {
  if (cfg.encoding !== undefined) throw misuse('ERR_INVALID_ARG_VALUE', 'encoding does not apply to web streams (they carry bytes)', 'pipe through a TextDecoderStream instead')
  void o
}

/**
 * Reads a file with direct I/O as a WHATWG `ReadableStream` of bytes (`type: 'bytes'`): works with
 * default readers (chunks are transferred, no copy) and BYOB readers (`getReader({ mode: 'byob' })`,
 * data copied into the caller's view). Same options and semantics as {@link createReadStream}.
 */
export function readableWebStream(pathOrHandle: PathLike | FileHandle, options?: ReadStreamOptions): ReadableStream<Uint8Array> {
  const { target, cfg } = readConfig(pathOrHandle, options)
  noNodeOnly(cfg, options)
  const core = new BlockReader(target, cfg)
  let leftover: Buffer<ArrayBuffer> | null = null
  let unwatch = (): void => {}
  const teardown = (): Promise<void> => {
    unwatch()
    return core.destroy()
  }
  const failed = async (e: unknown): Promise<never> => {
    await teardown().catch(() => {})
    throw e
  }
  const source: UnderlyingByteSource = {
    type: 'bytes',
    async start(controller: ReadableByteStreamController) {
      unwatch = watchAbort(cfg.signal, core.path, 'read', (e) => {
        try {
          controller.error(e)
        } catch {
          // already closed or errored
        }
        void teardown().catch(() => {})
      })
      await core.open().catch(failed)
    },
    async pull(controller: ReadableByteStreamController) {
      if (leftover === null) {
        const chunk = await core.pull().catch(failed)
        if (chunk === null) {
          await teardown()
          controller.close()
          controller.byobRequest?.respond(0)
          return
        }
        leftover = chunk
      }
      const req = controller.byobRequest
      const view = req?.view
      if (req && view) {
        const dst = new Uint8Array(view.buffer, view.byteOffset, view.byteLength)
        const n = Math.min(dst.byteLength, leftover.byteLength)
        dst.set(n === leftover.byteLength ? leftover : leftover.subarray(0, n))
        leftover = n < leftover.byteLength ? leftover.subarray(n) : null
        req.respond(n)
      } else {
        const chunk = leftover
        leftover = null
        controller.enqueue(chunk)
      }
    },
    cancel() {
      return teardown()
    },
  }
  return new ReadableStream(source)
}

/**
 * Writes a file with direct I/O as a WHATWG `WritableStream<Uint8Array>`. Same options and
 * semantics as {@link createWriteStream}: `close()` resolves once the padded last block is
 * written, the length set and (by default) the data datasynced.
 */
export function writableWebStream(pathOrHandle: PathLike | FileHandle, options?: WriteStreamOptions): WritableStream<Uint8Array> {
  const { target, cfg } = writeConfig(pathOrHandle, options)
  noNodeOnly(cfg, options)
  const core = new BlockWriter(target, cfg)
  let unwatch = (): void => {}
  const teardown = (): Promise<void> => {
    unwatch()
    return core.destroy()
  }
  const failed = async (e: unknown): Promise<never> => {
    await teardown().catch(() => {})
    throw e
  }
  return new WritableStream<Uint8Array>({
    async start(controller) {
      const fail = (e: unknown): void => {
        try {
          controller.error(e)
        } catch {
          // already closed or errored
        }
        void teardown().catch(() => {})
      }
      core.onError = fail
      unwatch = watchAbort(cfg.signal, core.path, 'write', fail)
      await core.open().catch(failed)
    },
    async write(chunk) {
      await core.write(chunk).catch(failed)
    },
    async close() {
      await core.finish().catch(failed)
      unwatch()
    },
    abort() {
      return teardown()
    },
  })
}
