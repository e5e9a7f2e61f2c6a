// Adversary pass of the eighteenth session: data trust between the layers (earlier passes: data
// changing under reads, full disks, RLIMIT_FSIZE, worker deaths, EMFILE, CLOEXEC, signal storms,
// aborts at every await point, close() under in-flight ops, hostile numbers, odd names, pseudo-files,
// what a replaced file keeps, temp names across workers, a failed stream's cut-back).
// 1. Replacing a file (copyFile, writeFile({ atomic }), `odirect cp`: a temp file next to DST,
//    renamed over it) while DST, or its directory, is swapped by someone else between odirect's
//    look at it and its rename. Made deterministic: copyFile and cp read a FUSE source (faultfs)
//    whose first read is held while the swap is done; writeFile's data is an async iterable
//    that does the swap between its chunks. node:fs (and GNU cp) write DST in place, opened before
//    the copy: their data goes to the file DST named when they opened it, wherever it is now.
//    odirect's rename replaces what DST names at the end: a symbolic link, FIFO or device node
//    put there is replaced (never followed: the file a link names is untouched), a directory
//    refuses it (EISDIR), typed, the temp file removed (attacked: as promised).
//    Found: DST's directory moved away (`mv dir dir.old`, a user reorganising folders, or
//    replaced by a link to another directory) while the copy ran: the rename failed ENOENT and
//    the temp file, the size of the data, stayed in the moved directory for good (its removal
//    looked for it by its old path). Now the temp file's descriptor stays open until the rename
//    is done, and a temp file no longer at its path is found through /proc/self/fd and removed;
//    the error says the directory was moved or replaced (src/files.ts, src/fileops.ts removeTemp).
// 2. Found: a write stream that fails (EIO) removed bytes another writer wrote inside the range
//    the stream reached (its cut-back to the first byte it did not write). Now the cut-back reads
//    the bytes past the cut first and cuts only when each is the stream's own (what its blocks
//    wrote, or a hole it made), else leaves the size (src/streams/core.ts ownTail).
// 3. Streams over a FileHandle closed under them (Node and web, reading and writing): all of the
//    data or a typed error (attacked: no fault).
// 4. Found: writeFile({ atomic }) reserved Buffer.byteLength's estimate of a base64/hex string
//    and kept that size: zeros after the data where it ended on a block (below).
// 5. Found: a bind-mounted DST (a container's /etc/hosts): EBUSY said nothing (below).
// 6. Found (machine-wide: sysctls): the kernel's protections of sticky directories
//    (protected_regular, protected_fifos, protected_symlinks) passed by root's replace (below).
// Nothing is timed: each step waits on its event (a held FUSE request, a promise, a child's exit).
// The machine-wide tests set /proc/sys/fs switches for a moment (restored): serial, and run by
// `npm run test:machine-wide` only.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import * as od from '../dist/index.js'
import { type FaultFs, faultFs, isSkip, patternBuffer, skipReason } from './helpers/fixtures.js'
import { must } from './helpers/fxtest.js'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'
import { writeAll } from './helpers/wstream.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const CLI = path.join(here, '..', 'dist', 'cli.js')
const scratch = scratchDirs('s18')

// ---------------------------------------------------------------------------------------
// 1. DST swapped while it is being replaced

const FORMS = ['copyFile', 'writeFile atomic', 'odirect cp'] as const
type Form = (typeof FORMS)[number]

interface Outcome {
  ok: boolean
  code?: string
  syscall?: string
  hint?: string
  message?: string
  /** The error was a DirectIoError (copyFile, writeFile), or cp printed a JSON error with a code. */
  typed: boolean
  /** cp's exit status. */
  status?: number | null
}

const SIZE = 256 * 1024

/** The layout each case starts from: BASE/sub/out holding 'old contents', BASE/victim, BASE/other (empty). */
interface Layout {
  base: string
  sub: string
  dst: string
  victim: string
  other: string
  moved: string
}

function layout(): Layout {
  const base = scratch()
  const sub = path.join(base, 'sub')
  fs.mkdirSync(sub)
  const dst = path.join(sub, 'out')
  fs.writeFileSync(dst, 'old contents')
  const victim = path.join(base, 'victim')
  fs.writeFileSync(victim, 'victim contents')
  const other = path.join(base, 'other')
  fs.mkdirSync(other)
  return { base, sub, dst, victim, other, moved: path.join(base, 'sub.moved') }
}

/** Temp files of odirect anywhere under `dir`. */
function tempsUnder(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((n) => n.includes('.odirect-tmp-')).map((n) => path.join(dir, n))
}

function errorOutcome(e: unknown): Outcome {
  const x = e as { code?: string; syscall?: string; hint?: string; message?: string }
  return { ok: false, code: x.code, syscall: x.syscall, hint: x.hint, message: x.message, typed: e instanceof od.DirectIoError }
}

/**
 * Replaces `dst` with `form`, calls `swap()` once the temp file exists and its data is being
 * written (copyFile, cp: the source's first read held in faultfs; writeFile: between its two
 * chunks), and resolves with how the replacement ended.
 */
async function replaceWhileSwapped(form: Form, fx: FaultFs, dst: string, swap: () => void): Promise<Outcome> {
  if (form === 'writeFile atomic') {
    const data = patternBuffer(0, SIZE)
    async function* chunks(): AsyncGenerator<Buffer> {
      yield data.subarray(0, SIZE / 2)
      swap()
      yield data.subarray(SIZE / 2)
    }
    return od.writeFile(dst, chunks(), { atomic: true }).then(
      () => ({ ok: true, typed: true }),
      (e: unknown) => errorOutcome(e),
    )
  }
  const before = fx.stats().reads
  fx.hold()
  try {
    if (form === 'copyFile') {
      const p = od.copyFile(fx.file, dst).then(
        (): Outcome => ({ ok: true, typed: true }),
        (e: unknown) => errorOutcome(e),
      )
      await fx.waitFor((s) => s.held >= 1 && s.reads > before, 'the copy\'s first read held')
      swap()
      fx.release()
      return await p
    }
    const child = spawn(process.execPath, [CLI, 'cp', '--json', fx.file, dst], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (err += d.toString()))
    const closed = once(child, 'close') as Promise<[number | null, string | null]>
    await fx.waitFor((s) => s.held >= 1 && s.reads > before, 'cp\'s first read held')
    swap()
    fx.release()
    const [status] = await closed
    const json = JSON.parse(out) as { error?: { code?: string; syscall?: string; hint?: string; message?: string } }
    if (json.error === undefined) return { ok: status === 0, typed: true, status }
    return { ok: false, ...json.error, typed: typeof json.error.code === 'string', status, message: `${json.error.message ?? ''} (stderr: ${err.trim()})` }
  } finally {
    fx.release()
  }
}

