// odirect cp SRC DST [--verify] [--chunk-size N] [--quiet]
//
// Copies with direct I/O on both sides (falling back to buffered I/O, with a note, where the
// filesystem refuses O_DIRECT), into DST.odirect-tmp-<pid>, datasynced, then renamed into place:
// DST is either the complete copy or untouched. --verify re-reads the copy with direct I/O
// (before the rename) and compares its sha256 with the source's, hashed as it was read.
import { createHash, type Hash } from 'node:crypto'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { pipeline } from 'node:stream/promises'

import { createReadStream, createWriteStream, type FileHandle, open } from '../index'
import { DirectIoError } from './errors'

const USAGE = `usage: odirect cp SRC DST [--verify] [--chunk-size N] [--quiet]
  Copies SRC to DST with direct I/O (O_DIRECT) on both sides, bypassing the page cache.
  DST may be a directory. The copy is written to DST.odirect-tmp-<pid> and renamed into place.
  --verify          re-read DST with direct I/O and compare sha256 with SRC
  --chunk-size N    bytes per I/O (suffixes k, m, g: 4m); default 1m
  --quiet           no progress, no summary (errors are still reported)`

interface CpArgs {
  src: string
  dst: string
  verify: boolean
  chunkSize: number
  quiet: boolean
}

class UsageError extends Error {}

function parseSize(s: string | undefined): number {
  const m = s === undefined ? null : /^(\d+)\s*([kmg]?)(i?b)?$/i.exec(s.trim())
  if (m === null) throw new UsageError(`--chunk-size needs a size like 1048576, 512k or 4m, got ${s === undefined ? 'nothing' : `'${s}'`}`)
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g']
  const n = Number(m[1]) * mult
  if (!Number.isSafeInteger(n) || n <= 0 || n > 1024 ** 3) throw new UsageError(`--chunk-size must be from 1 byte to 1g, got '${s}'`)
  return n
}

function parseArgs(args: string[]): CpArgs {
  const pos: string[] = []
  let verify = false
  let quiet = false
  let chunkSize = 1024 * 1024
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (a === '--') {
      pos.push(...args.slice(i + 1))
      break
    } else if (a === '--verify') verify = true
    else if (a === '--quiet' || a === '-q') quiet = true
    else if (a === '--chunk-size') chunkSize = parseSize(args[++i])
    else if (a.startsWith('--chunk-size=')) chunkSize = parseSize(a.slice('--chunk-size='.length))
    else if (a.startsWith('-') && a !== '-') throw new UsageError(`unknown option '${a}'`)
    else pos.push(a)
  }
  if (pos.length !== 2) throw new UsageError(pos.length < 2 ? 'missing SRC or DST' : `expected SRC and DST, got ${pos.length} paths`)
  return { src: pos[0], dst: pos[1], verify, chunkSize, quiet }
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
function human(n: number): string {
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?'
  if (s < 60) return `${Math.ceil(s)}s`
  const m = Math.floor(s / 60)
  return m < 60 ? `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`
}

const rate = (bytes: number, secs: number): string => `${secs > 0 ? Math.round(bytes / secs / 1e6) : 0} MB/s`

/** A progress line on a TTY, redrawn at most 10 times a second. */
class Progress {
  readonly #tty: boolean
  readonly #t0 = performance.now()
  #timer: NodeJS.Timeout | undefined
  #drawn = false

  constructor(
    readonly label: string,
    readonly total: number,
    readonly done: () => number,
    enabled: boolean,
  ) {
    this.#tty = enabled && process.stderr.isTTY === true
    if (this.#tty) {
      this.#timer = setInterval(() => this.#draw(), 100)
      this.#timer.unref()
    }
  }

