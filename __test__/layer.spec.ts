// The layer above the engine (issue 15): copyFile / cp / writeFile never replace a device or FIFO,
// pseudo-files and FIFOs are read to their end, every helper honours its signal at any moment,
// the caller's own errors come back unchanged, handles and streams behave as Node's, and the CLI
// speaks a user's words. Real files, a real character device node (mknod c 1 3: /dev/null's
// numbers, made in a scratch directory so a bug can never replace the real /dev/null), real FIFOs.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'

import { createRequire } from 'node:module'

import test from 'ava'

import * as od from '../dist/index.js'
import { fullFs, isRoot, isSkip, loopDevice } from './helpers/fixtures.ts'

const MiB = 1024 * 1024
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js')

const dirs: string[] = []
test.after.always(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
})
function scratch(): string {
  const d = fs.mkdtempSync('/var/tmp/odirect-layer-')
  dirs.push(d)
  return d
}
const temps = (dir: string): string[] => fs.readdirSync(dir).filter((n) => n.includes('.odirect-tmp-'))

/** A character device node with /dev/null's numbers (1, 3), in `dir`. */
function charDevice(dir: string): string {
  const p = path.join(dir, 'null-device')
  execFileSync('mknod', [p, 'c', '1', '3'])
  return p
}

/** A FIFO in `dir` and a reader (`cat`) that collects what arrives. */
function fifoWithReader(dir: string, name = 'fifo'): { fifo: string; received: Promise<Buffer> } {
  const fifo = path.join(dir, name)
  execFileSync('mkfifo', [fifo])
  const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] })
  const parts: Buffer[] = []
  reader.stdout.on('data', (d: Buffer) => parts.push(d))
  const received = once(reader, 'close').then(() => Buffer.concat(parts))
  return { fifo, received }
}

const rootSkip = isRoot() ? undefined : 'mknod needs root'
if (rootSkip) console.log(`skipping character device cases: ${rootSkip}`)

;(rootSkip ? test.skip : test)('copyFile and writeFile into a character device write into it; it stays a character device', async (t) => {
  const dir = scratch()
  const dev = charDevice(dir)
  const src = path.join(dir, 'src.bin')
  fs.writeFileSync(src, randomBytes(3 * MiB + 5))
  const r = await od.copyFile(src, dev, { direct: 'prefer' })
  t.is(r.bytes, 3 * MiB + 5)
  t.true(fs.statSync(dev).isCharacterDevice(), 'still a character device after copyFile')
  t.is(fs.statSync(dev).rdev, fs.statSync('/dev/null').rdev)
  await od.writeFile(dev, 'x'.repeat(10_000), { atomic: true })
  t.true(fs.statSync(dev).isCharacterDevice(), 'still a character device after an atomic writeFile')
  await od.writeFile(dev, Buffer.alloc(4096, 1))
  t.true(fs.statSync(dev).isCharacterDevice(), 'still a character device after writeFile')
  await pipeline(Readable.from(['any', ' length']), od.createWriteStream(dev))
  t.true(fs.statSync(dev).isCharacterDevice(), 'still a character device after a write stream')
  t.deepEqual(temps(dir), [])
  // The CLI, as GNU cp: exit 0, the device is still a device.
  const c = spawnSync(process.execPath, [CLI, 'cp', src, dev], { encoding: 'utf8' })
  t.is(c.status, 0, c.stderr)
  t.true(fs.statSync(dev).isCharacterDevice(), 'still a character device after odirect cp')
  t.deepEqual(fs.readdirSync(dir).sort(), ['null-device', 'src.bin'])
})

