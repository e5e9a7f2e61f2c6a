// odirect cp SRC DST [--verify] [--chunk-size N] [--sparse=auto|never] [--no-clobber] [--no-xattrs] [--quiet] [--json]
//
// A thin command over the exported copyFile(): direct I/O on both sides (falling back to buffered
// I/O, with a note, where the filesystem refuses O_DIRECT), holes kept, the same file refused,
// written to DST.odirect-tmp-<pid>-<random>, datasynced, then renamed into place: DST is either the
// complete copy or untouched. A DST that is a device or FIFO is written in place, as GNU cp does.
// --verify re-reads the copy (before the rename) and compares sha256.
import { readFileSync } from 'node:fs'
import * as fsp from 'node:fs/promises'
import { constants as osConstants } from 'node:os'
import * as path from 'node:path'

import { copyFile, type CopyProgress, type CopyResult, DirectIoError } from '../index'
import { native } from '../src/native'

export const CP_USAGE = `usage: odirect cp [OPTIONS] SRC DST
  Copies SRC to DST with direct I/O (O_DIRECT) on both sides, bypassing the page cache.
  DST may be a directory. The copy is written to a temp file next to DST, flushed to the
  device, and renamed into place: DST is the complete copy or untouched. Holes in SRC
  (all-zero blocks) stay holes in DST. SRC and DST must not be the same file. A DST that
  is a block or character device or a FIFO is written in place, as GNU cp does (it stays a
  device), as is a kernel pseudo-file (a cgroup or sysfs control). SRC may be a FIFO, a device or a /proc file: it is read to its end.
  --verify          re-read DST with direct I/O and compare sha256 with SRC
  --no-clobber, -n  do not overwrite an existing DST (it is left as it is; exit status 0)
  --no-xattrs       a replaced DST's extended attributes and ACLs are not kept (they are by
                    default, as cp writing in place keeps them; one this user may not set fails)
  --chunk-size N    bytes per I/O (suffixes k, m, g: 4m); default 1m
  --sparse=WHEN     auto (default): keep holes; never: write every block
  --quiet, -q       no progress, no summary (errors are still reported)
  --json            print the result as JSON on stdout (on failure too: { "error": ... })
  --help, -h        this text
exit status: 0 copied, 1 failed, 2 usage error, 129 hung up (SIGHUP), 130 interrupted (SIGINT),
  143 terminated (SIGTERM); an interrupted copy leaves DST untouched and no temp file (a DST
  written in place, a device or FIFO, keeps what was written before the signal)`

interface CpArgs {
  src: string
  dst: string
  verify: boolean
  chunkSize: number
  quiet: boolean
  json: boolean
  sparse: boolean
  noClobber: boolean
  xattrs: boolean
}

