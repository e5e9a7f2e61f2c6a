// Adversary pass of the seventeenth session, as a new user and an attacker would meet odirect
// (earlier passes: data changing under reads, full disks, RLIMIT_FSIZE, worker deaths, EMFILE,
// CLOEXEC, signal storms, aborts at every await point, close() under in-flight ops, hostile
// numbers, odd names and signals for `odirect cp`). Here: the corners between the layers, each
// compared with what node:fs gives for the same call.
// 1. A write stream over a path its flags truncate ('w', the default, 'w+', O_TRUNC) with a start
//    that is not a multiple of the file's block size: refused ERR_ODIRECT_ALIGNMENT, but only once
//    the open had truncated the file to 0 bytes (or created it). Now the open leaves out O_TRUNC,
//    the check comes first and the truncation after it: the refused stream leaves the file byte
//    for byte as it was, and a file its open created is removed (src/streams/core.ts);
// 2. writeFile(path, data) with data of a wrong type (undefined, null, a number, an ArrayBuffer,
//    an object...) truncated the file to 0 bytes before it refused the data (node:fs refuses it
//    first, the file untouched): src/files.ts (chunksOf checked the data only when the write
//    began, after the open with 'w'); now checked before the open;
// 3. fh.writev / fh.readv with a zero-length view over a zero-length ArrayBuffer (Buffer.alloc(0),
//    new Uint8Array(0)) next to others: ERR_ODIRECT_DETACHED, where node:fs writes / reads the
//    others (the native capture of a vector took the null data pointer of an empty ArrayBuffer
//    for a detached one. Fixed: a zero-length segment is captured as an empty one, a view
//    detached under an op that wants its bytes is still ERR_ODIRECT_DETACHED: crates/napi/src/capture.rs);
// 2b. A write stream (Node or web) whose block fails (EIO, ENOSPC) while later blocks in flight
//    succeed: the stream fails with the first failed block's error, but the file kept the later
//    blocks: its size said the whole data was there, with the failed block a hole (seen on a
//    full ext4 at its last free blocks: 64 KiB of zeros inside a file of the data's full length).
//    Now a stream destroyed or failed before its end cuts the file back to the bytes confirmed
//    in order (or its size before, if larger), as node:fs's sequential writes leave it
//    (src/streams/core.ts beforeClose);
//    The same invariant on a real full ext4 (4096-byte sectors: data that fits, one block short,
//    far too big, by both streams, writeFile and copyFile): written whole, or ENOSPC and a prefix;
// 3b. fh.close() called while the handle's own fh.readFile() / fh.writeFile() runs (a missing
//    await, or `await using fh` with `return fh.readFile()`: the disposal runs as the function
//    returns, before the returned promise settles): node:fs's close() waits for the handle's
//    methods, which complete (the data read, the file written); odirect's close() waits only for
//    the ops in flight at that moment, so the method's next op fails ERR_ODIRECT_CLOSED and
//    fh.writeFile's data is not written. Fixed: fh.readFile() / fh.writeFile() count as one thing
//    in flight from start to end, and while one runs the handle's ops still go out (as node:fs's
//    until its deferred close); a method started after close() is refused (src/handle.ts
//    _method); writeMany({ datasync }) holds until its fdatasync (it rejected ERR_ODIRECT_CLOSED
//    after the writes);
// 3b2. two handles of one file, on every pair of backends and direct modes (attacked: no fault);
// 3c. web streams in Node, Bun and Deno (attacked: no fault): BYOB readers with odd views and
//    element types, mixed readers, tee() branches read late / cancelled / BYOB, cancel() and
//    releaseLock() mid-read, pipeTo aborted at a chunk, a writer's abort() mid-write: every byte
//    read is the file's, an aborted writer leaves a prefix of its data, and the three agree;
// 4. workers terminated at the Nth step of readFile, writeFile({ atomic }), copyFile, a web
//    stream pipe, typed readMany and open/close loops, in Node, Bun and Deno (the sixteenth pass's
//    worker sweeps ran in Node only): the main thread's I/O right, destinations whole, the
//    process's descriptors back by kind. Found (Deno only; fixed, see below): an open in flight when
//    Deno terminates the worker leaves its descriptor open for the life of the process (Deno
//    neither completes nor frees the async work of a terminated worker, so OpenTask's resolve and
//    drop, which adopt or close the descriptor, never run: crates/napi/src/tasks.rs. Now the open
//    records its descriptor in a mutex-guarded set of its engine until resolve or drop takes it,
//    and the engine's teardown closes what is left there: engine.rs Opening). Node showed
//    the same once (a file still open 20 s after the kills, 1 of 3 runs of this spec at once
//    under load; never in 36 runs of the sweep alone or 8 at once): the forms whose open may be
//    in flight at the kill let a file of the sweep's own stay open, every other kind must be back;
// 5. writeFile({ atomic }) of one destination from two workers (all runtimes): the temp name
//    NAME.odirect-tmp-PID-N counted N per thread from 1, so two workers' temp files were the
//    same file: the second one's open fails EEXIST, and its cleanup then unlinks the
//    first one's temp file, whose rename fails ENOENT: both calls fail, the data is lost; a temp
//    file a terminated worker left makes the next worker's first atomic write of that
//    destination fail EEXIST (src/fileops.ts tmpName, src/files.ts removeTemp after a failed open).
//    Now PID-R, R random, and a temp name found taken is never removed by the cleanup.
// Every check waits on an event (a promise, a stream's 'close'); nothing is timed.
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import * as od from '../dist/index.js'
import { childRunner } from './helpers/child-result.ts'
import { faultFs, fullFs, isSkip } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'
import { runtimes } from './helpers/runtimes.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { holds, openedNoMore } from './helpers/holds.ts'
import { writeAll } from './helpers/wstream.ts'

