// Adversary pass of the sixteenth session, as a new user and an attacker would meet odirect
// (earlier passes: data changing under reads, full disks, RLIMIT_FSIZE, worker deaths, EMFILE,
// CLOEXEC, signal storms, memory cgroups, positions past 4 GiB):
// 1. an AbortSignal aborted at every await point of readFile, writeFile, copyFile and the streams
//    (each native call, node:fs call and FileHandle method counted, aborted as it starts or as it
//    settles), on io_uring, aio and the thread pool, in Node, Bun and Deno: ABORT_ERR or the whole
//    data, no temp file, no descriptor left, the old destination whole. Found: copyFile aborted while its temp file's open was in flight left the temp file
//    (the open created it after the cleanup removed the name; seen on tmpfs under load), fixed in
//    src/files.ts (openRaced / copyBlocks wait for that open before removing the temp file);
// 2. pseudo-files as a user meets them: sysfs files (fstat says 4096 bytes, a few are there) and
//    procfs files (size 0) with direct 'prefer' / 'off', by readFile, copyFile and the streams
//    (README: "files whose size says 0 (/proc) or that are shorter than it (sysfs) are read to
//    their end by readFile, copyFile and the streams"). Found: both read streams fail EIO on a
//    sysfs file ("read returned no data at position 4, before the end of file (4096 bytes)"):
//    src/streams/core.ts BlockReader.pull took a 0-byte read before fstat's size for EIO; now the end;
// 3. a FileHandle's position inside a block, as fs/promises' users leave it: `fh.writeFile(a)` then
//    `fh.writeFile(b)`, or `fh.readFile()` then `fh.writeFile(b)`, compared with node:fs/promises
//    byte for byte, in Node, Bun and Deno. Found: the second writeFile failed ERR_ODIRECT_ALIGNMENT
//    ("start 5 is not a multiple of 512") wherever the first left the position inside a block; now
//    written from that block's start with its bytes before the position read back (src/files.ts).
//    Found: fh.createWriteStream() (and createWriteStream(p, { fd: fh })) without `start` writes at
//    0, not at the handle's position as fs does: a header written with fh.writeFile/fh.write is
//    overwritten; now from the handle's position, which advances to the stream's end
//    (src/streams/core.ts WriteConfig.fromPosition; a position inside a block: ERR_ODIRECT_ALIGNMENT);
// 4. readFile with a write-only flag ('w', 'wx', O_WRONLY | O_TRUNC): found: the file was opened
//    (truncated to 0 bytes) before ERR_ODIRECT_FLAGS said it cannot be read (node:fs truncates too,
//    then EBADF); now refused before the open, the file untouched (src/files.ts), as the read
//    streams already did;
// 5. hostile numbers (NaN, -0, 2^53, 2^64n, 4096.5, '4096', toPrimitive...) as every position,
//    length and size option: a DirectIoError each, misuse refused before any native I/O call, and
//    the same outcome, case by case, in Node, Bun and Deno (attacked: no fault);
// Every check waits on an event (a promise, a child's exit); nothing is timed.
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import * as od from '../dist/index.js'
import { childRunner } from './helpers/child-result.ts'
import { runtimes } from './helpers/runtimes.ts'
import { scratchDirs } from './helpers/scratch.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const kids = path.join(here, 'adversary-s16')
const scratch = scratchDirs('s16')

const runChild = childRunner(kids)

// ---------------------------------------------------------------------------------------
// 1. Abort at every await point

interface Sweep {
  runs: number
  points: Record<string, number>
  bad: string[]
}

/** Node for the sweeps: see the note above the sweep tests (nodejs/node#54918). */
const NODE_CHILD = [process.execPath, '--no-concurrent-recompilation']

const WHOLE_FILE = 'writeFile atomic,writeFile atomic iterable,writeFile,writeFile handle mid-block,copyFile,copyFile verify,copyFile sparse,copyFile exclusive,readFile'
const STREAMS = 'read stream,write stream,web read stream'

/** Every form was swept past its last point (each makes more than a handful of calls). */
function sweptAll(t: import('ava').ExecutionContext, r: Sweep, forms: string): void {
  t.deepEqual(r.bad, [])
  for (const form of forms.split(',')) for (const m of ['before', 'after']) t.true((r.points[`${form} ${m}`] ?? 0) >= 8, `${form} ${m}: ${r.points[`${form} ${m}`]}`)
}