interface SwapCase {
  what: string
  reason?: string
  swap(l: Layout): void
  check(t: ExecutionContext, o: Outcome, l: Layout, label: string): void
}

/** DST (moved aside, as a rename by another program leaves it) replaced by what `make` puts there. */
const aside = (l: Layout, make: () => void): void => {
  fs.renameSync(l.dst, `${l.dst}.was`)
  make()
}

/** The copy landed at DST: a regular file (not a link) holding the data; the file DST was, moved aside, untouched. */
function landed(t: ExecutionContext, o: Outcome, l: Layout, label: string): void {
  t.true(o.ok, `${label}: ${o.code} ${o.message}`)
  const st = fs.lstatSync(l.dst)
  t.true(st.isFile(), `${label}: DST is a regular file`)
  t.true(fs.readFileSync(l.dst).equals(patternBuffer(0, SIZE)), `${label}: DST holds the data`)
  t.is(fs.readFileSync(`${l.dst}.was`, 'utf8'), 'old contents', `${label}: the file moved aside is untouched`)
}

const SWAPS: SwapCase[] = [
  {
    what: 'a directory holding a file',
    swap: (l) =>
      aside(l, () => {
        fs.mkdirSync(l.dst)
        fs.writeFileSync(path.join(l.dst, 'inside'), 'kept')
      }),
    check(t, o, l, label) {
      t.false(o.ok, label)
      t.true(o.typed, `${label}: typed`)
      t.is(o.code, 'EISDIR', `${label}: ${o.message}`)
      t.regex(o.hint ?? '', /directory/, `${label}: the hint says DST is a directory now`)
      t.true(fs.statSync(l.dst).isDirectory(), label)
      t.deepEqual(fs.readdirSync(l.dst), ['inside'], `${label}: the directory holds what it held`)
      t.is(fs.readFileSync(path.join(l.dst, 'inside'), 'utf8'), 'kept')
    },
  },
  {
    what: 'a symbolic link to another file',
    swap: (l) => aside(l, () => fs.symlinkSync(l.victim, l.dst)),
    check(t, o, l, label) {
      landed(t, o, l, label)
      t.is(fs.readFileSync(l.victim, 'utf8'), 'victim contents', `${label}: the file the link named is not written (the link is replaced, never followed)`)
    },
  },
  {
    what: 'a FIFO',
    reason: skipReason(['cmd:mkfifo']),
    swap: (l) => aside(l, () => spawnSync('mkfifo', [l.dst])),
    check: landed,
  },
  {
    what: 'a character device node (1:3, as /dev/null)',
    reason: skipReason(['root', 'cmd:mknod']),
    swap: (l) => aside(l, () => spawnSync('mknod', [l.dst, 'c', '1', '3'])),
    check: landed,
  },
  {
    what: 'its directory, moved away and made again',
    swap(l) {
      fs.renameSync(l.sub, l.moved)
      fs.mkdirSync(l.sub)
    },
    check(t, o, l, label) {
      t.false(o.ok, label)
      t.true(o.typed, `${label}: typed`)
      t.is(o.code, 'ENOENT', `${label}: ${o.message}`)
      t.regex(o.hint ?? '', /moved or replaced/, `${label}: the hint says the directory was moved or replaced`)
      t.deepEqual(fs.readdirSync(l.sub), [], `${label}: nothing in the new directory`)
      t.deepEqual(fs.readdirSync(l.moved), ['out'], `${label}: the moved directory holds its file only`)
      t.is(fs.readFileSync(path.join(l.moved, 'out'), 'utf8'), 'old contents', `${label}: the old file untouched`)
    },
  },
  {
    what: 'its directory, replaced by a symbolic link to another directory',
    swap(l) {
      fs.renameSync(l.sub, l.moved)
      fs.symlinkSync(l.other, l.sub)
    },
    check(t, o, l, label) {
      t.false(o.ok, label)
      t.true(o.typed, `${label}: typed`)
      t.is(o.code, 'ENOENT', `${label}: ${o.message}`)
      t.regex(o.hint ?? '', /moved or replaced/, `${label}: the hint says the directory was moved or replaced`)
      t.deepEqual(fs.readdirSync(l.other), [], `${label}: nothing made in the directory the link names`)
      t.deepEqual(fs.readdirSync(l.moved), ['out'], `${label}: the moved directory holds its file only`)
      t.is(fs.readFileSync(path.join(l.moved, 'out'), 'utf8'), 'old contents', `${label}: the old file untouched`)
    },
  },
]

for (const c of SWAPS) {
  testIf(FAULTFS_REASON ?? c.reason, `copyFile, writeFile({ atomic }) and odirect cp while DST is swapped for ${c.what}: typed, no temp file left anywhere, nothing followed (faultfs)`, async (t) => {
    const fx = must(faultFs({ size: SIZE, hold: true, threads: 2 }))
    t.teardown(() => fx.cleanup())
    for (const form of FORMS) {
      const l = layout()
      const o = await replaceWhileSwapped(form, fx, l.dst, () => c.swap(l))
      const label = `${form}, DST swapped for ${c.what}`
      t.deepEqual(tempsUnder(l.base), [], `${label}: no temp file left`)
      c.check(t, o, l, label)
      if (form === 'odirect cp') t.is(o.status, o.ok ? 0 : 1, `${label}: exit status`)
    }
  })
}