const scratch = scratchDirs('adversary-s17')
const runChild = childRunner(path.join(path.dirname(fileURLToPath(import.meta.url)), 'adversary-s17'))

const O_WRONLY = fs.constants.O_WRONLY
const O_RDWR = fs.constants.O_RDWR
const O_CREAT = fs.constants.O_CREAT
const O_TRUNC = fs.constants.O_TRUNC
const O_EXCL = fs.constants.O_EXCL

/** A file's bytes, or 'absent'. */
const bytesOf = (p: string): Buffer | 'absent' => (fs.existsSync(p) ? fs.readFileSync(p) : 'absent')

/** Writes `chunks` through an odirect Node write stream; resolves the error it ended with, if any. */
async function nodeStream(p: string, options: od.WriteStreamOptions, chunks: readonly Buffer[]): Promise<unknown> {
  const ws = od.createWriteStream(p, options)
  let err: unknown
  ws.on('error', (e) => {
    err = e
  })
  const closed = new Promise((resolve) => ws.on('close', resolve))
  for (const c of chunks) ws.write(c)
  ws.end()
  await closed
  return err
}

/** The same through an odirect web WritableStream. */
async function webStream(p: string, options: od.WriteStreamOptions, chunks: readonly Buffer[]): Promise<unknown> {
  try {
    return await writeAll(od.writableWebStream(p, options).getWriter(), chunks)
  } catch (e) {
    return e
  }
}

/** node:fs's write stream with the same options (flags as given, start). */
async function fsStream(p: string, options: { flags: string | number; start: number }, chunks: readonly Buffer[]): Promise<void> {
  const ws = fs.createWriteStream(p, { flags: options.flags as string, start: options.start })
  for (const c of chunks) ws.write(c)
  ws.end()
  await once(ws, 'close')
}

const FORMS = { node: nodeStream, web: webStream } as const
const TRUNCATING: ReadonlyArray<string | number> = ['w', 'w+', O_WRONLY | O_CREAT | O_TRUNC, O_RDWR | O_CREAT | O_TRUNC]

for (const [form, write] of Object.entries(FORMS)) {
  test(`${form} write stream, flags that truncate, a start that is not a block multiple: refused ERR_ODIRECT_ALIGNMENT with the file byte for byte as it was, a file the open created removed, on ext4 (512) and tmpfs (4096: start 512 is known unaligned only once open) (was: the open truncated the file to 0 bytes, then refused)`, async (t) => {
    const data = [Buffer.from('new data that must not land')]
    for (const root of ['/var/tmp', '/dev/shm']) {
      const dir = scratch(root)
      const probe = await od.open(path.join(dir, 'probe'), 'w')
      const unit = probe.alignment.offset
      await probe.close()
      const starts = [1, 100, unit - 1, unit + 7, ...(unit > 512 ? [512, 1024, unit + 512] : [])]
      for (const flags of [...TRUNCATING, 'wx', 'wx+', O_WRONLY | O_CREAT | O_EXCL | O_TRUNC]) {
        for (const start of starts) {
          const what = `${root} flags ${String(flags)} start ${start}`
          const excl = typeof flags === 'number' ? (flags & O_EXCL) !== 0 : flags.includes('x')
          // An existing file (not for the exclusive flags, which refuse it EEXIST before anything).
          const p = path.join(dir, 'old.bin')
          const old = Buffer.alloc(3 * unit + 77, 0xab)
          fs.writeFileSync(p, old)
          if (!excl) {
            const e = await write(p, { flags: flags as od.OpenFlags, start }, data)
            t.is((e as { code?: unknown } | undefined)?.code, 'ERR_ODIRECT_ALIGNMENT', what)
            t.deepEqual(bytesOf(p), old, `${what}: the file is as it was`)
          }
          // A missing file: not left behind, empty, by the refused stream.
          const q = path.join(dir, 'missing.bin')
          const e2 = await write(q, { flags: flags as od.OpenFlags, start }, data)
          t.is((e2 as { code?: unknown } | undefined)?.code, 'ERR_ODIRECT_ALIGNMENT', `${what} (missing file)`)
          t.is(bytesOf(q), 'absent', `${what}: the refused stream created no file`)
        }
      }
      t.deepEqual(fs.readdirSync(dir).sort(), ['old.bin', 'probe'], `${root}: nothing else left`)
    }
  })

  test(`${form} write stream, flags that truncate, a start the file's block size allows (or any start with direct 'off'): the file node:fs's write stream gives, byte for byte (the truncation now after the open)`, async (t) => {
    const chunks = [Buffer.from('abc'), Buffer.alloc(5000, 0x5a), Buffer.from('tail')]
    for (const root of ['/var/tmp', '/dev/shm']) {
      const dir = scratch(root)
      const a = path.join(dir, 'od.bin')
      const b = path.join(dir, 'fs.bin')
      for (const flags of TRUNCATING) {
        for (const [start, direct] of [[512, 'require'], [4096, 'require'], [8192, 'require'], [100, 'off'], [4097, 'off']] as const) {
          if (root === '/dev/shm' && direct === 'require' && start % 4096 !== 0) continue
          for (const before of [Buffer.alloc(20_000, 0xab), Buffer.alloc(0), undefined]) {
            const what = `${root} flags ${String(flags)} start ${start} direct ${direct} before ${before === undefined ? 'absent' : before.length}`
            for (const p of [a, b]) {
              fs.rmSync(p, { force: true })
              if (before !== undefined) fs.writeFileSync(p, before)
            }
            const e = await write(a, { flags: flags as od.OpenFlags, start, direct }, chunks)
            t.is(e, undefined, what)
            await fsStream(b, { flags, start }, chunks)
            t.deepEqual(bytesOf(a), bytesOf(b), what)
          }
        }
      }
    }
  })
}