for (const [where, root, backend] of [
  ['disk', '/var/tmp', 'io_uring'],
  ['tmpfs', '/dev/shm', 'io_uring'],
  ['disk', '/var/tmp', 'aio'],
  ['disk', '/var/tmp', 'threadpool'],
] as const) {
  // The sweep lets the event loop run dry (its held temp open is released on 'beforeExit'), and
  // Node 20's NodePlatform::DrainTasks there can deadlock with a concurrent Turbofan job waiting
  // for a main-thread GC (nodejs/node#54918; gdb: main thread in DrainTasks, a compile job in
  // CollectionBarrier::AwaitCollectionBackground; 2 of 4 threadpool runs hung): no concurrent
  // recompilation in Node's children.
  test(`[${backend}] abort at every await point of readFile / writeFile / copyFile on ${where}, the temp file's open held until the caller removes its name (was: copyFile left the temp file when the abort came during that open): ABORT_ERR or the whole data, no temp file, no descriptor, the old destination whole`, async (t) => {
    sweptAll(t, await runChild<Sweep>('abort-sweep.cjs', [scratch(root), WHOLE_FILE, '--slow-temp-open'], { env: { ...process.env, ODIRECT_BACKEND: backend }, argv: NODE_CHILD }), WHOLE_FILE)
  })
  test(`[${backend}] abort at every await point of a read stream, a write stream (pipeline) and a web read stream on ${where}: ABORT_ERR or the whole data, no descriptor left (attacked: no fault)`, async (t) => {
    sweptAll(t, await runChild<Sweep>('abort-sweep.cjs', [scratch(root), STREAMS], { env: { ...process.env, ODIRECT_BACKEND: backend }, argv: NODE_CHILD }), STREAMS)
  })
}

for (const [rt, argv] of runtimes().filter(([name]) => name !== 'node')) {
  test(`${rt}: abort at every await point of readFile / writeFile / copyFile / the streams on tmpfs, the temp file's open held as above: ABORT_ERR or the whole data, no temp file, no descriptor, the old destination whole`, async (t) => {
    sweptAll(t, await runChild<Sweep>('abort-sweep.cjs', [scratch('/dev/shm'), `${WHOLE_FILE},${STREAMS}`, '--slow-temp-open'], { argv }), `${WHOLE_FILE},${STREAMS}`)
  })
}

// ---------------------------------------------------------------------------------------
// 2. Pseudo-files: sysfs (its size says 4096, fewer bytes are there) and procfs (size 0)

/** A sysfs file whose fstat size (4096) is larger than what it holds, present on every Linux. */
const SYSFS_FILE = '/sys/class/mem/null/dev'
const PROCFS_FILE = '/proc/self/environ'

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of stream) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

/** `fh.readableWebStream()` of the file read to its end, the handle closed. */
async function webRead(file: string, direct: 'prefer' | 'off'): Promise<Buffer> {
  const fh = await od.open(file, 'r', { direct })
  try {
    return await collect(fh.readableWebStream() as unknown as AsyncIterable<Uint8Array>)
  } finally {
    await fh.close()
  }
}

test('a sysfs file (fstat: 4096 bytes) and a procfs file (size 0) with direct prefer / off: readFile and copyFile give what node:fs reads; /proc by both read streams too; the default direct require is EINVAL typed (attacked: no fault)', async (t) => {
  t.is(fs.statSync(SYSFS_FILE).size, 4096, 'the sysfs file says 4096 bytes')
  const sys = fs.readFileSync(SYSFS_FILE)
  t.true(sys.length > 0 && sys.length < 4096)
  const dir = scratch()
  for (const direct of ['prefer', 'off'] as const) {
    t.deepEqual(await od.readFile(SYSFS_FILE, { direct }), sys, `readFile sysfs ${direct}`)
    const r = await od.copyFile(SYSFS_FILE, path.join(dir, `sys-${direct}`), { direct })
    t.is(r.bytes, sys.length)
    t.deepEqual(fs.readFileSync(path.join(dir, `sys-${direct}`)), sys, `copyFile sysfs ${direct}`)
    // /proc/self/environ is this process's start-up environment: the same text from every reader (mountinfo was not: other tests mount and unmount meanwhile).
    const proc = fs.readFileSync(PROCFS_FILE)
    t.deepEqual(await od.readFile(PROCFS_FILE, { direct }), proc, `readFile procfs ${direct}`)
    await od.copyFile(PROCFS_FILE, path.join(dir, `proc-${direct}`), { direct })
    t.deepEqual(fs.readFileSync(path.join(dir, `proc-${direct}`)), proc, `copyFile procfs ${direct}`)
    t.deepEqual(await collect(od.createReadStream(PROCFS_FILE, { direct })), proc, `createReadStream procfs ${direct}`)
    t.deepEqual(await webRead(PROCFS_FILE, direct), proc, `readableWebStream procfs ${direct}`)
  }
  for (const f of [SYSFS_FILE, PROCFS_FILE]) {
    const e = await t.throwsAsync(od.readFile(f), { instanceOf: od.DirectIoError })
    t.is(e?.code, 'EINVAL', f)
    t.regex(e?.message ?? '', /prefer/)
  }
})