test('copyFile into a FIFO writes every byte to its reader; it stays a FIFO', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src.bin')
  const data = randomBytes(2 * MiB + 123)
  fs.writeFileSync(src, data)
  const { fifo, received } = fifoWithReader(dir)
  const r = await od.copyFile(src, fifo)
  t.is(r.bytes, data.length)
  t.true((await received).equals(data))
  t.true(fs.statSync(fifo).isFIFO())
  t.deepEqual(temps(dir), [])
  // A write stream into a FIFO: in sequence, every byte, still a FIFO.
  const second = fifoWithReader(dir, 'fifo2')
  const ws = od.createWriteStream(second.fifo)
  await pipeline(Readable.from([data.subarray(0, MiB), data.subarray(MiB)]), ws)
  t.is(ws.bytesWritten, data.length)
  t.true((await second.received).equals(data))
  t.true(fs.statSync(second.fifo).isFIFO())
  // verify cannot re-read a FIFO: refused up front, with a code, before anything is opened.
  await t.throwsAsync(od.copyFile(src, fifo, { verify: true }), { code: 'ERR_ODIRECT_UNSUPPORTED' })
})

test('a FIFO as source is read to its end: copyFile, readFile and odirect cp', async (t) => {
  const dir = scratch()
  const fifo = path.join(dir, 'in.fifo')
  execFileSync('mkfifo', [fifo])
  const data = randomBytes(300_000)
  const feed = (): Promise<unknown> => fs.promises.writeFile(fifo, data)
  const dst = path.join(dir, 'out.bin')
  const [r] = await Promise.all([od.copyFile(fifo, dst), feed()])
  t.is(r.bytes, data.length)
  t.true(fs.readFileSync(dst).equals(data))
  t.true(fs.statSync(fifo).isFIFO())
  const [back] = await Promise.all([od.readFile(fifo), feed()])
  t.true(back.equals(data))
  const collect = async (): Promise<Buffer> => {
    const rs = od.createReadStream(fifo)
    const parts: Buffer[] = []
    for await (const c of rs) parts.push(c as Buffer)
    t.is(rs.bytesRead, data.length)
    return Buffer.concat(parts)
  }
  const [streamed] = await Promise.all([collect(), feed()])
  t.true(streamed.equals(data), 'createReadStream reads a FIFO to its end')
  const [e] = (await once(od.createReadStream(fifo, { start: 5 }), 'error')) as [od.DirectIoError]
  t.is(e.code, 'ERR_ODIRECT_UNSUPPORTED', 'a FIFO has no positions: start is refused')
  t.deepEqual(temps(dir), [])
})

test('/proc files (st_size 0) are read to their end: copyFile, readFile, createReadStream, odirect cp', async (t) => {
  const dir = scratch()
  const want = '/proc/cpuinfo'
  t.is(fs.statSync(want).size, 0, 'the kernel reports size 0')
  const expected = fs.readFileSync(want)
  t.true(expected.length > 0)
  const dst = path.join(dir, 'cpuinfo')
  const r = await od.copyFile(want, dst, { direct: 'prefer' })
  t.is(r.bytes, expected.length)
  t.true(fs.readFileSync(dst).equals(expected))
  t.false(r.source.direct)
  t.notRegex(r.source.fallbackReason, /os error/, 'no Rust text in the reason')
  t.true((await od.readFile(want, { direct: 'prefer' })).equals(expected))
  const chunks: Buffer[] = []
  for await (const c of od.createReadStream(want, { direct: 'prefer' })) chunks.push(c as Buffer)
  t.true(Buffer.concat(chunks).equals(expected))
  const c = spawnSync(process.execPath, [CLI, 'cp', want, path.join(dir, 'cli')], { encoding: 'utf8' })
  t.is(c.status, 0, c.stderr)
  t.true(fs.readFileSync(path.join(dir, 'cli')).equals(expected))
  t.notRegex(c.stderr, /os error/)
  // sysfs: st_size says a page, the content is a few bytes.
  const sys = '/sys/devices/system/cpu/online'
  const sysData = fs.readFileSync(sys)
  t.true(fs.statSync(sys).size > sysData.length)
  const s = await od.copyFile(sys, path.join(dir, 'online'), { direct: 'prefer' })
  t.is(s.bytes, sysData.length)
  t.true(fs.readFileSync(path.join(dir, 'online')).equals(sysData))
})

