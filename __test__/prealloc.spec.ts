// copyFile and writeFile({ atomic }) reserve the temp file's known size up front (fallocate mode
// 0, src/files.ts reserveSpace; ODIRECT_PREALLOCATE=0 turns it off, read per call): the temp file
// is reserved before the first write, the final file has the exact size and content, a sparse
// source with holes is not reserved (its holes stay holes), and a file system too small fails
// ENOSPC before any data is written, no temp file left, the old destination intact. The ops are
// counted through the kernel's io_uring tracepoints (io_uring_submit_req: opcode FALLOCATE /
// WRITE; io_uring_queue_async_work: io-wq hand-offs) in a trace instance of this test's own,
// filtered to this process's threads. Serial: the switch is the process's environment.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'

import { copyFile, DirectIoError, writeFile } from '../dist/index.js'
import { evictFile, isSkip, loopFs, patternBuffer, ramfsDir, skipReason } from './helpers/fixtures.js'
import { scratchDirs } from './helpers/scratch.ts'
import { traceEvent, tracefsReason } from './helpers/tracefs.ts'
import { testIf } from './helpers/skips.ts'

const scratch = scratchDirs('prealloc')
const MiB = 1024 * 1024

function traceWhy(): string | undefined {
  const t = tracefsReason('io_uring_submit_req')
  if (t !== undefined) return t
  return undefined
}
const WHY = traceWhy()

interface Counts {
  fallocate: number
  write: number
  handoffs: number
}

/** Runs `fn` with this process's io_uring submissions (by opcode) and io-wq hand-offs traced. */
async function traced<T>(fn: () => Promise<T>): Promise<{ r: T; n: Counts }> {
  // Ring threads of the engine exist once it did I/O: a first write makes them before listing.
  const warm = path.join(scratch(), 'warm')
  await writeFile(warm, 'x')
  const tids = fs.readdirSync('/proc/self/task')
  let r!: T
  const trace = await traceEvent(['io_uring/io_uring_submit_req', 'io_uring/io_uring_queue_async_work'], tids, async () => {
    r = await fn()
  })
  const n = {
    fallocate: (trace.match(/io_uring_submit_req:.*opcode FALLOCATE/g) ?? []).length,
    write: (trace.match(/io_uring_submit_req:.*opcode WRITE\b/g) ?? []).length,
    handoffs: (trace.match(/io_uring_queue_async_work:.*opcode WRITE\b/g) ?? []).length,
  }
  return { r, n }
}

/** Runs `fn` with ODIRECT_PREALLOCATE=0 (the old behaviour). */
async function switchedOff<T>(fn: () => Promise<T>): Promise<T> {
  const before = process.env.ODIRECT_PREALLOCATE
  process.env.ODIRECT_PREALLOCATE = '0'
  try {
    return await fn()
  } finally {
    if (before === undefined) delete process.env.ODIRECT_PREALLOCATE
    else process.env.ODIRECT_PREALLOCATE = before
  }
}

/** copyFile; at its first progress report (a chunk written), the temp file's allocated bytes. */
async function copyWatching(src: string, dst: string, options: { sparse?: boolean } = {}): Promise<number> {
  const dir = path.dirname(dst)
  const names = new Set(fs.readdirSync(dir))
  let firstBlocks = -1
  await copyFile(src, dst, {
    ...options,
    onProgress: () => {
      if (firstBlocks >= 0) return
      const tmp = fs.readdirSync(dir).filter((x) => !names.has(x))
      firstBlocks = tmp.length === 1 ? fs.statSync(path.join(dir, tmp[0] as string)).blocks * 512 : -2
    },
  })
  return firstBlocks
}

const SIZE = 48 * MiB + 12345