// The stream's short-read rule took a read that returns 0 bytes before fstat's size for an
// error (EIO) instead of the end of the file, which readFully (src/blocks.ts, readFile and
// copyFile) and node:fs take it for (src/streams/core.ts BlockReader.pull, the "no progress" branch).
test('a sysfs file (fstat: 4096 bytes, a few there) by createReadStream and readableWebStream with direct prefer / off reads to its end as readFile and node:fs do (was: EIO "read returned no data at position N, before the end of file (4096 bytes)")', async (t) => {
  const sys = fs.readFileSync(SYSFS_FILE)
  for (const direct of ['prefer', 'off'] as const) {
    t.deepEqual(await collect(od.createReadStream(SYSFS_FILE, { direct })), sys, `createReadStream ${direct}`)
    t.deepEqual(await webRead(SYSFS_FILE, direct), sys, `readableWebStream ${direct}`)
  }
})

// ---------------------------------------------------------------------------------------
// 3. A FileHandle's position inside a block (fh.writeFile twice, readFile then writeFile)

interface HandleWrites {
  cases: number
  bad: string[]
  writeOnly: { code: string; message?: string; position?: number }
  writeOnlyFile: string
}

for (const [rt, argv] of runtimes()) {
  test(`${rt}: fh.writeFile(a) then fh.writeFile(b), after fh.readFile() or a read too, on 'r+' and 'w+' handles of files of 0-70000 bytes, give the file and the readFile results node:fs/promises gives (was: ERR_ODIRECT_ALIGNMENT "start 5 is not a multiple of 512" at the second writeFile); a write-only handle there is refused typed, the file as the first writeFile left it`, async (t) => {
    const r = await runChild<HandleWrites>('handle-writefile.cjs', [scratch()], { argv })
    t.is(r.cases, 168)
    t.deepEqual(r.bad, [])
    t.is(r.writeOnly.code, 'ERR_ODIRECT_ALIGNMENT')
    t.is(r.writeOnly.position, 5)
    t.regex(r.writeOnly.message ?? '', /write-only/)
    t.is(r.writeOnlyFile, 'hello')
  })
}

/** `w` ended with `data`, resolved at its 'close'. */
function endClosed(w: NodeJS.WritableStream & { on(e: string, f: (...a: unknown[]) => void): unknown }, data: string): Promise<void> {
  return new Promise((resolve, reject) => {
    w.on('error', reject)
    w.on('close', () => resolve())
    w.end(data)
  })
}

// node:fs's filehandle.createWriteStream() with no `start` writes from the handle's current
// position (fs.WriteStream with an fd and start undefined writes at position null); odirect's
// started at 0 and overwrote what the handle wrote before (src/streams/core.ts writeConfig). Now
// from the handle's position; one inside a block of a direct handle is ERR_ODIRECT_ALIGNMENT.
test('fh.createWriteStream() after fh.writeFile(4096 bytes) and createWriteStream(path, { fd: fh }) after fh.write(4096 bytes, null) write at the handle\'s position as node:fs does, nothing before it overwritten (was: they wrote at 0)', async (t) => {
  const dir = scratch()
  const head = 'h'.repeat(4096)
  for (const form of ['method', 'fd option'] as const) {
    const results: string[] = []
    for (const lib of ['fs', 'odirect'] as const) {
      const f = path.join(dir, `${form}-${lib}`)
      fs.writeFileSync(f, '')
      if (lib === 'fs') {
        const h = await fsp.open(f, 'r+')
        if (form === 'method') await h.writeFile(head)
        else await h.write(Buffer.from(head), 0, 4096, null)
        await endClosed(form === 'method' ? h.createWriteStream() : fs.createWriteStream(f, { fd: h }), ' world')
      } else {
        const h = await od.open(f, 'r+')
        if (form === 'method') await h.writeFile(head)
        else await h.write(h.alloc(4096).fill('h'), 0, 4096, null)
        await endClosed(form === 'method' ? h.createWriteStream() : od.createWriteStream(f, { fd: h }), ' world')
      }
      results.push(fs.readFileSync(f, 'latin1'))
    }
    // Compared by shape (a diff of 4 KiB of 'h' says nothing): the length, the head kept, the tail.
    const shape = (r: string): { length: number; headKept: boolean; tail: string } => ({ length: r.length, headKept: r.startsWith(head), tail: r.slice(4096) })
    t.deepEqual(shape(results[0]), { length: 4102, headKept: true, tail: ' world' }, `${form}: node:fs`)
    t.deepEqual(shape(results[1]), shape(results[0]), `${form}: odirect as node:fs`)
  }
})