test('writeFile honours its signal at any moment: AbortError, atomic destination untouched, no temp file', async (t) => {
  const dir = scratch()
  const dst = path.join(dir, 'dst.bin')
  for (const atomic of [true, false]) {
    fs.writeFileSync(dst, 'old contents')
    // Aborted before the call.
    await t.throwsAsync(od.writeFile(dst, Buffer.alloc(MiB), { atomic, signal: AbortSignal.abort() }), { name: 'AbortError', code: 'ABORT_ERR' })
    t.is(fs.readFileSync(dst, 'utf8'), 'old contents')
    // Aborted on the next tick, while 64 MiB are being written.
    const ac = new AbortController()
    const p = od.writeFile(dst, Buffer.alloc(64 * MiB, 7), { atomic, signal: ac.signal })
    process.nextTick(() => ac.abort())
    await t.throwsAsync(p, { name: 'AbortError' })
    if (atomic) t.is(fs.readFileSync(dst, 'utf8'), 'old contents', 'atomic: the destination is untouched')
    // Aborted by the data itself, between two chunks.
    const ac2 = new AbortController()
    const chunks = async function* (): AsyncGenerator<Buffer> {
      yield Buffer.alloc(MiB, 1)
      ac2.abort()
      yield Buffer.alloc(MiB, 2)
    }
    fs.writeFileSync(dst, 'old contents')
    await t.throwsAsync(od.writeFile(dst, chunks(), { atomic, signal: ac2.signal }), { name: 'AbortError' })
    if (atomic) t.is(fs.readFileSync(dst, 'utf8'), 'old contents')
    // Aborted while the data source waits forever.
    const ac3 = new AbortController()
    const stuck = async function* (): AsyncGenerator<Buffer> {
      yield Buffer.alloc(4096, 3)
      queueMicrotask(() => ac3.abort())
      await new Promise(() => {})
    }
    fs.writeFileSync(dst, 'old contents')
    await t.throwsAsync(od.writeFile(dst, stuck(), { atomic, signal: ac3.signal }), { name: 'AbortError' })
    if (atomic) t.is(fs.readFileSync(dst, 'utf8'), 'old contents')
    t.deepEqual(temps(dir), [], `no temp file left (atomic: ${atomic})`)
  }
  // copyFile aborted from its own progress callback: the destination is untouched.
  const src = path.join(dir, 'src.bin')
  fs.writeFileSync(src, randomBytes(8 * MiB))
  fs.writeFileSync(dst, 'old')
  const ac4 = new AbortController()
  await t.throwsAsync(od.copyFile(src, dst, { chunkSize: MiB, signal: ac4.signal, onProgress: () => ac4.abort() }), { name: 'AbortError' })
  t.is(fs.readFileSync(dst, 'utf8'), 'old')
  t.deepEqual(temps(dir), [])
})

test("the caller's own errors come back as the same object: iterables, onProgress, option getters; no temp file left", async (t) => {
  const dir = scratch()
  const dst = path.join(dir, 'dst.bin')
  fs.writeFileSync(dst, 'old')
  const boom = new Error('from the caller')
  const failing = async function* (): AsyncGenerator<Buffer> {
    yield Buffer.alloc(MiB, 1)
    throw boom
  }
  t.is(await t.throwsAsync(od.writeFile(dst, failing(), { atomic: true })), boom)
  t.is(fs.readFileSync(dst, 'utf8'), 'old')
  const syncFailing = {
    *[Symbol.iterator](): Generator<string> {
      yield 'a'
      throw boom
    },
  }
  t.is(await t.throwsAsync(od.writeFile(dst, syncFailing)), boom)
  fs.writeFileSync(dst, 'old')
  const src = path.join(dir, 'src.bin')
  fs.writeFileSync(src, randomBytes(4 * MiB))
  let unhandled: unknown
  const onUnhandled = (e: unknown): void => {
    unhandled = e
  }
  process.on('unhandledRejection', onUnhandled)
  try {
    t.is(await t.throwsAsync(od.copyFile(src, dst, { chunkSize: MiB, onProgress: () => { throw boom } })), boom)
    await new Promise((r) => setImmediate(r))
  } finally {
    process.off('unhandledRejection', onUnhandled)
  }
  t.is(unhandled, undefined, 'no unhandled rejection')
  t.is(fs.readFileSync(dst, 'utf8'), 'old')
  const getter = { get encoding(): string { throw boom } }
  t.is(await t.throwsAsync(od.readFile(src, getter as never)), boom)
  t.is(await t.throwsAsync(od.copyFile(src, dst, { get verify(): boolean { throw boom } })), boom)
  t.deepEqual(temps(dir), [])
})

