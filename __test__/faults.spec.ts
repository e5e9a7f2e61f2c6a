// Backends and failure modes on real kernels (issue 3): loop devices with 512- and 4096-byte
// sectors, a raw block device, ramfs (no O_DIRECT), a full filesystem, the fault-injecting FUSE
// filesystem (EIO, held/delayed replies, short reads), io_uring refused by seccomp or by
// kernel.io_uring_disabled, and the ODIRECT_DEBUG log — each on every backend it applies to.
//
// Needs root for the fixtures (loop devices, mounts, FUSE, sysctl); tests whose requirements are
// missing are registered with test.skip and the reason is printed.
import { spawnSync } from 'node:child_process'
import { createHash, randomFillSync } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'
import type { ExecutionContext } from 'ava'

import { engineRoundTrip } from './helpers/events.ts'
import { type Body, fxTest, must } from './helpers/fxtest.js'

import { DirectIoError, type FileHandle, open, probe } from '../dist/index.js'
import {
  cleanupAll,
  faultFs,
  fullFs,
  isSkip,
  loopDevice,
  loopFs,
  patternBuffer,
  ramfsDir,
  runWithoutIoUring,
  skipReason,
  withIoUringDisabled,
} from './helpers/fixtures.js'
import type { FaultFs, Requirement, Skip } from './helpers/fixtures.js'

const __dirname = path.dirname(fileURLToPath(import.meta.url))
// Every test here names its backends itself (CI's per-backend ODIRECT_BACKEND runs must not
// turn the 'auto' cases into something else). Each spec file runs in its own process.
delete process.env.ODIRECT_BACKEND
const DIST = path.join(__dirname, '..', 'dist', 'index.js')

type Backend = 'io_uring' | 'aio' | 'threadpool'
const BACKENDS: readonly Backend[] = ['io_uring', 'aio', 'threadpool']

const LOOP: Requirement[] = ['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4']
const RAW: Requirement[] = ['root', 'loop', 'cmd:blockdev']
const RAMFS: Requirement[] = ['root', 'cmd:mount', 'fs:ramfs']
const FAULT: Requirement[] = ['root', 'fuse', 'cargo', 'cmd:umount']

// Which backends work in this process (io_uring may be refused by a seccomp profile).
const where = await probe('/var/tmp')
const backendSkip = (b: Backend): string | undefined =>
  where.backends[b].available ? undefined : `backend ${b} unavailable here: ${where.backends[b].reason}`

