// The direct-I/O core of the streams, one small class per direction, shared by the Node
// adapters (node.ts) and the WHATWG adapters (web.ts): `BlockReader` keeps `readAhead` aligned
// reads in flight and hands out trimmed views; `BlockWriter` gathers chunks of any size into
// aligned blocks, keeps `writeBehind` writes in flight, pads the last block and truncates the file
// to the exact length. Option parsing (fs's names included) lives here too, written once.
import { setMaxListeners } from 'node:events'
import { constants as fsConstants } from 'node:fs'
import { lstat, open as fsOpen, readlink, stat } from 'node:fs/promises'
import { setFlagsFromString } from 'node:v8'

import { boolOption, checkFlags, describe, type DirectMode, encodingArg, intOption, isCreatingFlags, isDetached, isReadableFlags, modeOption, oneOf, type OpenFlags, openFields, readOptions, signalOption, toPath, unlisten } from '../args'
import { writeFully } from '../blocks'
import { allocForOverwrite, MAX_IO_LENGTH, PAGE_SIZE } from '../buffers'
import { type BackendName, getEngine } from '../engine'
import { syncParentDir } from '../dirsync'
import { refuseProtectedFile, resolveLinks } from '../fileops'
import { abortError, type DirectIoError, errno as E, kernelError, misuse } from '../errors'
import { FileHandle } from '../handle'
import { native } from '../native'
import { isFileHandle, open } from '../open'

/** Options used when the stream opens a path itself (refused together with a FileHandle). */
export interface StreamOpenOptions {
  /**
   * 'require' (default): O_DIRECT or a typed error. 'prefer': fall back to buffered I/O (with the
   * page cache dropped behind each op) where the filesystem refuses O_DIRECT. 'off': buffered.
   */
  direct?: DirectMode
  /** I/O engine: 'auto' (default), 'io_uring', 'aio' or 'threadpool'. */
  backend?: 'auto' | BackendName
  /** Permission bits for a file the stream creates (default 0o666 minus the umask). */
  mode?: number
}

/** fs's stream options odirect honours, shared by both directions. */
export interface FsStreamOptions {
  /**
   * An odirect FileHandle to use instead of opening the path (as fs's `fd` option; a numeric
   * descriptor is refused: its O_DIRECT state and alignment are unknown). Closed at the end unless
   * `autoClose: false`.
   */
  fd?: FileHandle
  /**
   * Close the file when the stream ends or fails. Default true, except for a FileHandle passed
   * as the first argument of createReadStream/createWriteStream (left open, as before).
   */
  autoClose?: boolean
  /** Emit 'close' after destroy (Node streams). Default true. */
  emitClose?: boolean
  /** Same as `chunkSize` (fs's name): bytes per I/O, rounded up to the block size. */
  highWaterMark?: number
  /** Aborting destroys the stream with an AbortError and cancels the ops in flight. */
  signal?: AbortSignal
}

/** Options of {@link createReadStream} and {@link readableWebStream}. */
export interface ReadStreamOptions extends StreamOpenOptions, FsStreamOptions {
  /** Bytes per read, rounded up to a multiple of the file's block size (and never more than the file needs). Default 2 MiB. */
  chunkSize?: number
  /**
   * Reads kept in flight, refilled as each completes (not when the consumer next asks). Default 4.
   * While the consumer is busy, one more completed chunk waits for it with `readAhead` in flight.
   */
  readAhead?: number
  /** First byte to read (any offset; the read is widened to the block and the chunk trimmed). Default 0. */
  start?: number
  /** Last byte to read, inclusive, as in `fs.createReadStream`. Default: to end of file. */
  end?: number
  /** Flags used to open a path: 'r' (default), 'r+', 'rs+', 'w+'... (must be readable). */
  flags?: OpenFlags
  /** Chunks are strings decoded with this encoding (Node streams only), as fs. */
  encoding?: BufferEncoding | null
  /**
   * Node streams only. Default false: every chunk has memory of its own, safe to keep. true: the
   * consumer promises to be done with each chunk when the code it was handed to returns (a
   * `'data'` listener, the `write()` of a piped stream that consumes at once such as a hash, or
   * a `for await` loop's body once it asks for the next chunk), and the stream reads into that
   * chunk's memory again: no new allocation or collection per chunk. A piped destination still
   * holding bytes after its `write()` (a file write stream, zlib, a socket) keeps its chunk. A
   * chunk kept longer than promised has its bytes replaced by later data (its memory is never
   * freed under it).
   */
  reuseChunks?: boolean
}

/** Options of {@link createWriteStream} and {@link writableWebStream}. */
export interface WriteStreamOptions extends StreamOpenOptions, FsStreamOptions {
  /** Bytes per write (the block chunks are gathered into), rounded up to the block size. Default 2 MiB. */
  chunkSize?: number
  /**
   * Depth of the writes kept in flight, in blocks: `writeBehind` x `chunkSize` bytes of writes
   * in the kernel (the next started as each completes), at most 64 writes (or `writeBehind`, if
   * more); as many bytes more are accepted, waiting; past that the stream applies backpressure.
   * Copied chunks go in blocks of `chunkSize`: `writeBehind` writes. Transferred chunks
   * (`transferChunks`) are each their own write of their own size: smaller ones keep more
   * writes in flight, a larger one goes alone if need be. Default 4.
   */
  writeBehind?: number
  /** Flags used to open a path: 'w' (default), 'wx', 'w+', 'wx+', 'r+'. */
  flags?: OpenFlags
  /** File position of the first byte; must be a multiple of the block size. Default 0. */
  start?: number
  /** fdatasync before the stream finishes, so 'finish' means the data is durable. Default true. */
  datasync?: boolean
  /** fs's name for `datasync` (fs: fsync before close). */
  flush?: boolean
  /** Encoding of string chunks (Node streams' default encoding). Default 'utf8'. */
  encoding?: BufferEncoding | null
  /**
   * Default false: every chunk is copied into the stream's own aligned blocks, and the caller may
   * reuse a chunk once its write is called back (as node:fs). true: a chunk that is odirect's
   * own memory (`fh.alloc`, `allocAligned`, a chunk of an odirect read stream), all of its
   * ArrayBuffer, whole blocks long, aligned, and arriving where the stream's data is at a block
   * boundary, is **transferred** to the stream and written in place, with no copy: its
   * ArrayBuffer is detached (every view of it then has length 0) by the time its write is called
   * back, and its memory is freed once the write completed. Any other chunk (an ordinary
   * Buffer, part of a larger ArrayBuffer, a partial block, or one after a partial block) is
   * copied as without the option and stays the caller's. A detached chunk is refused
   * (ERR_ODIRECT_DETACHED), e.g. the same buffer written twice. A FIFO or character device path
   * (written in sequence through node:fs) takes no chunk.
   * `pipeline(createReadStream(a), createWriteStream(b, { transferChunks: true }))` copies a
   * file with no memcpy at all.
   */
  transferChunks?: boolean
}

const MiB = 1024 * 1024
/**
 * Default bytes per I/O: 2 MiB, one huge page of the chunk memory (see buffers.ts): on the
 * repository's virtio disk 2 MiB x 4 moved 10-20% more than 1 MiB x 4 at half the CPU per GiB.
 */
const DEFAULT_CHUNK = 2 * MiB
const MAX_DEPTH = 1024
/**
 * Completed chunks a read stream holds beyond its `readAhead` reads, waiting for a busy
 * consumer. One: more only added memory (with 2 MiB chunks, 4 more grew RSS from 33 to 55 MiB)
 * and first touches of new huge pages, and the device was no busier. (The write stream keeps
 * `writeBehind` full blocks ready instead: this virtio disk completes every write in flight at
 * once, and a completion restarts only the blocks already full; its blocks are reused, never
 * garbage.)
 */
const HELD_EXTRA = 1

/**
 * Source pieces of this many bytes and more are copied into the write stream's block natively
 * with non-temporal stores (crates/napi/src/stream.rs); smaller ones by `TypedArray.set`.
 * ODIRECT_STREAM_NTCOPY=0 turns it off (A/B).
 */
const NT_COPY_MIN = process.env.ODIRECT_STREAM_NTCOPY === '0' ? Infinity : 64 * 1024

/**
 * Default-mode read chunks (a consumer that keeps or drops them) are handed over as new
 * ArrayBuffers over their memory, the one the read went into detached
 * (crates/napi/src/stream.rs, handOver), and count 1 + HANDOVER_PRESSURE times towards V8's
 * young-generation trigger until its next young collection: dropped chunks are then freed after
 * about 32 MiB / (1 + HANDOVER_PRESSURE) of them instead of 32 MiB.
 * ODIRECT_STREAM_HANDOVER=0 turns the hand-over off, ODIRECT_STREAM_PRESSURE sets the pressure
 * (A/B).
 */
const HANDOVER = process.env.ODIRECT_STREAM_HANDOVER !== '0'

/**
 * Write streams hand every full block to the engine at once, in a native chain of `writeBehind`
 * writes in the kernel (crates/napi/src/stream.rs, `Chain`): the blocks beyond those wait in
 * the engine, and the reap of a write submits the next one natively, before the completion
 * reaches JS (the device otherwise idled from each completion until the stream's JS code had
 * run: 100-165 µs per burst on this repository's virtio disk). ODIRECT_STREAM_CHAIN=0 turns it
 * off (A/B): the stream then keeps its waiting blocks itself and starts each from a completion.
 */
const CHAIN = process.env.ODIRECT_STREAM_CHAIN !== '0'
/**
 * Write streams count their depth in bytes, not writes: `writeBehind` x `chunkSize` bytes of
 * writes in the kernel (a lone larger one still goes), and 2 x that accepted before `write`
 * waits, at most WRITE_OPS_MAX writes in the kernel (or `writeBehind`, if more). Why: a
 * transferred chunk (`transferChunks`) is its own write whatever its size, and with the depth
 * counted in writes, 1 MiB chunks kept 4 MiB in flight where 2 MiB copied blocks keep 8 (session
 * 14: they gained nothing from the saved copy). Copied blocks are all `chunkSize` long: the same
 * `writeBehind` of them as before. ODIRECT_STREAM_DEPTH_BYTES=0 counts writes (A/B).
 */
const DEPTH_BYTES = process.env.ODIRECT_STREAM_DEPTH_BYTES !== '0'
/**
 * Full blocks a write stream accepts beyond the `writeBehind` in the kernel before `write`
 * waits (the chain holds them; see CHAIN): `writeBehind` by default (2 x writeBehind blocks in
 * all); ODIRECT_STREAM_READY=N (N >= 1) accepts N instead, so the blocks rotate through fewer
 * regions of memory (nineteenth session, opt-in: with 2, 512 MiB passes at writeBehind 4 ran
 * 1.18x / 1.05x / 0.96x (Node) and 1.01x / 1.03x / 1.11x (web) the default's in three bench runs,
 * paired per round; unset or 0: the default).
 */
const READY = ((n) => (Number.isInteger(n) && n >= 1 ? n : undefined))(Number(process.env.ODIRECT_STREAM_READY ?? ''))
const WRITE_OPS_MAX = 64
/**
 * A write stream gives its blocks' memory back to odirect's pool when it is done (its end, or a
 * destroy once nothing is in flight), by detaching them (`native.releaseBlock`): the blocks are
 * the stream's own, never shown to its caller. Without this they stay alive with the stream
 * object until V8 collects it, and each stream after another in the same process took
 * `2 x writeBehind` new 2 MiB regions (fresh huge pages, 0.2 ms each to clear, 3-6 ms where a
 * VM's host must back them) while the last one's were garbage: 4 write streams of 128 MiB in a
 * row held 8, 16, 24, 24 blocks alive. ODIRECT_STREAM_RELEASE_BLOCKS=0 turns it off (A/B).
 */
const RELEASE_BLOCKS = process.env.ODIRECT_STREAM_RELEASE_BLOCKS !== '0'
/**
 * Write streams that extend their file reserve the space ahead of their writes (fallocate, mode
 * 0: unwritten extents, the size moved on) so that each write lands inside the file's size: a
 * direct write past the end (a new file) cannot be issued without blocking on ext4 and xfs (the
 * size must be updated; io_uring hands it to an io-wq worker, one at a time per inode), one
 * inside the size into unwritten extents can (512 MiB new file, 2 MiB writes,
 * io_uring_queue_async_work: ext4 260 -> 4, xfs 260 -> 85-89). The reservation grows by what was
 * written so far (at least ALLOCATE_MIN, at most ALLOCATE_MAX: each fallocate waits for the
 * writes in flight), the stream's end truncates the file to its exact length, and a destroy or
 * failure to the bytes confirmed written (see `beforeClose`). Measured on the repository's VM:
 * xfs 1.06-1.34x MB/s (14 rounds), ext4 0.88-0.93x (each fallocate took 4-28 ms there).
 * ODIRECT_STREAM_ALLOCATE_AHEAD=1 turns it on: opt-in, because the file's size runs ahead of the
 * data while the stream writes, and a crash leaves it so (zeros up to the reservation's end).
 */
const ALLOCATE_AHEAD = process.env.ODIRECT_STREAM_ALLOCATE_AHEAD === '1'
const ALLOCATE_MIN = 64 * MiB
const ALLOCATE_MAX = 1024 * MiB
/**
 * ALLOCATE_AHEAD: the next reservation is taken once less than half a step of the current one is
 * left, while the writes go on inside it, instead of when a block reaches its end (which then
 * waits for the fallocate). Writes issued while the fallocate holds the inode go through io-wq.
 * 512 MiB new file, interleaved rounds: ext4 2,262 vs 2,211 and 2,747 vs 2,494 MB/s (7 and 10
 * rounds; 2,249 vs 2,275 in 8 more), xfs 3,626 vs 3,617 (8). ODIRECT_STREAM_ALLOCATE_EARLY=0 turns
 * it off (A/B).
 */