testIf(FAULTFS_REASON, 'exclusive replacement (copyFile { exclusive }, writeFile { atomic, flag: wx }, odirect cp --no-clobber) while another writer creates DST: EEXIST, their file untouched, no temp file (faultfs)', async (t) => {
  const fx = must(faultFs({ size: SIZE, hold: true, threads: 2 }))
  t.teardown(() => fx.cleanup())
  const run = async (form: Form, dst: string, swap: () => void): Promise<Outcome> => {
    if (form === 'copyFile' || form === 'writeFile atomic') {
      // The same flow as replaceWhileSwapped, exclusive.
      if (form === 'writeFile atomic') {
        async function* chunks(): AsyncGenerator<Buffer> {
          yield Buffer.alloc(4096, 1)
          swap()
          yield Buffer.alloc(4096, 2)
        }
        return od.writeFile(dst, chunks(), { atomic: true, flag: 'wx' }).then(
          () => ({ ok: true, typed: true }),
          (e: unknown) => errorOutcome(e),
        )
      }
      const before = fx.stats().reads
      fx.hold()
      try {
        const p = od.copyFile(fx.file, dst, { exclusive: true }).then(
          (): Outcome => ({ ok: true, typed: true }),
          (e: unknown) => errorOutcome(e),
        )
        await fx.waitFor((s) => s.held >= 1 && s.reads > before, "the copy's first read held")
        swap()
        fx.release()
        return await p
      } finally {
        fx.release()
      }
    }
    const before = fx.stats().reads
    fx.hold()
    try {
      const child = spawn(process.execPath, [CLI, 'cp', '--json', '--no-clobber', fx.file, dst], { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      const closed = once(child, 'close') as Promise<[number | null, string | null]>
      await fx.waitFor((s) => s.held >= 1 && s.reads > before, "cp's first read held")
      swap()
      fx.release()
      const [status] = await closed
      const json = JSON.parse(out) as { skipped?: boolean }
      return { ok: status === 0 && json.skipped !== true, code: json.skipped === true ? 'EEXIST' : undefined, typed: true, status }
    } finally {
      fx.release()
    }
  }
  for (const form of FORMS) {
    const base = scratch()
    const dst = path.join(base, 'out')
    const o = await run(form, dst, () => fs.writeFileSync(dst, 'theirs'))
    t.false(o.ok, form)
    t.is(o.code, 'EEXIST', `${form}: ${o.message}`)
    t.true(o.typed, form)
    t.is(fs.readFileSync(dst, 'utf8'), 'theirs', `${form}: their file untouched`)
    t.deepEqual(tempsUnder(base), [], `${form}: no temp file left`)
  }
})

// ---------------------------------------------------------------------------------------
// 2. A failed write stream's cut-back and another writer's bytes

// The yardstick is node:fs: fs.createWriteStream writes in sequence and never truncates; when a
// write fails, what other writers wrote stays. odirect's stream has several blocks in flight and,
// when one fails, cuts the file back to the first byte it did not write (adversary-s17: a file at
// full length with the failed block a hole read as whole). It cuts whatever is past that byte
// and within its reach, also bytes another writer wrote there that the stream never wrote (here:
// inside its failed block, which faultfs left unwritten) or wrote before them (a block that
// landed before the other writer's bytes). Cause: src/streams/core.ts BlockWriter.beforeClose
// (truncate(keep) when size <= reached: a size within the stream's reach is taken as the
// stream's own). A fix must tell its own bytes from others' (keep the buffers of the blocks past
// the first failure until the cut and compare them with what the file holds, or cut nothing but
// the tail its own blocks made, block by block). Fixed: the blocks past the last confirmed one
// are kept until the stream's end, and the bytes past the cut are read back and compared with
// them (zeros allowed where a block failed): another writer's there leave the size as it is.
test('a write stream failing EIO at its second block keeps the bytes another writer wrote inside that block meanwhile (was: cut back to the first block, their bytes gone) (faultfs)', async (t) => {
  if (FAULTFS_REASON !== undefined) return t.fail(`needs faultfs: ${FAULTFS_REASON}`)
  const block = 64 * 1024
  // The stream's second block fails (offset block + 100 is in it); another writer's bytes at
  // block + 200.. are outside the failing offset: their write succeeds.
  const fx = faultFs({ size: 0, eioAt: [block + 100], hold: true, holdWrites: true, threads: 4 })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  t.teardown(() => fx.cleanup())
  const ws = od.createWriteStream(fx.file, { chunkSize: block, writeBehind: 4, datasync: false, direct: 'prefer', flags: 'r+' })
  await once(ws, 'ready')
  // The other writer: 100 bytes at block + 200, told they were written (the file is block + 300 long).
  const theirs = Buffer.alloc(100, 0x5a)
  const fd = fs.openSync(fx.file, 'r+')
  t.is(fs.writeSync(fd, theirs, 0, 100, block + 200), 100)
  fs.closeSync(fd)
  t.is(fs.statSync(fx.file).size, block + 300)
  const failed = new Promise<unknown>((resolve) => ws.on('error', resolve))
  // (Not once(ws, 'close'): it rejects with the 'error' before it.)
  const closed = new Promise((resolve) => ws.on('close', resolve))
  fx.hold()
  ws.end(Buffer.alloc(4 * block, 0x11))
  await fx.waitForHeld(1)
  fx.release()
  t.is(((await failed) as { code?: string }).code, 'EIO')
  await closed
  // node:fs's stream would have stopped at the failed block, its first block written: the file
  // block + 300 long, the other writer's bytes where they wrote them.
  const size = fs.statSync(fx.file).size
  t.true(size >= block + 300, `the file is ${size} bytes: the other writer's bytes at ${block + 200}..${block + 300} were cut`)
  if (size >= block + 300) {
    const got = Buffer.alloc(100)
    const rd = fs.openSync(fx.file, 'r')
    try {
      t.is(fs.readSync(rd, got, 0, 100, block + 200), 100)
    } finally {
      fs.closeSync(rd)
    }
    t.deepEqual(got, theirs, "the other writer's bytes are there")
  }
})

// ---------------------------------------------------------------------------------------
// 3. Streams over a FileHandle closed under them

// Streams on a handle do not hold its close() (README: holding them would hang close() on a
// stream nobody reads). What a user must still get: every stream over the handle either
// completes with all of its data (written to the file, or read) or fails with a typed error;
// never a 'finish' / a resolved close() with data missing from the file, never a read that ends
// as if the file ended (Node's read stream ends quietly as fs's does: 'close' without 'end', which
// pipeline() and async iteration report as ERR_STREAM_PREMATURE_CLOSE). The handle is closed
// after 0, 1 or 2 of 3 chunks, on the Node and web forms, reading and writing.
const CHUNK = 64 * 1024
const CHUNKS = 3

type StreamRun = { ok: true; bytes: Buffer } | { ok: false; code: string | undefined; typed: boolean }

const failedWith = (e: unknown): StreamRun => ({ ok: false, code: (e as { code?: string }).code, typed: e instanceof od.DirectIoError || (e as { code?: unknown }).code === 'ERR_STREAM_PREMATURE_CLOSE' })

/**
 * Opens `file` with `flags`, runs `body` over the handle and closes the handle once, whatever
 * happens: the stream's bytes (empty for a writer), or how it failed. `closeNow()` (from the body,
 * at the step the case chooses) starts the close under the stream; a second call does nothing.
 */
async function overClosedHandle(file: string, flags: 'r' | 'w', body: (fh: od.FileHandle, closeNow: () => void) => Promise<Buffer>): Promise<StreamRun> {
  const fh = await od.open(file, flags)
  let closing: Promise<void> | undefined
  const closeNow = (): void => {
    closing ??= fh.close()
  }
  try {
    return { ok: true, bytes: await body(fh, closeNow) }
  } catch (e) {
    return failedWith(e)
  } finally {
    await (closing ?? fh.close()).catch(() => {})
  }
}

const STREAM_FORMS: Record<string, (file: string, closeAfter: number) => Promise<StreamRun>> = {
  'fh.createWriteStream()': (file, closeAfter) =>
    overClosedHandle(file, 'w', async (fh, closeNow) => {
      const ws = fh.createWriteStream({ chunkSize: CHUNK, autoClose: false })
      const done = new Promise<void>((resolve, reject) => {
        ws.on('error', reject)
        ws.on('finish', resolve)
      })
      for (let i = 0; i < CHUNKS; i++) {
        if (i === closeAfter) closeNow()
        ws.write(Buffer.alloc(CHUNK, 0x41 + i))
      }
      ws.end()
      await done
      return Buffer.alloc(0)
    }),
  'writableWebStream(fh)': (file, closeAfter) =>
    overClosedHandle(file, 'w', async (fh, closeNow) => {
      const w = od.writableWebStream(fh, { chunkSize: CHUNK }).getWriter()
      for (let i = 0; i < CHUNKS; i++) {
        if (i === closeAfter) closeNow()
        await w.write(Buffer.alloc(CHUNK, 0x41 + i))
      }
      await w.close()
      return Buffer.alloc(0)
    }),
  'fh.createReadStream()': (file, closeAfter) =>
    overClosedHandle(file, 'r', async (fh, closeNow) => {
      const rs = fh.createReadStream({ chunkSize: CHUNK, autoClose: false })
      const parts: Buffer[] = []
      if (closeAfter === 0) closeNow()
      for await (const c of rs) {
        parts.push(Buffer.from(c as Buffer))
        if (parts.length === closeAfter) closeNow()
      }
      return Buffer.concat(parts)
    }),
  'fh.readableWebStream()': (file, closeAfter) =>
    overClosedHandle(file, 'r', async (fh, closeNow) => {
      const reader = fh.readableWebStream({ chunkSize: CHUNK }).getReader()
      const parts: Buffer[] = []
      if (closeAfter === 0) closeNow()
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        parts.push(Buffer.from(value))
        if (parts.length === closeAfter) closeNow()
      }
      return Buffer.concat(parts)
    }),
}

for (const [form, run] of Object.entries(STREAM_FORMS)) {
  test(`${form} with its FileHandle closed after 0, 1 or 2 of ${CHUNKS} chunks: all of the data, or a typed error (never a quiet end or finish with data missing)`, async (t) => {
    const dir = scratch()
    const whole = Buffer.concat(Array.from({ length: CHUNKS }, (_, i) => Buffer.alloc(CHUNK, 0x41 + i)))
    const writing = form.includes('Write') || form.includes('writable')
    for (let closeAfter = 0; closeAfter < CHUNKS; closeAfter++) {
      const file = path.join(dir, `f${closeAfter}`)
      if (!writing) fs.writeFileSync(file, whole)
      const r = await run(file, closeAfter)
      const label = `${form}, closed after ${closeAfter} chunks`
      if (r.ok) {
        const got = writing ? fs.readFileSync(file) : r.bytes
        t.true(got.equals(whole), `${label}: completed, so all ${whole.length} bytes must be there (${got.length})`)
      } else {
        t.true(r.typed, `${label}: a typed error (${r.code})`)
        t.true(r.code === 'ERR_ODIRECT_CLOSED' || r.code === 'ERR_STREAM_PREMATURE_CLOSE', `${label}: ${r.code}`)
      }
    }
  })
}

// ---------------------------------------------------------------------------------------
// 4. writeFile({ atomic }) reserving more than its data

// writeFile({ atomic }) reserves the temp file's size up front when the data's length is known
// (one string or view: fallocate mode 0, which sets the size; see reserveSpace), and its write
// stream cuts the file to the data's length only where the last block was padded. The length
// was Buffer.byteLength(data, encoding), which Node documents as an estimate for 'base64',
// 'base64url' and 'hex' (it assumes valid input: whitespace, the line breaks of wrapped base64,
// or characters that are not hex count): where the decoded data ended on a block boundary, the
// file kept the reserved size, zeros after the data (node:fs writes exactly the decoded bytes).
// The same for a view whose resizable ArrayBuffer shrank after the call (node:fs writes the
// length it has when written). Found: src/files.ts writeFileImpl; now a string is encoded once,
// up front, and the reservation is of its exact bytes; a temp file written shorter than it
// reserved is cut to its data (and datasynced again) before the rename.
const ATOMIC_DATA: Record<string, { data: () => string | Uint8Array; encoding?: BufferEncoding; after?: (d: string | Uint8Array) => void }> = {
  'base64 wrapped at 76 characters (4096 bytes decoded)': {
    data: () =>
      patternBuffer(0, 4096)
        .toString('base64')
        .replace(/.{76}/g, '$&\n'),
    encoding: 'base64',
  },
  'base64url with spaces (8192 bytes decoded)': {
    data: () =>
      patternBuffer(1, 8192)
        .toString('base64url')
        .replace(/.{64}/g, '$& '),
    encoding: 'base64url',
  },
  "hex that is not hex ('zz' x 4096: no bytes)": { data: () => 'zz'.repeat(4096), encoding: 'hex' },
  'hex with a line break every 64 digits (4096 bytes)': {
    data: () =>
      patternBuffer(2, 4096)
        .toString('hex')
        .replace(/.{64}/g, '$&\n'),
    encoding: 'hex',
  },
  'a view of a resizable ArrayBuffer of 8192 bytes shrunk to 4096 after the call': {
    data: () => {
      const rab = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer)(8192, { maxByteLength: 8192 })
      const v = new Uint8Array(rab)
      v.set(patternBuffer(3, 8192))
      return v
    },
    after: (d) => (d as Uint8Array & { buffer: { resize(n: number): void } }).buffer.resize(4096),
  },
}