/** fxTest with the backend's availability as an extra skip reason. */
function fxTestOn(title: string, reqs: readonly Requirement[], fn: Body, backend?: Backend, serial?: 'serial'): void {
  fxTest(title, reqs, fn, backend ? backendSkip(backend) : undefined, serial)
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** Opens and registers close() as teardown (after the fixture's, so it runs first: LIFO). */
async function openT(t: ExecutionContext, p: string, flags: Parameters<typeof open>[1], opts: Parameters<typeof open>[2]): Promise<FileHandle> {
  const fh = await open(p, flags, opts)
  t.teardown(() => fh.close().catch(() => undefined))
  return fh
}

function useFixture<T extends { cleanup(): void }>(t: ExecutionContext, fx: T | Skip): T {
  const f = must(fx)
  t.teardown(() => f.cleanup())
  return f
}

/** A promise's state, observable without awaiting it. */
function track<T>(p: Promise<T>): { p: Promise<T>; state: () => 'pending' | 'resolved' | 'rejected'; value: () => T | undefined; error: () => unknown } {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending'
  let value: T | undefined
  let error: unknown
  const q = p.then(
    (v) => {
      state = 'resolved'
      value = v
      return v
    },
    (e: unknown) => {
      state = 'rejected'
      error = e
      throw e
    },
  )
  q.catch(() => undefined)
  return { p: q, state: () => state, value: () => value, error: () => error }
}

function isDirectIoError(t: ExecutionContext, e: unknown, code: string, what: string): e is DirectIoError {
  t.true(e instanceof DirectIoError, `${what}: ${String(e)} is not a DirectIoError`)
  t.is((e as DirectIoError).code, code, `${what}: ${String((e as Error).message)}`)
  return e instanceof DirectIoError
}

// ---------------------------------------------------------------------------------------
// 1. Loop devices: alignment discovery and enforcement

for (const ss of [512, 4096] as const) {
  for (const backend of BACKENDS) {
    fxTestOn(`loopFs(${ss}) [${backend}]: alignment ${ss} discovered, aligned I/O round-trips, smaller units refused before any syscall`, LOOP, async (t) => {
      const fx = useFixture(t, loopFs(ss, 64))
      const fh = await openT(t, path.join(fx.dir, 'f'), 'w+', { backend })
      t.is(fh.backend, backend)
      t.true(fh.direct)
      t.is(fh.fsType, 'ext4')
      t.is(fh.alignment.offset, ss)
      t.is(fh.alignment.logicalBlockSize, ss)
      t.is(fh.alignment.source, 'statx')
      t.true(fh.alignment.memory <= ss && fh.alignment.memory > 0)

      // Aligned blocks of the device's sector size round-trip, with checksums.
      const blocks = new Map<number, { len: number; sum: string }>()
      for (let i = 0; i < 16; i++) {
        const pos = (i * 7 + 3) * ss
        const b = fh.alloc(ss * ((i % 3) + 1))
        randomFillSync(b)
        t.is((await fh.write(b, { position: pos })).bytesWritten, b.byteLength)
        blocks.set(pos, { len: b.byteLength, sum: sha(b) })
      }
      for (const [pos, { len, sum }] of blocks) {
        const b = fh.alloc(len)
        t.is((await fh.read(b, { position: pos })).bytesRead, len)
        t.is(sha(b), sum, `block at ${pos}`)
      }

      const before = fh.stats()
      if (ss === 4096) {
        // 512-byte units are not enough on a 4096-byte-sector device: refused before any syscall.
        const small = fh.alloc(4096).subarray(0, 512)
        const cases: Array<[string, () => Promise<unknown>]> = [
          ['read 512-byte buffer', () => fh.read(small, { position: 0 })],
          ['write 512-byte buffer', () => fh.write(small, { position: 0 })],
          ['read at position 512', () => fh.read(fh.alloc(4096), { position: 512 })],
          ['write at position 512', () => fh.write(fh.alloc(4096), { position: 512 })],
          ['readv with a 512-byte part', () => fh.readv([fh.alloc(4096), small], 0)],
          ['readMany at position 512', () => fh.readMany([{ buffer: fh.alloc(4096), position: 4096 * 3 + 512 }])],
          ['writeMany with a 512-byte buffer', () => fh.writeMany([{ buffer: small, position: 0 }])],
        ]
        for (const [what, call] of cases) {
          const e = await t.throwsAsync(call(), { instanceOf: DirectIoError }, what)
          if (isDirectIoError(t, e, 'ERR_ODIRECT_ALIGNMENT', what)) {
            t.regex(e.message, /4096/, what)
            t.not(e.hint, '', what)
            t.is(e.errno, undefined, `${what}: no errno, no syscall was made`)
          }
        }
      } else {
        // On 512-byte sectors the same request is fine.
        const b = fh.alloc(512)
        b.fill(0x5a)
        t.is((await fh.write(b, { position: 512 })).bytesWritten, 512)
        const back = fh.alloc(512)
        t.is((await fh.read(back, { position: 512 })).bytesRead, 512)
        t.is(back[511], 0x5a)
      }
      // A misaligned memory address (loop's dma alignment is 512) is not an error: the op goes
      // through an aligned bounce buffer, and the bytes land in the view.
      const mis = fh.alloc(2 * ss).subarray(16, 16 + ss)
      const mr = await fh.read(mis, { position: 0 })
      t.true(mr.bytesRead >= 0)
      const after = fh.stats()
      t.is(after.bounced, before.bounced + 1, 'the misaligned read was bounced')
      if (ss === 4096) t.is(after.ops, before.ops + 1, 'no refused op reached the kernel (only the bounced read)')
      else t.is(after.ops, before.ops + 3, 'only the two good ops and the bounced read reached the kernel')
      t.is(after.errors, 0)
      t.is(after.inflight, 0)
    }, backend)
  }
}

for (const backend of BACKENDS) {
  fxTestOn(`raw block device loopDevice(4096) [${backend}]: size, sector size, blocks round-trip with checksums`, RAW, async (t) => {
    const fx = useFixture(t, loopDevice(4096, 32))
    const fh = await openT(t, fx.device, 'r+', { backend })
    t.true(fh.isBlockDevice)
    t.true(fh.direct)
    t.is(fh.backend, backend)
    const st = await fh.stat()
    t.true(st.isBlockDevice())
    t.false(st.isFile())
    t.is(st.size, 32 * 1024 * 1024)
    t.is(fh.alignment.logicalBlockSize, 4096)
    t.is(fh.alignment.offset, 4096)
    t.true(['statx', 'ioctl'].includes(fh.alignment.source), fh.alignment.source)
    t.log(`${fx.device}: ${JSON.stringify(fh.alignment)} (loop direct-io ${fx.directIo})`)

    // Random blocks all over the device, through read/write, readv/writev and the batch calls.
    const nBlocks = st.size / 4096
    const positions = [0, (nBlocks - 1) * 4096]
    while (positions.length < 48) {
      const p = Math.floor(Math.random() * (nBlocks - 2)) * 4096
      if (!positions.includes(p) && !positions.includes(p + 4096)) positions.push(p)
    }
    const sums = new Map<number, string>()
    const bufs = positions.map((p) => {
      const b = fh.alloc(4096)
      randomFillSync(b)
      sums.set(p, sha(b))
      return b
    })
    const third = Math.floor(positions.length / 3)
    for (let i = 0; i < third; i++) t.is((await fh.write(bufs[i], { position: positions[i] })).bytesWritten, 4096)
    t.deepEqual(
      await fh.writeMany(positions.slice(third, 2 * third).map((position, i) => ({ buffer: bufs[third + i], position }))),
      new Array(third).fill(4096),
    )
    for (let i = 2 * third; i < positions.length; i++) t.is((await fh.writev([bufs[i]], positions[i])).bytesWritten, 4096)
    await fh.sync()

    const back = positions.map(() => fh.alloc(4096))
    t.deepEqual(await fh.readMany(positions.map((position, i) => ({ buffer: back[i], position }))), new Array(positions.length).fill(4096))
    positions.forEach((p, i) => t.is<string | undefined, string | undefined>(sha(back[i]), sums.get(p), `block at ${p}`))
    // The same bytes reach the backing file (an independent reader).
    const raw = fs.openSync(fx.backingFile, 'r')
    try {
      for (const p of positions.slice(0, 8)) {
        const b = Buffer.alloc(4096)
        fs.readSync(raw, b, 0, 4096, p)
        t.is<string | undefined, string | undefined>(sha(b), sums.get(p), `backing file at ${p}`)
      }
    } finally {
      fs.closeSync(raw)
    }
    // readv over two buffers.
    const a = fh.alloc(4096)
    const b = fh.alloc(4096)
    t.is((await fh.readv([a, b], (nBlocks - 2) * 4096)).bytesRead, 8192)
    t.is<string | undefined, string | undefined>(sha(b), sums.get((nBlocks - 1) * 4096))

    // The device's end: reading there gives 0 bytes; writing there is ENOSPC from the kernel.
    t.is((await fh.read(fh.alloc(4096), { position: st.size })).bytesRead, 0)
    const e = await t.throwsAsync(fh.write(fh.alloc(4096), { position: st.size }), { instanceOf: DirectIoError })
    if (e instanceof DirectIoError) t.log(`write at the device end: ${e.code} (${e.syscall})`)
    // 512-byte units refused before any syscall.
    const ops = fh.stats().ops
    await t.throwsAsync(fh.read(fh.alloc(4096).subarray(0, 512), { position: 0 }), { code: 'ERR_ODIRECT_ALIGNMENT' })
    await t.throwsAsync(fh.read(fh.alloc(4096), { position: 512 }), { code: 'ERR_ODIRECT_ALIGNMENT' })
    t.is(fh.stats().ops, ops)
  }, backend)
}

// ---------------------------------------------------------------------------------------
// 2. ramfs: no O_DIRECT

function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length
}

fxTestOn('ramfs refuses O_DIRECT: typed error naming ramfs, nothing created, nothing truncated, no fd leaked', RAMFS, async (t) => {
  const fx = useFixture(t, ramfsDir())
  const existing = path.join(fx.dir, 'existing')
  fs.writeFileSync(existing, 'precious data')
  // Each backend started first: open() settles its backend before the open since adversary-s22,
  // and a backend's ring or eventfd is the engine's for good, not a descriptor leaked.
  // (A backend this process cannot have is refused before the open: ERR_ODIRECT_BACKEND.)
  const usable = BACKENDS.filter((b) => backendSkip(b) === undefined)
  for (const backend of usable) await (await open(existing, 'r', { backend, direct: 'prefer' })).close()
  const fds = fdCount()
  for (const backend of ['auto', ...usable] as const) {
    for (const flags of ['w+', 'w', 'wx', 'wx+'] as const) {
      const file = path.join(fx.dir, `new-${backend}-${flags}`)
      const e = await t.throwsAsync(open(file, flags, { backend }), { instanceOf: DirectIoError }, `${backend} ${flags}`)
      if (isDirectIoError(t, e, 'EINVAL', `${backend} ${flags}`)) {
        t.regex(e.message, /ramfs/)
        t.regex(e.hint, /direct: 'prefer'/)
        t.is(e.syscall, 'fcntl')
        t.is(e.errno, -22)
        t.is(e.path, file)
      }
      // The file this open created is removed again (as open(O_CREAT|O_DIRECT) would not be).
      t.false(fs.existsSync(file), `${backend} ${flags}: ${file} left behind`)
    }
    for (const flags of ['r', 'r+', 'w', 'w+'] as const) {
      await t.throwsAsync(open(existing, flags, { backend }), { instanceOf: DirectIoError, code: 'EINVAL' })
      // 'w' must not have emptied the file before failing.
      t.is(fs.readFileSync(existing, 'utf8'), 'precious data', `${backend} ${flags} touched the existing file`)
    }
  }
  t.is(fdCount(), fds, 'no descriptor leaked by failed opens')
  t.deepEqual(fs.readdirSync(fx.dir), ['existing'])
  const p = await probe(fx.dir)
  t.is(p.fsType, 'ramfs')
  t.false(p.direct.works)
  t.regex(p.direct.reason, /ramfs/)
  // Serial: it counts this process's descriptors, which concurrent tests open and close.
}, undefined, 'serial')

for (const backend of BACKENDS) {
  fxTestOn(`ramfs with direct: 'prefer' [${backend}]: buffered fallback with a reason, unaligned round trips`, RAMFS, async (t) => {
    const fx = useFixture(t, ramfsDir())
    const file = path.join(fx.dir, 'p')
    const fh = await openT(t, file, 'w+', { direct: 'prefer', backend })
    t.false(fh.direct)
    t.is(fh.backend, backend)
    t.regex(fh.fallbackReason, /ramfs/)
    t.is(fh.fsType, 'ramfs')
    // Plain, unaligned Buffers at odd positions.
    const text = Buffer.from('direct I/O is not available on ramfs, so this goes through the page cache')
    t.is((await fh.write(text, { position: 3 })).bytesWritten, text.length)
    const back = Buffer.alloc(text.length)
    t.is((await fh.read(back, { position: 3 })).bytesRead, text.length)
    t.deepEqual(back, text)
    t.is((await fh.writev([Buffer.from('abc'), Buffer.from('defg')], 1001)).bytesWritten, 7)
    const v1 = Buffer.alloc(2)
    const v2 = Buffer.alloc(5)
    t.is((await fh.readv([v1, v2], 1001)).bytesRead, 7)
    t.is(Buffer.concat([v1, v2]).toString(), 'abcdefg')
    const many = [Buffer.alloc(10), Buffer.alloc(3)]
    t.deepEqual(await fh.readMany([{ buffer: many[0], position: 3 }, { buffer: many[1], position: 1004 }]), [10, 3])
    t.is(many[0].toString(), text.subarray(0, 10).toString())
    t.is(many[1].toString(), 'def')
    // The typed-array form over odirect memory runs natively on a buffered handle too (each
    // op's range comes back from the engine for the cache drop after it).
    const region = fh.alloc(3 * 4096)
    region.fill(0x5a, 0, 4096)
    region.fill(0x5b, 4096, 8192)
    const typed = { memory: region, offsets: new Uint32Array([0, 4096]), lengths: new Uint32Array([4096, 4096]), positions: new Float64Array([20000, 30000]) }
    t.deepEqual([...(await fh.writeMany(typed))], [4096, 4096])
    const into = { ...typed, offsets: new Uint32Array([8192, 0]) }
    t.deepEqual([...(await fh.readMany(into))], [4096, 4096])
    t.true(region.subarray(8192).every((b) => b === 0x5a))
    t.true(region.subarray(0, 4096).every((b) => b === 0x5b))
    await fh.truncate(5000)
    // A misaligned subarray of a Buffer is fine too.
    const mis = Buffer.alloc(100, 0x41).subarray(1, 98)
    t.is((await fh.write(mis, { position: 5000 })).bytesWritten, 97)
    await fh.sync()
    t.is((await fh.stat()).size, 5097)
    // The bytes are really in the file (independent reader).
    const content = fs.readFileSync(file)
    t.deepEqual(content.subarray(3, 3 + text.length), text)
    t.is(content.subarray(1001, 1008).toString(), 'abcdefg')
    t.is(content[5096], 0x41)
  }, backend)
}

fxTestOn("ramfs with direct: 'prefer' and backend 'auto' does not pick aio for a buffered handle", RAMFS, async (t) => {
  const fx = useFixture(t, ramfsDir())
  const fh = await openT(t, path.join(fx.dir, 'auto'), 'w+', { direct: 'prefer' })
  t.false(fh.direct)
  t.not(fh.backend, 'aio')
  t.is((await fh.write(Buffer.from('x'), { position: 0 })).bytesWritten, 1)
})

for (const backend of BACKENDS) {
  fxTestOn(`direct: 'off' on ext4 [${backend}]: plain Buffers, any position, through the engine`, [], async (t) => {
    const dir = fs.mkdtempSync('/var/tmp/odirect-off-')
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    const file = path.join(dir, 'f')
    const fh = await openT(t, file, 'w+', { direct: 'off', backend })
    t.false(fh.direct)
    t.is(fh.fallbackReason, '')
    t.is(fh.backend, backend)
    const data = Buffer.from('plain buffered bytes at an odd offset')
    t.is((await fh.write(data, { position: 7 })).bytesWritten, data.length)
    const back = Buffer.alloc(data.length)
    t.is((await fh.read(back, { position: 7 })).bytesRead, data.length)
    t.deepEqual(back, data)
    t.is((await fh.write(new Uint16Array([1, 2, 3]), { position: 1 })).bytesWritten, 6)
    t.deepEqual(fs.readFileSync(file).subarray(7, 7 + data.length), data)
    t.deepEqual([...fs.readFileSync(file).subarray(1, 7)], [1, 0, 2, 0, 3, 0])
  }, backend)
}

// ---------------------------------------------------------------------------------------
// 3. Full filesystem

for (const backend of BACKENDS) {
  fxTestOn(`fullFs(8) [${backend}]: writes fail with ENOSPC once full; everything written before reads back intact`, LOOP, async (t) => {
    const fx = useFixture(t, fullFs(8))
    t.is(fx.kind, 'loop-ext4')
    const fh = await openT(t, path.join(fx.dir, 'fill'), 'w+', { backend })
    t.true(fh.direct)
    const bs = 64 * 1024
    const sums: Array<[number, number, string]> = []
    let pos = 0
    let failure: unknown
    while (pos <= fx.sizeBytes) {
      const b = fh.alloc(bs)
      randomFillSync(b)
      try {
        const n = (await fh.write(b, { position: pos })).bytesWritten
        t.true(n > 0 && n % fh.alignment.offset === 0, `short write of ${n}`)
        sums.push([pos, n, sha(b.subarray(0, n))])
        pos += n
      } catch (e) {
        failure = e
        break
      }
    }
    if (isDirectIoError(t, failure, 'ENOSPC', 'filling')) {
      t.is(failure.errno, -28)
      t.is(failure.syscall, 'write')
      t.is(failure.position, pos)
      t.is(failure.length, bs)
      t.is(failure.path, path.join(fx.dir, 'fill'))
      t.regex(failure.hint, /full/)
    }
    t.true(pos > 0 && pos <= fx.freeBytes, `wrote ${pos} of ${fx.freeBytes} free bytes`)
    t.log(`ENOSPC after ${pos} bytes (${fx.freeBytes} free at start)`)
    // Still full: a batch write fails with ENOSPC too, after all of it completed.
    const more = [fh.alloc(bs), fh.alloc(bs)]
    await t.throwsAsync(fh.writeMany(more.map((buffer, i) => ({ buffer, position: pos + i * bs }))), { code: 'ENOSPC' })
    await t.throwsAsync(fh.writev(more, pos), { code: 'ENOSPC' })
    // Everything written before is intact.
    let bad = 0
    for (const [p, n, sum] of sums) {
      const b = fh.alloc(n)
      t.is((await fh.read(b, { position: p })).bytesRead, n)
      if (sha(b) !== sum) bad++
    }
    t.is(bad, 0, `${bad} of ${sums.length} chunks differ`)
    t.true(fh.stats().errors >= 3)
  }, backend)
}

// ---------------------------------------------------------------------------------------
// 4. faultfs: EIO, held and delayed replies, short reads

function faultFx(t: ExecutionContext, opts: Parameters<typeof faultFs>[0]): FaultFs {
  return useFixture(t, faultFs(opts))
}

for (const backend of BACKENDS) {
  fxTestOn(`faultfs EIO [${backend}]: a read covering the bad offset rejects with EIO and its position; the rest reads correctly`, FAULT, async (t) => {
    const size = 1 << 20
    const bad = 65536 + 100
    const bad2 = 5 * 65536
    const fx = faultFx(t, { size, eioAt: [bad, bad2], fsyncEio: true })
    const fh = await openT(t, fx.file, 'r+', { backend })
    t.true(fh.direct)
    t.is(fh.fsType, 'fuse')
    const unit = fh.alignment.offset
    const e = await t.throwsAsync(fh.read(fh.alloc(4096), { position: 65536 }), { instanceOf: DirectIoError })
    if (isDirectIoError(t, e, 'EIO', 'read')) {
      t.is(e.errno, -5)
      t.is(e.syscall, 'read')
      t.is(e.position, 65536)
      t.is(e.length, 4096)
      t.is(e.path, fx.file)
      t.regex(e.hint, /I\/O error/)
    }
    // Offsets elsewhere read the pattern.
    for (const p of [0, 4096, 65536 + 4096, 3 * 65536, size - 4096]) {
      const b = fh.alloc(4096)
      t.is((await fh.read(b, { position: p })).bytesRead, 4096)
      t.true(Buffer.from(b).equals(patternBuffer(p, 4096)), `pattern at ${p}`)
    }
    // readMany: the bad op fails the batch (after all completed), the others are filled.
    const bufs = [fh.alloc(4096), fh.alloc(4096), fh.alloc(4096)]
    const positions = [8192, bad2, 12288]
    const me = await t.throwsAsync(fh.readMany(bufs.map((buffer, i) => ({ buffer, position: positions[i] }))), { instanceOf: DirectIoError })
    if (isDirectIoError(t, me, 'EIO', 'readMany')) t.is(me.position, bad2)
    t.true(Buffer.from(bufs[0]).equals(patternBuffer(8192, 4096)))
    t.true(Buffer.from(bufs[2]).equals(patternBuffer(12288, 4096)))
    t.is(fh.stats().inflight, 0)
    // readv across the bad offset, writes at it, fsync: all EIO with their syscall.
    await t.throwsAsync(fh.readv([fh.alloc(4096), fh.alloc(4096)], 65536), { code: 'EIO' })
    const we = await t.throwsAsync(fh.write(fh.alloc(4096), { position: bad2 }), { instanceOf: DirectIoError })
    if (isDirectIoError(t, we, 'EIO', 'write')) t.is(we.syscall, 'write')
    const se = await t.throwsAsync(fh.sync(), { instanceOf: DirectIoError })
    if (isDirectIoError(t, se, 'EIO', 'fsync')) t.is(se.syscall, 'fsync')
    const de = await t.throwsAsync(fh.datasync(), { instanceOf: DirectIoError })
    if (isDirectIoError(t, de, 'EIO', 'fdatasync')) t.is(de.syscall, 'fdatasync')
    // A good write still works and reads back.
    const w = fh.alloc(unit)
    w.fill(0xee)
    t.is((await fh.write(w, { position: 32 * 4096 })).bytesWritten, unit)
    const r = fh.alloc(unit)
    t.is((await fh.read(r, { position: 32 * 4096 })).bytesRead, unit)
    t.true(r.every((x) => x === 0xee))
    t.true(fx.stats().eio >= 5, JSON.stringify(fx.stats()))
  }, backend)

  // The two hold tests are serial: on aio and the pool their held reads block the process's 4
  // pool threads, so a concurrent test's ops (and these tests' own round trips) would wait for them.
  fxTestOn(`faultfs hold [${backend}]: abort and close with reads held in the kernel settle only once the kernel is done`, FAULT, async (t) => {
    const fx = faultFx(t, { size: 1 << 20, hold: true })
    const fh = await open(fx.file, 'r', { backend })
    // Teardown: let the replies go first, so that close() can finish.
    t.teardown(async () => {
      fx.release()
      await fh.close().catch(() => undefined)
    })
    fx.hold()
    const ac = new AbortController()
    const bufs = [fh.alloc(4096), fh.alloc(4096), fh.alloc(4096)]
    const positions = [0, 8192, 40960]
    const aborted = track(fh.read(bufs[0], { position: positions[0], signal: ac.signal }))
    const plain = [track(fh.read(bufs[1], { position: positions[1] })), track(fh.read({ buffer: bufs[2], position: positions[2] }))]
    await fx.waitForHeld(3)
    const readsSeen = fx.stats().reads
    t.is(fh.stats().inflight, 3)

    // (a) Abort a read the FUSE server holds: the kernel owns the buffer until the reply, so the
    // promise must not settle before that.
    ac.abort()
    // Once an op started after the abort has completed, the abort has been acted on.
    await engineRoundTrip(backend)
    t.is(aborted.state(), 'pending', 'an aborted read must not settle while the kernel still holds its buffer')
    t.true(plain.every((p) => p.state() === 'pending'))

    // (b) close() while reads are held waits for them.
    const closing = track(fh.close())
    t.true(fh.closed)
    await engineRoundTrip(backend)
    t.is(closing.state(), 'pending', 'close() must wait for the held reads')
    await t.throwsAsync(fh.read(fh.alloc(4096), { position: 0 }), { code: 'ERR_ODIRECT_CLOSED' })
    t.is(fx.stats().reads, readsSeen, 'nothing new reached the filesystem after close()')
    t.is(fx.stats().held, 3)

    fx.release()
    await Promise.allSettled([aborted.p, ...plain.map((p) => p.p)])
    // The aborted read settles with an AbortError or its real result, never anything else.
    if (aborted.state() === 'rejected') {
      isDirectIoError(t, aborted.error(), 'ABORT_ERR', 'aborted read')
      t.is((aborted.error() as Error).name, 'AbortError')
      t.log(`${backend}: the aborted held read rejected with AbortError after release`)
    } else {
      t.is(aborted.value()?.bytesRead, 4096)
      t.true(Buffer.from(bufs[0]).equals(patternBuffer(0, 4096)))
      t.log(`${backend}: cancel could not stop the held FUSE read; it completed with its real result after release`)
    }
    for (let i = 0; i < 2; i++) {
      t.is(plain[i].state(), 'resolved', String(plain[i].error()))
      t.is(plain[i].value()?.bytesRead, 4096)
      t.true(Buffer.from(bufs[i + 1]).equals(patternBuffer(positions[i + 1], 4096)), `read ${i + 1} bytes`)
    }
    await closing.p
    t.is(closing.state(), 'resolved')
    t.is(fh.stats().inflight, 0)
    // faultfs counts a request as answered only after its reply was written to /dev/fuse, which
    // races with the kernel completing the read: wait for the daemon's bookkeeping (the flake of
    // issue 9), then require it to be 0.
    await fx.waitFor((s) => s.inflight === 0, 'every reply counted as sent')
  }, backend, 'serial')

  fxTestOn(`faultfs hold [${backend}]: an already-aborted signal rejects at once; abort of an op not yet in the kernel is immediate`, FAULT, async (t) => {
    const fx = faultFx(t, { size: 1 << 20, hold: 'held' })
    const fh = await open(fx.file, 'r', { backend })
    t.teardown(async () => {
      fx.release()
      await fh.close().catch(() => undefined)
    })
    const reads0 = fx.stats().reads
    const e = await t.throwsAsync(fh.read(fh.alloc(4096), { position: 0, signal: AbortSignal.abort() }), { instanceOf: DirectIoError })
    isDirectIoError(t, e, 'ABORT_ERR', 'pre-aborted')
    t.is(fx.stats().reads, reads0, 'a pre-aborted op never reaches the filesystem')
    t.is(fh.stats().ops, 0)

    if (backend === 'threadpool') {
      // The pool has 4 workers: with 4 reads held, the next ones wait in its queue, where an
      // abort must take effect at once even though every worker is blocked.
      const held = Array.from({ length: 4 }, (_, i) => track(fh.read(fh.alloc(4096), { position: i * 4096 })))
      await fx.waitForHeld(4)
      const ac = new AbortController()
      const queued = track(fh.read(fh.alloc(4096), { position: 65536, signal: ac.signal }))
      const queued2 = track(fh.read(fh.alloc(4096), { position: 69632 }))
      // No round trip through the pool here: its 4 workers are all blocked.
      await new Promise((r) => setImmediate(r))
      t.is(queued.state(), 'pending')
      ac.abort()
      // Immediate: it settles while every worker is still blocked (nothing is released before
      // it has, so an abort that waited for a worker would never settle: a timeout).
      const qe = await t.throwsAsync(queued.p, { instanceOf: DirectIoError })
      isDirectIoError(t, qe, 'ABORT_ERR', 'queued abort')
      t.true(held.every((h) => h.state() === 'pending'))
      t.is(queued2.state(), 'pending')
      fx.release()
      await Promise.all([...held.map((h) => h.p), queued2.p])
      t.is(queued2.value()?.bytesRead, 4096)
      t.is(fx.stats().reads, reads0 + 5, 'the aborted op never reached the filesystem')
    } else {
      // io_uring / aio take every op into the kernel at once (queue depth 256): a timeout abort
      // (what AbortSignal.timeout() sends: a TimeoutError) of a held read settles after release,
      // with AbortError or the real result. Aborted once the read is held, not after a fixed
      // time: a 50 ms AbortSignal.timeout() fired before the read reached the kernel under load.
      const ac = new AbortController()
      const timed = track(fh.read(fh.alloc(4096), { position: 0, signal: ac.signal }))
      await fx.waitForHeld(1)
      ac.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'))
      await engineRoundTrip(backend)
      t.is(timed.state(), 'pending')
      fx.release()
      await Promise.allSettled([timed.p])
      if (timed.state() === 'rejected') isDirectIoError(t, timed.error(), 'ABORT_ERR', 'timeout')
      else t.is(timed.value()?.bytesRead, 4096)
    }
  }, backend, 'serial')

  fxTestOn(`faultfs delay [${backend}]: 64 reads in flight on a slow server all complete correctly`, FAULT, async (t) => {
    const delayMs = 50
    const fx = faultFx(t, { size: 4 << 20, delayMs })
    const fh = await openT(t, fx.file, 'r', { backend })
    const n = 64
    const positions = Array.from({ length: n }, (_, i) => ((i * 37) % 1024) * 4096)
    const bufs = positions.map(() => fh.alloc(4096))
    const t0 = performance.now()
    const results = (await Promise.all(bufs.map((b, i) => fh.read(b, { position: positions[i] })))).map((r) => r.bytesRead)
    // The server's own high-water mark of unanswered requests (sampling its .stats from here
    // missed every overlap once under load: "peak 0").
    const { peak } = fx.stats()
    const ms = performance.now() - t0
    t.deepEqual(results, new Array(n).fill(4096))
    positions.forEach((p, i) => t.true(Buffer.from(bufs[i]).equals(patternBuffer(p, 4096)), `read at ${p}`))
    // They overlap: the server had several of them at once (the time is only reported).
    t.true(peak >= 2, `peak ${peak} requests in flight at the server`)
    t.log(`${backend}: 64 reads with ${delayMs} ms server delay took ${ms.toFixed(0)} ms, peak ${peak} in flight at the server`)
    // Latency stats saw the delay.
    t.true(fh.stats().latencyUs.p50 >= delayMs * 900, JSON.stringify(fh.stats().latencyUs))
  }, backend)

  fxTestOn(`faultfs short reads [${backend}]: fewer bytes than asked, no error, positions advance by what was read`, FAULT, async (t) => {
    const size = 65536
    const fx = faultFx(t, { size, shortReads: true })
    const fh = await openT(t, fx.file, 'r', { backend })
    const b = fh.alloc(8192)
    t.is((await fh.read(b, { position: 0 })).bytesRead, 4096)
    t.true(Buffer.from(b.subarray(0, 4096)).equals(patternBuffer(0, 4096)))
    t.is((await fh.read(fh.alloc(16384), { position: 8192 })).bytesRead, 8192)
    // Near EOF: half of what was asked, capped by the file end.
    t.is((await fh.read(fh.alloc(16384), { position: size - 4096 })).bytesRead, 4096)
    t.is((await fh.read(fh.alloc(4096), { position: size })).bytesRead, 0)
    // readv and readMany report the short counts as they are.
    t.is((await fh.readv([fh.alloc(4096), fh.alloc(4096)], 0)).bytesRead, 4096)
    t.deepEqual(await fh.readMany([{ buffer: fh.alloc(8192), position: 0 }, { buffer: fh.alloc(4096), position: 4096 }]), [4096, 2048])
    // Implicit positions advance by the bytes really read.
    const s1 = fh.alloc(8192)
    t.is((await fh.read(s1)).bytesRead, 4096)
    const s2 = fh.alloc(8192)
    t.is((await fh.read(s2)).bytesRead, 4096)
    t.true(Buffer.from(s2.subarray(0, 4096)).equals(patternBuffer(4096, 4096)), 'second sequential read starts where the first ended')
    t.is(fh.stats().errors, 0)
  }, backend)
}

// ---------------------------------------------------------------------------------------
// stat() racing close()

for (const backend of BACKENDS) {
  fxTestOn(`stat() racing close() [${backend}]: describes this file even when the descriptor number is reused at once`, [], async (t) => {
    const dir = fs.mkdtempSync('/var/tmp/odirect-statrace-')
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    fs.writeFileSync(path.join(dir, 'a'), Buffer.alloc(4096))
    fs.writeFileSync(path.join(dir, 'b'), Buffer.alloc(3 * 8192))
    // fstat runs on libuv's pool: keep the pool busy so the stat waits while close() goes ahead.
    const { pbkdf2 } = await import('node:crypto')
    let reused = 0
    for (let i = 0; i < 3; i++) {
      const fh = await open(path.join(dir, 'a'), 'r', { backend })
      const busy = Array.from({ length: 4 }, () => new Promise((r) => pbkdf2('x', 'y', 20_000, 32, 'sha512', r)))
      const st = fh.stat()
      await fh.close()
      // Whatever opens next gets the lowest free descriptor number: the one just closed.
      const other = fs.openSync(path.join(dir, 'b'), 'r')
      if (other === fh.fd) reused++
      try {
        t.is((await st).size, 4096, 'stat() must describe the file of its handle')
      } finally {
        fs.closeSync(other)
        await Promise.all(busy)
      }
    }
    t.log(`descriptor number reused right after close(): ${reused} of 3`)
  }, backend)
}

// ---------------------------------------------------------------------------------------
// 6. io_uring really unavailable

const CHILD = `
const { open, probe } = require(${JSON.stringify(DIST)});
const fs = require('node:fs');
const { createHash } = require('node:crypto');
(async () => {
  const dir = process.argv[2];
  const out = {};
  const p = await probe(dir);
  out.ioUring = p.backends.io_uring;
  out.aio = p.backends.aio.available;
  out.ioUringDisabled = p.ioUringDisabled;
  const file = dir + '/f';
  const fh = await open(file, 'w+');
  out.backend = fh.backend;
  out.direct = fh.direct;
  const b = fh.alloc(1 << 20);
  require('node:crypto').randomFillSync(b);
  out.written = (await fh.write(b, { position: 4096 * 3 })).bytesWritten;
  const back = fh.alloc(1 << 20);
  out.read = (await fh.read(back, { position: 4096 * 3 })).bytesRead;
  out.same = createHash('sha256').update(b).digest('hex') === createHash('sha256').update(back).digest('hex');
  await fh.close();
  try {
    await open(file, 'r+', { backend: 'io_uring' });
    out.explicit = { code: 'opened' };
  } catch (e) {
    out.explicit = { code: e.code, message: e.message, ctor: e.constructor.name };
  }
  const off = await open(file, 'r', { direct: 'off' });
  out.buffered = off.backend;
  await off.close();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`

function childScript(t: ExecutionContext): { script: string; dir: string } {
  const dir = fs.mkdtempSync('/var/tmp/odirect-nouring-')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const script = path.join(dir, 'child.cjs')
  fs.writeFileSync(script, CHILD)
  return { script, dir }
}

interface ChildOut {
  ioUring: { available: boolean; reason: string }
  aio: boolean
  ioUringDisabled?: number
  backend: string
  direct: boolean
  written: number
  read: number
  same: boolean
  explicit: { code: string; message: string; ctor: string }
  buffered: string
}

function checkNoUring(t: ExecutionContext, out: ChildOut, why: RegExp): void {
  t.false(out.ioUring.available)
  t.regex(out.ioUring.reason, /EPERM/)
  t.regex(out.ioUring.reason, why)
  t.true(out.aio)
  t.is(out.backend, 'aio', "backend 'auto' falls back to aio for O_DIRECT")
  t.true(out.direct)
  t.is(out.written, 1 << 20)
  t.is(out.read, 1 << 20)
  t.true(out.same)
  t.is(out.explicit.code, 'ERR_ODIRECT_BACKEND')
  t.is(out.explicit.ctor, 'DirectIoError')
  t.regex(out.explicit.message, /io_uring/)
  t.is(out.buffered, 'threadpool', "backend 'auto' uses the pool for buffered handles")
}

fxTestOn('io_uring refused by seccomp (EPERM): auto picks aio, round trip works, probe says why, explicit io_uring is ERR_ODIRECT_BACKEND', ['cc'], (t) => {
  const { script, dir } = childScript(t)
  const r = must(runWithoutIoUring(script, { ODIRECT_BACKEND: '' }, { args: [dir], timeoutMs: 60_000 }))
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim()) as ChildOut
  t.log(out.ioUring.reason)
  checkNoUring(t, out, /seccomp/)
  // ENOSYS (a kernel without io_uring) is explained too.
  const r2 = must(runWithoutIoUring(script, { ODIRECT_BACKEND: '' }, { args: [dir], errno: 38, timeoutMs: 60_000 }))
  t.is(r2.status, 0, r2.stderr)
  const out2 = JSON.parse(r2.stdout.trim()) as ChildOut
  t.false(out2.ioUring.available)
  t.regex(out2.ioUring.reason, /ENOSYS/)
  t.is(out2.backend, 'aio')
  t.true(out2.same)
})

