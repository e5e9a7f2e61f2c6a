// Second adversary pass on the eighteenth session's merged work (data trust):
// 1. A failed write stream's cut-back (src/streams/core.ts #cutBack, ownTail) with the failure at
//    every block index and every writeBehind 1..8, Node and web forms, no other writer: the file
//    must end exactly at the first byte not written (error.position), its bytes the stream's.
// 2. writeFile (plain, { atomic }, on a handle) with odd encodings, compared byte for byte with
//    node:fs (the string is now encoded once, before the reservation).
// 3. Many concurrent per-op reads/writes of mixed sizes on a disk file while completions are
//    delivered (crates/napi/src/engine.rs disk_gate): a close() from a continuation, signals
//    aborted from continuations, exceptions thrown in continuations; every byte checked.
// Deterministic: faultfs fails a chosen offset; nothing is timed.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import * as od from '../dist/index.js'
import { faultFs, isSkip } from './helpers/fixtures.js'
import { childRunner } from './helpers/child-result.ts'
import { scratchDirs } from './helpers/scratch.ts'
import { FAULTFS_REASON, testIf } from './helpers/skips.ts'

const scratch = scratchDirs('adv18b')
const here = path.dirname(fileURLToPath(import.meta.url))
const block = 64 * 1024
const BLOCKS = 6

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n)
  let x = seed * 2654435761 + 1
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    b[i] = x >>> 24
  }
  return b
}

/** The data as aligned chunks of a block each (transferChunks takes them). */
function alignedChunks(data: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < data.length; i += block) {
    const c = od.allocAligned(block)
    data.copy(c, 0, i, i + block)
    out.push(c)
  }
  return out
}

/** Node form with transferChunks: the error, after 'close'. */
async function nodeTransferRun(file: string, data: Buffer, writeBehind: number): Promise<unknown> {
  const ws = od.createWriteStream(file, { chunkSize: block, writeBehind, datasync: false, direct: 'prefer', flags: 'r+', transferChunks: true })
  const failed = new Promise<unknown>((resolve) => {
    ws.on('error', resolve)
    ws.on('finish', () => resolve(undefined))
  })
  const closed = new Promise((resolve) => ws.on('close', resolve))
  for (const c of alignedChunks(data)) ws.write(c)
  ws.end()
  const e = await failed
  await closed
  return e
}

/** Web form with transferChunks. */
async function webTransferRun(file: string, data: Buffer, writeBehind: number): Promise<unknown> {
  const w = od.writableWebStream(file, { chunkSize: block, writeBehind, datasync: false, direct: 'prefer', flags: 'r+', transferChunks: true }).getWriter()
  let err: unknown
  try {
    for (const c of alignedChunks(data)) await w.write(c)
    await w.close()
  } catch (e) {
    err = e
  }
  await openedNoMore(file)
  return err
}

/** Node form: the error, after 'close'. */
async function nodeRun(file: string, data: Buffer, writeBehind: number, start = 0): Promise<unknown> {
  const ws = od.createWriteStream(file, { chunkSize: block, writeBehind, datasync: false, direct: 'prefer', flags: 'r+', start })
  const failed = new Promise<unknown>((resolve) => {
    ws.on('error', resolve)
    ws.on('finish', () => resolve(undefined))
  })
  const closed = new Promise((resolve) => ws.on('close', resolve))
  ws.end(data)
  const e = await failed
  await closed
  return e
}

/** Web form: the error; the stream's descriptor is gone when it returns (waited for by loop turns, bounded). */
async function webRun(file: string, data: Buffer, writeBehind: number, start = 0): Promise<unknown> {
  const w = od.writableWebStream(file, { chunkSize: block, writeBehind, datasync: false, direct: 'prefer', flags: 'r+', start }).getWriter()
  let err: unknown
  try {
    await w.write(data)
    await w.close()
  } catch (e) {
    err = e
  }
  await openedNoMore(file)
  return err
}

/** Waits (loop turns, bounded at 10 s: a web stream's teardown after its error has no event) until this process no longer holds `file` open. */
async function openedNoMore(file: string): Promise<void> {
  const until = Date.now() + 10_000
  const holds = (): boolean =>
    fs.readdirSync('/proc/self/fd').some((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === file
      } catch {
        return false
      }
    })
  while (holds() && Date.now() < until) await new Promise((resolve) => setImmediate(resolve))
}

