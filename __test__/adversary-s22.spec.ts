// Adversary pass of the twenty-second session: what a serious storage user would meet.
// Found:
// 1. open() chose its backend after the open: a backend refused then (an ODIRECT_BACKEND typo,
//    `backend: 'io_uring'` where a seccomp profile such as Docker's blocks io_uring) failed the
//    call ERR_ODIRECT_BACKEND with the file already emptied by 'w' / O_TRUNC, or created by
//    'wx' (a retry then failed EEXIST): open, writeFile, createWriteStream, writableWebStream.
//    The backend is settled before the open now (src/open.ts openImpl).
// 2. write(buf, { atomic: true }) on io_uring failed EINVAL from the second write of a reused
//    fh.alloc buffer on (the engine registers odirect memory itself at its second op, and
//    WRITE_FIXED's registered buffer is a bvec, which the kernel's RWF_ATOMIC refuses: it takes
//    only a single user buffer), and always from registerBuffers memory: a database writing its
//    pages untorn from one buffer got EINVAL. Untorn writes go as plain WRITE now
//    (crates/core/src/io/ring.rs sqe).
// 3. `odirect bench DIR` ended by Ctrl-C (SIGINT, SIGTERM, SIGHUP) during its stream workloads
//    left its scratch file in DIR (as large as the stream pass: 64 MiB short, 512 MiB --full),
//    and a copyFile row's temp file beside it: the signal's cleanup removes them now (bench/bench.ts).
// 4. Options an object inherits (`Object.create(defaults)`, a class's getters) were dropped by
//    readFile, writeFile, copyFile, open and both streams, which took options from the object's
//    own keys only, where node:fs reads them by property access: writeFile(p, d, { flag: 'wx' }
//    inherited) overwrote p where fs fails EEXIST, `flag: 'r+'` truncated it, copyFile's
//    `exclusive` overwrote dst, `atomic` wrote in place, and createWriteStream's inherited
//    `flags: 'r+'` and `start` truncated the file and wrote at 0 (src/args.ts readOptions).
// 5. `odirect cp SRC DEVICE` interrupted said "(partial copy removed)" and its usage "an
//    interrupted copy leaves DST untouched", where a device (or FIFO) DST is written in place and
//    keeps what was written before the signal: it says so now (cli/cp.ts).
// Attacked, no fault (probes, not kept as tests): zero-length calls of every form; valueOf /
// toPrimitive objects, strings, booleans, -0, -1n as positions, lengths and offsets; atomic writes
// of 4 KiB to 8 MiB (max_atomic_write=8m) from fh.alloc, plain and odd-offset memory (one
// submission each); lock() mutual exclusion over 4 handles and 2 workers with random aborts, and
// a worker terminated or exiting while it holds the lock; 20k concurrent reads and 4k writes per
// backend; readv/writev past IOV_MAX (typed refusal); copyFile of a 4096-sector loop device to a
// sparse file and back; 80 concurrent replaces of one destination (exclusive and not); same-file
// copies through a bind mount and /proc/self/root; symlink chains past 40 (ELOOP as fs); Buffer
// paths that are not UTF-8 (refused); writeFile with bad data or options (file untouched, as
// fs); a random model (writes, writev, writeMany, truncate, punch/zero/allocate, r+ streams,
// writeFile r+) against node:fs on ext4, XFS and tmpfs, each backend; odirect cp with
// directories, sockets, /proc and /sys sources, empty, trailing-slash and newline paths;
// registered buffers kept after unregister() or close() (never aliased by later allocations);
// RLIMIT_NPROC starving io-wq (ECANCELED, typed); RLIMIT_MEMLOCK 0 for a user (typed); btrfs (the
// random model, sparse copyFile, atomic writeFile, dsync writes from a reused buffer, typed
// readMany, each backend) and overlayfs (reads of a lower file, a write's copy-up, replaces).
import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import * as od from '../dist/index.js'
import { childRunner } from './helpers/child-result.ts'
import { isSkip, loopDevice, loopFs, type Requirement, seccompLauncher } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { scratchDirs } from './helpers/scratch.ts'