testIf(
  WHY,
  'copyFile reserves the temp file (allocated >= size after the first write, one FALLOCATE), the copy is exact; ODIRECT_PREALLOCATE=0: no reservation',
  async (t) => {
    const dir = scratch()
    const src = path.join(dir, 'src')
    const data = patternBuffer(3, SIZE)
    fs.writeFileSync(src, data)
    // Its pages out of the cache: direct reads of cached pages go to io-wq too (not counted, but kept apart).
    evictFile(src)
    const dst = path.join(dir, 'sub', 'dst')
    fs.mkdirSync(path.dirname(dst))
    const on = await traced(() => copyWatching(src, dst))
    t.true(on.r >= SIZE, `temp file allocated ${on.r} bytes after the first write, size ${SIZE}`)
    t.is(on.n.fallocate, 1, `FALLOCATE submissions: ${JSON.stringify(on.n)}`)
    t.is(fs.statSync(dst).size, SIZE)
    t.true(fs.readFileSync(dst).equals(data), 'copy content')
    t.deepEqual(fs.readdirSync(path.dirname(dst)), ['dst'], 'no temp file left')
    fs.rmSync(dst)
    const off = await switchedOff(() => traced(() => copyWatching(src, dst)))
    t.true(off.r >= 0 && off.r < SIZE, `ODIRECT_PREALLOCATE=0: temp file allocated ${off.r} bytes after the first write`)
    t.is(off.n.fallocate, 0, `ODIRECT_PREALLOCATE=0: ${JSON.stringify(off.n)}`)
    t.true(fs.readFileSync(dst).equals(data), 'copy content, switched off')
    // Writes inside the reserved size are not handed to io-wq one by one (ext4, xfs: the
    // extending direct write is; see the README's Performance notes).
    t.log(`io-wq hand-offs of writes: reserved ${on.n.handoffs}, not reserved ${off.n.handoffs}`)
    t.true(on.n.handoffs < off.n.handoffs, `io-wq hand-offs of writes: reserved ${on.n.handoffs}, not reserved ${off.n.handoffs}`)
  },
  true,
)

testIf(
  WHY,
  'writeFile({ atomic }) of a buffer or string reserves its length (one FALLOCATE), the file is exact; an iterable (length unknown) and ODIRECT_PREALLOCATE=0 do not',
  async (t) => {
    const dir = scratch()
    const dst = path.join(dir, 'dst')
    const data = patternBuffer(5, 5 * MiB + 777)
    const buf = await traced(() => writeFile(dst, data, { atomic: true }))
    t.is(buf.n.fallocate, 1, `buffer: ${JSON.stringify(buf.n)}`)
    t.is(fs.statSync(dst).size, data.length)
    t.true(fs.readFileSync(dst).equals(data), 'buffer content')
    const text = 'odirect é '.repeat(300_000)
    const str = await traced(() => writeFile(dst, text, { atomic: true }))
    t.is(str.n.fallocate, 1, `string: ${JSON.stringify(str.n)}`)
    t.is(fs.readFileSync(dst, 'utf8'), text)
    const it = await traced(() => writeFile(dst, [data.subarray(0, MiB), data.subarray(MiB)], { atomic: true }))
    t.is(it.n.fallocate, 0, `iterable: ${JSON.stringify(it.n)}`)
    t.true(fs.readFileSync(dst).equals(data), 'iterable content')
    const off = await switchedOff(() => traced(() => writeFile(dst, text, { atomic: true })))
    t.is(off.n.fallocate, 0, `ODIRECT_PREALLOCATE=0: ${JSON.stringify(off.n)}`)
    t.is(fs.readFileSync(dst, 'utf8'), text)
    // Not atomic: the destination is written in place, never reserved.
    const inPlace = await traced(() => writeFile(dst, data))
    t.is(inPlace.n.fallocate, 0, `in place: ${JSON.stringify(inPlace.n)}`)
    t.deepEqual(fs.readdirSync(dir), ['dst'], 'no temp file left')
  },
  true,
)

testIf(
  WHY,
  'copyFile of a sparse source keeps its holes (no reservation); without holes, or with sparse: false, the copy is reserved',
  async (t) => {
    const dir = scratch()
    const holey = path.join(dir, 'holey')
    const fd = fs.openSync(holey, 'w')
    fs.writeSync(fd, patternBuffer(9, MiB), 0, MiB, 40 * MiB)
    fs.ftruncateSync(fd, 100 * MiB)
    fs.closeSync(fd)
    const srcBlocks = fs.statSync(holey).blocks * 512
    t.true(srcBlocks <= 2 * MiB, `the source is sparse here (${srcBlocks} bytes allocated)`)
    const dst = path.join(dir, 'dst')
    const sparse = await traced(() => copyWatching(holey, dst))
    t.is(sparse.n.fallocate, 0, `sparse source: ${JSON.stringify(sparse.n)}`)
    t.true(fs.statSync(dst).blocks * 512 <= srcBlocks + 64 * 1024, `copy allocates ${fs.statSync(dst).blocks * 512} bytes, source ${srcBlocks}`)
    t.true(fs.readFileSync(dst).equals(fs.readFileSync(holey)), 'sparse copy content')
    fs.rmSync(dst)
    const full = await traced(() => copyWatching(holey, dst, { sparse: false }))
    t.is(full.n.fallocate, 1, `sparse: false: ${JSON.stringify(full.n)}`)
    t.true(full.r >= 100 * MiB, `sparse: false: temp allocated ${full.r} after the first write`)
    t.true(fs.readFileSync(dst).equals(fs.readFileSync(holey)), 'sparse: false copy content')
  },
  true,
)