testIf(FAULTFS_REASON, 'a write stream failing EIO at block k (every k, writeBehind 1..8, Node and web, with and without transferChunks) ends the file at the failed block: its bytes the stream\'s, no hole, nothing past (faultfs)', async (t) => {
  const data = pattern(BLOCKS * block, 7)
  const wrong: string[] = []
  t.teardown(() => {
    if (wrong.length > 0) t.log(wrong.join('\n'))
  })
  for (let k = 0; k < BLOCKS; k++) {
    const fx = faultFs({ size: 0, eioAt: [k * block + 100], threads: 4 })
    if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
    try {
      for (let wb = 1; wb <= 8; wb++) {
        for (const form of ['node', 'web', 'node-transfer', 'web-transfer'] as const) {
          fs.truncateSync(fx.file, 0)
          const label = `k=${k} writeBehind=${wb} ${form}`
          const runs = { node: nodeRun, web: webRun, 'node-transfer': nodeTransferRun, 'web-transfer': webTransferRun }
          const e = (await runs[form](fx.file, data, wb)) as { code?: string; position?: number } | undefined
          t.is(e?.code, 'EIO', label)
          t.is(e?.position, k * block, label)
          const size = fs.statSync(fx.file).size
          if (size !== k * block) wrong.push(`${label}: ${size} bytes (error ${e?.code} at ${e?.position})`)
          const fd = fs.openSync(fx.file, 'r')
          try {
            const got = Buffer.alloc(k * block)
            const n = k === 0 ? 0 : fs.readSync(fd, got, 0, k * block, 0)
            t.true(n === k * block && got.equals(data.subarray(0, k * block)), `${label}: the bytes before the failed block are the stream's`)
          } finally {
            fs.closeSync(fd)
          }
        }
      }
    } finally {
      fx.cleanup()
    }
  }
  t.deepEqual(wrong, [], 'each file ends at the failed block')
})

// ---------------------------------------------------------------------------------------
// 2. writeFile with odd encodings, against node:fs

const ENCODED: [BufferEncoding, string][] = [
  ['latin1', 'ÿ€\u0100\u{1f600}abc'],
  ['binary', '\u00ff\u0080\u0000x'],
  ['ascii', 'é\u{1f600}z'],
  ['ucs2', 'a\ud800b\udc00c'],
  ['utf16le', '\udfff\ud83d'],
  ['utf8', 'x\ud800y\udfffz\u{10ffff}'],
  ['base64', 'QUJD=REVG'],
  ['base64', 'QU JD\nREVG=='],
  ['base64', '====QQ'],
  ['base64', 'Q'],
  ['base64url', '-_-_A='],
  ['hex', 'abc'],
  ['hex', 'zz12'],
  ['hex', '12zz34'],
  ['hex', ''],
]

test('writeFile (plain, atomic, on a handle) writes what node:fs writes for odd encodings and strings', async (t) => {
  const dir = scratch()
  for (const [i, [enc, s]] of ENCODED.entries()) {
    const want = path.join(dir, `fs-${i}`)
    fs.writeFileSync(want, s, { encoding: enc })
    const expected = fs.readFileSync(want)
    for (const how of ['plain', 'atomic', 'handle'] as const) {
      const p = path.join(dir, `od-${i}-${how}`)
      // An existing, longer file: the replacement must not keep its tail.
      fs.writeFileSync(p, Buffer.alloc(10_000, 0x77))
      if (how === 'handle') {
        const fh = await od.open(p, 'w')
        try {
          await od.writeFile(fh, s, { encoding: enc })
        } finally {
          await fh.close()
        }
      } else {
        await od.writeFile(p, s, { encoding: enc, atomic: how === 'atomic' })
      }
      t.deepEqual(fs.readFileSync(p), expected, `${enc} ${JSON.stringify(s)} ${how}`)
    }
  }
})

// ---------------------------------------------------------------------------------------
// 3. Concurrent per-op reads and writes during deliveries