test("write streams through a dangling link (absolute and relative) with an unaligned start are refused with nothing created, the link still dangling; with an aligned start the file the link names is made and written, the link stays a link", async (t) => {
  const dir = scratch()
  fs.mkdirSync(path.join(dir, 'other'))
  fs.symlinkSync(path.join(dir, 'other', 'abs'), path.join(dir, 'abs-link'))
  fs.symlinkSync('other/rel', path.join(dir, 'rel-link'))
  for (const [form, write] of Object.entries(FORMS)) {
    for (const [link, target] of [['abs-link', 'abs'], ['rel-link', 'rel']]) {
      const p = path.join(dir, link)
      const q = path.join(dir, 'other', target)
      const e = await write(p, { start: 7 }, [Buffer.from('x')])
      t.is((e as { code?: unknown } | undefined)?.code, 'ERR_ODIRECT_ALIGNMENT', `${form} ${link}`)
      t.false(fs.existsSync(q), `${form} ${link}: nothing created`)
      t.true(fs.lstatSync(p).isSymbolicLink(), `${form} ${link}: still a link`)
      t.is(await write(p, { start: 512 }, [Buffer.from('x')]), undefined, `${form} ${link} aligned`)
      t.deepEqual(fs.readFileSync(q), Buffer.concat([Buffer.alloc(512), Buffer.from('x')]), `${form} ${link}: the named file written`)
      t.true(fs.lstatSync(p).isSymbolicLink(), `${form} ${link}: still a link after the write`)
      fs.rmSync(q)
    }
  }
})

test('createWriteStream(p, { flags: O_RDWR | O_TRUNC }) without O_CREAT and an unaligned start: the file untouched; a missing file stays missing (ENOENT, as node:fs)', async (t) => {
  const dir = scratch()
  const p = path.join(dir, 'f.bin')
  const old = Buffer.alloc(1000, 1)
  fs.writeFileSync(p, old)
  const e = await nodeStream(p, { flags: (O_RDWR | O_TRUNC) as unknown as od.OpenFlags, start: 3 }, [Buffer.from('x')])
  t.is((e as { code?: unknown }).code, 'ERR_ODIRECT_ALIGNMENT')
  t.deepEqual(bytesOf(p), old)
  const q = path.join(dir, 'none.bin')
  const e2 = await nodeStream(q, { flags: (O_RDWR | O_TRUNC) as unknown as od.OpenFlags, start: 3 }, [Buffer.from('x')])
  t.is((e2 as { code?: unknown }).code, 'ENOENT')
  t.is(bytesOf(q), 'absent')
})

/** Data of the wrong type for writeFile, each refused by node:fs/promises before it opens the file. */
const BAD_DATA: ReadonlyArray<[string, unknown]> = [
  ['undefined', undefined],
  ['null', null],
  ['a number', 123],
  ['a bigint', 5n],
  ['a boolean', true],
  ['a plain object', {}],
  ['an ArrayBuffer', new ArrayBuffer(8)],
  ['a Date', new Date(0)],
  ['a Promise', Promise.resolve('x')],
  ['a symbol', Symbol('x')],
]

test("writeFile(path, data of a wrong type) is refused ERR_INVALID_ARG_TYPE with the file untouched, as node:fs/promises refuses it before the open (was: src/files.ts checked the data after opening the path 'w', so the file is truncated to 0 bytes first)", async (t) => {
  const dir = scratch()
  const a = path.join(dir, 'od.txt')
  const b = path.join(dir, 'fs.txt')
  for (const [what, data] of BAD_DATA) {
    for (const direct of ['require', 'off'] as const) {
      fs.writeFileSync(a, 'precious')
      fs.writeFileSync(b, 'precious')
      const e1 = await od.writeFile(a, data as string, { direct }).then(() => undefined, (e: unknown) => e)
      const e2 = await fsp.writeFile(b, data as string).then(() => undefined, (e: unknown) => e)
      t.is((e1 as { code?: unknown }).code, 'ERR_INVALID_ARG_TYPE', `${what} ${direct}`)
      t.is((e2 as { code?: unknown }).code, 'ERR_INVALID_ARG_TYPE', `${what} (node:fs)`)
      t.is(fs.readFileSync(b, 'utf8'), 'precious', `${what}: node:fs leaves the file`)
      t.is(fs.readFileSync(a, 'utf8'), 'precious', `${what} ${direct}: odirect leaves the file`)
    }
  }
})