const ALLOCATE_EARLY = process.env.ODIRECT_STREAM_ALLOCATE_EARLY !== '0'
const HANDOVER_PRESSURE = Number(process.env.ODIRECT_STREAM_PRESSURE ?? 1)
/**
 * A read stream about to wait for its next read, with at least this many bytes of chunks handed
 * over since it last did, runs a young-generation collection of V8 then (crates/napi/src/
 * stream.rs, youngGc): its consumer has dropped them by now (or holds them, and then they stay),
 * and the finalizers that free them run while the loop waits, so the next reads take their
 * memory instead of new memory. Opt-in: ODIRECT_STREAM_WAIT_GC=N collects at N MiB (4 measured
 * best), with ODIRECT_STREAM_SYNC_SWEEP=1 beside it: without that flag, V8's concurrent
 * ArrayBuffer sweeping lags on a loaded machine, the external memory of the collections' garbage
 * ArrayBuffers piles up and V8 answers with mark-compacts (streams.spec's no-mark-compact cases:
 * 4-30 per pass at load), which the default per-chunk pressure never causes.
 */
const WAIT_GC_BYTES = Math.max(0, Number(process.env.ODIRECT_STREAM_WAIT_GC ?? 0) || 0) * 2 ** 20
/**
 * Opt-in (ODIRECT_STREAM_SYNC_SWEEP=1): in Node, the first read stream that hands chunks over
 * turns V8's concurrent ArrayBuffer
 * sweeping off (`--no-concurrent-array-buffer-sweeping`, process-wide): a young collection
 * then frees the dropped chunks' memory in its own pause. With the sweeping on a V8 worker
 * thread, a busy machine delays it past the stream's next collection (the chunks dead at one
 * collection are freed at the next), and the stream's next reads take new memory meanwhile:
 * peak RSS growth 27-37 MiB in some passes (2 MiB chunks, readAhead 4, load 2-3) instead of
 * 19-21. Not the default: Node documents flags changed after V8 started as unpredictable
 * ("may result in crashes and data loss"), and a library must not change a whole process's
 * garbage collector behind its back.
 */
const SYNC_SWEEP = process.env.ODIRECT_STREAM_SYNC_SWEEP === '1'
let syncSweepSet = false

/** Turns V8's concurrent ArrayBuffer sweeping off once (see SYNC_SWEEP); Node only. */
function syncSweep(): void {
  if (syncSweepSet) return
  syncSweepSet = true
  const v = process.versions as Record<string, string | undefined>
  if (typeof v.node !== 'string' || v.bun !== undefined || v.deno !== undefined) return
  try {
    setFlagsFromString('--no-concurrent-array-buffer-sweeping')
  } catch {
    // A runtime that refuses: the sweeping stays concurrent (only the RSS tail differs).
  }
}
/** Young external bytes that start V8's young collection (2 x its 16 MiB semi-space). */
const YOUNG_TRIGGER = 32 * 2 ** 20
/**
 * Read streams chain their reads natively as write streams do (see CHAIN): the stream stages
 * `READ_CHAIN_HELD` reads (its next chunks) which the engine holds back, and the reap of one of
 * its reads hands the next held read to the kernel at once, before the completion reaches JS
 * (crates/napi/src/stream.rs, `Chain`). Node streams hold them beyond `readAhead` (`readAhead`
 * in the kernel; the held reads take the place of the completed chunk the stream keeps for a
 * busy consumer: in flight + held + completed <= readAhead + READ_CHAIN_HELD); web streams count
 * them inside `readAhead` (see READ_CHAIN_INSIDE). ODIRECT_STREAM_READ_CHAIN=0 turns it off
 * (A/B); ODIRECT_STREAM_READ_HELD sets how many are held (default 1).
 */
const READ_CHAIN = process.env.ODIRECT_STREAM_READ_CHAIN !== '0'
const READ_CHAIN_HELD = Math.max(1, Math.min(64, Math.floor(Number(process.env.ODIRECT_STREAM_READ_HELD ?? 1)) || 1))
/**
 * Where a stream's held reads count (`ReadConfig.heldInside`, set by web streams): inside
 * `readAhead` (`readAhead - READ_CHAIN_HELD` in the kernel, the chain's depth, and the held
 * ones in the engine: `readAhead` reads unfinished, as without a chain; with readAhead <=
 * READ_CHAIN_HELD, no chain) or beyond it. Measured (README, streams section): the web default
 * reader's peak RSS growth 19 vs 25 MiB with MB/s 1.02-1.03x paired; Node streams 23 vs 21 MiB
 * and 0.94-0.98x, so they hold beyond. ODIRECT_STREAM_READ_INSIDE=0: beyond for all streams,
 * =1: inside for all (A/B).
 */
const READ_CHAIN_INSIDE = process.env.ODIRECT_STREAM_READ_INSIDE
/**
 * Opt-in (ODIRECT_STREAM_READ_COPY=1): a default-mode read chunk (one its consumer keeps or
 * drops) is a copy of the read, and the read goes into one of the stream's own buffers, reused
 * from read to read (at most readAhead + 2 of them; the copy: native non-temporal stores,
 * crates/napi/src/stream.rs `copyInto`), while the consumer keeps up with the device: it waited
 * for a read (at least COPY_WAIT_MS) within its last `readAhead + 1` chunks (what the stream
 * holds). A consumer slower than the device gets the read's memory itself, as by default.
 * `=always`: every chunk a copy. `=cpu`: the rule of COPY_BUSY_MAX instead (twenty-first session:
 * the wait above also copies for a CPU-bound consumer, whose pulls Node calls while it still works
 * on the chunk before). Unset or `0`: no copy (the default).
 *
 * Why (twentieth session, README "What the read streams' device fills"): the device fills memory
 * at a speed that depends on how much distinct memory its reads go into. On this repository's
 * virtio disk, 2 MiB reads at depth 4 in a loop ran 3,200-3,430 MB/s into 4 buffers used in
 * turn, 2,670-2,890 into 8 and 2,290-2,450 into 16 or 32 (three interleaved rounds); a
 * default-mode stream's reads go into whatever memory the chunks its consumer dropped left behind
 * (freed at V8's collections), and the device ran at 2,280-2,480 MB/s while busy against fio's
 * 3,330-3,420 (fio reads into the same 4 MiB). With the copy, paired with the default in fresh
 * processes: 1.20x MB/s (14 of 15 rounds, Node and web) when the disk was fast, 0.89x (3 of 15)
 * in a slow hour on a busy machine; CPU per GiB 0.18-0.20 s instead of 0.08 (fs.createReadStream
 * 1 MiB: 0.34), peak RSS growth 23-29 MiB median instead of 21. Not the default for that CPU and
 * memory (and the slow hours' loss).
 */
const READ_COPY = ((v) => (v === '1' || v === 'auto' ? 1 : v === 'always' ? 2 : v === 'cpu' || v === 'ring' ? 3 : 0))(process.env.ODIRECT_STREAM_READ_COPY)
/**
 * `ODIRECT_STREAM_READ_COPY=ring` (twenty-second session, opt-in): the `=cpu` rule with the ring
 * (READ_RING), the first window copying (COPY_FIRST), copies stopped only after 3 windows in a
 * row whose thread was busy (COPY_STOP, COPY_STOP_BUSY) and the stream's own young collections at
 * its waits every 4 MiB handed over (RING_GC_BYTES); each can still be set by its own variable.
 */
const RING_PRESET = process.env.ODIRECT_STREAM_READ_COPY === 'ring'
/**
 * READ_COPY's `=cpu` rule (twenty-first session): the stream looks at its consumer over windows
 * of at least COPY_WINDOW_CHUNKS chunks and COPY_WINDOW_MS, and copies during the next window
 * when, in this one, the consumer waited for the device (`pull` awaited a read) at least
 * COPY_WAIT_SHARE of the time, and the JS thread was busy less than COPY_BUSY_MAX of it (the
 * stream's own copies taken out): busy as the event loop's utilization counts it (Node's
 * `performance.eventLoopUtilization`: all but the time the thread slept waiting for events, so
 * time it was ready to run but preempted by other processes counts as busy); where the runtime
 * has none, the process's CPU time (process.cpuUsage, every thread). A consumer that keeps up
 * with the device and leaves its thread idle (counting, writing to a fast sink) gets copies; a
 * CPU-bound one (hashing, compressing: busy near all the time) or one slower than the device (it
 * never waits) gets the reads' own memory, as without the copy. The first window never copies.
 * ODIRECT_STREAM_COPY_BUSY / ODIRECT_STREAM_COPY_WAIT_SHARE set the two shares (A/B).
 */
const COPY_BUSY_MAX = Number(process.env.ODIRECT_STREAM_COPY_BUSY ?? 0.45)
const COPY_WAIT_SHARE = Number(process.env.ODIRECT_STREAM_COPY_WAIT_SHARE ?? 0.25)
const COPY_WINDOW_CHUNKS = 4
const COPY_WINDOW_MS = 20
type Elu = () => { idle: number; active: number }
const ELU: Elu | undefined = ((p) => {
  const f = (p as { eventLoopUtilization?: unknown } | undefined)?.eventLoopUtilization
  return typeof f === 'function' ? (): { idle: number; active: number } => (f as Elu).call(p) : undefined
})(globalThis.performance)
/**
 * Busy ms so far: the JS thread's (ELU's active time, >= 0) where the event loop answers (not
 * before it started: zeros then), else -1 - the process's CPU ms (negative), or -Infinity where
 * there is neither. A window whose two ends are of different kinds is not judged.
 */
function busyMs(): number {
  if (ELU !== undefined) {
    try {
      const e = ELU()
      if (typeof e?.idle === 'number' && typeof e.active === 'number' && e.idle + e.active > 0) return e.active
    } catch {
      // The CPU time instead.
    }
  }
  const u = typeof process.cpuUsage === 'function' ? process.cpuUsage() : undefined
  return u === undefined ? -Infinity : -1 - (u.user + u.system) / 1000
}
/**
 * How long `pull` must have waited for the oldest read for it to count as a wait for the device
 * (READ_COPY): 0.2 ms. A consumer whose reads completed in the kernel while it worked waits for
 * one turn of the event loop (they are reaped when it yields); one that keeps up waits for the
 * device's next completions (1-3 ms on this repository's disk). A sha256 consumer here waited
 * 1.3-2.1 ms at about half of its pulls (its reads are refilled only as it asks), so it gets
 * copies too. ODIRECT_STREAM_COPY_WAIT_US sets it (A/B).
 */
const COPY_WAIT_MS = Math.max(0, Number(process.env.ODIRECT_STREAM_COPY_WAIT_US ?? 200) || 0) / 1000
/**
 * The hand-over pressure of a copied chunk (see HANDOVER), at least: 2. The stream's own buffers
 * come on top of the dropped chunks waiting for a collection: with the Node streams' 1, peak RSS
 * growth 27-31 MiB median (fresh processes, 11-15 passes each), with 2 21-29, with 1.5 / 2.5 / 3
 * 27 / 33 / 31. ODIRECT_STREAM_COPY_PRESSURE sets it (A/B).
 * ODIRECT_STREAM_COPY_PRESSURE sets it (A/B).
 */
const COPY_PRESSURE = Number(process.env.ODIRECT_STREAM_COPY_PRESSURE ?? 2)
/**
 * READ_COPY's ring (twenty-second session): while a stream copies (`=cpu` windows that copy,
 * `=always`), its reads are RING_READ bytes (1 MiB; the chunk itself if that is smaller; a
 * chunk split in equal parts else) into a ring of the stream's own buffers of that size, reused
 * read after read (at most `readAhead` + 2 of them: the reads in the kernel, the held one, the
 * one being copied), and a chunk of `chunkSize` bytes is gathered by copy from consecutive ring
 * reads. Why: the device fills memory faster the fewer distinct bytes its reads go into (this
 * VM's host: README "Why distinct memory is slower"), and the twenty-first's copy read 2 MiB x
 * 6 of its own buffers (12 MiB) beside the copies waiting for a collection: peak RSS growth
 * 29-37 MiB, over the issue's bound; the ring holds 5-6 MiB. Reads made before the stream began
 * to copy are handed over, not copied. ODIRECT_STREAM_READ_RING=0: the twenty-first's copy
 * (chunk-sized reads into reused buffers); ODIRECT_STREAM_RING_KIB sets RING_READ (A/B).
 */
const READ_RING = process.env.ODIRECT_STREAM_READ_RING !== '0'
/**
 * READ_COPY `=cpu`: the stream's first window copies (the rule then judges it as any other).
 * Why: with the first window's reads handed over, the copies and the ring come on top of the
 * chunks that window's consumer dropped (not yet collected). ODIRECT_STREAM_COPY_FIRST=1 (on with
 * `=ring`; =0 off: the first window never copies, the twenty-first session's rule).
 */
const COPY_FIRST = process.env.ODIRECT_STREAM_COPY_FIRST === '1' || (RING_PRESET && process.env.ODIRECT_STREAM_COPY_FIRST !== '0')
/**
 * READ_COPY `=cpu`: a stream that copies goes on copying until this many windows in a row were
 * judged "no" (ODIRECT_STREAM_COPY_STOP; default 1, the first; 3 with `=ring`). Why: on a loaded machine a plain
 * consumer's thread counts as busy in some windows (time it was preempted), and each flip back
 * to plain reads hands over a window's worth of new 2 MiB chunks on top of the ring and the copies.
 */
const COPY_STOP = Math.max(1, Math.floor(Number(process.env.ODIRECT_STREAM_COPY_STOP ?? (RING_PRESET ? 3 : 1))) || 1)
/**
 * READ_COPY `=cpu`: a stream that copies stops only for windows whose thread was busy (at least
 * COPY_BUSY_MAX; a window that could not be measured counts as busy), not for a consumer that
 * no longer waits for the device: the copies make the device faster (the point of them), so a
 * consumer that waited before them may stop waiting with them, and stopping then made the rule
 * flip between copies and plain reads. ODIRECT_STREAM_COPY_STOP_BUSY=1 (on with `=ring`; =0 off).
 */