test("writeFile(fh) writes at the handle's position and readFile(fh) reads from it, as fs; fh.writeFile / fh.readFile", async (t) => {
  const dir = scratch()
  const f = path.join(dir, 'pos.txt')
  for (const direct of ['off', 'require'] as const) {
    const fh = await od.open(f, 'w+', { direct })
    try {
      if (direct === 'off') {
        await fh.write('hello ')
        await od.writeFile(fh, 'world')
        t.is(fs.readFileSync(f, 'utf8'), 'hello world')
        t.is(fh.position, 11)
        await fh.writeFile('!')
        t.is(fs.readFileSync(f, 'utf8'), 'hello world!')
        fh._seek(6)
        t.is(await od.readFile(fh, 'utf8'), 'world!')
        t.is(fh.position, 12)
        t.is(await fh.readFile('utf8'), '', 'at the end: nothing left, as fs')
      } else {
        // Aligned: a block, then the whole-file write after it.
        const block = fh.alloc(fh.alignment.offset).fill(0x61)
        await fh.write(block)
        await od.writeFile(fh, 'tail')
        const back = fs.readFileSync(f)
        t.is(back.length, fh.alignment.offset + 4)
        t.is(back.subarray(fh.alignment.offset).toString(), 'tail')
        fh._seek(fh.alignment.offset)
        t.is(await fh.readFile('utf8'), 'tail')
      }
    } finally {
      await fh.close()
    }
  }
})

test("constants carries fs's constants and FALLOC_FL_*: COPYFILE_EXCL refuses to overwrite", async (t) => {
  for (const k of ['COPYFILE_EXCL', 'COPYFILE_FICLONE', 'COPYFILE_FICLONE_FORCE', 'O_RDONLY', 'O_WRONLY', 'O_RDWR', 'O_CREAT', 'O_EXCL', 'O_TRUNC', 'O_APPEND', 'O_SYNC', 'O_DSYNC', 'O_DIRECT', 'S_IFMT', 'F_OK', 'R_OK'] as const) {
    t.is(od.constants[k], fs.constants[k], k)
  }
  t.is(od.constants.FALLOC_FL_PUNCH_HOLE, 2)
  const dir = scratch()
  const a = path.join(dir, 'a')
  const b = path.join(dir, 'b')
  fs.writeFileSync(a, 'new')
  fs.writeFileSync(b, 'keep')
  await t.throwsAsync(od.copyFile(a, b, od.constants.COPYFILE_EXCL), { code: 'EEXIST' })
  t.is(fs.readFileSync(b, 'utf8'), 'keep')
})

test("numeric fs.constants flags open or create without truncating; O_APPEND is refused with a hint", async (t) => {
  const dir = scratch()
  const f = path.join(dir, 'n.bin')
  const { O_RDWR, O_CREAT, O_APPEND, O_WRONLY } = od.constants
  const fh = await od.open(f, O_RDWR | O_CREAT, 0o600)
  t.true(fh.readable && fh.writable)
  const b = fh.alloc(4096).fill(5)
  await fh.write(b, 0, 4096, 0)
  await fh.close()
  t.is(fs.statSync(f).mode & 0o777, 0o600 & ~process.umask())
  const again = await od.open(f, O_RDWR | O_CREAT)
  t.is((await again.stat()).size, 4096, 'not truncated')
  await again.close()
  const e = await t.throwsAsync(od.open(f, O_WRONLY | O_APPEND), { code: 'ERR_ODIRECT_FLAGS' })
  t.regex(e!.message, /O_APPEND/)
  t.not(e!.hint, '')
  const e2 = await t.throwsAsync(od.open(f, 'a+' as never), { code: 'ERR_ODIRECT_FLAGS' })
  t.not(e2!.hint, '', 'ERR_ODIRECT_FLAGS always has a hint')
  t.is(fs.statSync(f).size, 4096)
})