test('writeFile(path, data of a wrong type, { atomic: true }) is refused with the file untouched and no temp file left (attacked: no fault)', async (t) => {
  const dir = scratch()
  const a = path.join(dir, 'od.txt')
  for (const [what, data] of BAD_DATA) {
    fs.writeFileSync(a, 'precious')
    const e = await od.writeFile(a, data as string, { atomic: true }).then(() => undefined, (e: unknown) => e)
    t.is((e as { code?: unknown }).code, 'ERR_INVALID_ARG_TYPE', what)
    t.is(fs.readFileSync(a, 'utf8'), 'precious', what)
    t.deepEqual(fs.readdirSync(dir), ['od.txt'], what)
  }
})

/** Empty views whose ArrayBuffer has no memory at all (its data pointer is null), and one that has. */
const EMPTY_VIEWS: ReadonlyArray<[string, () => Uint8Array]> = [
  ['Buffer.alloc(0)', () => Buffer.alloc(0)],
  ['new Uint8Array(0)', () => new Uint8Array(0)],
  ['a view of new ArrayBuffer(0)', () => new Uint8Array(new ArrayBuffer(0))],
]

test("fh.writev / fh.readv with a zero-length view (Buffer.alloc(0), new Uint8Array(0)) among others write / read the others, as node:fs does, on direct and buffered handles (was: ERR_ODIRECT_DETACHED 'a buffers[] element is detached': the native capture of a vector took an empty ArrayBuffer's null data pointer for a detached buffer)", async (t) => {
  const dir = scratch()
  const a = path.join(dir, 'od.bin')
  const b = path.join(dir, 'fs.bin')
  for (const direct of ['require', 'off'] as const) {
    for (const [what, empty] of EMPTY_VIEWS) {
      for (const at of [0, 1, 2]) {
        const label = `${direct} ${what} at ${at}`
        fs.writeFileSync(a, Buffer.alloc(8192, 1))
        fs.writeFileSync(b, Buffer.alloc(8192, 1))
        const fh = await od.open(a, 'r+', { direct })
        const fb = await fsp.open(b, 'r+')
        try {
          const blocks = [fh.alloc(512).fill(0x41), fh.alloc(512).fill(0x42)]
          const vec = [...blocks]
          vec.splice(at, 0, empty())
          const w1 = await fh.writev(vec, 512).then((r) => r.bytesWritten, (e: { code?: string }) => e.code)
          const w2 = (await fb.writev(vec, 512)).bytesWritten
          t.is(w1, w2, `writev ${label}`)
          const r1 = [fh.alloc(512), fh.alloc(512)]
          const rv = [...r1]
          rv.splice(at, 0, empty())
          const n1 = await fh.readv(rv, 512).then((r) => r.bytesRead, (e: { code?: string }) => e.code)
          t.is(n1, 1024, `readv ${label}`)
        } finally {
          await fh.close()
          await fb.close()
        }
        t.deepEqual(fs.readFileSync(a), fs.readFileSync(b), label)
      }
    }
  }
})

for (const form of ['node', 'web'] as const) {
  testIf(FAULTFS_REASON, `${form} write stream: a block fails EIO while the blocks after it, in flight at once, are written: the stream fails EIO at that block and the file is cut back to the blocks before it (was: the file kept its full length, the failed block a hole) (faultfs)`, async (t) => {
    const block = 64 * 1024
    const fx = faultFs({ size: 0, eioAt: [block + 100], hold: 'held', holdWrites: true, threads: 4 })
    if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
    try {
      const data = Buffer.concat([Buffer.alloc(4 * block, 0x11), Buffer.alloc(100, 0x22)])
      const options = { chunkSize: block, writeBehind: 4, datasync: false, direct: 'prefer' } as const
      let failed: Promise<unknown>
      if (form === 'node') {
        const ws = od.createWriteStream(fx.file, options)
        failed = new Promise((resolve) => {
          ws.on('error', resolve)
          ws.on('close', () => resolve(undefined))
        })
        ws.end(data)
      } else {
        const w = od.writableWebStream(fx.file, options).getWriter()
        failed = writeAll(w, [data])
      }
      // FUSE takes one direct write of a file at a time (the inode lock): the first block held in
      // the server means the JS turn that staged all four is over, the other three wait in the
      // kernel; then they are answered in order, the second with EIO.
      await fx.waitForHeld(1)
      fx.release()
      const e = (await failed) as { code?: string; position?: number } | undefined
      t.is(e?.code, 'EIO')
      t.is(e?.position, block)
      t.true(fx.stats().writes >= 4, `writes ${fx.stats().writes}`)
      // The stream closes its file once its teardown (the truncation first) is done; the web
      // stream's writer rejects as the block fails, before that: wait for the descriptor to go.
      t.true(await openedNoMore(fx.file), 'the stream closed its file')
      const size = fs.statSync(fx.file).size
      t.is(size, block, 'the file holds the blocks confirmed in order, nothing after the failed one')
      const fd = fs.openSync(fx.file, 'r')
      const got = Buffer.alloc(block)
      t.is(fs.readSync(fd, got, 0, block, 0), block)
      fs.closeSync(fd)
      t.deepEqual(got, data.subarray(0, block))
    } finally {
      fx.cleanup()
    }
  })
}