for (const [what, c] of Object.entries(ATOMIC_DATA)) {
  test(`writeFile({ atomic }) of ${what}: the file holds exactly what node:fs writes (was: the reserved estimate, zeros after the data)`, async (t) => {
    if (process.env.ODIRECT_PREALLOCATE === '0') t.log('ODIRECT_PREALLOCATE=0: nothing is reserved, the case holds trivially')
    const dir = scratch()
    const mine = path.join(dir, 'odirect')
    const theirs = path.join(dir, 'nodefs')
    fs.writeFileSync(mine, 'old contents')
    fs.writeFileSync(theirs, 'old contents')
    const d1 = c.data()
    const p = od.writeFile(mine, d1, { atomic: true, ...(c.encoding ? { encoding: c.encoding } : {}) })
    c.after?.(d1)
    await p
    const d2 = c.data()
    const q = fs.promises.writeFile(theirs, d2, c.encoding ? { encoding: c.encoding } : {})
    c.after?.(d2)
    await q
    const want = fs.readFileSync(theirs)
    const got = fs.readFileSync(mine)
    t.is(got.length, want.length, `odirect wrote ${got.length} bytes, node:fs ${want.length}`)
    t.true(got.equals(want), 'the same bytes')
    // Its non-atomic form (no reservation) agrees too.
    const plain = path.join(dir, 'plain')
    const d3 = c.data()
    const r = od.writeFile(plain, d3, c.encoding ? { encoding: c.encoding } : {})
    c.after?.(d3)
    await r
    t.true(fs.readFileSync(plain).equals(want), 'writeFile without atomic: the same bytes')
  })
}