test("ENOENT hints fit: a missing directory is named; a missing file read is not told to 'open with w'", async (t) => {
  const dir = scratch()
  const e = await t.throwsAsync(od.writeFile(path.join(dir, 'no', 'such', 'f'), 'x'), { code: 'ENOENT' })
  t.regex(e!.hint, /directory .*no\/such does not exist/)
  const e2 = await t.throwsAsync(od.readFile(path.join(dir, 'missing')), { code: 'ENOENT' })
  t.notRegex(e2!.hint, /open with 'w'/)
  const rs = od.createReadStream(path.join(dir, 'missing'))
  const [e3] = (await once(rs, 'error')) as [od.DirectIoError]
  t.is(e3.code, 'ENOENT')
  t.notRegex(e3.hint, /open with 'w'/)
})

test("FileHandle is an EventEmitter: 'close' once closed", async (t) => {
  const dir = scratch()
  const fh = await od.open(path.join(dir, 'e'), 'w')
  let closed = 0
  fh.on('close', () => closed++)
  t.is(typeof fh.once, 'function')
  await fh.close()
  await fh.close()
  t.is(closed, 1)
})

test("streams as fs's: 'open' with the fd, 'ready', fd, pending, close(cb), an encoding string as options, unknown options ignored", async (t) => {
  const dir = scratch()
  const f = path.join(dir, 's.txt')
  fs.writeFileSync(f, 'hello stream')
  const rs = od.createReadStream(f, 'utf8')
  t.true(rs.pending)
  t.is(rs.fd, null)
  const [fd] = (await once(rs, 'open')) as [number]
  t.is(typeof fd, 'number')
  t.is(rs.fd, fd)
  t.false(rs.pending)
  let text = ''
  for await (const c of rs) text += c as string
  t.is(text, 'hello stream')
  const rs2 = od.createReadStream(f, { bufferSize: 64, flush: true } as never)
  await once(rs2, 'ready')
  await new Promise<void>((resolve, reject) => rs2.close((e) => (e ? reject(e) : resolve())))
  t.true(rs2.destroyed)
  const out = path.join(dir, 'o.txt')
  const ws = od.createWriteStream(out, 'latin1')
  await once(ws, 'open')
  ws.write('ümlaut')
  await new Promise<void>((resolve, reject) => ws.close((e) => (e ? reject(e) : resolve())))
  t.is(fs.readFileSync(out, 'latin1'), 'ümlaut')
})

test('a handle closed under a read stream ends it without an uncaught error; under a write stream with data left: an error event', async (t) => {
  const dir = scratch()
  const f = path.join(dir, 'h.bin')
  fs.writeFileSync(f, randomBytes(8 * MiB))
  let uncaught: unknown
  const onUncaught = (e: unknown): void => {
    uncaught = e
  }
  process.on('uncaughtException', onUncaught)
  try {
    // Closed before the stream opened it.
    const h1 = await od.open(f, 'r')
    const s1 = od.createReadStream(null, { fd: h1 })
    let data1 = 0
    s1.on('data', () => data1++)
    const closed1 = once(s1, 'close')
    await h1.close()
    await closed1
    t.is(data1, 0)
    // Closed from the first chunk on.
    const h2 = await od.open(f, 'r')
    const s2 = h2.createReadStream({ highWaterMark: 64 * 1024 })
    s2.once('data', () => void h2.close())
    s2.resume()
    await once(s2, 'close')
    // A write stream whose handle is closed while it still has data: an 'error' event.
    const h3 = await od.open(path.join(dir, 'w.bin'), 'w')
    const s3 = h3.createWriteStream()
    s3.write(Buffer.alloc(MiB))
    const errored = once(s3, 'error')
    void h3.close()
    const [e] = (await errored) as [od.DirectIoError]
    t.is(e.code, 'ERR_ODIRECT_CLOSED')
    await new Promise((r) => setImmediate(r))
  } finally {
    process.off('uncaughtException', onUncaught)
  }
  t.is(uncaught, undefined)
})