const COPY_STOP_BUSY = process.env.ODIRECT_STREAM_COPY_STOP_BUSY === '1' || (RING_PRESET && process.env.ODIRECT_STREAM_COPY_STOP_BUSY !== '0')
/**
 * Opt-in (ODIRECT_STREAM_RING_GC=N, MiB; 4 with `=ring`): while a stream reads into its ring, it
 * runs V8's young collection itself (crates/napi/src/stream.rs youngGc) when its consumer waits
 * for a read and at least N MiB of chunks were handed over since the last one. A consumer that
 * waits leaves its thread idle then (the copy rule's condition), and the copies it dropped are
 * freed before the next ones need memory (peak RSS growth 13-19 MiB instead of 19-33 with
 * `=always`, load 20). The copies keep their hand-over pressure (a consumer that does not wait
 * still has them collected by V8's own trigger), and the collection's time counts as the
 * stream's own in the `=cpu` rule, as its copies' does (else a Node stream's thread counted as
 * busy 0.6-0.98 of its windows and the rule flipped back to plain reads).
 */
const RING_GC_BYTES = Math.max(0, Number(process.env.ODIRECT_STREAM_RING_GC ?? (RING_PRESET ? 4 : 0)) || 0) * 2 ** 20
const RING_READ = Math.max(4, Math.floor(Number(process.env.ODIRECT_STREAM_RING_KIB ?? 1024)) || 1024) * 1024
const readCounts = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
/** Addresses of the memory reads went into (traceReadAddresses), process-wide. */
let readAddrs: Set<number> | undefined
/**
 * Read streams' counts, process-wide (tests and diagnostics): [default-mode chunks delivered as
 * copies (READ_COPY), default-mode chunks delivered as the read's own memory (handed over),
 * reads into a buffer the stream had used before (its own, or one given back), reads into new
 * memory, READ_COPY `=cpu` windows after which the stream copied, windows after which it did not,
 * reads into the ring (READ_RING), ring buffers made, bytes copied into chunks, distinct
 * addresses reads went into since traceReadAddresses(true) (0 when not tracing), young
 * collections the streams ran at their waits (WAIT_GC_BYTES, RING_GC_BYTES)].
 * @internal
 */
export function readCopyStats(): number[] {
  readCounts[9] = readAddrs?.size ?? 0
  return readCounts.slice()
}

/**
 * Tests and diagnostics: from now on (true) every read stream's read records the address of the
 * memory it goes into (readCopyStats()[9]: how many distinct ones); false stops and forgets.
 * @internal
 */
export function traceReadAddresses(on: boolean): void {
  readAddrs = on ? new Set() : undefined
}

/**
 * The hand-over pressure of a web stream's default reader (see HANDOVER): 2. Its chunks are
 * handed over and then transferred once more by the byte stream's `enqueue` (a third
 * ArrayBuffer over the memory), and with pressure 1 its pass peaked at 25-31 MiB of RSS growth
 * (bound: readAhead x chunk + 16 = 24 MiB); with 2, 21-23 (512 MiB passes, fresh processes).
 * ODIRECT_STREAM_WEB_PRESSURE sets it (A/B).
 */
export const WEB_HANDOVER_PRESSURE = Number(process.env.ODIRECT_STREAM_WEB_PRESSURE ?? 2)

const COMMON_KEYS = ['chunkSize', 'highWaterMark', 'start', 'signal', 'flags', 'mode', 'direct', 'backend', 'fd', 'autoClose', 'emitClose', 'encoding']
const READ_KEYS = [...COMMON_KEYS, 'readAhead', 'end', 'type', 'reuseChunks']
const WRITE_KEYS = [...COMMON_KEYS, 'writeBehind', 'datasync', 'flush', 'transferChunks']
/** fs options that direct I/O cannot honour, and why. */
const UNSUPPORTED: Readonly<Record<string, string>> = {
  fs: 'odirect does its own I/O (io_uring, aio or its thread pool), so a custom fs implementation would never be called',
}

/** What the stream reads or writes: a path it opens, or a handle it was given. */
export type Target = string | FileHandle

interface BaseConfig {
  chunkSize: number
  start: number
  signal: AbortSignal | undefined
  direct: DirectMode
  backend: 'auto' | BackendName
  flags: OpenFlags
  mode: number
  /** Close the handle at the end (always for a path the stream opened, unless autoClose: false). */
  owned: boolean
  emitClose: boolean
  encoding: BufferEncoding | undefined
}

export interface ReadConfig extends BaseConfig {
  readAhead: number
  /** Chained held reads count inside `readAhead` (web streams; see READ_CHAIN_INSIDE). */
  heldInside?: boolean
  /** The consumer gives chunks back (see ReadStreamOptions.reuseChunks). */
  reuseChunks: boolean
  /** Exclusive end (Infinity: to end of file). */
  stop: number
}

export interface WriteConfig extends BaseConfig {
  writeBehind: number
  datasync: boolean
  /**
   * With datasync, also fsync the parent directory when this stream opened the path with a
   * creating flag, so the file's name survives a power cut with its data. (Off for writeFile's
   * temp file: the rename into place is followed by its own directory sync.)
   */
  syncDir?: boolean
  /**
   * writeFile's whole-file writes: its finish does not look for another writer's bytes past its
   * end (see finish), which costs a thread-pool fstat per call of an unaligned length (a paired
   * loop of 3000 writeFiles of 1000 bytes, 5 rounds at load 11-14: 786 vs 744 us of CPU per call,
   * 5 of 5 higher; but the same loop without the fstat: 3 of 5 higher, as noisy).
   */
  alone?: boolean
  /** Chunks of odirect memory are taken over and written in place (WriteStreamOptions.transferChunks). */
  transfer: boolean
  /**
   * No `start` given: a stream over a FileHandle writes from the handle's position, which then
   * advances to the stream's end, as node:fs's (its writes at position null); a path opened by
   * the stream starts at 0.
   */
  fromPosition: boolean
}

const roundUp = (n: number, unit: number): number => Math.ceil(n / unit) * unit

/**
 * Hands the ops staged so far to the kernel now, instead of at the end of the microtask
 * checkpoint (the engine's own flush, queued when the first op of a tick is staged). A stream
 * refilling the device's queue from a completion otherwise waits behind every microtask queued
 * before that flush: the other completions of the same delivery, the consumer's work on the
 * chunks just handed over, a producer resumed. Block tracepoints on the repository's virtio disk
 * (bench/phases.cjs): reap to next read submitted 100-240 µs before, 40-90 µs after; reap to the
 * write refill 170-300 µs before, 110-125 µs after.
 */
function submitNow(): void {
  try {
    getEngine().native.flush()
  } catch {
    // The engine is shutting down: its own flush (or teardown) deals with what is staged.
  }
}

/**
 * The target and the options common to both directions. `first` is the first argument (a path,
 * or an odirect FileHandle); fs's `fd` option (a FileHandle) takes precedence over it.
 */
function baseConfig(first: unknown, o: Record<string, unknown>, write: boolean, handleAutoClose: boolean): { target: Target; base: BaseConfig } {
  const fd = o.fd
  let target: Target
  let autoCloseDefault: boolean
  if (fd !== undefined && fd !== null) {
    if (typeof fd === 'number') {
      throw misuse('ERR_ODIRECT_UNSUPPORTED', 'option \'fd\' as a numeric descriptor is not supported with direct I/O: its O_DIRECT state and alignment are unknown', "pass a FileHandle from odirect's open() as fd, or a path")
    }
    if (!isFileHandle(fd)) throw misuse('ERR_INVALID_ARG_TYPE', `fd must be an odirect FileHandle, got ${describe(fd)}`, "pass a handle from odirect's open()")
    target = fd
    autoCloseDefault = true
  } else if (isFileHandle(first)) {
    target = first
    autoCloseDefault = handleAutoClose
  } else {
    target = toPath(first)
    autoCloseDefault = true
  }
  if (target instanceof FileHandle) {
    for (const k of ['direct', 'backend', 'flags', 'mode']) {
      if (o[k] !== undefined) throw misuse('ERR_INVALID_ARG_VALUE', `option '${k}' only applies when the stream opens a path, not to a FileHandle`, 'pass it to open() instead, or pass a path')
    }
  }
  let chunkSize = intOption(o, 'chunkSize', DEFAULT_CHUNK, 1, MAX_IO_LENGTH, 'e.g. 1 << 20 (it is rounded up to the block size)')
  if (o.highWaterMark !== undefined) {
    const hwm = intOption(o, 'highWaterMark', DEFAULT_CHUNK, 1, MAX_IO_LENGTH, 'bytes per I/O, e.g. 1 << 20 (it is rounded up to the block size)')
    if (o.chunkSize !== undefined && hwm !== chunkSize) {
      throw misuse('ERR_INVALID_ARG_VALUE', `highWaterMark (${hwm}) and chunkSize (${chunkSize}) differ; they mean the same thing`, 'pass only one of them')
    }
    chunkSize = hwm
  }
  const flags = checkFlags(o.flags ?? (write ? 'w' : 'r'), typeof target === 'string' ? target : target.path, write)
  if (!write && !isReadableFlags(flags)) {
    throw misuse('ERR_ODIRECT_FLAGS', `flags '${flags}' open write-only, a read stream needs to read`, "use 'r' (default) or 'r+'")
  }
  const { direct, backend } = openFields({ direct: o.direct, backend: o.backend })
  return {
    target,
    base: {
      chunkSize,
      start: 0,
      signal: signalOption(o),
      direct,
      backend,
      flags,
      mode: modeOption(o),
      owned: boolOption(o, 'autoClose', autoCloseDefault),
      emitClose: boolOption(o, 'emitClose', true),
      encoding: encodingArg(o.encoding, undefined),
    },
  }
}

/** `handleAutoClose`: the autoClose default for a FileHandle first argument (true for `fh.createReadStream()`). */
/** fs's options argument: an object, or an encoding string (`createReadStream(p, 'utf8')`). */
const streamOptions = (opts: unknown): unknown => (typeof opts === 'string' ? { encoding: opts } : opts)

export function readConfig(first: unknown, opts: unknown, handleAutoClose = false): { target: Target; cfg: ReadConfig } {
  const o = readOptions(streamOptions(opts), READ_KEYS, '{ highWaterMark: 1 << 20 }', UNSUPPORTED)
  const { target, base } = baseConfig(first, o, false, handleAutoClose)
  oneOf(o, 'type', ['bytes'], 'bytes', "web streams from odirect are always byte streams: pass type: 'bytes' or nothing")
  const readAhead = intOption(o, 'readAhead', 4, 1, MAX_DEPTH, 'e.g. 4 reads in flight')
  const reuseChunks = boolOption(o, 'reuseChunks', false)
  const start = intOption(o, 'start', 0, 0, Number.MAX_SAFE_INTEGER, 'the first byte offset to read, >= 0')
  let stop = Infinity
  if (o.end !== undefined && o.end !== Infinity) {
    const end = intOption(o, 'end', 0, 0, Number.MAX_SAFE_INTEGER - 1, 'the last byte offset to read (inclusive), or Infinity')
    if (end < start) throw misuse('ERR_OUT_OF_RANGE', `end (${end}) must be >= start (${start})`, 'end is inclusive, as in fs.createReadStream')
    stop = end + 1
  }
  return { target, cfg: { ...base, readAhead, reuseChunks, start, stop } }
}

export function writeConfig(first: unknown, opts: unknown, handleAutoClose = false): { target: Target; cfg: WriteConfig } {
  const o = readOptions(streamOptions(opts), WRITE_KEYS, '{ highWaterMark: 1 << 20 }', UNSUPPORTED)
  const { target, base } = baseConfig(first, o, true, handleAutoClose)
  const writeBehind = intOption(o, 'writeBehind', 4, 1, MAX_DEPTH, 'e.g. 4 writes in flight')
  const start = intOption(o, 'start', 0, 0, Number.MAX_SAFE_INTEGER, 'a byte offset that is a multiple of the block size')
  let datasync = boolOption(o, 'datasync', true)
  if (o.flush !== undefined) {
    const flush = boolOption(o, 'flush', true)
    if (o.datasync !== undefined && flush !== datasync) throw misuse('ERR_INVALID_ARG_VALUE', `flush (${flush}) and datasync (${datasync}) differ; they mean the same thing here`, 'pass only one of them')
    datasync = flush
  }
  const transfer = boolOption(o, 'transferChunks', false)
  return { target, cfg: { ...base, writeBehind, start, datasync, transfer, fromPosition: o.start === undefined } }
}

const O_CREAT = 0o100
const O_EXCL = 0o200
const O_TRUNC = 0o1000
/** Checked open flags (see checkFlags) as open(2) bits. */
function flagBits(flags: string): number {
  if (/^\d+$/.test(flags)) return Number(flags)
  const rw = flags.includes('+') ? 2 : flags.startsWith('r') ? 0 : 1
  const bits = flags.startsWith('w') || flags.startsWith('xw') ? O_CREAT | O_TRUNC : 0
  return rw | bits | (flags.includes('x') ? O_EXCL : 0)
}

/**
 * Removes the file a refused write stream's open created (see WriteCore.doOpen), if the name
 * still names it; the handle stays open for the caller to close.
 */
async function removeCreated(fh: FileHandle): Promise<void> {
  try {
    const [own, now] = await Promise.all([fh.stat(), lstat(fh.path)])
    if (own.ino === now.ino && own.dev === now.dev) await native.unlinkPath(fh.path)
  } catch {
    // Gone or replaced already: nothing of this stream's to remove.
  }
}

/** An internal AbortController that cancels the core's ops on destroy or on the user's abort. */
function linkSignal(depth: number): AbortController {
  const ac = new AbortController()
  setMaxListeners(depth + 8, ac.signal)
  return ac
}

/** Calls `fn(error)` once when `signal` aborts (now, if already aborted); returns an unsubscribe. */
export function watchAbort(signal: AbortSignal | undefined, path: string, syscall: string, fn: (e: DirectIoError) => void): () => void {
  if (signal === undefined) return () => {}
  const on = (): void => fn(abortError(signal, { syscall, path }))
  if (signal.aborted) {
    queueMicrotask(on)
    return () => {}
  }
  try {
    signal.addEventListener('abort', on, { once: true })
  } catch (e) {
    // A signal-like object that took a listener when the options were checked (args.ts) and
    // throws now: the stream (its open already started) fails as an abort would, and closes.
    queueMicrotask(() => fn(misuse('ERR_INVALID_ARG_TYPE', `signal must be an AbortSignal: its addEventListener threw (${e instanceof Error ? e.message : describe(e)})`, 'pass AbortController.signal or AbortSignal.timeout(ms)', { path, syscall, cause: e })))
    return () => {}
  }
  return () => unlisten(signal, on)
}