delete process.env.ODIRECT_BACKEND
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const CLI = path.join(here, '..', 'dist', 'cli.js')
const CHILDREN = path.join(here, 'adversary-s22')
const run = childRunner(CHILDREN)
// Probed before any test or hook is declared (ava starts once one is, and an await after it is too late).
const where = await od.probe('/var/tmp')
const scratch = scratchDirs('s22')
const BACKENDS = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => where.backends[b].available)
const XFS_REQS: Requirement[] = ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.xfs', 'fs:xfs']

// ---------------------------------------------------------------------------------------
// 1. A backend refused after the open

interface Refused {
  out: Array<{ call: string; code: string; size: number; same: boolean; names: string[] }>
}

function checkRefused(t: import('ava').ExecutionContext, r: Refused): void {
  t.is(r.out.length, 12)
  for (const o of r.out) {
    t.is(o.code, 'ERR_ODIRECT_BACKEND', `${o.call}: refused`)
    t.true(o.same, `${o.call}: the file was changed (now ${o.size} bytes, was 8192)`)
    t.deepEqual(o.names, [], `${o.call}: files left or made`)
  }
}

test('open(path, \'w\' | \'wx\' | O_TRUNC), writeFile, copyFile and both write streams with an ODIRECT_BACKEND that is no backend: ERR_ODIRECT_BACKEND with the file as it was, nothing created (was: emptied, or created, then refused)', async (t) => {
  const r = await run<Refused>('backend-refused.mjs', [DIST, scratch(), 'auto'], { env: { ...process.env, ODIRECT_BACKEND: 'iouring' } })
  checkRefused(t, r)
})

const launcher = seccompLauncher()
const seccompTest = isSkip(launcher) ? test.skip : test
seccompTest(`the same calls with { backend: 'io_uring' } where a seccomp filter refuses io_uring_setup (as Docker's default profile): ERR_ODIRECT_BACKEND with the file as it was, nothing created${isSkip(launcher) ? ` (skipped: ${launcher.skip})` : ''}`, async (t) => {
  const r = await run<Refused>('backend-refused.mjs', [DIST, scratch(), 'io_uring'], { argv: [launcher as string, '-u', process.execPath] })
  checkRefused(t, r)
})

// ---------------------------------------------------------------------------------------
// 2. Untorn writes from registered memory

for (const backend of BACKENDS) {
  fxTest(`write({ atomic: true }) on XFS (${backend}) from one fh.alloc buffer reused for 8 writes, from a buffer used by plain writes first, and from registerBuffers memory: every write lands whole (was on io_uring: EINVAL from the second use on, the engine's own registration making it WRITE_FIXED)`, XFS_REQS, async (t) => {
    const fx = must(loopFs(4096, 320, 'xfs'))
    t.teardown(() => fx.cleanup())
    const p = path.join(fx.dir, 'pages')
    const fh = await od.open(p, 'w+', { backend, direct: 'require' })
    t.teardown(() => fh.close())
    const a = fh.alignment
    if (a.atomicWriteMax === 0) return t.fail('statx reports no atomic writes on XFS here')
    const size = Math.min(16384, a.atomicWriteMax)
    const expect = Buffer.alloc(8 * size)
    // One page buffer, reused as a database reuses it.
    const page = fh.alloc(size)
    for (let i = 0; i < 8; i++) {
      page.fill(i + 1)
      const at = ((i * 5) % 8) * size
      t.is((await fh.write(page, { position: at, atomic: true })).bytesWritten, size, `write ${i}`)
      page.copy(expect, at)
    }
    // A buffer the engine registered through plain writes first.
    const plain = fh.alloc(size)
    for (let i = 0; i < 3; i++) await fh.write(plain.fill(0x20 + i), { position: 0 })
    t.is((await fh.write(plain.fill(0x30), { position: 0, atomic: true, dsync: true })).bytesWritten, size)
    plain.copy(expect, 0)
    // Registered memory (READ_FIXED / WRITE_FIXED on io_uring, mlock elsewhere).
    const reg = fh.registerBuffers(1, a.atomicWriteMax)
    t.teardown(() => reg.unregister())
    const big = reg.buffers[0].subarray(0, a.atomicWriteMax).fill(0x41)
    t.is((await fh.write(big, { position: 0, atomic: true })).bytesWritten, a.atomicWriteMax)
    const back = fh.alloc(8 * size)
    t.is((await fh.read(back, { position: 0 })).bytesRead, 8 * size)
    if (a.atomicWriteMax >= 8 * size) t.true(back.equals(big.subarray(0, 8 * size)))
    else {
      big.copy(expect, 0)
      t.true(back.equals(expect))
    }
    // The same from the page buffer through its reused path once more, after the registration.
    t.is((await fh.write(page.fill(0x55), { position: size, atomic: true })).bytesWritten, size)
    t.is((await fh.read(back.subarray(0, 2 * size), { position: 0 })).bytesRead, 2 * size)
    t.true(back.subarray(size, 2 * size).equals(page))
  })
}