testIf(FAULTFS_REASON, "a write stream of a file's first part fails (EIO) after another stream wrote a later part past it: the later part stays whole (the cut back to the confirmed bytes leaves a file grown past the failed stream's own writes) (faultfs)", async (t) => {
  const block = 64 * 1024
  const fx = faultFs({ size: 0, eioAt: [block + 100], hold: true, holdWrites: true, threads: 4 })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  try {
    const options = { chunkSize: block, writeBehind: 4, datasync: false, direct: 'prefer', flags: 'r+' } as const
    // The first part's stream opens first (the file is empty then), the later part is written whole.
    const a = od.createWriteStream(fx.file, { ...options, start: 0 })
    await once(a, 'ready')
    const later = Buffer.alloc(4 * block, 0x33)
    const b = od.createWriteStream(fx.file, { ...options, start: 16 * block })
    b.end(later)
    await once(b, 'close')
    t.is(fs.statSync(fx.file).size, 20 * block)
    // The first part: its second block fails while the two after it are written.
    const failed = new Promise((resolve) => a.on('error', resolve))
    const closed = new Promise((resolve) => a.on('close', resolve))
    fx.hold()
    a.end(Buffer.alloc(4 * block + 100, 0x11))
    await fx.waitForHeld(1)
    fx.release()
    t.is(((await failed) as { code?: string }).code, 'EIO')
    await closed
    t.is(fs.statSync(fx.file).size, 20 * block, 'the later part is still there')
    // (faultfs fails reads of the failed block too: the ranges around it are read.)
    const range = (from: number, len: number): Buffer => {
      const fd = fs.openSync(fx.file, 'r')
      try {
        const b = Buffer.alloc(len)
        t.is(fs.readSync(fd, b, 0, len, from), len)
        return b
      } finally {
        fs.closeSync(fd)
      }
    }
    t.deepEqual(range(16 * block, 4 * block), later)
    t.deepEqual(range(0, block), Buffer.alloc(block, 0x11))
  } finally {
    fx.cleanup()
  }
})

fxTest("a full ext4 (4096-byte sectors) filled by write streams (Node and web, 64 KiB blocks, 4 in flight), writeFile and copyFile with data that fits, one block short or far too big: each either writes the whole data or fails ENOSPC leaving a prefix of the data (no hole, never the full size with a block missing) and no temp file", ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4'], async (t) => {
  const fx = must(fullFs(8, { kind: 'loop-ext4' }))
  t.teardown(() => fx.cleanup())
  const srcDir = scratch()
  const block = 64 * 1024
  const free = fx.freeBytes
  const forms: Record<string, (p: string, d: Buffer, src: string) => Promise<unknown>> = {
    'node stream': (p, d) =>
      new Promise((resolve, reject) => {
        const ws = od.createWriteStream(p, { chunkSize: block, writeBehind: 4 })
        ws.on('error', reject)
        ws.on('close', resolve)
        for (let i = 0; i < d.length; i += 100_000) ws.write(d.subarray(i, i + 100_000))
        ws.end()
      }),
    'web stream': async (p, d) => {
      const w = od.writableWebStream(p, { chunkSize: block, writeBehind: 4 }).getWriter()
      for (let i = 0; i < d.length; i += 100_000) await w.write(d.subarray(i, i + 100_000))
      await w.close()
    },
    writeFile: (p, d) => od.writeFile(p, d),
    copyFile: (p, _d, src) => od.copyFile(src, p),
  }
  const outcomes: string[] = []
  for (const [name, write] of Object.entries(forms)) {
    for (const [label, len] of [['fits', free - 2 * block - 100], ['one block short', free + 4096], ['far too big', free + 40 * block]] as const) {
      const data = Buffer.alloc(len)
      for (let i = 0; i < len; i += 512) data.fill((i >>> 9) & 0xff, i, Math.min(len, i + 512))
      const src = path.join(srcDir, 'src')
      fs.writeFileSync(src, data)
      const dst = path.join(fx.dir, 'dst')
      const e = await write(dst, data, src).then(() => undefined, (err: unknown) => err as { code?: string })
      const got = fs.existsSync(dst) ? fs.readFileSync(dst) : Buffer.alloc(0)
      const what = `${name}, ${label} (${len} bytes, ${free} free)`
      outcomes.push(`${what}: ${e === undefined ? 'written' : `${e.code}, ${got.length} bytes left`}`)
      if (e === undefined) t.deepEqual(got, data, what)
      else {
        t.is(e.code, 'ENOSPC', what)
        t.true(got.length < len, `${what}: the file is shorter than the data (${got.length})`)
        t.true(got.equals(data.subarray(0, got.length)), `${what}: the file is a prefix of the data, no hole`)
      }
      t.deepEqual(fs.readdirSync(fx.dir).filter((n) => n !== 'lost+found' && n !== 'dst'), [], `${what}: no temp file`)
      fs.rmSync(dst, { force: true })
    }
  }
  t.log(outcomes.join('\n'))
})