test('odirect cp: --no-clobber leaves DST, --json reports failures as JSON, messages without Rust text', (t) => {
  const dir = scratch()
  const src = path.join(dir, 'src')
  const dst = path.join(dir, 'dst')
  fs.writeFileSync(src, 'new')
  fs.writeFileSync(dst, 'old')
  const n = spawnSync(process.execPath, [CLI, 'cp', '--no-clobber', src, dst], { encoding: 'utf8' })
  t.is(n.status, 0, n.stderr)
  t.regex(n.stderr, /not overwriting/)
  t.is(fs.readFileSync(dst, 'utf8'), 'old')
  const n2 = spawnSync(process.execPath, [CLI, 'cp', '-n', src, path.join(dir, 'fresh')], { encoding: 'utf8' })
  t.is(n2.status, 0, n2.stderr)
  t.is(fs.readFileSync(path.join(dir, 'fresh'), 'utf8'), 'new')
  const j = spawnSync(process.execPath, [CLI, 'cp', '--json', path.join(dir, 'missing'), dst], { encoding: 'utf8' })
  t.is(j.status, 1)
  const out = JSON.parse(j.stdout) as { error: { code: string; message: string; path: string } }
  t.is(out.error.code, 'ENOENT')
  t.is(out.error.path, path.join(dir, 'missing'))
  const j2 = spawnSync(process.execPath, [CLI, 'cp', '--json', src, path.join(dir, 'no', 'dir', 'x')], { encoding: 'utf8' })
  t.is(j2.status, 1)
  t.regex((JSON.parse(j2.stdout) as { error: { message: string } }).error.message, /does not exist/)
  for (const r of [n, n2, j, j2]) t.notRegex(r.stderr + r.stdout, /os error \d+/)
  t.deepEqual(temps(dir), [])
})

const loop = rootSkip ? { skip: rootSkip } : loopDevice(4096, 8)
if (isSkip(loop)) console.log(`skipping the block device case: ${loop.skip}`)
test.after.always(() => {
  if (!isSkip(loop)) loop.cleanup()
})

;(isSkip(loop) ? test.skip : test)('a block device destination is written in place, even with atomic: it stays a block device', async (t) => {
  if (isSkip(loop)) return
  const dir = scratch()
  // A node of our own for the loop device: a bug could only replace this one.
  const st = fs.statSync(loop.device)
  const node = path.join(dir, 'blockdev')
  execFileSync('mknod', [node, 'b', String(Math.floor(st.rdev / 256)), String(st.rdev % 256)])
  t.true(fs.statSync(node).isBlockDevice())
  const data = randomBytes(3 * 4096 + 100)
  await od.writeFile(node, data, { atomic: true })
  t.true(fs.statSync(node).isBlockDevice(), 'still a block device after an atomic writeFile')
  const back = Buffer.alloc(data.length)
  const fd = fs.openSync(node, 'r')
  fs.readSync(fd, back, 0, back.length, 0)
  fs.closeSync(fd)
  t.true(back.equals(data))
  const src = path.join(dir, 'src.bin')
  fs.writeFileSync(src, randomBytes(MiB))
  await od.copyFile(src, node)
  t.true(fs.statSync(node).isBlockDevice(), 'still a block device after copyFile')
  t.deepEqual(temps(dir), [])
})

const full = rootSkip ? { skip: rootSkip } : fullFs(16)
if (isSkip(full)) console.log(`skipping the ENOSPC case: ${full.skip}`)
test.after.always(() => {
  if (!isSkip(full)) full.cleanup()
})

;(isSkip(full) ? test.skip : test)('writeFile failing with ENOSPC says how many bytes of the data were written before it', async (t) => {
  if (isSkip(full)) return
  const f = path.join(full.dir, 'big.bin')
  const data = randomBytes(64 * MiB)
  const e = await t.throwsAsync(od.writeFile(f, data), { code: 'ENOSPC' })
  const written = (e as od.DirectIoError).bytesWritten
  t.is(typeof written, 'number')
  t.true(written! > 0 && written! < data.length, `${written} bytes`)
  t.regex(e!.message, new RegExp(`${written} bytes of the data were written`))
  // What it counts is really there, in order from the start.
  const back = fs.readFileSync(f)
  t.true(back.length >= written!)
  t.true(back.subarray(0, written).equals(data.subarray(0, written)))
})