test('many concurrent per-op writes then reads of mixed sizes on a disk file, with continuations that throw, abort and close: every byte as written', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'f')
  const sizes = [4096, 8192, 512 * 8, 65536, 4096 * 3, 131072, 4096]
  const regions: { pos: number; len: number; seed: number }[] = []
  let pos = 0
  for (let i = 0; i < 160; i++) {
    const len = sizes[i % sizes.length] as number
    regions.push({ pos, len, seed: i + 1 })
    pos += len
  }
  fs.writeFileSync(file, Buffer.alloc(0))
  const fh = await od.open(file, 'w+')
  t.teardown(() => fh.close().catch(() => {}))
  const align = fh.alignment.offset
  for (const r of regions) t.is(r.pos % align, 0)
  const unhandled: unknown[] = []
  const onUnhandled = (e: unknown): void => {
    unhandled.push(e)
  }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => process.off('unhandledRejection', onUnhandled))
  // Writes: each continuation starts the next of its lane; some throw (caught by their chain).
  const lanes = 8
  const lane = async (l: number): Promise<void> => {
    for (let i = l; i < regions.length; i += lanes) {
      const r = regions[i] as (typeof regions)[number]
      const b = fh.alloc(r.len)
      b.set(pattern(r.len, r.seed))
      await fh
        .write(b, 0, r.len, r.pos)
        .then(({ bytesWritten }) => {
          t.is(bytesWritten, r.len)
          if (i % 5 === 0) throw new Error('thrown in a continuation')
        })
        .catch((e: unknown) => {
          if ((e as Error).message !== 'thrown in a continuation') throw e
        })
    }
  }
  await Promise.all(Array.from({ length: lanes }, (_, l) => lane(l)))
  // Reads: all at once, with signals aborted from other reads' continuations (an aborted read
  // either completed with the right bytes or failed AbortError; never other bytes).
  const controllers = regions.map(() => new AbortController())
  const reads = regions.map(async (r, i) => {
    const b = fh.alloc(r.len)
    try {
      const { bytesRead } = await fh.read(b, { offset: 0, length: r.len, position: r.pos, signal: (controllers[i] as AbortController).signal })
      // Abort a later read from here: it may be in the kernel, in delivery or done.
      if (i % 3 === 0) controllers[(i + 7) % regions.length]?.abort()
      t.is(bytesRead, r.len)
      t.true(Buffer.from(b.buffer, b.byteOffset, r.len).equals(pattern(r.len, r.seed)), `region ${i}`)
      return 'ok'
    } catch (e) {
      t.is((e as { name?: string }).name, 'AbortError', `region ${i}: ${String(e)}`)
      return 'aborted'
    }
  })
  const outcomes = await Promise.all(reads)
  t.true(outcomes.includes('ok'))
  // A close() from a continuation while other reads are being delivered: each read either has
  // its bytes or a typed error; the close resolves.
  let closing: Promise<void> | undefined
  const last = regions.slice(0, 40).map(async (r, i) => {
    const b = fh.alloc(r.len)
    try {
      const { bytesRead } = await fh.read(b, 0, r.len, r.pos)
      if (i === 3) closing = fh.close()
      t.is(bytesRead, r.len)
      t.true(Buffer.from(b.buffer, b.byteOffset, r.len).equals(pattern(r.len, r.seed)), `region ${i} (close)`)
    } catch (e) {
      t.true(e instanceof od.DirectIoError, `region ${i}: ${String(e)}`)
    }
  })
  await Promise.all(last)
  await closing
  t.true(fh.closed)
  t.deepEqual(unhandled, [])
  // What is on disk, through node:fs.
  const all = fs.readFileSync(file)
  for (const [i, r] of regions.entries()) t.true(all.subarray(r.pos, r.pos + r.len).equals(pattern(r.len, r.seed)), `on disk ${i}`)
})