// ---------------------------------------------------------------------------------------
// 5. A destination that is a mount point

// A file bind-mounted over DST (a container's /etc/hosts and /etc/resolv.conf, a volume or a
// Kubernetes ConfigMap subPath mounted as one file): fs.copyFile and fs.writeFile write it in
// place; a rename cannot replace a mount point (EBUSY). Found: copyFile, writeFile({ atomic })
// and `odirect cp` failed "EBUSY: device or resource busy, rename" with no word of why or what to
// do (the temp file was removed, DST untouched: as promised). Now the hint says DST is a mount
// point and to write it in place (src/fileops.ts tempError; cp prints it).
testIf(skipReason(['root', 'cmd:mount', 'cmd:umount']), 'copyFile, writeFile({ atomic }) and odirect cp onto a bind-mounted file: EBUSY saying it is a mount point, the mounted file untouched, no temp file', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, patternBuffer(0, 65536))
  const mounted = path.join(dir, 'mounted')
  fs.writeFileSync(mounted, 'mounted contents')
  const dst = path.join(dir, 'dst')
  fs.writeFileSync(dst, 'under the mount')
  const m = spawnSync('mount', ['--bind', mounted, dst], { encoding: 'utf8' })
  if (m.status !== 0) return t.fail(`mount --bind: ${m.stderr}`)
  t.teardown(() => void spawnSync('umount', [dst]))
  const tries: Record<string, () => Promise<unknown>> = {
    copyFile: () => od.copyFile(src, dst),
    'writeFile atomic': () => od.writeFile(dst, 'new contents', { atomic: true }),
  }
  for (const [form, run] of Object.entries(tries)) {
    const e = await run().then(
      () => undefined,
      (x: unknown) => x,
    )
    t.true(e instanceof od.DirectIoError, `${form}: a DirectIoError (${String(e)})`)
    const x = e as od.DirectIoError
    t.is(x.code, 'EBUSY', form)
    t.regex(x.hint, /mount point/, `${form}: the hint says why`)
    t.is(fs.readFileSync(dst, 'utf8'), 'mounted contents', `${form}: the mounted file untouched`)
    t.deepEqual(tempsUnder(dir), [], `${form}: no temp file`)
  }
  const r = spawnSync(process.execPath, [CLI, 'cp', src, dst], { encoding: 'utf8' })
  t.is(r.status, 1)
  t.regex(r.stderr, /EBUSY.*mount point/, r.stderr)
  const j = spawnSync(process.execPath, [CLI, 'cp', '--json', src, dst], { encoding: 'utf8' })
  t.is(j.status, 1)
  const out = JSON.parse(j.stdout) as { error: { code: string; hint: string } }
  t.is(out.error.code, 'EBUSY')
  t.regex(out.error.hint, /mount point/)
  t.is(fs.readFileSync(dst, 'utf8'), 'mounted contents')
  t.deepEqual(tempsUnder(dir), [])
})