  #draw(): void {
    const done = this.done()
    const secs = (performance.now() - this.#t0) / 1000
    const bps = secs > 0 ? done / secs : 0
    const pct = this.total > 0 ? ` (${Math.floor((done / this.total) * 100)}%)` : ''
    const eta = this.total > 0 && bps > 0 ? `  ETA ${duration((this.total - done) / bps)}` : ''
    process.stderr.write(`\r\x1b[K${this.label} ${human(done)} / ${human(this.total)}${pct}  ${rate(done, secs)}${eta}`)
    this.#drawn = true
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
    if (this.#drawn) process.stderr.write('\r\x1b[K')
    this.#drawn = false
  }
}

async function hashFile(fh: FileHandle, chunkSize: number, signal: AbortSignal, progress: (n: number) => void): Promise<string> {
  const h = createHash('sha256')
  let n = 0
  for await (const chunk of createReadStream(fh, { chunkSize, signal })) {
    h.update(chunk as Buffer)
    n += (chunk as Buffer).byteLength
    progress(n)
  }
  return h.digest('hex')
}

function describe(e: unknown): string {
  if (e instanceof DirectIoError) return e.message
  if (e instanceof Error) return e.message
  return String(e)
}

/** `odirect cp`: returns the exit code (0 copied, 1 failed, 2 usage, 130 interrupted). */
export async function cpCommand(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(USAGE)
    return 0
  }
  let a: CpArgs
  try {
    a = parseArgs(args)
  } catch (e) {
    console.error(`odirect cp: ${describe(e)}\n${USAGE}`)
    return 2
  }
  const ac = new AbortController()
  let interrupted = false
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted = true
    ac.abort(new Error(`interrupted by ${sig}`))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const notes: string[] = []
  let tmp: string | undefined
  let progress: Progress | undefined
  const t0 = performance.now()
  try {
    const src = await open(a.src, 'r', { direct: 'prefer' })
    let size: number
    let dst = a.dst
    let srcHash: Hash | undefined
    try {
      const st = await src.stat()
      if (!st.isFile() && !st.isBlockDevice()) throw new Error(`${a.src}: not a regular file or block device`)
      size = st.size
      if (!src.direct) notes.push(`${a.src}: direct I/O unavailable, read with buffered I/O (${src.fallbackReason})`)
      const d = await fsp.stat(dst).catch(() => undefined)
      if (d?.isDirectory()) dst = path.join(dst, path.basename(a.src))
      tmp = `${dst}.odirect-tmp-${process.pid}`
      const out = await open(tmp, 'wx', { direct: 'prefer', mode: st.mode & 0o7777 }).catch((e: unknown) => {
        const t = tmp
        tmp = undefined // not ours: nothing to remove
        if ((e as DirectIoError).code === 'ENOENT') throw new Error(`cannot create ${t}: directory ${path.dirname(dst)} does not exist`)
        if ((e as DirectIoError).code === 'EEXIST') throw new Error(`cannot create ${t}: it exists (another odirect cp with the same pid?)`)
        throw e
      })
      try {
        if (!out.direct) notes.push(`${dst}: direct I/O unavailable, written with buffered I/O (${out.fallbackReason})`)
        if (!a.quiet) for (const n of notes) process.stderr.write(`odirect cp: note: ${n}\n`)
        const rs = createReadStream(src, { chunkSize: a.chunkSize, signal: ac.signal })
        const ws = createWriteStream(out, { chunkSize: a.chunkSize, signal: ac.signal, datasync: true })
        progress = new Progress('copying', size, () => ws.bytesWritten, !a.quiet)
        const h = a.verify ? createHash('sha256') : undefined
        srcHash = h
        if (h === undefined) await pipeline(rs, ws)
        else {
          await pipeline(
            rs,
            async function* (chunks: AsyncIterable<Buffer>) {
              for await (const c of chunks) {
                h.update(c)
                yield c
              }
            },
            ws,
          )
        }
        progress.stop()
        if (ws.bytesWritten !== rs.bytesRead) throw new Error(`wrote ${ws.bytesWritten} of ${rs.bytesRead} bytes`)
        size = rs.bytesRead
      } finally {
        progress?.stop()
        await out.close()
      }
    } finally {
      await src.close()
    }
    let verified = ''
    if (srcHash !== undefined) {
      const expect = srcHash.digest('hex')
      const check = await open(tmp, 'r', { direct: 'prefer' })
      try {
        let n = 0
        progress = new Progress('verifying', size, () => n, !a.quiet)
        const got = await hashFile(check, a.chunkSize, ac.signal, (x) => (n = x))
        progress.stop()
        if (got !== expect) throw new Error(`verification failed: sha256 of the copy is ${got}, of ${a.src} ${expect}`)
        verified = `, sha256 verified (${expect})`
      } finally {
        progress?.stop()
        await check.close()
      }
    }
    await fsp.rename(tmp, dst)
    tmp = undefined
    // Make the rename durable too.
    const dir = await fsp.open(path.dirname(dst), 'r').catch(() => undefined)
    await dir?.sync().catch(() => {})
    await dir?.close()
    const secs = (performance.now() - t0) / 1000
    if (!a.quiet) process.stderr.write(`copied ${size} bytes in ${secs.toFixed(1)} s (${rate(size, secs)})${verified}\n`)
    return 0
  } catch (e) {
    progress?.stop()
    if (tmp !== undefined) await fsp.rm(tmp, { force: true }).catch(() => {})
    const why = interrupted ? String((ac.signal.reason as Error).message) : describe(e)
    process.stderr.write(`odirect cp: ${a.src} -> ${a.dst}: ${why}${tmp !== undefined ? ' (partial copy removed)' : ''}\n`)
    return interrupted ? 130 : 1
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