test("fh.close() called while the handle's fh.readFile() / fh.writeFile() runs waits for it, as node:fs's close() does: the data is read, the file written, both promises resolve (was: the method's next op rejected ERR_ODIRECT_CLOSED and fh.writeFile's data was not written); a method started after close() rejects ERR_ODIRECT_CLOSED, as any op does once none runs", async (t) => {
  const dir = scratch()
  const data = Buffer.alloc(300_000, 0x61)
  for (const [name, m] of [['node:fs', fsp], ['odirect', od]] as const) {
    const p = path.join(dir, `read-${name}`)
    fs.writeFileSync(p, data)
    const rh = await m.open(p, 'r')
    const read = rh.readFile().then((b) => b.length, (e: { code?: string }) => `rejected ${e.code}`)
    await rh.close()
    t.is(await read, data.length, `${name}: fh.readFile() with close() called after it`)
    const q = path.join(dir, `write-${name}`)
    const wh = await m.open(q, 'w+')
    const wrote = wh.writeFile(data).then(() => 'ok', (e: { code?: string }) => `rejected ${e.code}`)
    await wh.close()
    t.is(await wrote, 'ok', `${name}: fh.writeFile() with close() called after it`)
    t.deepEqual(fs.readFileSync(q), data, `${name}: the file written`)
  }
  // A method started after close() is refused; an op started after close() goes out while the
  // method runs (as node:fs's, whose descriptor stays open until its deferred close), and is
  // refused once no method runs.
  const p = path.join(dir, 'read-odirect')
  const fh = await od.open(p, 'r')
  const read = fh.readFile().then((b) => b.length, (e: { code?: string }) => `rejected ${e.code}`)
  const closed = fh.close()
  const later = fh.readFile().then(() => 'ok', (e: { code?: string }) => e.code)
  const stat = fh.stat().then((s) => s.size, (e: { code?: string }) => e.code)
  t.is(await read, data.length)
  t.is(await stat, data.length)
  await closed
  t.is(await later, 'ERR_ODIRECT_CLOSED')
  t.is(await fh.stat().then(() => 'ok', (e: { code?: string }) => e.code), 'ERR_ODIRECT_CLOSED')
  // `await using fh` with `return fh.readFile()`: the disposal's close() runs before the read ends.
  const usingRead = async (): Promise<number> => {
    await using h = await od.open(p, 'r')
    return (await h.readFile().then((b) => b.length))
  }
  t.is(await usingRead(), data.length)
})

test('writeMany(ops, { datasync: true }) with close() called before its writes complete: the fdatasync after them still runs and the call resolves (was: ERR_ODIRECT_CLOSED from the fdatasync, after the writes had landed)', async (t) => {
  const p = path.join(scratch(), 'many.bin')
  fs.writeFileSync(p, Buffer.alloc(65536))
  // More writes than the link limit (16), so the fdatasync is issued once the writes resolved.
  for (const backend of ['io_uring', 'threadpool'] as const) {
    const fh = await od.open(p, 'r+', { backend })
    const b = fh.alloc(4096).fill(0x5a)
    const ops = Array.from({ length: 16 + 4 }, (_, i) => ({ buffer: b, position: (i % 16) * 4096 }))
    const wrote = fh.writeMany(ops, { datasync: true }).then((r) => r.length, (e: { code?: string }) => e.code)
    const closed = fh.close()
    t.is(await wrote, 20, backend)
    await closed
    t.deepEqual(fs.readFileSync(p), Buffer.alloc(65536, 0x5a), backend)
  }
})