// A stream that starts past the file's end and whose first block fails wrote nothing: as with
// node:fs (whose failed write leaves the file as it was), the file keeps its size; the gap
// between its end and `start` is nobody's data.
testIf(FAULTFS_REASON, 'a write stream starting past the end whose first block fails leaves the file at its size, not grown to `start` (faultfs)', async (t) => {
  const orig = 1000
  const start = 4 * block
  const fx = faultFs({ size: orig, eioAt: [start + 100], threads: 4 })
  if (isSkip(fx)) return t.fail(`the fixture failed although its preconditions hold: ${fx.skip}`)
  t.teardown(() => fx.cleanup())
  const before = Buffer.alloc(orig)
  const fd0 = fs.openSync(fx.file, 'r')
  t.is(fs.readSync(fd0, before, 0, orig, 0), orig)
  fs.closeSync(fd0)
  for (const wb of [1, 4]) {
    for (const form of ['node', 'web'] as const) {
      fs.truncateSync(fx.file, orig)
      const data = pattern(4 * block, 3)
      const e = (await (form === 'node' ? nodeRun : webRun)(fx.file, data, wb, start)) as { code?: string; position?: number } | undefined
      t.is(e?.code, 'EIO')
      t.is(e?.position, start)
      t.is(fs.statSync(fx.file).size, orig, `${form} writeBehind=${wb}: the file grew to the stream's start`)
      const got = Buffer.alloc(orig)
      const fd = fs.openSync(fx.file, 'r')
      t.is(fs.readSync(fd, got, 0, orig, 0), orig)
      fs.closeSync(fd)
      t.deepEqual(got, before)
    }
  }
})

// ---------------------------------------------------------------------------------------
// 4. A write-only stream overwriting a file in place, its file renamed (log rotation) and
//    another created at its name before its end: the last block's bytes after the data are
//    read back to be kept (finish, readBack). They must come from the stream's own file (the
//    renamed one), as node:fs's stream writes only its own bytes; not from the file now at the
//    name (or zeros where nothing is there now).
for (const form of ['node', 'web'] as const) {
  for (const after of ['replaced', 'unlinked-name'] as const) {
    test(`${form} write stream, write-only flags overwriting in place, its file renamed (${after}) before its end: the renamed file keeps its own bytes after the data`, async (t) => {
      const dir = scratch()
      const file = path.join(dir, 'log')
      const moved = path.join(dir, 'log.1')
      const orig = pattern(3 * block, 11)
      fs.writeFileSync(file, orig)
      const data = pattern(1000, 12)
      const flags = fs.constants.O_WRONLY
      const rename = (): void => {
        fs.renameSync(file, moved)
        if (after === 'replaced') fs.writeFileSync(file, pattern(3 * block, 13))
      }
      if (form === 'node') {
        const ws = od.createWriteStream(file, { flags, chunkSize: block })
        const done = new Promise<unknown>((resolve) => {
          ws.on('error', resolve)
          ws.on('close', () => resolve(undefined))
        })
        await new Promise((resolve) => ws.write(data, resolve))
        rename()
        ws.end()
        t.is(await done, undefined)
      } else {
        const w = od.writableWebStream(file, { flags, chunkSize: block }).getWriter()
        await w.write(data)
        rename()
        await w.close()
      }
      const want = Buffer.from(orig)
      data.copy(want, 0)
      const got = fs.readFileSync(moved)
      t.is(got.length, want.length)
      const firstBad = got.findIndex((b, i) => b !== want[i])
      t.is(firstBad, -1, `the renamed file differs from byte ${firstBad}`)
    })
  }
}

// ---------------------------------------------------------------------------------------
// 5. Replaces with the descriptor table nearly full (EMFILE at every step): each call either
//    replaces the destination and resolves, or fails with the destination as it was, or (the
//    rename done, the directory's sync refused) fails saying the destination was replaced; never
//    a temp file left. Was: EMFILE from the directory's sync after the rename, with nothing
//    saying the destination already held the new data (a caller retrying or restoring from it
//    took the old content as still there).
test('writeFile({ atomic }) and copyFile with EMFILE at every step: replaced and resolved, or untouched and failed, or failed saying it was replaced; no temp left', async (t) => {
  const dir = scratch()
  const run = childRunner(path.join(here, 'adversary-s18b'))
  const r = await run<{ out: { op: string; free: number; err?: string; state: string; temps: string[] }[] }>('emfile.mjs', [dir, path.join(here, '..', 'dist', 'index.js')], { argv: ['prlimit', '--nofile=64', process.execPath] })
  t.true(r.out.length >= 39)
  for (const o of r.out) {
    const label = `${o.op} with ${o.free} descriptors free: ${o.err ?? 'resolved'}, destination ${o.state}`
    t.deepEqual(o.temps, [], `${label}: temp files left`)
    if (o.err === undefined) t.is(o.state, 'new', label)
    else if (o.err.endsWith('(replaced)')) t.is(o.state, 'new', label)
    else t.is(o.state, 'old', label)
  }
  t.true(r.out.some((o) => o.err !== undefined), 'EMFILE was reached')
})