test('writeFile({ atomic }) of a view whose byteLength says 8192 when first asked and 4096 after (a getter that changes on its 2nd access): the file is the 4096 bytes written, no zeros after them (was: 8192 bytes, the reserved estimate)', async (t) => {
  class Shifty extends Uint8Array {
    #asked = 0
    override get byteLength(): number {
      return this.#asked++ === 0 ? 8192 : 4096
    }
  }
  const v = new Shifty(8192)
  v.set(patternBuffer(4, 8192))
  const dst = path.join(scratch(), 'out')
  fs.writeFileSync(dst, 'old contents')
  await od.writeFile(dst, v, { atomic: true })
  const got = fs.readFileSync(dst)
  t.is(got.length, 4096, `the file is ${got.length} bytes`)
  t.true(got.equals(patternBuffer(4, 4096)), 'the bytes written')
})

// ---------------------------------------------------------------------------------------
// 6. The kernel's protections of sticky directories (machine-wide: they are sysctls)

// fs.protected_regular and fs.protected_symlinks (on by default in most distributions: systemd
// sets protected_regular, the kernel protected_symlinks) guard a privileged process writing a
// name in /tmp that another user controls: O_CREAT of another user's file there, and following
// another user's link there, are EACCES, even for root. fs.copyFile and fs.writeFile open DST
// with O_CREAT, following its links in the kernel: protected. odirect replaced DST by a rename
// (allowed to root in a sticky directory) and read DST's links itself. Found:
// - protected_regular: root's copyFile / writeFile({ atomic }) / `odirect cp` onto another user's
//   file in a sticky world-writable directory replaced it, and gave the new file (root's data)
//   that user as owner (keepAttrs keeps the owner): the other user reads it;
// - protected_symlinks: a link another user puts at DST between odirect's stat of DST (nothing
//   there) and its link resolution was followed: root's data replaced the file it names
//   (/etc/shadow in the classic attack), through a temp file next to it;
// - protected_fifos: another user's FIFO at DST got root's data (odirect opens an existing FIFO
//   without O_CREAT, which the kernel does not check; fs's open has O_CREAT and is refused).
//   Left: createWriteStream / writableWebStream onto such a FIFO (src/streams/node.ts
//   openSequential, the streams helper's) still open it without O_CREAT.
// Now both are refused EACCES before any data, as the kernel refuses fs (src/fileops.ts
// refuseProtectedFile, refuseProtectedLink), with a hint naming the sysctl; with the sysctl off
// both write as fs does. The race is made deterministic by running the "attacker" inside
// odirect's own stat of DST (fs.promises.stat wrapped for that one path).
const SYSCTL_REASON = skipReason(['root']) ?? (fs.existsSync('/proc/sys/fs/protected_regular') && fs.existsSync('/proc/sys/fs/protected_symlinks') ? undefined : 'no fs.protected_regular / protected_symlinks in this kernel')

function sysctl(name: string, value?: number): number {
  const file = `/proc/sys/fs/${name}`
  const old = Number(fs.readFileSync(file, 'latin1').trim())
  if (value !== undefined) fs.writeFileSync(file, `${value}\n`)
  return old
}

/** A sticky directory of `mode` (1777: as /tmp) owned by root. */
function stickyDir(mode: number): string {
  const d = scratch()
  fs.chmodSync(d, mode)
  return d
}

async function refused(p: Promise<unknown>): Promise<{ code?: string; hint?: string; typed: boolean }> {
  return p.then(
    () => ({ typed: false }),
    (e: unknown) => ({ code: (e as { code?: string }).code, hint: (e as { hint?: string }).hint, typed: e instanceof od.DirectIoError }),
  )
}

testIf(SYSCTL_REASON, "machine-wide: fs.protected_regular: copyFile, writeFile({ atomic }) and odirect cp as root onto another user's file in a sticky world- (or, at 2, group-) writable directory are EACCES as fs.copyFile's open is, the file untouched; with the sysctl off they replace it as fs writes it", async (t) => {
  const old = sysctl('protected_regular')
  t.teardown(() => void sysctl('protected_regular', old))
  const src = path.join(scratch(), 'src')
  fs.writeFileSync(src, 'root secret\n')
  for (const [level, mode] of [
    [1, 0o1777],
    [2, 0o1770],
  ] as const) {
    sysctl('protected_regular', level)
    const dir = stickyDir(mode)
    const theirs = path.join(dir, 'theirs')
    fs.writeFileSync(theirs, 'their contents')
    fs.chmodSync(theirs, 0o666)
    fs.chownSync(theirs, 65534, 65534)
    const label = `protected_regular ${level}, directory ${mode.toString(8)}`
    t.throws(() => fs.copyFileSync(src, theirs), { code: 'EACCES' }, `${label}: fs.copyFile is refused (the reference)`)
    for (const [form, run] of [
      ['copyFile', () => od.copyFile(src, theirs)],
      ['writeFile atomic', () => od.writeFile(theirs, 'root secret\n', { atomic: true })],
    ] as const) {
      const r = await refused(run())
      t.is(r.code, 'EACCES', `${label}: ${form}`)
      t.true(r.typed, `${label}: ${form} typed`)
      t.regex(r.hint ?? '', /protected_regular/, `${label}: ${form}: the hint names the sysctl`)
      t.is(fs.readFileSync(theirs, 'utf8'), 'their contents', `${label}: ${form}: their file untouched`)
      t.is(fs.statSync(theirs).uid, 65534, `${label}: ${form}: still theirs`)
    }
    const cp = spawnSync(process.execPath, [CLI, 'cp', src, theirs], { encoding: 'utf8' })
    t.is(cp.status, 1, `${label}: odirect cp: ${cp.stderr}`)
    t.regex(cp.stderr, /EACCES.*protected_regular/, `${label}: odirect cp says why`)
    t.is(fs.readFileSync(theirs, 'utf8'), 'their contents', `${label}: odirect cp: their file untouched`)
    t.deepEqual(tempsUnder(dir), [], `${label}: no temp file`)
  }
  // Off: fs writes it in place, odirect replaces it (owner kept).
  sysctl('protected_regular', 0)
  const dir = stickyDir(0o1777)
  const theirs = path.join(dir, 'theirs')
  fs.writeFileSync(theirs, 'their contents')
  fs.chownSync(theirs, 65534, 65534)
  await od.copyFile(src, theirs)
  t.is(fs.readFileSync(theirs, 'utf8'), 'root secret\n', 'protected_regular 0: copied, as fs.copyFile copies')
}, true)