test("two handles of one file (io_uring / aio / thread pool, direct / buffered / uncached) written by one and read by the other in turn, and 64 writes through one then readFile by path: every read sees the last write (attacked: no fault)", async (t) => {
  const p = path.join(scratch(), 'two.bin')
  fs.writeFileSync(p, Buffer.alloc(1 << 20))
  const combos = [['io_uring', 'require'], ['aio', 'require'], ['threadpool', 'require'], ['io_uring', 'off'], ['threadpool', 'off'], ['io_uring', 'uncached']] as const
  let pairs = 0
  for (const [b1, d1] of combos) {
    for (const [b2, d2] of combos) {
      const what = `${b1}/${d1} and ${b2}/${d2}`
      const opened = await Promise.all([od.open(p, 'r+', { backend: b1, direct: d1 }), od.open(p, 'r+', { backend: b2, direct: d2 })]).catch((e: { code?: string }) => e)
      if (!Array.isArray(opened)) {
        // 'uncached' needs RWF_DONTCACHE (Linux 6.14+): typed where the kernel lacks it.
        t.true(d1 === 'uncached' || d2 === 'uncached', `${what}: ${opened.code}`)
        continue
      }
      const [fh1, fh2] = opened
      try {
        const w = fh1.alloc(4096)
        const r = fh2.alloc(4096)
        for (let i = 0; i < 64; i++) {
          const pos = ((i * 37) % 256) * 4096
          w.fill(i & 255)
          const [x, y] = i % 2 === 1 ? [fh1, fh2] : [fh2, fh1]
          await x.write(w, 0, 4096, pos)
          await y.read(r, 0, 4096, pos)
          t.true(r.equals(w), `${what}: write ${i}`)
        }
        await Promise.all(Array.from({ length: 64 }, (_, i) => fh1.write(fh1.alloc(4096).fill(i), 0, 4096, i * 4096)))
        const all = await od.readFile(p, { direct: d2 === 'uncached' ? 'off' : d2 })
        for (let i = 0; i < 64; i++) t.true(all[i * 4096] === i && all[i * 4096 + 4095] === i, `${what}: block ${i} by path`)
        pairs++
      } finally {
        await fh1.close()
        await fh2.close()
      }
    }
  }
  t.true(pairs >= 25, `pairs tried ${pairs}`)
})

// ---------------------------------------------------------------------------------------
// 3c. Web streams

const WEB_EXPECTED: Record<string, string> = {
  'byob 1 byte': 'ok',
  'byob odd': 'ok',
  'byob big': 'ok',
  // The Streams spec: a BYOB read whose view's element size does not divide what is left at the
  // end errors the stream with a TypeError (the runtime's own, as for any byte source).
  'byob u32': 'ERR TypeError',
  'byob u32 file%4': 'ERR TypeError',
  'byob f64 file%8': 'ERR TypeError',
  'byob u32 whole elements': 'ok',
  'byob f64 whole elements': 'ok',
  'byob dataview': 'ok',
  'byob start/end': 'ok',
  'default reader': 'ok',
  'mixed default/byob': 'ok',
  'tee both': 'ok ok',
  'tee one stalled then read': 'ok ok',
  'tee one cancelled': 'ok',
  'tee byob branch': 'ok ok',
  'cancel mid read': '{"done":true}',
  'cancel byob mid read': '[true,null]',
  // The released reader's read rejects; the next reader gets every byte (3146962, the file).
  'releaseLock mid read': 'TypeError 3146962',
  'releaseLock byob mid read': 'TypeError ok',
  'pipeTo abort at 0': '["AbortError",true,0]',
  'pipeTo abort at 1': '["AbortError",true,0]',
  'pipeTo abort at 5': '["AbortError",true,0]',
  'pipeTo abort at 40': '["AbortError",true,0]',
  'writer abort mid write': '[true,50]',
}

for (const [rt, argv] of runtimes()) {
  test(`${rt}: web streams attacked (BYOB views of odd sizes, offsets and types, mixed readers, tee() branches read late, cancelled or BYOB, cancel() and releaseLock() mid-read, pipeTo aborted at a chunk, a writer aborted mid-write): every byte read is the file's, an aborted writer leaves a prefix of its data and no temp file (attacked: no fault)`, async (t) => {
    t.deepEqual(await runChild<Record<string, string>>('web-attack.mjs', [scratch()], { argv }), WEB_EXPECTED)
  })
}

// ---------------------------------------------------------------------------------------
// 4. Workers terminated mid-form in Node, Bun and Deno

interface WorkerKill {
  runs: number
  killedAt: Record<string, number[]>
  errors: string[]
  wrong: number
  mainOps: number
  before: Record<string, number>
  after: Record<string, number>
  temps: number
}

/**
 * Descriptor kinds that only odirect makes here (files, rings): Deno's own eventfd, epoll and
 * socket counts move by themselves after its workers end (seen without odirect in the worker too).
 */
const OWN_KINDS = ['file', 'anon_inode:[io_uring]']
const own = (m: Record<string, number>): Record<string, number> => Object.fromEntries(OWN_KINDS.map((k) => [k, m[k] ?? 0]))

/**
 * The sweep's outcome is right. `ownOnly`: only odirect's kinds of descriptors are compared (Deno).
 * `openMayStay` (forms whose open can be in flight at the kill): a file the killed worker was
 * opening may stay open (the gap the Deno case below showed, fixed since by engine.rs Opening; in
 * Node it was seen once in 3 runs of this spec at once under load before, and in 2 of 7 runs of
 * this sweep alone: a close staged and never submitted when the worker died, which teardown now
 * closes, see the staged-close test below; 0 of 6 runs since, still allowed here until CI shows
 * more): every other kind must be back, and a
 * file left open must be one of the sweep's own.
 */