fxTestOn('io_uring disabled by sysctl (kernel.io_uring_disabled=2): same fallback, reason names the sysctl, sysctl restored (machine-wide)', ['root', 'io_uring_disabled'], (t) => {
  const knob = '/proc/sys/kernel/io_uring_disabled'
  const before = fs.readFileSync(knob, 'utf8').trim()
  const { script, dir } = childScript(t)
  // Machine-wide while it runs: keep the window short (one child process).
  const r = withIoUringDisabled(() =>
    spawnSync(process.execPath, [script, dir], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ODIRECT_BACKEND: '' } }),
  )
  t.is(fs.readFileSync(knob, 'utf8').trim(), before, 'sysctl restored')
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim()) as ChildOut
  t.log(out.ioUring.reason)
  t.is(out.ioUringDisabled, 2)
  checkNoUring(t, out, /io_uring_disabled/)
})

// ---------------------------------------------------------------------------------------
// 7. ODIRECT_DEBUG

for (const backend of BACKENDS) {
  fxTestOn(`ODIRECT_DEBUG=1 [${backend}]: stderr has a submit and a complete line per op with op, fd, offset, length, result, latency`, [], (t) => {
    const dir = fs.mkdtempSync('/var/tmp/odirect-debug-')
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    const file = path.join(dir, 'f')
    fs.writeFileSync(file, Buffer.alloc(3 * 4096, 1))
    const script = `
      const { open } = require(${JSON.stringify(DIST)});
      (async () => {
        const fh = await open(${JSON.stringify(file)}, 'r', { backend: ${JSON.stringify(backend)} });
        console.log(fh.fd, (await fh.read(fh.alloc(4096), { position: 8192 })).bytesRead);
        try { await fh.allocate(0, 4096) } catch (e) { console.log(e.code) }
        await fh.close();
      })();`
    const run = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 })
    const r = run({ ODIRECT_DEBUG: '1' })
    t.is(r.status, 0, r.stderr)
    const [fdText, n] = r.stdout.trim().split('\n')[0].split(' ')
    t.is(n, '4096')
    const fd = Number(fdText)
    const sub = new RegExp(`^odirect: submit id=(\\d+) op=read fd=${fd} offset=8192 length=4096$`, 'm').exec(r.stderr)
    t.truthy(sub, r.stderr)
    const done = new RegExp(`^odirect: complete id=${sub?.[1]} op=read fd=${fd} offset=8192 length=4096 result=4096 latency_us=(\\d+(\\.\\d+)?)$`, 'm').exec(r.stderr)
    t.truthy(done, r.stderr)
    t.true(Number(done?.[1]) >= 0)
    // A failing op logs its negative result and errno name (EBADF: fallocate on a read-only fd).
    t.regex(r.stdout, /EBADF/)
    t.regex(r.stderr, new RegExp(`^odirect: complete id=\\d+ op=fallocate fd=${fd} offset=0 length=4096 result=-9 \\(EBADF\\) latency_us=`, 'm'))
    t.regex(r.stderr, new RegExp(`^odirect: complete id=\\d+ op=close fd=${fd} .*result=0 `, 'm'))
    // Off by default.
    const quiet = run({ ODIRECT_DEBUG: '' })
    t.is(quiet.status, 0, quiet.stderr)
    t.notRegex(quiet.stderr, /odirect: (submit|complete)/)
  }, backend)
}

test.after.always('fixtures cleaned up', () => {
  cleanupAll()
})