export class UsageError extends Error {}

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
  const a = { verify: false, quiet: false, json: false, sparse: true, noClobber: false, xattrs: true, chunkSize: 1024 * 1024 }
  for (let i = 0; i < args.length; i++) {
    const x = args[i]
    if (x === '--') {
      pos.push(...args.slice(i + 1))
      break
    } else if (x === '--verify') a.verify = true
    else if (x === '--quiet' || x === '-q') a.quiet = true
    else if (x === '--json') a.json = true
    else if (x === '--no-clobber' || x === '-n') a.noClobber = true
    else if (x === '--no-xattrs') a.xattrs = false
    else if (x === '--chunk-size') a.chunkSize = parseSize(args[++i])
    else if (x.startsWith('--chunk-size=')) a.chunkSize = parseSize(x.slice('--chunk-size='.length))
    else if (x.startsWith('--sparse=')) {
      const w = x.slice('--sparse='.length)
      if (w !== 'auto' && w !== 'always' && w !== 'never') throw new UsageError(`--sparse takes auto or never, got '${w}'`)
      a.sparse = w !== 'never'
    } else if (x.startsWith('-') && x !== '-') throw new UsageError(`unknown option '${x}'`)
    else pos.push(x)
  }
  if (pos.length !== 2) throw new UsageError(pos.length < 2 ? 'missing SRC or DST' : `expected SRC and DST, got ${pos.length} paths`)
  return { src: pos[0], dst: pos[1], ...a }
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
/** Bytes in binary units (B, KiB, MiB, GiB). */
export function human(n: number): string {
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(1)} ${units[i]}`
}

/** A rate in MiB/s (GiB/s when fast); '' when the copy is too short or small to mean anything. */
export function rate(bytes: number, secs: number): string {
  // A copy this short or small says nothing about throughput ("0 MB/s" helps nobody).
  if (!(secs >= 0.05) || bytes < 1024 * 1024) return ''
  return `${human(bytes / secs)}/s`
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?'
  if (s < 60) return `${Math.ceil(s)}s`
  const m = Math.floor(s / 60)
  return m < 60 ? `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`
}

/** A progress line on a TTY, redrawn at most 10 times a second. */
class Progress {
  readonly #tty: boolean
  readonly #t0 = performance.now()
  #timer: ReturnType<typeof setInterval> | undefined
  #drawn = false
  last: CopyProgress | undefined

  constructor(enabled: boolean) {
    this.#tty = enabled && process.stderr.isTTY === true
    if (this.#tty) {
      this.#timer = setInterval(() => this.#draw(), 100)
      this.#timer.unref()
    }
  }

  #draw(): void {
    const p = this.last
    if (p === undefined) return
    const secs = (performance.now() - this.#t0) / 1000
    const bps = secs > 0 ? p.bytesDone / secs : 0
    const pct = p.totalBytes > 0 ? ` (${Math.floor((p.bytesDone / p.totalBytes) * 100)}%)` : ''
    const eta = p.totalBytes > 0 && bps > 0 ? `  ETA ${duration((p.totalBytes - p.bytesDone) / bps)}` : ''
    const r = rate(p.bytesDone, secs)
    process.stderr.write(`\r\x1b[K${p.phase === 'copy' ? 'copying' : 'verifying'} ${human(p.bytesDone)} / ${human(p.totalBytes)}${pct}${r ? `  ${r}` : ''}${eta}`)
    this.#drawn = true
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
    if (this.#drawn) process.stderr.write('\r\x1b[K')
    this.#drawn = false
  }
}

/** An error as a CLI user should read it: what failed and what to do, without API advice. */
export function describeForCli(e: unknown): string {
  if (e instanceof DirectIoError) {
    if (e.errno !== undefined) {
      const info = native.errnoInfo(-e.errno, e.syscall ?? 'open')
      const where = e.path ?? ''
      const tip: Record<string, string> = {
        ENOENT: 'check the path',
        EACCES: 'check the permissions, or run as a user who may access it',
        EPERM: 'check the permissions, or run as a user who may access it',
        ENOSPC: 'free some space on the destination',
        EEXIST: 'remove it first, or pick another destination',
        EISDIR: 'name a file, or an existing directory to copy into',
        EROFS: 'the destination is read-only',
      }
      // A missing directory: the message says which one and what to do.
      if (e.code === 'ENOENT' && /does not exist/.test(e.message)) return e.message
      // What a replaced DST keeps (copyFile's keepAttrs): an attribute this user may not set, an
      // immutable / append-only or unwritable DST: its own hint says which and what to do.
      const attrs = cliHint(e)
      if (attrs !== undefined) return `${where ? `${where}: ` : ''}${info.message} (${e.code}) — ${attrs}`
      // DST's directory moved or replaced, or DST made a directory, while the copy ran (the
      // rename found neither the temp file nor a file to replace), or DST a mount point (a
      // bind-mounted file, which a rename cannot replace: seen by statx before any data), or
      // --no-clobber on a filesystem without hard links or RENAME_NOREPLACE: copyFile's hint says
      // what happened.
      if ((e.syscall === 'rename' || e.syscall === 'link' || e.syscall === 'statx') && /moved or replaced|is a directory now|is a mount point|makes no hard links/.test(e.hint)) return `${where ? `${where}: ` : ''}${info.message} (${e.code}) — ${e.hint}`
      // The temp file's directory is not writable, or DST is another user's in a sticky directory:
      // copyFile's hint says so (cut before its API advice).
      const temp = (e.code === 'EACCES' || e.code === 'EPERM') && /\.odirect-tmp-|^rename$|^link$/.test(`${e.syscall === 'open' ? (e.path ?? '') : (e.syscall ?? '')}`) && e.hint.includes('directory')
      const t = temp ? e.hint.split(', or write it in place')[0] : tip[e.code]
      return `${where ? `${where}: ` : ''}${info.message} (${e.code})${t ? ` — ${t}` : ''}`
    }
    if (e.code === 'ERR_ODIRECT_SAME_FILE') return `${e.message.split(' — ')[0]}: nothing to copy`
    return e.message
  }
  if (e instanceof Error) return e.message
  return String(e)
}

/**
 * The hint of an error about what a replaced DST keeps (src/fileops.ts keepAttrs: its extended
 * attributes, mode, chattr flags, write permission), with copyFile's option in cp's words
 * (--no-xattrs); undefined for any other error.
 */
export function cliHint(e: DirectIoError): string | undefined {
  const attrs = /xattr$/.test(e.syscall ?? '') || e.syscall === 'fchmod' || (e.syscall === 'open' && /\(chattr \+|this process may not write|fs\.protected_/.test(e.hint))
  return attrs && e.hint !== '' ? e.hint.replace('Pass { xattrs: false }', 'Pass --no-xattrs') : undefined
}

/** An error as JSON for --json: what a script needs to tell failures apart. */
export function errorJson(e: unknown, message: string): Record<string, unknown> {
  const field = (k: string): unknown => {
    try {
      return e !== null && typeof e === 'object' ? (e as Record<string, unknown>)[k] : undefined
    } catch {
      return undefined
    }
  }
  const out: Record<string, unknown> = { message }
  for (const k of ['code', 'errno', 'syscall', 'path', 'hint']) {
    const v = field(k)
    if (v !== undefined && v !== '') out[k] = v
  }
  if (e instanceof DirectIoError && cliHint(e) !== undefined) out.hint = cliHint(e)
  return out
}

/**
 * The bytes given for `arg` on the command line when they were not UTF-8 (Node decodes argv as
 * UTF-8, each invalid byte as U+FFFD: the path would name another file than the one asked for);
 * undefined when `arg` is what was given, or /proc/self/cmdline cannot tell.
 */
export function notUtf8(arg: string): Buffer | undefined {
  if (!arg.includes('\uFFFD')) return undefined
  let raw: Buffer
  try {
    raw = readFileSync('/proc/self/cmdline')
  } catch {
    return undefined
  }
  const want = Buffer.from(arg)
  const entries: Buffer[] = []
  for (let i = 0; i < raw.length; ) {
    const end = raw.indexOf(0, i)
    entries.push(raw.subarray(i, end < 0 ? raw.length : end))
    i = end < 0 ? raw.length : end + 1
  }
  return entries.find((e) => !e.equals(want) && e.toString('utf8') === arg)
}

/** Refuses a path argument whose bytes are not UTF-8 (see notUtf8): odirect takes UTF-8 paths. */
function checkUtf8(what: string, arg: string): void {
  const raw = notUtf8(arg)
  if (raw === undefined) return
  const shown = [...raw].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('')
  const hint = 'odirect takes UTF-8 paths; rename it (convmv), or copy it with cp'
  throw new DirectIoError(`${what} '${shown}' is not valid UTF-8 — ${hint}`, { code: 'ERR_INVALID_ARG_VALUE', path: arg, hint })
}

/** The signals that interrupt a copy: the partial copy is removed, the exit status is 128 + the signal's number. */
const INTERRUPTS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/** `odirect cp`: returns the exit code (0 copied, 1 failed, 2 usage, 129 SIGHUP, 130 SIGINT, 143 SIGTERM). */
export async function cpCommand(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(CP_USAGE)
    return 0
  }
  let a: CpArgs
  try {
    a = parseArgs(args)
  } catch (e) {
    console.error(`odirect cp: ${describeForCli(e)}\n${CP_USAGE}`)
    if (args.includes('--json')) console.log(JSON.stringify({ error: { message: describeForCli(e), code: 'ERR_USAGE' } }, null, 2))
    return 2
  }
  const ac = new AbortController()
  let interrupted: NodeJS.Signals | undefined
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted = sig
    ac.abort(new Error(`interrupted by ${sig}`))
  }
  // SIGHUP too: a closed terminal or a dropped ssh session would otherwise kill the process by
  // default and strand the temp file (the size of SRC, reserved) next to DST.
  for (const s of INTERRUPTS) process.once(s, onSignal)
  const progress = new Progress(!a.quiet && !a.json)
  const t0 = performance.now()
  let dst = a.dst
  // A device or FIFO DST is written in place: an interrupted copy cannot give it back as it was.
  let inPlace = false
  try {
    checkUtf8('SRC', a.src)
    checkUtf8('DST', a.dst)
    const d = await fsp.stat(dst).catch(() => undefined)
    if (d?.isDirectory()) dst = path.join(dst, path.basename(a.src))
    inPlace = d !== undefined && (d.isBlockDevice() || d.isCharacterDevice() || d.isFIFO())
    const parent = path.dirname(dst)
    if (d === undefined && (await fsp.stat(parent).catch(() => undefined)) === undefined) {
      const hint = `create the directory ${parent} first`
      throw new DirectIoError(`cannot create ${dst}: directory ${parent} does not exist — ${hint}`, { code: 'ENOENT', errno: -osConstants.errno.ENOENT, syscall: 'open', path: parent, hint })
    }
    let r: CopyResult
    try {
      r = await copyFile(a.src, dst, {
        direct: 'prefer',
        verify: a.verify,
        sparse: a.sparse,
        chunkSize: a.chunkSize,
        exclusive: a.noClobber,
        xattrs: a.xattrs,
        signal: ac.signal,
        onProgress: (p) => (progress.last = p),
      })
    } catch (e) {
      if (!a.noClobber || (e as { code?: unknown }).code !== 'EEXIST') throw e
      progress.stop()
      if (a.json) console.log(JSON.stringify({ skipped: true, destination: { path: dst }, reason: 'DST exists (--no-clobber)' }, null, 2))
      else if (!a.quiet) process.stderr.write(`odirect cp: not overwriting ${dst}: it exists (--no-clobber)\n`)
      return 0
    }
    progress.stop()
    const secs = (performance.now() - t0) / 1000
    if (a.json) {
      console.log(JSON.stringify({ ...r, seconds: Number(secs.toFixed(3)) }, null, 2))
      return 0
    }
    if (!a.quiet) {
      if (!r.source.direct) process.stderr.write(`odirect cp: note: ${a.src}: direct I/O unavailable, read with buffered I/O (${r.source.fallbackReason})\n`)
      if (!r.destination.direct) process.stderr.write(`odirect cp: note: ${dst}: direct I/O unavailable, written with buffered I/O (${r.destination.fallbackReason})\n`)
      const rt = rate(r.bytes, secs)
      const holes = r.bytesWritten < r.bytes ? `, ${human(r.bytes - r.bytesWritten)} of holes kept` : ''
      const verified = r.sha256 !== undefined ? `, sha256 verified (${r.sha256})` : ''
      process.stderr.write(`copied ${r.bytes} bytes (${human(r.bytes)}) in ${secs.toFixed(secs < 1 ? 3 : 1)} s${rt ? ` (${rt})` : ''}${holes}${verified}\n`)
    }
    return 0
  } catch (e) {
    progress.stop()
    const why = interrupted !== undefined ? `interrupted by ${interrupted} (${inPlace ? `${dst} is written in place: what was copied before the signal stays there` : 'partial copy removed'})` : describeForCli(e)
    process.stderr.write(`odirect cp: ${a.src} -> ${a.dst}: ${why}\n`)
    if (a.json) console.log(JSON.stringify({ error: { ...errorJson(e, why), ...(interrupted !== undefined ? { signal: interrupted } : {}) }, source: a.src, destination: dst }, null, 2))
    if (interrupted === undefined) return 1
    // 128 + the signal's number, as a shell reports a process the signal killed.
    const code = 128 + osConstants.signals[interrupted]
    // A read of a FIFO or character device, or the open of a FIFO waiting for its other end, stays
    // blocked in a thread-pool thread after the abort: it would keep the process alive until data
    // or a peer came, and process.exit() would wait for that thread too (libuv joins its pool).
    // The loop still alive on its next turn for a pending fs request is that case: the partial
    // copy is removed, so the signal's own default action ends the process (the shell's $? is
    // 128 + the signal's number all the same). Unref'd: in every other case the process exits
    // with `code` before this runs.
    const sig = interrupted
    setImmediate(() => {
      if (!process.getActiveResourcesInfo().some((r) => r.startsWith('FSReq'))) return
      process.removeAllListeners(sig)
      process.kill(process.pid, sig)
    }).unref()
    return code
  } finally {
    for (const s of INTERRUPTS) process.off(s, onSignal)
  }
}