function killedWell(t: import('ava').ExecutionContext, r: WorkerKill, runs: number, dir: string, { ownOnly = false, openMayStay = false } = {}): void {
  t.log(`killed at steps ${JSON.stringify(r.killedAt)}; main ops ${r.mainOps}; temp files left by kills ${r.temps}`)
  if (r.extraFiles.length > 0) t.log(`files still open: ${r.extraFiles.join(', ')}`)
  t.deepEqual(r.errors, [])
  t.is(r.runs, runs)
  t.is(r.wrong, 0, "wrong bytes in the main thread's reads")
  t.true(r.mainOps > 0)
  const kinds = (m: Record<string, number>): Record<string, number> => {
    const o = ownOnly ? own(m) : { ...m }
    if (openMayStay) delete o.file
    return o
  }
  t.deepEqual(kinds(r.after), kinds(r.before), 'descriptors by kind back to their count before the sweep')
  if (openMayStay) t.deepEqual(r.extraFiles.filter((f) => !f.startsWith(`${dir}/`)), [], "files left open are the sweep's own")
}

for (const [rt, argv] of runtimes()) {
  if (rt === 'deno') {
    test(`deno: workers terminated at the Nth step of a web stream pipe and a windowed typed readMany: the main thread's I/O right, odirect's descriptors (files, rings) back (attacked: no fault)`, async (t) => {
      const dir = scratch()
      killedWell(t, await runChild<WorkerKill>('worker-kill.cjs', [dir, 'web,readMany'], { argv }), 12, dir, { ownOnly: true })
    })
    test(`deno: workers terminated while an open() is in flight leave no descriptor open (was: Deno never completes nor frees a terminated worker's async work, so the opened descriptor was neither adopted by the engine nor closed: most of the 6 stayed open for the life of the process; now compute records it in the engine's set of descriptors opened and not yet taken, which the engine's teardown closes: crates/napi/src/engine.rs Opening)`, async (t) => {
      const dir = scratch()
      killedWell(t, await runChild<WorkerKill>('worker-kill.cjs', [dir, 'opens'], { argv }), 6, dir, { ownOnly: true })
    })
    continue
  }
  test(`${rt}: workers terminated at the Nth step of a web stream pipe and a windowed typed readMany: the main thread's I/O right, every descriptor back by kind (attacked: no fault)`, async (t) => {
    const dir = scratch()
    killedWell(t, await runChild<WorkerKill>('worker-kill.cjs', [dir, 'web,readMany'], { argv }), 12, dir)
  })
  test(`${rt}: workers terminated at the Nth step of readFile, writeFile({ atomic }), copyFile and open/close loops: the main thread's I/O and every form after the kills right, each destination absent or whole, rings, eventfds and pipes back (attacked: no fault; a file being opened at the kill may stay open, see the Deno case)`, async (t) => {
    const dir = scratch()
    killedWell(t, await runChild<WorkerKill>('worker-kill.cjs', [dir, 'readFile,atomic,copyFile,opens'], { argv }), 24, dir, { openMayStay: true })
  })
}

test("node: a worker terminated between fh.close() and the flush that submits it (its JavaScript busy) leaves no descriptor open, on io_uring and the thread pool (was: teardown dropped the staged close, and the descriptor, out of the engine's table since the close was staged, stayed open for the life of the process: the Node case of the sweep's files left open)", async (t) => {
  const dir = scratch()
  const index = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'index.js')
  for (const backend of ['io_uring', 'threadpool'] as const) {
    const file = path.join(dir, `staged-close-${backend}`)
    fs.writeFileSync(file, Buffer.alloc(4096))
    // close() stages its close one microtask later and schedules the flush after that: the
    // microtask queued here runs between the two, and never ends.
    const w = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads')
      const od = require(workerData.index)
      od.open(workerData.file, 'r', { backend: workerData.backend }).then((fh) => {
        fh.close()
        queueMicrotask(() => { parentPort.postMessage('spinning'); for (;;) {} })
      })`,
      { eval: true, workerData: { index, file, backend } },
    )
    await once(w, 'message')
    t.true(holds(file), `${backend}: the close is staged, not run, when the worker is terminated`)
    await w.terminate()
    t.true(await openedNoMore(file), `${backend}: the file is closed by the worker's teardown`)
  }
})

// ---------------------------------------------------------------------------------------
// 5. Two workers' temp files of one destination

interface TempNames {
  concurrent: { a: string; b: string; whole: boolean | 'absent' }
  leftover: { b: string; whole: boolean | 'absent' }
  temps: string[]
}

for (const [rt, argv] of runtimes()) {
  test(`${rt}: writeFile({ atomic }) of one destination from two workers at once both succeed, the destination whole; a temp file a terminated worker left does not fail the next worker's atomic write (was: temp names NAME.odirect-tmp-PID-N counted N per thread from 1, so two workers' first temp files are one name: EEXIST for the second, whose cleanup unlinks the first one's temp file, which then fails ENOENT at its rename; src/fileops.ts tmpName, src/files.ts)`, async (t) => {
    const r = await runChild<TempNames>('temp-names.cjs', [scratch()], { argv })
    t.is(r.concurrent.b, 'done', 'the second worker')
    t.is(r.concurrent.a, 'done', 'the first worker')
    t.true(r.concurrent.whole === true, "the destination is the first worker's data, whole")
    t.is(r.leftover.b, 'done', "the worker after a terminated one's temp file")
    t.true(r.leftover.whole === true)
  })
}