// ---------------------------------------------------------------------------------------
// 6. The temp file's directory moved twice during the write (dir -> dir.1 -> dir.2), with or
//    without a new directory made at the old name: the replace fails ENOENT, and no temp file is
//    left in any of the three directories; the file at dir.2 is the old content.
for (const op of ['writeFile', 'copyFile'] as const) {
  for (const newDir of [false, true]) {
    test(`${op}: the destination's directory moved twice during the write${newDir ? ', a new one made at its name' : ''}: ENOENT, no temp file anywhere, the moved destination as it was`, async (t) => {
      const root = scratch()
      const dir = path.join(root, 'd')
      fs.mkdirSync(dir)
      const dst = path.join(dir, 'dst')
      const old = pattern(5000, 21)
      fs.writeFileSync(dst, old)
      const src = path.join(root, 'src')
      const data = pattern(4 * 1024 * 1024, 22)
      fs.writeFileSync(src, data)
      let moved = false
      const move = (): void => {
        if (moved) return
        moved = true
        fs.renameSync(dir, `${dir}.1`)
        fs.renameSync(`${dir}.1`, `${dir}.2`)
        if (newDir) fs.mkdirSync(dir)
      }
      let err: unknown
      try {
        if (op === 'writeFile') {
          const chunks = async function* (): AsyncGenerator<Buffer> {
            for (let i = 0; i < 4; i++) {
              if (i === 2) move()
              yield data.subarray(i * 1024 * 1024, (i + 1) * 1024 * 1024)
            }
          }
          await od.writeFile(dst, chunks(), { atomic: true })
        } else {
          await od.copyFile(src, dst, { chunkSize: 256 * 1024, onProgress: ({ bytesDone }) => (bytesDone > 0 ? move() : undefined) })
        }
      } catch (e) {
        err = e
      }
      t.true(moved, 'the directory was moved during the write')
      t.is((err as { code?: string } | undefined)?.code, 'ENOENT', String(err))
      for (const d of [dir, `${dir}.1`, `${dir}.2`]) {
        const names = fs.existsSync(d) ? fs.readdirSync(d) : []
        t.deepEqual(
          names.filter((n) => n !== 'dst'),
          [],
          `${d} holds a temp file`,
        )
      }
      t.deepEqual(fs.readFileSync(path.join(`${dir}.2`, 'dst')), old)
    })
  }
}

// ---------------------------------------------------------------------------------------
// 7. Destroyed (not failed) streams starting past the end of a file on a disk filesystem (where
//    the stream reserves ahead with fallocate): whenever the destroy lands, the file ends where
//    its bytes confirmed in order end, or at its old size when none was: never at `start`, nor
//    at a reservation.
test('a write stream starting past the end, destroyed with 0..5 chunks accepted (in flight): the file ends at start + bytesWritten, or at its old size when nothing was written', async (t) => {
  const dir = scratch()
  const orig = pattern(1000, 31)
  for (let after = 0; after <= 5; after++) {
    for (const wb of [1, 4]) {
      const file = path.join(dir, `f-${after}-${wb}`)
      fs.writeFileSync(file, orig)
      const start = 16 * block
      const ws = od.createWriteStream(file, { flags: 'r+', start, chunkSize: block, writeBehind: wb, datasync: false })
      const closed = new Promise((resolve) => ws.on('close', resolve))
      ws.on('error', () => {})
      await new Promise((resolve) => ws.on('ready', resolve))
      // `after` chunks accepted (not waited for: their writes in flight or queued), then destroyed.
      for (let i = 0; i < after; i++) ws.write(pattern(block, 40 + i))
      ws.destroy()
      await closed
      const written = ws.bytesWritten
      const size = fs.statSync(file).size
      const label = `destroyed after ${after} chunks, writeBehind ${wb}: ${written} bytes written`
      t.is(size, written > 0 ? start + written : orig.length, label)
      t.deepEqual(fs.readFileSync(file).subarray(0, orig.length), orig, label)
    }
  }
})