// ---------------------------------------------------------------------------------------
// 3. odirect bench interrupted in its stream workloads

test('odirect bench DIR interrupted by SIGINT in its stream workloads (its first stream row printed): it ends by the signal and DIR holds no file of the run (was: its scratch file left)', async (t) => {
  const dir = scratch()
  const child = spawn(process.execPath, [CLI, 'bench', dir, '--workloads', 'stream-write', '--size', '16M', '--tmpfs', 'off', '--runs', '1'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  let sent = false
  const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (code, sig) => resolve([code, sig])))
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d
    // A stream row done: the scratch file exists and the next row is writing it.
    if (!sent && /^\[1\/\d+\] stream-write /m.test(err)) {
      sent = true
      child.kill('SIGINT')
    }
  })
  const [code, sig] = await closed
  t.true(sent, `the first stream row was never printed:\n${err}`)
  t.true(sig === 'SIGINT' || code === 130, `ended by the signal (code ${code}, signal ${sig}):\n${err}`)
  t.deepEqual(fs.readdirSync(dir), [], 'files of the run left in DIR')
})

// ---------------------------------------------------------------------------------------
// 4. Inherited options

test('options an object inherits (Object.create(defaults), class getters) count as given, as node:fs reads them: writeFile flag wx / r+ and atomic, copyFile exclusive, createWriteStream flags r+ and start, createReadStream start, readFile encoding, open direct (was: dropped, the file overwritten, truncated or written at 0)', async (t) => {
  const dir = scratch()
  const old = Buffer.alloc(16384, 1)
  const data = Buffer.alloc(4096, 2)
  const fresh = (name: string): string => {
    const p = path.join(dir, name)
    fs.writeFileSync(p, old)
    return p
  }
  /** What node:fs and odirect each leave (or throw) for the same call. */
  const both = async (what: string, call: (lib: 'fs' | 'od', p: string) => Promise<unknown>): Promise<void> => {
    const out: string[] = []
    for (const lib of ['fs', 'od'] as const) {
      const p = fresh(`${what.replace(/\W+/g, '-')}-${lib}`)
      const r = await call(lib, p).then(
        (v) => (typeof v === 'string' || typeof v === 'number' ? `${typeof v} ${v}` : 'ok'),
        (e: { code?: string }) => `error ${e.code}`,
      )
      out.push(`${r}, file ${fs.readFileSync(p).toString('hex')}`)
    }
    t.is(out[1], out[0], `${what}: odirect (second) as node:fs (first)`)
  }
  const inherits = <T extends object>(o: T): T => Object.create(o) as T
  await both("writeFile, flag 'wx'", (lib, p) => (lib === 'fs' ? fsp.writeFile(p, data, inherits({ flag: 'wx' })) : od.writeFile(p, data, inherits({ flag: 'wx' }))))
  await both("writeFile, flag 'r+'", (lib, p) => (lib === 'fs' ? fsp.writeFile(p, data, inherits({ flag: 'r+' })) : od.writeFile(p, data, inherits({ flag: 'r+' }))))
  await both("createWriteStream, flags 'r+', start 8192", (lib, p) => pipeline(Readable.from([data]), lib === 'fs' ? fs.createWriteStream(p, inherits({ flags: 'r+', start: 8192 })) : od.createWriteStream(p, inherits({ flags: 'r+', start: 8192 }))))
  await both('createReadStream, start 8192', async (lib, p) => {
    let n = 0
    for await (const c of lib === 'fs' ? fs.createReadStream(p, inherits({ start: 8192 })) : od.createReadStream(p, inherits({ start: 8192 }))) n += (c as Buffer).length
    return n
  })
  await both("readFile, encoding 'latin1'", async (lib, p) => ((await (lib === 'fs' ? fsp.readFile(p, inherits({ encoding: 'latin1' as const })) : od.readFile(p, inherits({ encoding: 'latin1' as const })))) as string).length)
  // odirect's own options, from a class's getters.
  class Exclusive {
    get exclusive(): boolean {
      return true
    }
  }
  const src = path.join(dir, 'src')
  fs.writeFileSync(src, data)
  const dst = fresh('dst')
  await t.throwsAsync(od.copyFile(src, dst, new Exclusive()), { code: 'EEXIST' })
  t.true(fs.readFileSync(dst).equals(old), 'copyFile with an inherited exclusive left dst as it was')
  class Atomic {
    get atomic(): boolean {
      return true
    }
  }
  const a = fresh('atomic')
  const link = path.join(dir, 'atomic-link')
  fs.linkSync(a, link)
  await od.writeFile(a, data, new Atomic())
  t.true(fs.readFileSync(a).equals(data))
  t.true(fs.readFileSync(link).equals(old), 'atomic: a new file renamed into place, the other hard link keeps the old one')
  const fh = await od.open(fresh('off'), 'r', inherits({ direct: 'off' as const }))
  t.false(fh.direct, "open's inherited direct: 'off'")
  await fh.close()
})

