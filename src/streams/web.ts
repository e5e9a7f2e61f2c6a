// WHATWG stream adapters over the direct-I/O core: a bytes `ReadableStream` (default and BYOB
// readers) and a `WritableStream<Uint8Array>`.
import { misuse } from '../errors'
import { AbortRace, type SequentialFile } from '../fileops'
import { guard, type PathLike } from '../args'
import type { FileHandle } from '../handle'
import { BlockReader, BlockWriter, type ReadStreamOptions, readConfig, watchAbort, WEB_HANDOVER_PRESSURE, type WriteStreamOptions, writeConfig } from './core'
import { openSequential } from './node'

/**
 * The shared lifecycle of both web adapters: teardown (stop watching the user's signal, destroy the
 * core), a rethrowing failure path, and `errorOn(controller)`: a function that errors the stream
 * and tears down, also called when the user's signal aborts.
 */
function lifecycle(core: BlockReader | BlockWriter, signal: AbortSignal | undefined, syscall: string) {
  let unwatch = (): void => {}
  const teardown = (): Promise<void> => {
    unwatch()
    return core.destroy()
  }
  const failed = async (e: unknown): Promise<never> => {
    await teardown().catch(() => {})
    throw e
  }
  const errorOn = (controller: { error(e: unknown): void }): ((e: unknown) => void) => {
    const fail = (e: unknown): void => {
      try {
        controller.error(e)
      } catch {
        // already closed or errored
      }
      void teardown().catch(() => {})
    }
    unwatch = watchAbort(signal, core.path, syscall, fail)
    return fail
  }
  return { teardown, failed, errorOn, unwatch: (): void => unwatch() }
}

function noNodeOnly(cfg: { encoding: BufferEncoding | undefined; reuseChunks?: boolean }, o: unknown): void {
  if (cfg.encoding !== undefined) throw misuse('ERR_INVALID_ARG_VALUE', 'encoding does not apply to web streams (they carry bytes)', 'pipe through a TextDecoderStream instead')
  if (cfg.reuseChunks === true) {
    throw misuse('ERR_INVALID_ARG_VALUE', 'reuseChunks applies to Node streams: a web stream hands its chunks over (transferred) and cannot take them back', "read with a BYOB reader (getReader({ mode: 'byob' })): its memory is reused the same way")
  }
  void o
}

/**
 * Reads a file with direct I/O as a WHATWG `ReadableStream` of bytes (`type: 'bytes'`): works with
 * default readers (chunks are transferred, no copy) and BYOB readers (`getReader({ mode: 'byob' })`,
 * data copied into the caller's view). Same options and semantics as {@link createReadStream}.
 */
export function readableWebStream(pathOrHandle: PathLike | FileHandle, options?: ReadStreamOptions): ReadableStream<Uint8Array> {
  return guard('readableWebStream', () => readableWebStreamImpl(pathOrHandle, options))
}

function readableWebStreamImpl(pathOrHandle: PathLike | FileHandle, options?: ReadStreamOptions): ReadableStream<Uint8Array> {
  const { target, cfg } = readConfig(pathOrHandle, options)
  noNodeOnly(cfg, options)
  const core = new BlockReader(target, { ...cfg, heldInside: true })
  let leftover: Buffer<ArrayBuffer> | null = null
  const { teardown, failed, errorOn } = lifecycle(core, cfg.signal, 'read')
  const source: UnderlyingByteSource = {
    type: 'bytes',
    async start(controller: ReadableByteStreamController) {
      errorOn(controller)
      await core.open().catch(failed)
    },
    async pull(controller: ReadableByteStreamController) {
      if (leftover === null) {
        // A default reader's chunk is handed over (enqueued, never back); a BYOB read copies it out.
        const chunk = await core.pull(!controller.byobRequest, WEB_HANDOVER_PRESSURE).catch(failed)
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
        if (n < leftover.byteLength) leftover = leftover.subarray(n)
        else {
          // Copied out entirely and never shown to the caller: its memory takes the next read.
          core.recycle(leftover)
          leftover = null
        }
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
  return guard('writableWebStream', () => writableWebStreamImpl(pathOrHandle, options))
}

function writableWebStreamImpl(pathOrHandle: PathLike | FileHandle, options?: WriteStreamOptions): WritableStream<Uint8Array> {
  const { target, cfg } = writeConfig(pathOrHandle, options)
  noNodeOnly(cfg, options)
  const core = new BlockWriter(target, cfg)
  const { teardown, failed, errorOn, unwatch } = lifecycle(core, cfg.signal, 'write')
  // A FIFO, character device or kernel pseudo-file path: written in sequence through node:fs, as
  // createWriteStream writes it (see openSequential); the core is then never opened.
  let seq: SequentialFile | undefined
  const seqAbort = new AbortRace(cfg.signal, core.path, 'write')
  const seqDone = (): Promise<void> => {
    seqAbort.dispose()
    return seq?.close(seqAbort) ?? Promise.resolve()
  }
  return new WritableStream<Uint8Array>({
    async start(controller) {
      core.onError = errorOn(controller)
      // abort() calls the sink's abort only once the write in progress settled, which waits for
      // room, i.e. for a block to complete (never, on a hung device); the controller's signal
      // fires at once: the blocks the engine holds are cancelled then, not started.
      controller.signal?.addEventListener('abort', () => void teardown().catch(() => {}), { once: true })
      seq = await openSequential(target, cfg.start !== 0, true, seqAbort, cfg.flags).catch(failed)
      if (seq === undefined) await core.open().catch(failed)
    },
    async write(chunk) {
      if (seq === undefined) return void (await core.write(chunk).catch(failed))
      try {
        if (!ArrayBuffer.isView(chunk)) {
          throw misuse('ERR_INVALID_ARG_TYPE', `chunks must be Uint8Array, Buffer or another ArrayBufferView, got ${chunk === null ? 'null' : typeof chunk}`, 'write bytes, e.g. Buffer.from(text)')
        }
        await seq.write(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength), seqAbort)
      } catch (e) {
        // The stream is errored: its sink's abort is not called, so the file is closed here.
        await seqDone().catch(() => {})
        unwatch()
        throw e
      }
    },
    async close() {
      if (seq !== undefined) await seqDone()
      else await core.finish().catch(failed)
      unwatch()
    },
    abort() {
      if (seq !== undefined) return Promise.all([seqDone().catch(() => {}), teardown()]).then(() => {})
      return teardown()
    },
  })
}