testIf(SYSCTL_REASON, "machine-wide: fs.protected_symlinks: a link another user puts at DST in a sticky world-writable directory between odirect's stat of DST and its link resolution is not followed (EACCES, as the kernel refuses fs's open); the file it names untouched", async (t) => {
  const old = sysctl('protected_symlinks', 1)
  t.teardown(() => void sysctl('protected_symlinks', old))
  const src = path.join(scratch(), 'src')
  fs.writeFileSync(src, 'root data\n')
  const victimDir = scratch()
  const victim = path.join(victimDir, 'shadow')
  fs.writeFileSync(victim, 'root:x:0:0\n')
  const fsp = (await import('node:fs/promises')).default as unknown as Record<string, unknown>
  const realStat = fsp.stat as (p: unknown, ...a: unknown[]) => Promise<fs.Stats>
  for (const [form, run] of [
    ['copyFile', (dst: string) => od.copyFile(src, dst)],
    ['writeFile atomic', (dst: string) => od.writeFile(dst, 'root data\n', { atomic: true })],
  ] as const) {
    const dir = stickyDir(0o1777)
    const dst = path.join(dir, 'report')
    // The reference: with the link there, the kernel refuses fs's open.
    fs.symlinkSync(victim, dst)
    fs.lchownSync(dst, 65534, 65534)
    t.throws(() => fs.copyFileSync(src, dst), { code: 'EACCES' }, `${form}: fs.copyFile through their link is refused (the reference)`)
    fs.unlinkSync(dst)
    // The attacker wins the race: the link appears right after odirect's stat found nothing.
    let armed = true
    fsp.stat = (p: unknown, ...a: unknown[]): Promise<fs.Stats> => {
      const r = realStat(p, ...a)
      if (!armed || p !== dst) return r
      armed = false
      const plant = (): void => {
        fs.symlinkSync(victim, dst)
        fs.lchownSync(dst, 65534, 65534)
      }
      return r.then(
        (st) => {
          plant()
          return st
        },
        (e: unknown) => {
          plant()
          throw e
        },
      )
    }
    let r: Awaited<ReturnType<typeof refused>>
    try {
      r = await refused(run(dst))
    } finally {
      fsp.stat = realStat
    }
    t.false(armed, `${form}: odirect's stat of DST ran (the race was run)`)
    t.is(r.code, 'EACCES', `${form}`)
    t.true(r.typed, `${form}: typed`)
    t.regex(r.hint ?? '', /protected_symlinks/, `${form}: the hint names the sysctl`)
    t.is(fs.readFileSync(victim, 'utf8'), 'root:x:0:0\n', `${form}: the file their link names is untouched`)
    t.true(fs.lstatSync(dst).isSymbolicLink(), `${form}: their link stays`)
    t.deepEqual([...tempsUnder(dir), ...tempsUnder(victimDir)], [], `${form}: no temp file`)
  }
}, true)

/**
 * A FIFO of uid 65534 in a fresh sticky world-writable directory, with its reader there all along
 * (non-blocking: `drained()` reads what arrived since the last call, '' when nothing did).
 */
function theirFifo(t: ExecutionContext): { fifo: string; drained: () => string } {
  const fifo = path.join(stickyDir(0o1777), 'report')
  const mk = spawnSync('mkfifo', [fifo], { encoding: 'utf8' })
  if (mk.status !== 0) throw new Error(`mkfifo: ${mk.stderr}`)
  fs.chownSync(fifo, 65534, 65534)
  const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  t.teardown(() => fs.closeSync(reader))
  const drained = (): string => {
    const b = Buffer.alloc(65536)
    try {
      return b.subarray(0, fs.readSync(reader, b, 0, b.length, null)).toString()
    } catch (e) {
      if ((e as { code?: string }).code === 'EAGAIN') return ''
      throw e
    }
  }
  return { fifo, drained }
}

testIf(SYSCTL_REASON, "machine-wide: fs.protected_fifos: writeFile (plain and atomic), copyFile and odirect cp as root onto another user's FIFO in a sticky world-writable directory are EACCES as fs.writeFile's open is; nothing reaches its reader (was: odirect opened the FIFO without O_CREAT, which the kernel does not check, and wrote root's data to the other user's reader)", async (t) => {
  const old = sysctl('protected_fifos', 1)
  t.teardown(() => void sysctl('protected_fifos', old))
  const src = path.join(scratch(), 'src')
  fs.writeFileSync(src, 'root secret\n')
  const { fifo, drained } = theirFifo(t)
  t.throws(() => fs.writeFileSync(fifo, 'root secret\n'), { code: 'EACCES' }, 'fs.writeFile is refused (the reference)')
  for (const [form, run] of [
    ['writeFile', () => od.writeFile(fifo, 'root secret\n')],
    ['writeFile atomic', () => od.writeFile(fifo, 'root secret\n', { atomic: true })],
    ['copyFile', () => od.copyFile(src, fifo)],
  ] as const) {
    const r = await refused(run())
    t.is(r.code, 'EACCES', form)
    t.true(r.typed, `${form}: typed`)
    t.regex(r.hint ?? '', /protected_fifos/, `${form}: the hint names the sysctl`)
    t.is(drained(), '', `${form}: nothing reached their reader`)
  }
  const cp = spawnSync(process.execPath, [CLI, 'cp', src, fifo], { encoding: 'utf8' })
  t.is(cp.status, 1, `odirect cp: ${cp.stderr}`)
  t.regex(cp.stderr, /EACCES.*protected_fifos/)
  t.is(drained(), '', 'odirect cp: nothing reached their reader')
  t.true(fs.lstatSync(fifo).isFIFO(), 'their FIFO stays')
}, true)