// ---------------------------------------------------------------------------------------
// 5. odirect cp onto a device, interrupted

fxTest('odirect cp from a FIFO onto a block device, interrupted by SIGINT after 3 MiB: exit 130, it says the device keeps what was written (was: "partial copy removed"), and the device holds the data before the signal', ['root', 'loop', 'cmd:blockdev', 'cmd:mkfifo'], async (t) => {
  const dev = must(loopDevice(512, 8))
  t.teardown(() => dev.cleanup())
  const fifo = path.join(scratch(), 'fifo')
  const mk = spawnSync('mkfifo', [fifo])
  t.is(mk.status, 0, mk.stderr?.toString())
  const data = Buffer.alloc(3 << 20)
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i ^ 0x5a5a5a5a, i)
  const child = spawn(process.execPath, [CLI, 'cp', '--quiet', '--chunk-size', '64k', fifo, dev.device], { stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
  const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (code, sig) => resolve([code, sig])))
  // The FIFO's writer: once 3 MiB are written, cp has read all but a pipe's worth of them, and
  // written what it read before (a few chunks in flight at most).
  const w = fs.createWriteStream(fifo)
  await new Promise<void>((resolve, reject) => w.end(data, () => resolve()).on('error', reject))
  child.kill('SIGINT')
  const [code, sig] = await closed
  t.true(code === 130 || sig === 'SIGINT', `exit ${code} ${sig}: ${err}`)
  t.notRegex(err, /partial copy removed/, err)
  t.regex(err, /written in place: what was copied before the signal stays there/, err)
  t.true(fs.statSync(dev.device).isBlockDevice())
  const back = Buffer.alloc(1 << 20)
  const fd = fs.openSync(dev.device, 'r')
  try {
    fs.readSync(fd, back, 0, back.length, 0)
  } finally {
    fs.closeSync(fd)
  }
  t.true(back.equals(data.subarray(0, 1 << 20)), "the device's first MiB is the data written before the signal")
})