// ---------------------------------------------------------------------------------------
// 8. A write-only stream overwriting the start of a file its user may write but not read (mode
//    0200, as another user): node:fs's stream writes only its bytes, the rest of the file stays.
//    odirect's last block needs the bytes after the data in its block, which it cannot read
//    back: it wrote its padding (zeros) over them. Now that block's data goes through a
//    buffered write-only descriptor of its own file instead: only the data's bytes are written.
for (const form of ['node', 'web'] as const) {
  test(`${form} write stream with write-only flags on a file its user cannot read (mode 0200, as nobody): the bytes after the data stay (was: zeroed up to the block's end)`, async (t) => {
    const dir = scratch()
    fs.chmodSync(dir, 0o777)
    const file = path.join(dir, 'f')
    const orig = pattern(3 * block, 51)
    fs.writeFileSync(file, orig)
    fs.chownSync(file, 65534, 65534)
    fs.chmodSync(file, 0o200)
    const run = childRunner(here + '/adversary-s18b')
    for (const len of [1000, block + 4097]) {
      const r = await run<{ err: string | null }>('writeonly.mjs', [path.join(here, '..', 'dist', 'index.js'), file, String(len), form], { argv: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath] })
      t.is(r.err, null)
      const want = Buffer.from(orig)
      want.fill(0x44, 0, len)
      const got = fs.readFileSync(file)
      t.is(got.length, want.length)
      const firstBad = got.findIndex((b, i) => b !== want[i])
      t.is(firstBad, -1, `${len} bytes written: the file differs from byte ${firstBad}`)
      fs.writeFileSync(file, orig)
    }
  })
}

// ---------------------------------------------------------------------------------------
// 9. A worker terminated while its per-op disk reads and writes start one another from their
//    continuations (each op started during the delivery of the one before: the disk gate's
//    case): the worker exits, and this thread's I/O on the same file afterwards reads what the
//    worker's writes confirmed before the termination, byte for byte.
test('a worker terminated mid-delivery of chained per-op disk reads and writes exits, and the file holds every write it confirmed', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'w')
  const n = 64
  fs.writeFileSync(file, Buffer.alloc(n * 4096))
  const src = `
    const { parentPort, workerData } = require('node:worker_threads')
    import(workerData.dist).then(async (od) => {
      const fh = await od.open(workerData.file, 'r+')
      const lanes = []
      for (let l = 0; l < 2; l++) lanes.push((async () => {
        const b = fh.alloc(4096)
        const r = fh.alloc(4096)
        for (let round = 0; ; round++) {
          for (let i = l; i < ${n}; i += 2) {
            b.fill((round * 7 + i) & 0xff)
            await fh.write(b, 0, 4096, i * 4096)
            parentPort.postMessage({ i, v: (round * 7 + i) & 0xff })
            await fh.read(r, 0, 4096, i * 4096)
            if (!r.every((x) => x === b[0])) parentPort.postMessage({ bad: i })
          }
        }
      })())
      await Promise.all(lanes)
    })
  `
  const { Worker } = await import('node:worker_threads')
  const w = new Worker(src, { eval: true, workerData: { dist: path.join(here, '..', 'dist', 'index.js'), file } })
  // What each confirmed write put at its block (the last confirmed per block).
  const confirmed = new Map<number, number>()
  const bad: number[] = []
  let count = 0
  const exited = new Promise<number>((resolve) => w.on('exit', resolve))
  await new Promise<void>((resolve) => {
    w.on('message', (m: { i: number; v: number; bad?: number }) => {
      if (m.bad !== undefined) return bad.push(m.bad)
      confirmed.set(m.i, m.v)
      if (++count === 300) {
        void w.terminate()
        resolve()
      }
    })
  })
  t.is(await exited, 1)
  t.true(count >= 300)
  t.deepEqual(bad, [], 'the worker read back other bytes than it wrote')
  const fh = await od.open(file, 'r')
  try {
    const b = fh.alloc(n * 4096)
    const { bytesRead } = await fh.read(b, 0, n * 4096, 0)
    t.is(bytesRead, n * 4096)
    for (const [i, v] of confirmed) {
      const blockBytes = Buffer.from(b.buffer, b.byteOffset + i * 4096, 4096)
      // A later write of that block may have landed after its message was sent (the termination
      // ends the worker between a write's completion and its message): v or the next round's value.
      const next = (v + 7) & 0xff
      const first = blockBytes[0] as number
      t.true((first === v || first === next) && blockBytes.every((x) => x === first), `block ${i}: ${first}, confirmed ${v}`)
    }
  } finally {
    await fh.close()
  }
})