const denoBin = spawnSync(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'runtime-bin.cjs'), '--path', 'deno'], { encoding: 'utf8' })
const denoSkip = denoBin.status === 0 && denoBin.stdout.trim() !== '' ? undefined : `deno not found (${denoBin.stderr.trim() || 'npm install'})`
if (denoSkip) console.log(`skipping the Deno permission case: ${denoSkip}`)

;(denoSkip ? test.skip : test)("Deno's permission errors reach the caller as they are; temp files are renamed and removed natively, never stranded", (t) => {
  const dir = scratch()
  fs.writeFileSync(path.join(dir, 'dst'), 'old')
  fs.writeFileSync(path.join(dir, 'src'), 'source')
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'deno-perms.mjs')
  const run = (perms: string[]): Record<string, unknown> => {
    const r = spawnSync(denoBin.stdout.trim(), ['run', '--no-lock', ...perms, script, dir], { encoding: 'utf8', timeout: 60_000 })
    t.is(r.status, 0, r.stderr)
    return JSON.parse(r.stdout.trim().split('\n').pop() as string) as Record<string, unknown>
  }
  const base = ['--allow-ffi', '--allow-env', '--allow-sys']
  // No write permission: the temp file is made, renamed and removed by the native side, as one path.
  const noWrite = run([...base, '--allow-read'])
  t.deepEqual(noWrite, { writeFile: 'ok', copyFile: 'ok' })
  t.is(fs.readFileSync(path.join(dir, 'dst'), 'utf8'), 'new contents')
  t.deepEqual(temps(dir), [])
  // Reading the destination denied: Deno's own error, unchanged (not renamed into an odirect code).
  fs.writeFileSync(path.join(dir, 'dst'), 'old')
  const denied = run([...base, '--allow-read', `--deny-read=${path.join(dir, 'dst')},${path.join(dir, 'copy')}`]) as Record<string, { name: string; odirect: boolean; code?: string }>
  for (const k of ['writeFile', 'copyFile']) {
    t.is(denied[k].name, 'NotCapable', JSON.stringify(denied[k]))
    t.false(denied[k].odirect)
    t.not(denied[k].code, 'ERR_INVALID_ARG_VALUE')
  }
  t.is(fs.readFileSync(path.join(dir, 'dst'), 'utf8'), 'old')
  t.deepEqual(temps(dir), [])
})

test("odirect bench and probe speak a user's words: no issue numbers, goals 'reached' or not; probe --json reports a failure as JSON", (t) => {
  const help = spawnSync(process.execPath, [CLI, 'bench', '--help'], { encoding: 'utf8' })
  t.is(help.status, 0)
  t.notRegex(help.stdout, /issue \d+/)
  const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
  const report = createRequire(import.meta.url)(path.join(root, 'dist', 'bench', 'report.js')) as typeof import('../bench/report')
  const lines = report.targetLines([
    { name: 'random read, QD 1: odirect per op p50 latency vs fio io_uring\'s', goal: '≤ 1.20×', figure: '1.500× (30 µs vs 20 µs)', met: false },
    { name: 'x', goal: '≥ 0.50×', figure: '0.900×', met: true },
    { name: 'y', goal: '≥ 0.50×', figure: 'not measured (workload or engine not selected)' },
  ])
  t.deepEqual(lines.map((l) => l.split(': ').pop()), ['not reached on this run', 'reached', 'not measured'])
  for (const l of lines) t.notRegex(l, /issue|\*\*/)
  const p = spawnSync(process.execPath, [CLI, 'probe', '', '--json'], { encoding: 'utf8' })
  t.is(p.status, 1)
  t.is((JSON.parse(p.stdout) as { error: { code: string } }).error.code, 'ERR_INVALID_ARG_VALUE')
})