type Settled = { ok: true; n: number } | { ok: false; err: unknown }

interface ReadSlot {
  /** A read into a buffer of the stream's ring (READ_RING): its bytes are always copied out. */
  ring: boolean
  pos: number
  len: number
  buf: Uint8Array
  /** Leading bytes already delivered (a continuation after a short read). */
  skip: number
  /** Reads of this slot in a row that returned no byte past `skip` (see `pull`). */
  tries: number
  /** The outcome, once the read completed. */
  r: Settled | undefined
  /** Resolves `pull` waiting on this slot. */
  wake: (() => void) | undefined
}

/** The bytes of one completed read to deliver: [lo, hi) of its slot's buffer. */
interface Piece {
  slot: ReadSlot
  lo: number
  hi: number
}

/**
 * Reads in a row of the same block, each asking for twice as much, that may return only bytes
 * delivered already before a read stream gives up with EIO (see BlockReader.pull).
 */
const SHORT_RETRIES = 4

/** Base of both cores: opening (or adopting) the handle, op tracking and teardown. */
abstract class Core {
  protected fh: FileHandle | undefined
  protected readonly owned: boolean
  protected readonly ac: AbortController
  protected readonly pending = new Set<Promise<unknown>>()
  protected dead = false
  #opening: Promise<FileHandle> | undefined
  #destroying: Promise<void> | undefined

  constructor(
    readonly target: Target,
    depth: number,
    owned: boolean,
  ) {
    this.owned = owned
    this.ac = linkSignal(depth)
  }

  get path(): string {
    return typeof this.target === 'string' ? this.target : this.target.path
  }

  get handle(): FileHandle | undefined {
    return this.fh
  }

  open(): Promise<FileHandle> {
    if (this.#opening === undefined) {
      this.#opening = this.doOpen().then((fh) => {
        this.fh = fh
        return fh
      })
    }
    return this.#opening
  }

  protected abstract doOpen(): Promise<FileHandle>

  /** Opens the path with the stream's flags, or checks the handle it was given. */
  protected async acquire(c: BaseConfig, write: boolean, path = this.target): Promise<FileHandle> {
    if (typeof path === 'string') {
      const oo = { direct: c.direct, backend: c.backend, mode: c.mode }
      const fh = await open(path, c.flags, oo)
      if (!write || fh.readable || !fh.isBlockDevice) return fh
      // A block device opened write-only ('w', the default): the stream's finish reads the
      // device's block holding the data's end to keep the bytes after it, so it needs the
      // device readable. Truncating means nothing there (O_TRUNC is ignored on a device): the
      // same device opened 'r+' is what 'w' meant (as writeFile and copyFile do).
      await fh.close()
      const rw = await open(path, 'r+', oo)
      if (rw.isBlockDevice) return rw
      await rw.close()
      throw misuse('ERR_ODIRECT_FLAGS', `${path} was replaced by a file that is not a block device while the stream opened it`, 'open it again', { path })
    }
    try {
      this.checkHandle(path, write)
    } catch (e) {
      // A handle refused (read-only for a write stream, write-only for a read one) is closed all
      // the same when the stream owns it (autoClose: fh.createWriteStream()), as node:fs's
      // stream closes its handle on that error (was: left open).
      if (this.owned && !path.closed) await path.close().catch(() => {})
      throw e
    }
    return path
  }

  protected track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p)
    const drop = (): void => {
      this.pending.delete(p)
    }
    p.then(drop, drop)
    return p
  }

  protected checkHandle(fh: FileHandle, write: boolean): void {
    if (fh.closed) throw misuse('ERR_ODIRECT_CLOSED', `file handle for ${fh.path} is closed`, 'pass an open handle', { path: fh.path })
    if (write && !fh.writable) {
      throw misuse('ERR_ODIRECT_FLAGS', `file handle for ${fh.path} was opened read-only (flags '${fh.flags}'), a write stream needs it writable`, "open it with 'r+', 'w' or 'w+'", { path: fh.path })
    }
    if (!write && !fh.readable) {
      throw misuse('ERR_ODIRECT_FLAGS', `file handle for ${fh.path} was opened write-only (flags '${fh.flags}'), a read stream needs it readable`, "open it with 'r', 'r+' or 'w+'", { path: fh.path })
    }
  }

  protected get opSignal(): AbortSignal {
    return this.ac.signal
  }

  /** Cancels what is in flight, waits for it, and closes the file if the stream opened it. Idempotent. */
  destroy(): Promise<void> {
    if (this.#destroying === undefined) {
      this.dead = true
      this.onDestroy()
      this.#destroying = (async () => {
        if (this.pending.size > 0) this.ac.abort()
        let fh: FileHandle | undefined
        try {
          fh = await this.#opening
        } catch {
          fh = undefined
        }
        while (this.pending.size > 0) await Promise.allSettled([...this.pending])
        if (fh !== undefined) await this.beforeClose(fh)
        if (this.owned && fh !== undefined) await fh.close()
      })()
    }
    return this.#destroying
  }

  protected onDestroy(): void {}

  /** On destroy, once nothing is in flight, before the file is closed. */
  protected async beforeClose(_fh: FileHandle): Promise<void> {}
}

/** Reads a range of a file in aligned chunks, `readAhead` in flight, in order. */
export class BlockReader extends Core {
  readonly #cfg: ReadConfig
  /** The reads in file order: in flight, then completed and waiting for the consumer. */
  #queue: ReadSlot[] = []
  /** Reads in flight (the rest of the queue completed). */
  #inflight = 0
  /** Most reads queued (in flight or held + completed, not yet pulled): readAhead + 1. */
  #held = 0
  /** A read failed: issue nothing more (pull reports it in order). */
  #failed = false
  #next = 0
  #stopAligned = Infinity
  #chunk = 0
  #unit = 0
  #size = 0
  #eof = false
  #bytesRead = 0
  /** Chunks given back with `recycle` (their bytes were copied out): the next reads go into them. */
  #pool: Buffer[] = []
  /** The memory of the chunks `pull` handed out and not yet given back (only these can be). */
  #out = new WeakSet<ArrayBuffer>()
  /** The engine's chain of this stream's reads (see READ_CHAIN); 0: none. */
  #chain = 0
  /** Reads staged beyond the chain's depth (held by it): READ_CHAIN_HELD while chained, else 0. */
  #extra = 0
  /** The chain's depth: most of the stream's reads in the kernel while chained. */
  #depth = 0
  /** Bytes of chunks handed over since the stream last collected while waiting (WAIT_GC_BYTES). */
  #handed = 0
  /**
   * The stream runs its own young collections (WAIT_GC_BYTES): chunks of at least
   * YOUNG_TRIGGER / 256 bytes (youngGc makes at most 256 ArrayBuffers over one chunk to reach
   * V8's trigger); smaller ones keep the hand-over pressure.
   */
  #collects = false
  /** Chunks left to copy since the consumer last waited for a read (see READ_COPY). */
  #keepsUp = 0
  /** READ_COPY `=cpu`: copy the chunks of this window (decided at the last one's end). */
  #copyOn = READ_COPY === 3 && COPY_FIRST
  /** Windows in a row judged "no copy" (COPY_STOP). */
  #noes = 0
  /** The window's start (performance.now(), 0: none yet), busy ms then (busyMs), chunks, ms `pull` waited for reads, ms spent copying. */
  #winAt = 0
  #winBusy = 0
  #winChunks = 0
  #winWait = 0
  #winCopy = 0
  /** READ_RING: the ring's idle buffers, its read size (0: no ring). */
  #ring: Uint8Array[] = []
  #sub = 0
  /** The last pull handed its chunk over (the consumer may keep it): a ring may serve it. */
  #handing = false
  /** A piece taken while gathering that did not fit the chunk: the next pull's. */
  #stash: Piece | undefined
  /** A read failed after a gathered chunk's bytes: the next pull throws it. */
  #deferred: { err: unknown } | undefined

  constructor(target: Target, cfg: ReadConfig) {
    super(target, cfg.readAhead, cfg.owned)
    this.#cfg = cfg
  }

  get bytesRead(): number {
    return this.#bytesRead
  }