const LOOP_WHY = WHY ?? skipReason(['root', 'loop', 'cmd:blockdev', 'cmd:mount', 'cmd:mkfs.ext4', 'fs:ext4'])

testIf(
  LOOP_WHY,
  'a file system too small: copyFile and writeFile({ atomic }) fail ENOSPC before any data write (no WRITE submitted), no temp file left, the old destination intact',
  async (t) => {
    const fx = loopFs(4096, 32, 'ext4')
    if (isSkip(fx)) return t.fail(fx.skip)
    t.teardown(() => fx.cleanup())
    const st = fs.statfsSync(fx.dir)
    const free = st.bavail * st.bsize
    const src = path.join(scratch(), 'src')
    const data = patternBuffer(11, free + 4 * MiB)
    fs.writeFileSync(src, data)
    const dst = path.join(fx.dir, 'dst')
    const OLD = patternBuffer(12345, 64 * 1024)
    fs.writeFileSync(dst, OLD)
    const names = fs.readdirSync(fx.dir).sort()
    const check = (what: string, r: { r: unknown; n: Counts }): void => {
      const e = r.r
      t.true(e instanceof DirectIoError, `${what}: ${String(e)}`)
      const d = e as DirectIoError
      t.is(d.code, 'ENOSPC', `${what}: ${d.message}`)
      t.true(d.hint.includes('nothing was written'), `${what}: hint ${d.hint}`)
      t.is(r.n.write, 0, `${what}: WRITE submissions before the ENOSPC: ${JSON.stringify(r.n)}`)
      t.deepEqual(fs.readdirSync(fx.dir).sort(), names, `${what}: a temp file left?`)
      t.true(fs.readFileSync(dst).equals(OLD), `${what}: the old destination changed`)
    }
    check(
      'copyFile',
      await traced(() => copyFile(src, dst).then(() => undefined, (e: unknown) => e)),
    )
    check(
      'writeFile atomic',
      await traced(() => writeFile(dst, data, { atomic: true }).then(() => undefined, (e: unknown) => e)),
    )
    // The space was given back: a copy that fits succeeds, whole.
    const fits = path.join(scratch(), 'fits')
    fs.writeFileSync(fits, patternBuffer(7, Math.floor(free / 2)))
    await copyFile(fits, dst)
    t.true(fs.readFileSync(dst).equals(fs.readFileSync(fits)), 'a copy that fits after the failed ones')
  },
  true,
)

testIf(
  WHY ?? skipReason(['root', 'cmd:mount']),
  'a file system that refuses fallocate (ramfs: EOPNOTSUPP, buffered with direct: prefer): copyFile and writeFile({ atomic }) go on without the reservation, exact',
  async (t) => {
    const fx = ramfsDir()
    if (isSkip(fx)) return t.fail(fx.skip)
    t.teardown(() => fx.cleanup())
    const data = patternBuffer(13, 3 * MiB + 99)
    const src = path.join(scratch(), 'src')
    fs.writeFileSync(src, data)
    const dst = path.join(fx.dir, 'dst')
    const c = await traced(() => copyFile(src, dst, { direct: 'prefer' }))
    t.true(c.n.fallocate >= 1, `the reservation was tried: ${JSON.stringify(c.n)}`)
    t.true(fs.readFileSync(dst).equals(data), 'copy content')
    const w = await traced(() => writeFile(dst, data.subarray(5), { atomic: true, direct: 'prefer' }))
    t.true(w.n.fallocate >= 1, `the reservation was tried: ${JSON.stringify(w.n)}`)
    t.true(fs.readFileSync(dst).equals(data.subarray(5)), 'writeFile content')
    t.deepEqual(fs.readdirSync(fx.dir), ['dst'], 'no temp file left')
  },
  true,
)