test('a write stream over a FileHandle without start advances the handle to its end (fh.write(null) after it appends, as node:fs); a direct handle whose position is inside a block is ERR_ODIRECT_ALIGNMENT naming the position, nothing written', async (t) => {
  const dir = scratch()
  const f = path.join(dir, 'advance')
  fs.writeFileSync(f, '')
  const h = await od.open(f, 'r+')
  try {
    await h.write(h.alloc(4096).fill('a'), 0, 4096, null)
    await endClosed(h.createWriteStream({ autoClose: false }), 'b'.repeat(8192))
    t.is(h.position, 4096 + 8192)
    await h.write(h.alloc(4096).fill('c'), 0, 4096, null)
    t.is(fs.readFileSync(f, 'latin1'), 'a'.repeat(4096) + 'b'.repeat(8192) + 'c'.repeat(4096))
  } finally {
    await h.close()
  }
  const g = path.join(dir, 'inside')
  fs.writeFileSync(g, 'x'.repeat(4096))
  const h2 = await od.open(g, 'r+')
  try {
    t.true(h2.direct)
    await h2.readFile()
    await h2.writeFile('12345')
    const at = h2.position
    t.is(at % h2.alignment.offset, 5)
    const e = await new Promise<unknown>((resolve) => {
      const w = h2.createWriteStream({ autoClose: false })
      w.on('error', resolve)
      w.on('close', () => resolve(undefined))
      w.end('more')
    })
    t.true(e instanceof od.DirectIoError)
    t.is((e as od.DirectIoError).code, 'ERR_ODIRECT_ALIGNMENT')
    t.is((e as od.DirectIoError).position, at)
    t.regex((e as Error).message, /handle's position/)
    t.is(h2.position, at)
    t.is(fs.readFileSync(g, 'latin1'), 'x'.repeat(4096) + '12345')
  } finally {
    await h2.close()
  }
})

// ---------------------------------------------------------------------------------------
// 4. readFile with a write-only flag

test('readFile(path, { flag }) with a write-only flag (\'w\', \'wx\', O_WRONLY | O_TRUNC, O_WRONLY) is ERR_ODIRECT_FLAGS before the open, the file untouched (was: truncated to 0 bytes, then ERR_ODIRECT_FLAGS); \'w+\' reads the truncated file as node:fs does', async (t) => {
  const dir = scratch()
  const f = path.join(dir, 'f')
  for (const flag of ['w', 'wx', fs.constants.O_WRONLY | fs.constants.O_TRUNC, fs.constants.O_WRONLY] as const) {
    fs.writeFileSync(f, 'content')
    const e = await t.throwsAsync(od.readFile(f, { flag } as never), { instanceOf: od.DirectIoError })
    t.is(e?.code, 'ERR_ODIRECT_FLAGS', String(flag))
    t.is(fs.readFileSync(f, 'utf8'), 'content', `${String(flag)}: the file is untouched`)
  }
  fs.writeFileSync(f, 'content')
  t.is((await od.readFile(f, { flag: 'w+' })).length, (await fsp.readFile(f, { flag: 'w+' })).length)
  t.is(fs.readFileSync(f, 'utf8'), '')
})

// ---------------------------------------------------------------------------------------
// 5. Hostile numbers, the same in every runtime

interface Numbers {
  outcomes: Record<string, string>
  bad: string[]
}

test('hostile numbers as every position, length and size option (fh.read/write, readMany, both streams, copyFile, truncate, alloc): each a DirectIoError, a misuse refused before any native I/O call, and Bun and Deno give Node\'s outcome case by case (attacked: no fault)', async (t) => {
  const all = runtimes()
  const results = await Promise.all(all.map(([, argv]) => runChild<Numbers>('numbers.cjs', [scratch()], { argv })))
  const node = results[0] as Numbers
  t.is(Object.keys(node.outcomes).length, 351)
  for (const [i, [rt]] of all.entries()) {
    const r = results[i] as Numbers
    t.deepEqual(r.bad, [], rt)
    const differ = Object.keys(node.outcomes).filter((k) => r.outcomes[k] !== node.outcomes[k]).map((k) => `${k}: node ${node.outcomes[k]}, ${rt} ${r.outcomes[k]}`)
    t.deepEqual(differ, [], rt)
  }
  // Spot checks of what the outcomes say.
  t.is(node.outcomes['read position NaN'], 'ERR_OUT_OF_RANGE')
  t.is(node.outcomes['read position 2^64n'], 'ERR_OUT_OF_RANGE')
  t.is(node.outcomes['createReadStream highWaterMark 0'], 'ERR_OUT_OF_RANGE')
  t.is(node.outcomes['read position toPrimitiveThrows'], 'ERR_INVALID_ARG_TYPE')
})