// The streams' half of the case above: createWriteStream / writableWebStream onto another user's
// FIFO in a sticky world-writable directory, as root with fs.protected_fifos on: fs's
// createWriteStream opens it with O_CREAT ('w') and fails EACCES; odirect's stream opens an
// existing FIFO through node:fs without O_CREAT (src/streams/node.ts openSequential), which the
// kernel does not check, and wrote the data to that user's reader. Fixed: with flags that carry
// O_CREAT, openSequential refuses it as src/fileops.ts refuseProtectedFile does, before the open
// (flags without O_CREAT, 'r+', open it as fs's stream does).
if (SYSCTL_REASON === undefined) {
  test.serial("machine-wide: fs.protected_fifos: createWriteStream and writableWebStream as root onto another user's FIFO in a sticky world-writable directory fail EACCES as fs.createWriteStream does; nothing reaches its reader (with 'r+', no O_CREAT: written, as fs's)", async (t) => {
    const old = sysctl('protected_fifos', 1)
    t.teardown(() => void sysctl('protected_fifos', old))
    const { fifo, drained } = theirFifo(t)
    const nodeErr = await new Promise<unknown>((resolve) => {
      const ws = fs.createWriteStream(fifo)
      ws.on('error', resolve)
      ws.on('close', () => resolve(undefined))
      ws.end('root secret\n')
    })
    t.is((nodeErr as { code?: string } | undefined)?.code, 'EACCES', 'fs.createWriteStream is refused (the reference)')
    const mine = await new Promise<unknown>((resolve) => {
      const ws = od.createWriteStream(fifo)
      ws.on('error', resolve)
      ws.on('close', () => resolve(undefined))
      ws.end('root secret\n')
    })
    t.is((mine as { code?: string } | undefined)?.code, 'EACCES', 'createWriteStream')
    t.is(drained(), '', 'createWriteStream: nothing reached their reader')
    const web = await writeAll(od.writableWebStream(fifo).getWriter(), [Buffer.from('root secret\n')])
    t.is((web as { code?: string } | undefined)?.code, 'EACCES', 'writableWebStream')
    t.is(drained(), '', 'writableWebStream: nothing reached their reader')
    // Flags without O_CREAT ('r+'): the kernel does not check them, fs's stream writes to the FIFO,
    // and so does odirect's (the refusal is the O_CREAT open's, not more).
    const written = (ws: NodeJS.WritableStream & { on(e: string, f: (x?: unknown) => void): unknown }): Promise<unknown> =>
      new Promise((resolve) => {
        ws.on('error', resolve)
        ws.on('close', () => resolve(undefined))
        ws.end('r+ data\n')
      })
    t.is(await written(fs.createWriteStream(fifo, { flags: 'r+' })), undefined, "fs.createWriteStream 'r+' writes (the reference)")
    t.is(drained(), 'r+ data\n')
    t.is(await written(od.createWriteStream(fifo, { flags: 'r+' })), undefined, "createWriteStream 'r+'")
    t.is(drained(), 'r+ data\n', "createWriteStream 'r+': written as fs's")
  })
}

// The streams' half of protected_regular: a write stream with truncating flags ('w', the default)
// and a `start` other than 0 opens the path without O_TRUNC (O_CREAT | O_EXCL first, then, the file
// being there, without O_CREAT), checks the start's alignment, then truncates (adversary-s17's
// fix: a refused stream leaves the file as it was). An open without O_CREAT is not checked by the
// kernel's protected_regular: as root, another user's file in /tmp is truncated and written with
// root's data (the other user reads it), where fs.createWriteStream's open (O_CREAT | O_TRUNC) is
// EACCES. Cause: src/streams/core.ts #openUntruncated. Fixed: the file it opened without O_CREAT
// (no O_TRUNC either: nothing cut yet) is checked as src/fileops.ts refuseProtectedFile does, its
// owner from the descriptor, and refused (closed) before the truncation and any write.
if (SYSCTL_REASON === undefined) {
  test.serial("machine-wide: fs.protected_regular: createWriteStream and writableWebStream with start 4096 (flags 'w') as root onto another user's file in a sticky world-writable directory fail EACCES as fs.createWriteStream does; the file untouched", async (t) => {
    const old = sysctl('protected_regular', 1)
    t.teardown(() => void sysctl('protected_regular', old))
    const dir = stickyDir(0o1777)
    const theirs = path.join(dir, 'theirs')
    const reset = (): void => {
      // (Made anew: root's own O_CREAT open of their file is what the sysctl refuses.)
      fs.rmSync(theirs, { force: true })
      fs.writeFileSync(theirs, 'their contents')
      fs.chownSync(theirs, 65534, 65534)
    }
    reset()
    const nodeErr = await new Promise<unknown>((resolve) => {
      const ws = fs.createWriteStream(theirs, { start: 4096 })
      ws.on('error', resolve)
      ws.on('close', () => resolve(undefined))
      ws.end('root secret\n')
    })
    t.is((nodeErr as { code?: string } | undefined)?.code, 'EACCES', 'fs.createWriteStream is refused (the reference)')
    t.is(fs.readFileSync(theirs, 'utf8'), 'their contents')
    const mine = await new Promise<unknown>((resolve) => {
      const ws = od.createWriteStream(theirs, { start: 4096 })
      ws.on('error', resolve)
      ws.on('close', () => resolve(undefined))
      ws.end('root secret\n')
    })
    t.is((mine as { code?: string } | undefined)?.code, 'EACCES', 'createWriteStream')
    t.is(fs.readFileSync(theirs, 'utf8'), 'their contents', 'createWriteStream: their file untouched')
    reset()
    const web = await writeAll(od.writableWebStream(theirs, { start: 4096 }).getWriter(), [Buffer.from('root secret\n')])
    t.is((web as { code?: string } | undefined)?.code, 'EACCES', 'writableWebStream')
    t.is(fs.readFileSync(theirs, 'utf8'), 'their contents', 'writableWebStream: their file untouched')
  })
}