  protected async doOpen(): Promise<FileHandle> {
    const c = this.#cfg
    const fh = await this.acquire(c, false)
    try {
      const unit = fh.alignment.offset
      this.#unit = unit
      this.#chunk = Math.min(roundUp(c.chunkSize, unit), Math.floor(MAX_IO_LENGTH / unit) * unit)
      this.#next = Math.floor(c.start / unit) * unit
      this.#stopAligned = c.stop === Infinity ? Infinity : roundUp(c.stop, unit)
      this.#size = (await fh.stat()).size
      const inside = READ_CHAIN_INSIDE === '1' || (READ_CHAIN_INSIDE !== '0' && c.heldInside === true)
      const depth = inside ? c.readAhead - READ_CHAIN_HELD : c.readAhead
      if (READ_CHAIN && depth >= 1 && !this.dead) {
        this.#chain = getEngine().native.chainOpen(depth)
        this.#depth = depth
        this.#extra = READ_CHAIN_HELD
      }
      this.#held = c.readAhead + (inside ? HELD_EXTRA : Math.max(HELD_EXTRA, this.#extra))
      this.#collects = WAIT_GC_BYTES > 0 && this.#chunk >= YOUNG_TRIGGER / 256
      if (READ_RING && (READ_COPY === 2 || READ_COPY === 3)) {
        const parts = Math.ceil(this.#chunk / RING_READ)
        this.#sub = Math.min(this.#chunk, roundUp(Math.ceil(this.#chunk / parts), unit))
      }
    } catch (e) {
      if (this.owned) await fh.close().catch(() => {})
      throw e
    }
    return fh
  }

  /**
   * Reads `len` bytes at `pos` (the slot: what the stream delivers from this read), into a buffer
   * of `readLen` >= `len` bytes: a read of the same block again after a short one asks for more
   * than the slot (see `pull`); the bytes past `len` are not delivered.
   */
  #issue(fh: FileHandle, pos: number, len: number, skip: number, tries = 0, readLen = len, ring = false): ReadSlot {
    // Not zeroed: a chunk is often a block a collected chunk left behind (see memory.rs: its pages
    // are mapped already), and the read overwrites it; what the read did not fill is zeroed below,
    // so no old byte is ever visible through the chunk or its ArrayBuffer.
    // A ring read (READ_RING) goes into a buffer of the ring, of the ring's read size.
    let mem: Uint8Array | undefined = ring ? this.#ring.pop() : readLen <= this.#chunk ? this.#pool.pop() : undefined
    // A chunk given back and then transferred (detached) by its consumer is dropped.
    while (!ring && mem !== undefined && mem.byteLength === 0) mem = this.#pool.pop()
    readCounts[mem === undefined ? 3 : 2]++
    if (ring) {
      readCounts[6]++
      if (mem === undefined) readCounts[7]++
    }
    mem ??= allocForOverwrite(ring ? this.#sub : readLen, Math.max(PAGE_SIZE, fh.alignment.memory))
    const buf = mem.byteLength === readLen ? mem : mem.subarray(0, readLen)
    readAddrs?.add(native.addressOf(buf))
    const slot: ReadSlot = { ring, pos, len, buf, skip, tries, r: undefined, wake: undefined }
    const settle = (r: Settled): void => {
      slot.r = r
      this.#inflight--
      const wake = slot.wake
      slot.wake = undefined
      wake?.()
      // The device's queue is refilled from the completion itself, not when the consumer next
      // pulls: a consumer busy with earlier chunks (hashing, a slow 'data' listener) does not
      // leave the device idle while completed chunks wait for it (up to #held in all).
      if (r.ok && r.n >= len) this.#fill(fh)
      else this.#failed ||= !r.ok
    }
    this.#inflight++
    const read = fh.read(buf, { position: pos, signal: this.opSignal })
    // Staged by now (not submitted before the next flush): the chain takes it, in the kernel if
    // fewer than `readAhead` of its reads are, else held until one of them is reaped. Refused
    // (bounced memory, or the op went to the kernel alone): it is in the kernel outside the
    // chain's count, so the stream counts its reads itself from now on (`#extra` 0: never more
    // than `readAhead` reads unfinished, as without a chain).
    if (this.#chain !== 0 && this.#extra > 0 && !getEngine().native.chainAdd(this.#chain, buf)) this.#extra = 0
    this.track(
      read.then(
        (r) => {
          if (r.bytesRead < mem.byteLength) mem.fill(0, r.bytesRead)
          settle({ ok: true, n: r.bytesRead })
        },
        (err: unknown) => settle({ ok: false, err }),
      ),
    )
    return slot
  }

  #fill(fh: FileHandle): void {
    // Never allocate more than the file needs: reads stop at the size known so far (the size at
    // open, or more if the file grew), plus one block-sized read past it to see the end of file.
    const known = roundUp(this.#size, this.#unit)
    // Chained: the chain's depth in the kernel and the held reads; else `readAhead`.
    const ahead = this.#extra > 0 ? this.#depth + this.#extra : this.#cfg.readAhead
    // READ_RING: while the stream copies, smaller reads into its ring.
    const ring = this.#ringOn()
    if (!ring && this.#ring.length > 0) this.#dropRing()
    const step = ring ? this.#sub : this.#chunk
    let issued = false
    while (!this.#eof && !this.dead && !this.#failed && this.#inflight < ahead && this.#queue.length < this.#held && this.#next < this.#stopAligned && (this.#next < known || this.#queue.length === 0)) {
      const pos = this.#next
      const len = Math.min(step, this.#stopAligned - pos, pos < known ? known - pos : this.#unit)
      this.#next += len
      this.#queue.push(this.#issue(fh, pos, len, 0, 0, len, ring))
      issued = true
    }
    if (issued) submitNow()
  }

  /** READ_RING: the next reads go into the ring (the consumer gets copies). */
  #ringOn(): boolean {
    return this.#sub > 0 && this.#handing && HANDOVER && (READ_COPY === 2 || this.#copyOn)
  }

  #end(): void {
    // Reads issued past the end return 0; they are left to settle (destroy waits for them).
    this.#eof = true
    this.#queue = []
    this.#closeChain()
    this.#dropRing()
  }

  /** The chain takes no more reads; it is forgotten once its reads are reaped. */
  #closeChain(): void {
    if (this.#chain === 0) return
    const c = this.#chain
    this.#chain = 0
    this.#extra = 0
    try {
      getEngine().native.chainClose(c)
    } catch {
      // The engine is shutting down: its teardown cancels what it holds.
    }
  }

  /** The oldest read's outcome, once it completed. */
  #settled(slot: ReadSlot): Settled | Promise<Settled> {
    if (slot.r !== undefined) return slot.r
    return new Promise<void>((resolve) => (slot.wake = resolve)).then(() => slot.r as Settled)
  }

  /**
   * The next chunk (a Buffer view over its own aligned memory), or null at the end. `handOver`:
   * the caller will not give the chunk back (`recycle`): it gets a new ArrayBuffer over the
   * memory (see HANDOVER), counted `1 + pressure` times towards V8's young-generation trigger.
   */
  async pull(handOver = false, pressure = HANDOVER_PRESSURE): Promise<Buffer<ArrayBuffer> | null> {
    if (this.#deferred !== undefined) {
      // A read after the bytes of a gathered chunk failed (see #gather): reported now, in order.
      const e = this.#deferred.err
      this.#deferred = undefined
      throw e
    }
    const fh = this.fh ?? (await this.open())
    this.#handing = handOver
    const p = this.#stash ?? (await this.#piece(fh))
    this.#stash = undefined
    if (p === null) return null
    if (p.slot.ring) return this.#gather(fh, p, handOver, pressure)
    const { slot, lo, hi } = p
    const ab = slot.buf.buffer as ArrayBuffer
    // Read before the hand-over, which detaches `ab` (and so zeroes slot.buf's offset).
    const at = slot.buf.byteOffset + lo
    // While the stream collects itself (WAIT_GC_BYTES), its chunks add no pressure: V8's
    // own collection, in the middle of a burst while the consumer still uses the burst's
    // chunks, leaves them for the next one. A consumer slower than the device leaves the
    // stream no wait: twice WAIT_GC_BYTES handed over without one, it collects here, before
    // this chunk is handed over (the consumer is done with the ones before, or holds them).
    if (handOver && HANDOVER && this.#collects && this.#handed >= 2 * WAIT_GC_BYTES) {
      this.#handed = 0
      native.youngGc(ab, YOUNG_TRIGGER)
    }
    const size = ab.byteLength
    // A copy (see READ_COPY) only from a whole buffer of the stream's chunk size, its own; with
    // the ring (READ_RING), only ring reads are copied (a read made before the stream began to
    // copy is handed over: its memory is new to the stream anyway).
    if (handOver && READ_COPY === 3) this.#window()
    const copy = handOver && HANDOVER && READ_COPY > 0 && this.#sub === 0 && (READ_COPY === 2 || (READ_COPY === 3 ? this.#copyOn : this.#keepsUp > 0)) && slot.buf.byteOffset === 0 && slot.buf.byteLength === this.#chunk && size === this.#chunk
    if (handOver) this.#keepsUp = Math.max(0, this.#keepsUp - 1)
    if (copy) {
      const c0 = READ_COPY === 3 ? performance.now() : 0
      const out = allocForOverwrite(hi - lo, Math.max(PAGE_SIZE, fh.alignment.memory))
      const piece = slot.buf.subarray(lo, hi)
      if (native.copyInto(out, 0, piece) !== hi - lo) out.set(piece)
      readCounts[8] += hi - lo
      if (c0 > 0) this.#winCopy += performance.now() - c0
      // The read's buffer takes a later read: never shown to the consumer, it stays the stream's.
      if (this.#pool.length < this.#held && !this.dead) this.#pool.push(Buffer.from(ab, 0, size))
      return this.#showCopy(out, hi - lo, pressure)
    }
    if (handOver) readCounts[1]++
    if (handOver && HANDOVER && SYNC_SWEEP && !syncSweepSet) syncSweep()
    const shown = (handOver && HANDOVER && native.handOver(ab, this.#collects ? 0 : pressure)) || ab
    if (shown !== ab) this.#handed += size
    this.#out.add(shown)
    return Buffer.from(shown, at, hi - lo)
  }

  /** A default-mode copy (`out`, `n` bytes of it) handed to the consumer (see HANDOVER, COPY_PRESSURE). */
  #showCopy(out: Buffer, n: number, pressure: number): Buffer<ArrayBuffer> {
    const oab = out.buffer as ArrayBuffer
    const outSize = oab.byteLength
    const shownCopy = native.handOver(oab, this.#collects ? 0 : Math.max(pressure, COPY_PRESSURE)) || oab
    if (shownCopy !== oab) this.#handed += outSize
    this.#out.add(shownCopy)
    readCounts[0]++
    return Buffer.from(shownCopy, 0, n)
  }

  /**
   * READ_RING: a chunk of up to `chunkSize` bytes gathered by copy from the pieces of consecutive
   * ring reads, `first` and those after it (each awaited in turn), into new memory of its own;
   * each ring buffer goes back to the ring once copied. A later read's failure after bytes were
   * gathered is reported by the next pull (the bytes before it are delivered first).
   */
  async #gather(fh: FileHandle, first: Piece, handOver: boolean, pressure: number): Promise<Buffer<ArrayBuffer> | null> {
    if (handOver && READ_COPY === 3) this.#window()
    // The chunk's length, as far as the reads queued, the ring reads still to come and the file's
    // size known tell.
    let want = first.hi - first.lo
    let pos = first.slot.pos + first.slot.len
    for (const q of this.#queue) {
      const m = Math.min(q.len, this.#cfg.stop - q.pos, Math.max(0, this.#size - q.pos))
      if (!q.ring || want + m > this.#chunk || m <= 0) {
        pos = Infinity
        break
      }
      want += m
      pos = q.pos + q.len
    }
    for (;;) {
      const m = Math.min(this.#sub, this.#cfg.stop - pos, this.#size - pos)
      if (!(m > 0) || want + m > this.#chunk || !this.#ringOn()) break
      want += m
      pos += this.#sub
    }
    const out = allocForOverwrite(want, Math.max(PAGE_SIZE, fh.alignment.memory))
    let n = 0
    let copyMs = 0
    let p: Piece = first
    for (;;) {
      const len = p.hi - p.lo
      const c0 = READ_COPY === 3 ? performance.now() : 0
      const piece = p.slot.buf.subarray(p.lo, p.hi)
      if (native.copyInto(out, n, piece) !== len) out.set(piece, n)
      if (c0 > 0) copyMs += performance.now() - c0
      n += len
      readCounts[8] += len
      if (p.slot.ring) this.#ringBack(p.slot.buf)
      const next = this.#queue[0]
      // (A piece past the size known, of a file that grew, that does not fit: the next chunk's.)
      if (next === undefined || this.dead || n + Math.min(next.len, this.#cfg.stop - next.pos, Math.max(this.#unit, this.#size - next.pos)) > out.byteLength) break
      let q: Piece | null
      try {
        q = await this.#piece(fh)
      } catch (err) {
        this.#deferred = { err }
        break
      }
      if (q === null) break
      if (n + q.hi - q.lo > out.byteLength) {
        // (Only after a read that delivered nothing: a later, larger one.) It is the next chunk.
        this.#stash = q
        break
      }
      p = q
    }
    this.#winCopy += copyMs
    if (this.dead) return null
    if (!handOver) {
      readCounts[0]++
      this.#out.add(out.buffer as ArrayBuffer)
      return out.subarray(0, n) as Buffer<ArrayBuffer>
    }
    return this.#showCopy(out, n, pressure)
  }

  /** A ring read's buffer, copied out: the next ring read takes it (READ_RING). */
  #ringBack(buf: Uint8Array): void {
    const mem = buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength ? buf : new Uint8Array(buf.buffer, 0, buf.buffer.byteLength)
    if (!this.dead && !this.#eof && this.#ringOn() && this.#ring.length <= this.#held && mem.byteLength === this.#sub) this.#ring.push(mem)
    else this.#releaseOwn(mem)
  }

  /** The stream's own buffer, never shown to its consumer, back to odirect's pool at once. */
  #releaseOwn(mem: Uint8Array): void {
    try {
      native.releaseBlock(mem.buffer)
    } catch {
      // The runtime is tearing down: the buffer goes with its collection.
    }
  }

  /** The ring's idle buffers back to the pool (the stream stopped copying, or ended). */
  #dropRing(): void {
    const r = this.#ring
    this.#ring = []
    for (const b of r) this.#releaseOwn(b)
  }

  /**
   * The next piece of the file to deliver: the oldest read's bytes in the stream's range, once it
   * completed (short reads continued, the end of file found), or null at the end.
   */
  async #piece(fh: FileHandle): Promise<Piece | null> {
    for (;;) {
      if (this.dead) return null
      this.#fill(fh)
      const slot = this.#queue[0]
      if (slot === undefined) return null
      if (slot.r === undefined && ((this.#collects && this.#handed >= WAIT_GC_BYTES) || (RING_GC_BYTES > 0 && slot.ring && this.#handed >= RING_GC_BYTES))) {
        this.#handed = 0
        readCounts[10]++
        // The collection's time is the stream's own, as its copies' (see #window).
        const g0 = READ_COPY === 3 ? performance.now() : 0
        native.youngGc(slot.buf.buffer, YOUNG_TRIGGER)
        if (g0 > 0) this.#winCopy += performance.now() - g0
      }
      const t0 = slot.r === undefined && (READ_COPY === 1 || READ_COPY === 3) ? performance.now() : 0
      const r = slot.r ?? (await this.#settled(slot))
      // The consumer waited for the device (see READ_COPY): this chunk and the ones the stream
      // holds now are copies (a device that completes its reads together completes up to all of them).
      if (t0 > 0) {
        const waited = performance.now() - t0
        if (READ_COPY === 3) this.#winWait += waited
        else if (waited >= COPY_WAIT_MS) this.#keepsUp = this.#held
      }
      if (this.dead) return null
      this.#queue.shift()
      if (!r.ok) {
        this.#end()
        throw r.err
      }
      // A read of a block again (below) may ask for more than the slot: the rest is not its.
      const n = Math.min(r.n, slot.len)
      const at = slot.pos + n
      if (slot.pos + r.n > this.#size) this.#size = slot.pos + r.n
      if (n >= slot.len) this.#fill(fh)
      else if (at >= this.#size) this.#end()
      else if (n > slot.skip) {
        // Short read before the end of file (FUSE, NFS, a signal): progress. Read the rest of
        // the slot from the first byte not delivered, or with O_DIRECT from the block holding
        // it; the bytes of that block delivered already are skipped.
        const p = fh.direct ? Math.floor(at / this.#unit) * this.#unit : at
        // Not chained, nor any read after it: a held read is the last one staged, and this one
        // comes first in file order (a failure of a read in the kernel would cancel it held,
        // and the stream would report that cancellation instead of the failure).
        this.#closeChain()
        this.#queue.unshift(this.#issue(fh, p, slot.pos + slot.len - p, at - p))
        submitNow()
      } else if (n > 0 && slot.tries < SHORT_RETRIES) {
        // O_DIRECT read the block again and got the same partial block (a server that answers
        // every read short, e.g. with half of what was asked): nothing new, but no sign of an
        // end either. Ask again for twice as much from the same block, so that a server that
        // returns a share of the request returns bytes past those delivered.
        const readLen = Math.min(Math.max(slot.len, slot.buf.byteLength * 2), Math.floor(MAX_IO_LENGTH / this.#unit) * this.#unit)
        this.#closeChain()
        this.#queue.unshift(this.#issue(fh, slot.pos, slot.len, slot.skip, slot.tries + 1, readLen))
        submitNow()
      } else {
        // No progress: the file shrank, or reads keep returning the bytes delivered already. A
        // read of 0 bytes is the end of the file, whatever fstat says (sysfs files say 4096 and
        // hold a few; readFile, copyFile and node:fs read them to there too).
        this.#size = (await fh.stat()).size
        if (n > 0 && at < this.#size) {
          const what =
            n === 0
              ? `read returned no data at position ${at}`
              : `${slot.tries + 1} reads from position ${slot.pos} (up to ${slot.buf.byteLength} bytes) returned no byte past position ${at}`
          throw kernelError(E.EIO, { syscall: 'read', path: fh.path, position: at, length: slot.pos + slot.len - at }, `${what}, before the end of file (${this.#size} bytes)`)
        }
        this.#end()
      }
      const lo = Math.max(slot.skip, this.#cfg.start - slot.pos)
      const hi = Math.min(n, this.#cfg.stop - slot.pos)
      if (hi > lo) {
        const ab = slot.buf.buffer as ArrayBuffer
        if (ab.byteLength === 0) {
          // Only a chunk given back (reuseChunks) and then transferred by a consumer that kept it
          // can be: the read went into memory that stays odirect's, but there is no chunk to show.
          this.#end()
          throw misuse('ERR_ODIRECT_DETACHED', `a chunk of ${this.path} was transferred by the consumer while the stream was reading into it again`, 'with reuseChunks, do not keep, transfer or post chunks: copy what you keep', { path: this.path, position: slot.pos })
        }
        this.#bytesRead += hi - lo
        return { slot, lo, hi }
      }
      if (this.#eof) return null
    }
  }

  /**
   * READ_COPY `=cpu`: counts a default-mode chunk into the window, and at the window's end
   * decides whether the next one's chunks are copies (see COPY_BUSY_MAX).
   */
  #window(): void {
    const now = performance.now()
    if (this.#winAt === 0) {
      this.#winAt = now
      this.#winBusy = busyMs()
      return
    }
    this.#winChunks++
    const span = now - this.#winAt
    if (this.#winChunks < COPY_WINDOW_CHUNKS || span < COPY_WINDOW_MS) return
    const b = busyMs()
    // Both ends of one kind (see busyMs), else no measure: never a copy (NaN compares false).
    const busy = (b >= 0) === (this.#winBusy >= 0) ? (Math.abs(b - this.#winBusy) - this.#winCopy) / span : NaN
    const yes = busy < COPY_BUSY_MAX && this.#winWait / span >= COPY_WAIT_SHARE
    // COPY_STOP: a stream that copies stops after that many windows in a row judged "no"; with
    // COPY_STOP_BUSY, only windows whose thread was busy count (see there).
    this.#noes = yes || (COPY_STOP_BUSY && this.#copyOn && busy < COPY_BUSY_MAX) ? 0 : this.#noes + 1
    this.#copyOn = yes || (this.#copyOn && this.#noes < COPY_STOP)
    readCounts[this.#copyOn ? 4 : 5]++
    this.#winAt = now
    this.#winBusy = b
    this.#winChunks = 0
    this.#winWait = 0
    this.#winCopy = 0
  }

  /**
   * Gives back a chunk `pull` returned, for a caller done with it and its ArrayBuffer (the web
   * stream's BYOB reads copy it out; Node streams with `reuseChunks` once the consumer returns):
   * its memory takes a later read, with no new allocation. Anything else (a chunk given back
   * twice, another buffer) is ignored. Only full-size chunks are kept, at most `readAhead`.
   */
  recycle(chunk: unknown): void {
    if (!Buffer.isBuffer(chunk)) return
    const ab = chunk.buffer
    if (!(ab instanceof ArrayBuffer) || !this.#out.delete(ab)) return
    if (ab.byteLength === this.#chunk && this.#pool.length < this.#held && !this.dead) this.#pool.push(Buffer.from(ab, 0, ab.byteLength))
  }

  protected override onDestroy(): void {
    this.#queue = []
    this.#pool = []
    this.#closeChain()
    this.#dropRing()
  }
}

/** A full block (or a transferred chunk) waiting for a write slot. */
interface ReadyBlock {
  buf: Uint8Array
  len: number
  logical: number
  /** The ArrayBuffer a transferred chunk's memory was taken into (`native.takeOver`): released once written, never pooled. */
  taken?: ArrayBuffer
}

/** Detaches a taken chunk's ArrayBuffer once its write is over (see crates/napi/src/stream.rs, releaseTaken). */
function releaseTaken(ab: ArrayBuffer | undefined): void {
  if (ab !== undefined) native.releaseTaken(ab)
}

interface WriteEntry {
  /** Where in the file its write goes. */
  pos: number
  /** Bytes of its write (the block's, padding included). */
  len: number
  logical: number
  state: 'pending' | 'ok' | 'failed'
  /** Why it failed. */
  err?: unknown
  /**
   * Its block: kept (not pooled, not released) until it and every write before it completed, so
   * that a failed stream can tell its own bytes in the file from another writer's (see ownTail).
   */
  buf: Uint8Array
  /** A transferred chunk's memory (see ReadyBlock.taken): released when the block is. */
  taken?: ArrayBuffer
}

/**
 * A buffered descriptor of `fh`'s own file (its name may have changed since the open): through
 * /proc/self/fd, by `fh`'s path only where /proc is not mounted. It must be `fh`'s file: a handle
 * its caller closed meanwhile may have left its descriptor's number to another file, so the
 * opened file is checked against `fh` (device and inode; `fh.stat` fails on a closed handle).
 */
async function openOwn(fh: FileHandle, flags: string | number): Promise<Awaited<ReturnType<typeof fsOpen>>> {
  let h: Awaited<ReturnType<typeof fsOpen>>
  try {
    h = await fsOpen(`/proc/self/fd/${fh.fd}`, flags)
  } catch (e) {
    if ((e as { code?: unknown }).code !== 'ENOENT' || (await fsOpen('/proc/self/fd', 'r').then((d) => d.close().then(() => true), () => false))) throw e
    h = await fsOpen(fh.path, flags)
  }
  try {
    const [own, got] = await Promise.all([fh.stat(), h.stat()])
    if (own.dev !== got.dev || own.ino !== got.ino) throw kernelError(E.EBADF, { syscall: 'open', path: fh.path }, 'the stream\'s file is not the one its descriptor names now')
    return h
  } catch (e) {
    await h.close().catch(() => {})
    throw e
  }
}

/**
 * The file's bytes at `position` into `into` (zeros past its end), for a write-only handle's last
 * block (see finish): through a buffered descriptor of its own on the stream's open file
 * (/proc/self/fd: the file the stream writes, whatever its name now; by its path only where
 * /proc is not mounted), which sees what other writers put there (the page cache, or the device
 * where direct writes went). Through the path, a file renamed since the open (a log rotated)
 * got the bytes of the file now at that name, or zeros, after the data (adversary-s18b). Best
 * effort: a file this process may not read leaves `into` as it is (the block's padding).
 */
async function readBack(fh: FileHandle, into: Uint8Array, position: number): Promise<boolean> {
  let h: Awaited<ReturnType<typeof fsOpen>> | undefined
  try {
    h = await openOwn(fh, 'r')
    for (let off = 0; off < into.byteLength; ) {
      const { bytesRead } = await h.read(into, off, into.byteLength - off, position + off)
      if (bytesRead === 0) break
      off += bytesRead
    }
    return true
  } catch {
    // Unreadable: the padding stays (the caller writes only the data then: see writeTail).
    return false
  } finally {
    await h?.close().catch(() => {})
  }
}

/**
 * Writes `data` at `position` of `fh`'s file through a buffered write-only descriptor of its own
 * (/proc/self/fd: the stream's own file; its path where /proc is not mounted): the last block of
 * a write-only stream whose file this process may not read back (see finish), so that only the
 * data's bytes are written, not the block's padding over the file's bytes after them. A kernel
 * error is thrown typed, with the position it stopped at.
 */
async function writeTail(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let h: Awaited<ReturnType<typeof fsOpen>> | undefined
  let off = 0
  try {
    h = await openOwn(fh, fsConstants.O_WRONLY)
    while (off < data.byteLength) {
      const { bytesWritten } = await h.write(data, off, data.byteLength - off, position + off)
      off += bytesWritten
    }
  } catch (e) {
    const errno = (e as { errno?: unknown }).errno
    if (typeof errno !== 'number') throw e
    throw kernelError(Math.abs(errno), { syscall: 'write', path: fh.path, position: position + off, length: data.byteLength - off })
  } finally {
    await h?.close().catch(() => {})
  }
}
/**
 * ODIRECT_STREAM_DIR_NOW=0: a write stream's finish syncs the directory of the path it opened (a
 * dangling link followed), as before the nineteenth session, whatever happened to the name since
 * (A/B, and the tests' proof that the new form is what makes the renamed file durable).
 */
const DIR_NOW = process.env.ODIRECT_STREAM_DIR_NOW !== '0'

/**
 * Where the stream's file is named now, for the directory sync at its end: the path
 * /proc/self/fd/N reads back (the kernel follows the open file's renames), once a stat of that
 * path shows the same device and inode as the stream's descriptor (a name changed again between
 * the two is read again, at most 3 times). Undefined when the file's name was unlinked (the
 * kernel reads it back marked " (deleted)") and no other hard link keeps it (fstat's nlink 0): no
 * name of it is left, no directory entry to make durable, and none is synced (the data was
 * datasynced all the same). A file unlinked under the name it was opened by that still has a
 * link (a log rotated by link + unlink: `ln log log.1 && rm log`) has a name /proc cannot tell:
 * the path opened is synced, as before, which makes a link made in the same folder durable (was:
 * none synced, and after 'finish' a power cut lost log.1: adversary-s20).
 * Where /proc cannot answer (not mounted, a path outside the process's root, or names that keep
 * moving): the path opened (its dangling link followed: the file a link created is in the
 * directory the link names; durability-s16.spec), as before.
 */
async function entryNow(fh: FileHandle, opened: string): Promise<string | undefined> {
  const fallback = (): Promise<string> => resolveLinks(opened)
  if (!DIR_NOW) return fallback()
  let own: { dev: number; ino: number; nlink: number }
  try {
    own = await fh.stat()
  } catch {
    return fallback()
  }
  for (let i = 0; i < 3; i++) {
    let at: string
    try {
      at = await readlink(`/proc/self/fd/${fh.fd}`)
    } catch {
      return fallback()
    }
    if (!at.startsWith('/')) return fallback()
    const st = await stat(at).catch(() => undefined)
    if (st !== undefined && st.dev === own.dev && st.ino === own.ino) return at
    // The name the descriptor was opened by (or renamed to) is gone: the kernel marks it so.
    // Another hard link may still name the file (nlink as the descriptor's fstat gave it).
    if (at.endsWith(' (deleted)')) return own.nlink > 0 ? fallback() : undefined
  }
  return fallback()
}

/**
 * A view of a resizable ArrayBuffer resized below its end: it reads as empty (byteLength 0), as an
 * empty chunk does, but its bytes are gone. Node's Writable queues the chunks written before the
 * stream's open is done and hands them to _write after it, so a buffer resized meanwhile (a
 * 4 MiB chunk resized to 0 right after write()) arrives here already out of bounds; node:fs's
 * stream then writes nothing and never emits 'finish' (its count of bytes queued keeps the 4 MiB):
 * here the stream fails ERR_ODIRECT_DETACHED instead (adversary-s19b). The engine (V8, JSC)
 * refuses element access on such a view: TypedArray#at throws; an empty view in bounds does not.
 */
function outOfBounds(view: ArrayBufferView): boolean {
  if (view.byteLength !== 0 || view instanceof DataView) return false
  try {
    ;(view as Uint8Array).at(0)
    return false
  } catch {
    return true
  }
}

/** Read errors (EIO) a failed stream's read-back narrows down before it gives up (see ownTail). */
const OWN_TAIL_FAILS = 64
/** Bytes read back at a time (see ownTail). */
const OWN_TAIL_PIECE = 1 << 20

/**
 * Whether every byte of the file in [from, to) is the failed stream's own (see
 * BlockWriter.beforeClose): read back through a buffered descriptor of its own on the stream's
 * open file (/proc/self/fd: the file the stream wrote, whatever its name now; a write-only
 * handle's file too), each byte must be what the block written there holds (`entries`: the
 * blocks after the last confirmed one, in file order), or, where a block failed or was cancelled
 * (its write may have stopped anywhere) or past the last block (`end`: a reservation ahead), a
 * zero or that block's byte. Bytes such a block's range cannot give back (EIO: the medium error
 * that failed it) are narrowed down by halves to single bytes, at most OWN_TAIL_FAILS read errors:
 * they are nobody's readable data. Anything else (another writer's bytes, a file this process
 * cannot read back, too many errors): false, the size is left as it is.
 */
async function ownTail(fh: FileHandle, from: number, to: number, entries: readonly WriteEntry[], end: number): Promise<boolean> {
  let h: Awaited<ReturnType<typeof fsOpen>> | undefined
  try {
    h = await openOwn(fh, 'r')
  } catch {
    return false
  }
  const fails = { n: 0 }
  /** [pos, pos + len) against `own` (from `ownAt`), zeros allowed with `hole`. */
  const check = async (pos: number, len: number, own: Uint8Array | undefined, ownAt: number, hole: boolean): Promise<boolean> => {
    const got = Buffer.allocUnsafe(len)
    let n = 0
    try {
      while (n < len) {
        const { bytesRead } = await (h as NonNullable<typeof h>).read(got, n, len - n, pos + n)
        // The file ends sooner (cut since its stat): no bytes there to tell.
        if (bytesRead === 0) break
        n += bytesRead
      }
    } catch (e) {
      if (!hole || (e as { code?: unknown }).code !== 'EIO' || ++fails.n > OWN_TAIL_FAILS) return false
      if (len === 1) return true
      const half = Math.floor(len / 2)
      return (await check(pos, half, own, ownAt, hole)) && (await check(pos + half, len - half, own, ownAt + half, hole))
    }
    const view = got.subarray(0, n)
    if (own !== undefined && view.equals(own.subarray(ownAt, ownAt + n))) return true
    if (!hole) return false
    for (let i = 0; i < n; i++) if (view[i] !== 0 && (own === undefined || view[i] !== own[ownAt + i])) return false
    return true
  }
  const range = async (a: number, b: number, own: Uint8Array | undefined, base: number, hole: boolean): Promise<boolean> => {
    for (let p = a; p < b; p += OWN_TAIL_PIECE) if (!(await check(p, Math.min(OWN_TAIL_PIECE, b - p), own, p - base, hole))) return false
    return true
  }
  try {
    let at = from
    for (const e of entries) {
      const a = Math.max(at, e.pos)
      const b = Math.min(to, e.pos + e.len)
      if (a >= b) continue
      // Bytes before its first block (the cut goes back to the file's size before a stream
      // that started past its end, see cutBack): a hole the write made, zeros; another
      // writer's bytes there are not the stream's.
      if (a > at && !(await range(at, a, undefined, at, true))) return false
      if (!(await range(a, b, e.buf, e.pos, e.state !== 'ok'))) return false
      at = b
    }
    // Past its last block: a reservation ahead, zeros.
    if (at < to && (at < end || !(await range(at, to, undefined, at, true)))) return false
    return true
  } finally {
    await h.close().catch(() => {})
  }
}

/** Gathers chunks into aligned blocks and writes them, `writeBehind` in flight. */
export class BlockWriter extends Core {
  #cfg: WriteConfig
  #chunk = 0
  #unit = 0
  #pos = 0
  #total = 0
  #origSize = 0
  #cur: Uint8Array | undefined
  #fill = 0
  #pool: Uint8Array[] = []
  /** Every block the stream allocated (RELEASE_BLOCKS): given back at its end. */
  #blocks: Uint8Array[] = []
  /** Submitted writes, in file order, until they and every one before them completed. */
  #entries: WriteEntry[] = []
  /** Writes in flight. */
  #inflight = 0
  /** Full blocks waiting for a free slot: submitted from a completion, so `writeBehind` stay in flight while the producer fills the next. */
  #ready: ReadyBlock[] = []
  /** Bytes of the writes in flight (see DEPTH_BYTES). */
  #inflightBytes = 0
  /** Bytes in the kernel at most (DEPTH_BYTES: writeBehind x chunk; 0: count writes only). */
  #depthBytes = 0
  /** Writes in the kernel at most: writeBehind, or with DEPTH_BYTES max(writeBehind, WRITE_OPS_MAX). */
  #depthOps = 0
  /** Blocks accepted (in flight + ready) before `write` waits: 2 x writeBehind (DEPTH_BYTES: their bytes, and 2 x #depthOps writes). */
  #held = 0
  #error: unknown
  /** A write failed and others are still in flight (see `#failed`): start no more. */
  #failing = false
  #wake: (() => void) | undefined
  /** The engine's chain of this stream's writes (see CHAIN); 0: none. */
  #chain = 0
  /** The chain refused a block (see `#start`): later blocks are started by the stream's own count. */
  #unchained = false
  #bytesWritten = 0
  /** Bytes of chunks taken over and written in place (transferChunks). */
  #bytesTransferred = 0
  #finished = false
  /** ALLOCATE_AHEAD: the file's size (reserved up to it); -1 when not reserving ahead. */
  #allocEnd = -1
  /** A reservation (fallocate) in flight: blocks past `#allocEnd` wait for it. */
  #allocating = false
  /** Settles when the reservation in flight is done (the end waits for it before truncating). */
  #allocDone: Promise<void> = Promise.resolve()
  /** The furthest end a reservation moved the file's size to (0: none). */
  #reservedTo = 0
  /** Told about the first failed write at once, so the stream errors without waiting for the next chunk. */
  onError: ((e: unknown) => void) | undefined

  constructor(target: Target, cfg: WriteConfig) {
    super(target, cfg.writeBehind, cfg.owned)
    this.#cfg = cfg
  }

  /** Bytes confirmed written, in order (see DirectWriteStream.bytesWritten). */
  get bytesWritten(): number {
    return this.#bytesWritten
  }

  /**
   * Bytes of the data in the file in order once the stream failed: the confirmed ones and what the
   * first failed block's short writes put there before its failure (see #inOrder). writeFile's
   * error says this many were written (was the confirmed count alone: 0 for a block device that
   * took the first 1 MiB of a 2 MiB block, then ENOSPC at its end).
   */
  get bytesInOrder(): number {
    return this.#inOrder() - this.#cfg.start
  }

  /** The end of the data in order: the confirmed blocks, and of the first failed one what its short writes put in the file before the failure (the error's position: the first byte not written), never past the data. */
  #inOrder(): number {
    const start = this.#cfg.start
    const failedAt = (this.#error as { position?: unknown } | undefined)?.position
    return typeof failedAt === 'number' && failedAt > start + this.#bytesWritten ? Math.min(failedAt, start + this.#total) : start + this.#bytesWritten
  }

  /** Bytes of chunks taken over and written in place, not copied (see WriteStreamOptions.transferChunks). */
  get bytesTransferred(): number {
    return this.#bytesTransferred
  }

  protected async doOpen(): Promise<FileHandle> {
    const c0 = this.#cfg
    // A path the flags truncate ('w', 'w+', O_TRUNC), written from a start other than 0: whether
    // that start fits the file's block size is known only once it is open, so it is opened without
    // O_TRUNC and truncated after the check: a refused stream leaves the file as it was (and
    // removes it again when this open created it) where it used to be cut to 0 bytes first.
    const guarded = typeof this.target === 'string' && c0.start !== 0 && (flagBits(c0.flags) & O_TRUNC) !== 0
    const { fh, created } = guarded ? await this.#openUntruncated(c0) : { fh: await this.acquire(c0, true), created: false }
    try {
      // A handle given without `start`: from its position (see WriteConfig.fromPosition).
      if (this.#cfg.fromPosition && typeof this.target !== 'string') this.#cfg = { ...this.#cfg, start: fh.position }
      const c = this.#cfg
      const unit = fh.alignment.offset
      if (fh.direct && c.start % unit !== 0) {
        if (c.fromPosition && typeof this.target !== 'string') {
          throw misuse('ERR_ODIRECT_ALIGNMENT', `the handle's position ${c.start} is not a multiple of ${unit} bytes, the block size of ${fh.path}: a write stream without start writes from there`, `pass start (a multiple of ${unit}), or write the rest with fh.writeFile(), which reads the block's head back`, { path: fh.path, position: c.start })
        }
        const e = misuse('ERR_ODIRECT_ALIGNMENT', `start ${c.start} is not a multiple of ${unit} bytes, the block size of ${fh.path}`, `use a start that is a multiple of ${unit}`, { path: fh.path, position: c.start })
        if (created) await removeCreated(fh)
        throw e
      }
      if (guarded && !created && !fh.isBlockDevice) await fh.truncate(0)
      this.#unit = unit
      this.#chunk = Math.min(roundUp(c.chunkSize, unit), Math.floor(MAX_IO_LENGTH / unit) * unit)
      this.#held = c.writeBehind + (READY ?? c.writeBehind)
      this.#depthBytes = DEPTH_BYTES ? c.writeBehind * this.#chunk : 0
      this.#depthOps = DEPTH_BYTES ? Math.max(c.writeBehind, WRITE_OPS_MAX) : c.writeBehind
      this.#pos = c.start
      this.#origSize = (await fh.stat()).size
      if (ALLOCATE_AHEAD && fh.direct && !fh.isBlockDevice) this.#allocEnd = this.#origSize
      if (CHAIN && !this.dead) this.#chain = getEngine().native.chainOpen(this.#depthOps, this.#depthBytes)
    } catch (e) {
      if (this.owned) await fh.close().catch(() => {})
      throw e
    }
    return fh
  }

  /**
   * Opens the stream's path with its flags less O_TRUNC (see doOpen). `created`: this open made
   * the file (found with O_EXCL first, then an open without O_CREAT if it exists). A dangling
   * link (O_EXCL does not follow it: EEXIST, then ENOENT) is followed to the file it names, which
   * is made there the same way; a name that comes and goes under these opens is opened with the
   * flags as given and counts as not created.
   */
  async #openUntruncated(c: WriteConfig): Promise<{ fh: FileHandle; created: boolean }> {
    const n = flagBits(c.flags) & ~O_TRUNC
    const withFlags = (bits: number, path?: string): Promise<FileHandle> => this.acquire({ ...c, flags: String(bits) as OpenFlags }, true, path)
    if ((n & O_CREAT) === 0 || (n & O_EXCL) !== 0) return { fh: await withFlags(n), created: (n & O_EXCL) !== 0 }
    let path = this.target as string
    for (let i = 0; i < 3; i++) {
      try {
        return { fh: await withFlags(n | O_EXCL, path), created: true }
      } catch (e) {
        if ((e as { code?: unknown }).code !== 'EEXIST') throw e
      }
      let fh: FileHandle
      try {
        fh = await withFlags(n & ~O_CREAT, path)
      } catch (e) {
        if ((e as { code?: unknown }).code !== 'ENOENT') throw e
        // EEXIST, then ENOENT: a dangling link (or a name replaced between the two opens).
        path = await resolveLinks(path)
        continue
      }
      // Opened without O_CREAT, which the kernel's fs.protected_regular does not check: another
      // user's file in a sticky world-writable directory (/tmp), which fs.createWriteStream's
      // open (O_CREAT | O_TRUNC) is refused (EACCES), is refused here before anything is cut or
      // written (the file opened is the one checked: its owner from this descriptor).
      try {
        await refuseProtectedFile(await resolveLinks(path), await fh.stat())
      } catch (e) {
        await fh.close().catch(() => {})
        throw e
      }
      return { fh, created: false }
    }
    return { fh: await withFlags(n), created: false }
  }

  #check(): void {
    if (this.#error !== undefined) throw this.#error
    if (this.dead || this.#finished) {
      throw misuse('ERR_ODIRECT_CLOSED', `write stream for ${this.path} is ${this.dead ? 'destroyed' : 'finished'}`, 'create a new stream', { path: this.path })
    }
  }

  #notify(): void {
    const w = this.#wake
    this.#wake = undefined
    w?.()
  }

  /** Queues a full block and submits what the `writeBehind` slots take. */
  #submit(fh: FileHandle, buf: Uint8Array, len: number, logical: number, taken?: ArrayBuffer): void {
    this.#ready.push({ buf, len, logical, taken })
    this.#start(fh)
  }

  /** Blocks that will not be written any more: taken chunks' memory goes back now. */
  #dropReady(): void {
    for (const r of this.#ready) releaseTaken(r.taken)
    this.#ready = []
  }

  #start(fh: FileHandle): void {
    let started = false
    // Chained: every block goes to the engine now (it holds those past `writeBehind`). Once a
    // block was refused by the chain (see `#unchained`), the stream counts the slots itself.
    while (this.#ready.length > 0 && (this.#chain !== 0 && !this.#unchained ? true : this.#hasRoom(this.#ready[0].len)) && this.#error === undefined && !this.#failing && !this.dead) {
      if (ALLOCATE_EARLY && this.#reservedTo > 0 && this.#allocEnd > 0 && !this.#allocating && this.#pos + this.#ready[0].len <= this.#allocEnd && this.#allocEnd - this.#pos < this.#step() / 2) {
        // Less than half a step left: the next reservation now (see ALLOCATE_EARLY).
        this.#allocate(fh, this.#allocEnd + 1)
      }
      if (this.#allocEnd >= 0 && this.#pos + this.#ready[0].len > this.#allocEnd) {
        // Past the reserved size: it would be a synchronous extending write (see ALLOCATE_AHEAD).
        this.#allocate(fh, this.#pos + this.#ready[0].len)
        break
      }
      const { buf, len, logical, taken } = this.#ready.shift() as ReadyBlock
      const pos = this.#pos
      const entry: WriteEntry = { pos, len, logical, state: 'pending', buf, taken }
      this.#entries.push(entry)
      this.#pos += len
      this.#inflight++
      this.#inflightBytes += len
      // The block's first write is staged by the time writeFully returns (its rest after a
      // short write is not chained).
      // `logical`: the data's bytes in it, the rest padding (a write the file size limit cuts in
      // the padding is done: the finish truncates to the data's end).
      const written = writeFully(fh, buf, 0, len, pos, this.opSignal, logical)
      const chain = this.#chain
      const chained = chain !== 0 && !this.#unchained && getEngine().native.chainAdd(chain, buf)
      // Refused (the write was not staged as this block's: bounced by the runtime, or already
      // submitted alone): it is in the kernel outside the chain's count, and so would every
      // later refused block be. From now on the stream starts a block only while fewer than
      // `writeBehind` of its writes are unfinished (chained ones held or in the kernel
      // included), as without a chain: never more than `writeBehind` in the kernel.
      if (chain !== 0 && !chained) this.#unchained = true
      this.track(
        written.then(
          (writes) => {
            // Its first write was short: the chain kept the block's place until the rest was
            // written (crates/napi/src/stream.rs, `Chain`).
            if (chained && writes > 1) this.#resumeChain(chain, len)
            this.#inflight--
            this.#inflightBytes -= len
            entry.state = 'ok'
            // Its block is reused once it and every block before it are confirmed (until then a
            // failure before it may need its bytes: see ownTail).
            while (this.#entries.length > 0 && this.#entries[0].state === 'ok') {
              const done = this.#entries.shift() as WriteEntry
              this.#bytesWritten += done.logical
              if (done.taken !== undefined) releaseTaken(done.taken)
              else if (done.buf.byteLength === this.#chunk) this.#pool.push(done.buf)
            }
            if (this.#failing) return this.#failed()
            this.#start(fh)
            this.#notify()
          },
          (e: unknown) => {
            this.#inflight--
            this.#inflightBytes -= len
            entry.state = 'failed'
            entry.err = e
            this.#dropReady()
            this.#failing = true
            this.#stopChain()
            this.#failed()
          },
        ),
      )
      started = true
    }
    if (started) submitNow()
  }

  /**
   * Unchained: whether a write of `len` bytes may start now (fewer than the depth's writes in
   * flight, and its bytes fit beside theirs, or none is in flight; see DEPTH_BYTES).
   */
  #hasRoom(len: number): boolean {
    return this.#inflight < this.#depthOps && (this.#depthBytes === 0 || this.#inflight === 0 || this.#inflightBytes + len <= this.#depthBytes)
  }

  /** How far past what it needs a reservation reaches: what was written so far, within bounds. */
  #step(): number {
    return Math.min(ALLOCATE_MAX, Math.max(ALLOCATE_MIN, this.#pos - this.#cfg.start))
  }

  /**
   * Reserves the file up to past `need` (see ALLOCATE_AHEAD), then starts the waiting blocks. A
   * refused reservation (no fallocate on this file system, ENOSPC) ends reserving: the blocks go
   * as plain extending writes (which report ENOSPC themselves if it is real).
   */
  #allocate(fh: FileHandle, need: number): void {
    if (this.#allocating) return
    this.#allocating = true
    const from = this.#allocEnd
    const to = roundUp(need + this.#step(), this.#unit)
    const done = (end: number): void => {
      this.#allocating = false
      this.#allocEnd = end
      if (this.#error === undefined && !this.dead) this.#start(fh)
    }
    this.#allocDone = this.track(
      fh.allocate(from, to - from, 0, { signal: this.opSignal }).then(
        () => {
          this.#reservedTo = to
          done(to)
        },
        () => done(-1),
      ),
    )
  }

  /** No more chained writes start: those the engine holds are cancelled (see CHAIN). */
  #stopChain(): void {
    if (this.#chain === 0) return
    try {
      getEngine().native.chainStop(this.#chain)
    } catch {
      // The engine is shutting down: its teardown cancels what it holds.
    }
  }

  /** A block (of `len` bytes) whose chained write was short is whole: the chain may release the next. */
  #resumeChain(c: number, len: number): void {
    try {
      getEngine().native.chainResume(c, len)
    } catch {
      // The engine is shutting down: its teardown cancels what it holds.
    }
  }

  /** The chain is forgotten once its writes are reaped. */
  #closeChain(): void {
    if (this.#chain === 0) return
    const c = this.#chain
    this.#chain = 0
    try {
      getEngine().native.chainClose(c)
    } catch {
      // As above.
    }
  }

  /**
   * A write failed: once no other is in flight, the stream fails with the first failed write in
   * file order (not the first to complete: with several in flight a later block can fail first,
   * e.g. while an earlier one finishes a short write), so the error's position is the first
   * byte not written after the `bytesWritten` confirmed.
   */
  #failed(): void {
    if (this.#inflight > 0 || this.#error !== undefined) return
    const e = this.#entries.find((x) => x.state === 'failed')?.err
    const first = !this.dead
    this.#error = e
    this.#notify()
    if (first) queueMicrotask(() => this.onError?.(e))
  }

  /**
   * Waits until at most `limit` blocks are queued or unconfirmed, and at most `ready` wait for a
   * slot (or an error). DEPTH_BYTES: `limit` counts chunks' worth of bytes (the queued and
   * unconfirmed blocks' bytes at most `limit` x chunkSize), and their writes are at most
   * 2 x #depthOps - 1 (2 x #depthOps when `limit` is Infinity).
   */
  async #room(limit: number, ready = limit): Promise<void> {
    while (this.#over(limit) || (this.#ready.length > ready && this.#error === undefined && !this.dead)) {
      await new Promise<void>((r) => (this.#wake = r))
    }
    this.#check()
  }

  #over(limit: number): boolean {
    if (this.#error !== undefined || this.dead) return false
    const n = this.#entries.length + this.#ready.length
    if (!DEPTH_BYTES) return n > limit
    if (limit === Infinity) return false
    if (n > 2 * this.#depthOps - 1) return true
    let bytes = 0
    for (const e of this.#entries) bytes += e.len
    for (const r of this.#ready) bytes += r.len
    return bytes > limit * this.#chunk
  }


  /** Copies `chunk` into blocks, submitting each full one; resolves once there is room for more. */
  async write(chunk: ArrayBufferView): Promise<void> {
    this.#check()
    if (!ArrayBuffer.isView(chunk)) {
      throw misuse('ERR_INVALID_ARG_TYPE', `chunks must be Uint8Array, Buffer or another ArrayBufferView, got ${chunk === null ? 'null' : typeof chunk}`, 'write bytes, e.g. Buffer.from(text)')
    }
    // The chunk as it was handed over, before any await: its length then is what the caller wrote.
    // A resizable ArrayBuffer resized smaller (or transferred) while the stream waits (its open,
    // room for more) leaves a view that reads shorter, or empty: not a shorter chunk, data lost
    // (adversary-s19b: the callback reported success, nothing was written, no 'finish' ever came).
    let src = chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    const want = src.byteLength
    const fh = this.fh ?? (await this.open())
    if (src.byteLength < want || (want === 0 && (isDetached(src) || outOfBounds(chunk)))) throw this.#lost(src)
    // A length-tracking view of a buffer grown since: the bytes it had at the call.
    if (src.byteLength > want) src = src.subarray(0, want)
    const end = this.#cfg.start + this.#total + src.byteLength
    if (end > Number.MAX_SAFE_INTEGER) {
      // Refused before any of it is copied or written: past 2^53 - 1 neither the stream's
      // offsets nor the file's final length (its truncate) are exact numbers.
      throw misuse(
        'ERR_OUT_OF_RANGE',
        `this chunk would end the stream's data at byte ${this.#cfg.start + this.#total} + ${src.byteLength}, past Number.MAX_SAFE_INTEGER (2^53 - 1)`,
        'write less, or start the stream lower: offsets past 2^53 - 1 are not exact in JavaScript',
      )
    }
    // (No block being gathered: `#cur` unset, or set and still empty.)
    if (this.#cfg.transfer && (this.#cur === undefined || this.#fill === 0) && (await this.#takeOver(fh, src))) return
    let off = 0
    while (off < want) {
      if (src.byteLength < want) throw this.#lost(src)
      if (this.#cur === undefined) {
        this.#cur = this.#pool.pop() ?? this.#alloc(fh, this.#chunk)
        this.#fill = 0
      }
      const n = Math.min(want - off, this.#chunk - this.#fill)
      const piece = n === want ? src : src.subarray(off, off + n)
      if (n < NT_COPY_MIN || native.copyInto(this.#cur, this.#fill, piece) !== n) this.#cur.set(piece, this.#fill)
      this.#fill += n
      off += n
      this.#total += n
      if (this.#fill === this.#chunk) {
        const buf = this.#cur
        this.#cur = undefined
        this.#submit(fh, buf, this.#chunk, this.#chunk)
        await this.#room(this.#held - 1)
      }
    }
  }

  /** A chunk whose memory was taken or shrunk after write() was called: its bytes are not all there. */
  #lost(src: Uint8Array): Error {
    return isDetached(src)
      ? misuse('ERR_ODIRECT_DETACHED', `a chunk written to the stream for ${this.path} is detached (its ArrayBuffer was transferred)`, 'write each buffer once: with transferChunks the stream takes the memory of the chunks it writes in place', { path: this.path })
      : misuse('ERR_ODIRECT_DETACHED', `a chunk written to the stream for ${this.path} shrank before the stream had copied it (its resizable ArrayBuffer was resized smaller)`, 'do not resize or transfer a chunk\'s ArrayBuffer until its write callback (or the writer\'s write promise) has settled', { path: this.path })
  }

  /**
   * transferChunks: writes `src` in place when it is odirect memory the stream can take over (see
   * WriteStreamOptions.transferChunks; the stream's data is at a block boundary: no partial block
   * gathered). False: not taken (the caller copies it).
   */
  async #takeOver(fh: FileHandle, src: Uint8Array): Promise<boolean> {
    const len = src.byteLength
    if (len === 0 || len % this.#unit !== 0 || len > MAX_IO_LENGTH) return false
    const taken = native.takeOver(src, fh.direct ? fh.alignment.memory : 1)
    if (taken === null) return false
    this.#total += len
    this.#bytesTransferred += len
    this.#submit(fh, new Uint8Array(taken), len, len, taken)
    await this.#room(this.#held - 1)
    return true
  }

  /** Writes the last partial block (zero padded), waits for every write, sets the exact length, datasyncs, closes if owned. */
  async finish(): Promise<void> {
    this.#check()
    const fh = this.fh ?? (await this.open())
    const end = this.#cfg.start + this.#total
    let blockEnd = end
    // The file's size now, where the last block is padded or a reservation is cut: another writer
    // (a second stream of the file, a handle, another process) may have written past this
    // stream's end since its open (fs's stream writes only its own bytes: theirs stay).
    // fh.stat: on the thread pool, never this thread (a stalled FUSE server would stall it:
    // adversary-s8), once the earlier blocks are done. Not for a file this writer created
    // exclusively (a temp file: 'wx'), which no one else writes.
    let grownTo = 0
    const exclusive = (flagBits(this.#cfg.flags) & O_EXCL) !== 0 || this.#cfg.alone === true
    const statNow = (): Promise<number> =>
      exclusive || fh.closed || fh.isBlockDevice
        ? Promise.resolve(0)
        : this.track(fh.stat()).then(
            (st) => st.size,
            () => 0,
          )
    // Past this stream's own reach (its blocks, its reservations): someone else's bytes.
    const grown = (size: number): void => {
      if (size > Math.max(this.#reservedTo, this.#pos, end)) grownTo = size
    }
    if (this.#cur !== undefined && this.#fill > 0) {
      // Every full block submitted and done first: #pos is then where the last one goes, and the
      // size is asked alone (it is counted in flight: beside the writes it made writeBehind + 1
      // ops of the handle in flight, streams.spec's bound, seen in CI).
      await this.#room(0)
      grown(await statNow())
      this.#check()
      const fill = this.#fill
      const blockLen = roundUp(fill, this.#unit)
      let buf: Uint8Array | undefined = this.#cur
      this.#cur = undefined
      buf.fill(0, fill, blockLen)
      if (this.#origSize > end || grownTo > end) {
        // Overwriting in place ('r+'), or a file another writer grew: keep the file's bytes after
        // ours in the last block (zeros past its end). A write-only handle ('w', the default)
        // reads them through a descriptor of its own (see readBack).
        const old = this.#alloc(fh, blockLen)
        old.fill(0)
        const got = fh.readable ? await this.track(fh.read(old, { position: this.#pos, signal: this.opSignal })).then(() => true) : await this.track(readBack(fh, old, this.#pos))
        this.#check()
        old.set(buf.subarray(0, fill))
        buf = old
        if (!got) {
          // A file this process may write but not read (mode 0200 as another user): its bytes
          // after the data cannot be read back, and the padding would overwrite them (fs's stream
          // writes only its own bytes). The data's bytes go through a buffered write-only
          // descriptor of the stream's own file instead (see writeTail): nothing after them is
          // written (adversary-s18b).
          await this.track(writeTail(fh, buf.subarray(0, fill), this.#pos))
          this.#check()
          this.#bytesWritten += fill
          buf = undefined
        }
      }
      if (buf !== undefined) {
        blockEnd = this.#pos + blockLen
        this.#submit(fh, buf, blockLen, fill)
      }
    }
    await this.#room(0)
    // An early reservation may still be in flight (no block waited for it): its size first.
    await this.#allocDone
    this.#check()
    if (grownTo === 0 && blockEnd === end && this.#reservedTo > Math.max(this.#origSize, end)) grown(await statNow())
    const finalSize = Math.max(this.#origSize, end, grownTo)
    if ((blockEnd > finalSize || this.#reservedTo > finalSize) && !fh.isBlockDevice) {
      await this.track(fh.truncate(finalSize, { signal: this.opSignal }))
      this.#check()
    }
    if (this.#cfg.datasync) {
      await this.track(fh.datasync({ signal: this.opSignal }))
      this.#check()
      const c = this.#cfg
      if (c.syncDir !== false && typeof this.target === 'string' && isCreatingFlags(c.flags)) {
        // The directory that holds the file's name now (see entryNow): a file renamed since the
        // open (a log rotated into another folder) has its entry there; one unlinked has none.
        const at = await this.track(entryNow(fh, this.target))
        this.#check()
        if (at !== undefined) {
          await this.track(syncParentDir(at))
          this.#check()
        }
      }
    }
    this.#finished = true
    this.#closeChain()
    this.#releaseBlocks()
    if (this.#cfg.fromPosition && typeof this.target !== 'string') fh._seek(end)
    if (this.owned) await fh.close()
  }

  /** The stream is done: its blocks' memory goes back to the pool now (see RELEASE_BLOCKS). */
  #releaseBlocks(): void {
    if (!RELEASE_BLOCKS || this.#inflight > 0) return
    const blocks = this.#blocks
    this.#blocks = []
    this.#pool = []
    this.#cur = undefined
    try {
      for (const b of blocks) native.releaseBlock(b.buffer)
    } catch {
      // The runtime is tearing down (a worker's end): the blocks go with its collection.
    }
  }

  /** A new block of `len` bytes, the stream's own (released at its end, see RELEASE_BLOCKS). */
  #alloc(fh: FileHandle, len: number): Uint8Array {
    const b = fh.alloc(len)
    if (RELEASE_BLOCKS) this.#blocks.push(b)
    return b
  }

  protected override onDestroy(): void {
    this.#stopChain()
    this.#closeChain()
    this.#dropReady()
    this.#notify()
  }

  /**
   * Destroyed (or failed) before its end: the file is cut back to the bytes confirmed written, in
   * order (with what a failed block's short writes put before its error's position; or the file's
   * size before the stream, if larger), so neither a reservation ahead (see ALLOCATE_AHEAD)
   * nor blocks written after one that failed leave the file longer than the data it holds in
   * order. A write that fails ENOSPC or EIO while later blocks in flight succeed (the last free
   * blocks taken by those) used to leave the file at its full length with the failed block a
   * hole of zeros: a size that says whole (adversary-s17.spec). Only what is provably this
   * stream's own is cut: every byte past the cut is read back (see ownTail) and must be what its
   * blocks wrote there, or a hole it made (zeros where a failed or cancelled block or its
   * reservation was); bytes another writer put there meanwhile (fs's stream, which never
   * truncates, would keep them: adversary-s18.spec) leave the size as it is. Best effort: a
   * handle the caller closed stays as it is; a block device keeps its size; a file grown past
   * this stream's writes by someone else (another part of the file written by another stream) is
   * left.
   */
  protected override async beforeClose(fh: FileHandle): Promise<void> {
    // Nothing in flight any more (destroy waited for it).
    try {
      if (!this.#finished) await this.#cutBack(fh)
    } finally {
      // The blocks kept for the comparison go back now.
      for (const e of this.#entries) releaseTaken(e.taken)
      this.#entries = []
      this.#releaseBlocks()
    }
  }

  /** See beforeClose. */
  async #cutBack(fh: FileHandle): Promise<void> {
    const start = this.#cfg.start
    const inOrder = this.#inOrder()
    // Nothing in order written: the file's size before the stream, also when the stream started
    // past its end (the gap up to \`start\` is nobody's data: node:fs's stream, whose first write
    // failed, leaves the file as it was; adversary-s18b).
    const keep = inOrder > start ? Math.max(this.#origSize, inOrder) : this.#origSize
    // How far this stream's writes (started ones: #pos is the end of the last) and reservations reached.
    const reached = Math.max(this.#reservedTo, this.#pos)
    if (reached <= keep || fh.closed || fh.isBlockDevice) return
    // Only what this stream added: a file another writer extended past it (another stream of the
    // same file writing a later part, the caller's own writes through the handle) keeps that.
    const size = await fh.stat().then(
      (st) => st.size,
      () => Infinity,
    )
    if (size > keep && size <= reached && (await ownTail(fh, keep, size, this.#entries, this.#pos))) await fh.truncate(keep).catch(() => {})
  }
}

