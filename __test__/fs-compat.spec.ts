// fs/promises compatibility on Node (ava): the documentation snippets of
// __test__/conformance/fscompat-cases.ts (also runnable under Bun, Deno and Node 22 by the
// conformance runner), the whole-file helpers' edges, and sparse copies (allocated blocks before
// and after, via stat.blocks).
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

import test from 'ava'
import { scratchDirs } from './helpers/scratch.ts'

import * as od from '../dist/index.js'
import { fsCompatCases } from './conformance/fscompat-cases.ts'
import { registerCases } from './helpers/avat.ts'

const MiB = 1024 * 1024

await registerCases(fsCompatCases)

const scratch = scratchDirs('fscompat')

test('copyFile keeps holes: a 100 MiB file with 1 MiB of data is copied into ~1 MiB of blocks', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'sparse.bin')
  const dst = path.join(dir, 'copy.bin')
  const data = randomBytes(MiB)
  const fd = fs.openSync(src, 'w')
  fs.writeSync(fd, data, 0, data.length, 50 * MiB)
  fs.ftruncateSync(fd, 100 * MiB)
  fs.closeSync(fd)
  const before = fs.statSync(src)
  t.true(before.blocks * 512 <= 2 * MiB, `the source is sparse here (${before.blocks} blocks)`)
  const r = await od.copyFile(src, dst, { verify: true })
  const after = fs.statSync(dst)
  t.is(after.size, 100 * MiB)
  t.is(r.bytes, 100 * MiB)
  t.is(r.bytesWritten, MiB)
  t.true(after.blocks * 512 <= before.blocks * 512 + 64 * 1024, `copy allocates ${after.blocks * 512} bytes, source ${before.blocks * 512}`)
  const back = fs.readFileSync(dst)
  t.true(back.subarray(50 * MiB, 51 * MiB).equals(data))
  t.true(back.subarray(0, 50 * MiB).every((x) => x === 0) && back.subarray(51 * MiB).every((x) => x === 0))
  // sparse: false writes every block.
  const full = path.join(dir, 'full.bin')
  const r2 = await od.copyFile(src, full, { sparse: false })
  t.is(r2.bytesWritten, 100 * MiB)
  t.true(fs.statSync(full).blocks * 512 >= 100 * MiB)
})

test('copyFile: any length, progress, same file refused (also through a hard link), abort removes the temp file', async (t) => {
  const dir = scratch()
  const src = path.join(dir, 'odd.bin')
  const data = randomBytes(3 * MiB + 12345)
  fs.writeFileSync(src, data)
  const seen: od.CopyProgress[] = []
  const dst = path.join(dir, 'odd.copy')
  await od.copyFile(src, dst, { chunkSize: 256 * 1024, onProgress: (p) => seen.push(p) })
  t.true(fs.readFileSync(dst).equals(data))
  t.true(seen.length >= 4)
  t.is(seen.at(-1)?.bytesDone, data.length)
  fs.linkSync(src, path.join(dir, 'link.bin'))
  await t.throwsAsync(od.copyFile(src, path.join(dir, 'link.bin')), { instanceOf: od.DirectIoError, code: 'ERR_ODIRECT_SAME_FILE' })
  const ac = new AbortController()
  ac.abort()
  await t.throwsAsync(od.copyFile(src, path.join(dir, 'aborted.bin'), { signal: ac.signal }), { code: 'ABORT_ERR' })
  t.deepEqual(fs.readdirSync(dir).sort(), ['link.bin', 'odd.bin', 'odd.copy'])
  await t.throwsAsync(od.copyFile(src, dst, 4), { instanceOf: od.DirectIoError, code: 'ERR_ODIRECT_UNSUPPORTED' })
})

test('writeFile / readFile: 0 bytes, unaligned lengths, iterables, r+ keeps the tail, atomic wx', async (t) => {
  const dir = scratch()
  const f = path.join(dir, 'f.bin')
  for (const n of [0, 1, 4095, 4096, 4097, 1_000_003]) {
    const data = randomBytes(n)
    await od.writeFile(f, data)
    t.is(fs.statSync(f).size, n)
    t.true((await od.readFile(f)).equals(data), `${n} bytes`)
  }
  await od.writeFile(f, (async function* () {
    yield 'hello '
    yield Buffer.from('world')
  })())
  t.is(await od.readFile(f, 'utf8'), 'hello world')
  fs.writeFileSync(f, Buffer.alloc(10_000, 1))
  await od.writeFile(f, Buffer.alloc(100, 2), { flag: 'r+' })
  const back = fs.readFileSync(f)
  t.is(back.length, 10_000)
  t.true(back.subarray(0, 100).every((x) => x === 2) && back.subarray(100).every((x) => x === 1))
  await t.throwsAsync(od.writeFile(f, 'x', { atomic: true, flag: 'wx' }), { code: 'EEXIST' })
  t.deepEqual(fs.readdirSync(dir), ['f.bin'])
  await t.throwsAsync(od.writeFile(f, 42 as never), { instanceOf: od.DirectIoError, code: 'ERR_INVALID_ARG_TYPE' })
  await t.throwsAsync(od.readFile(f, { encoding: Object.create(null) as never }), { instanceOf: od.DirectIoError, code: 'ERR_INVALID_ARG_VALUE' })
})

test('open() refuses odd option values and paths with coded errors whose messages never throw', async (t) => {
  const dir = scratch()
  const file = path.join(dir, 'o.bin')
  const revoked = Proxy.revocable({}, {})
  revoked.revoke()
  const oddValues: unknown[] = [Object.create(null), revoked.proxy, new Proxy({}, { get: () => { throw new Error('trap') } }), Symbol('s'), 10n, () => 1, new Uint8Array(1)]
  for (const v of oddValues) {
    for (const key of ['direct', 'backend', 'dsync', 'mode']) {
      const e = await t.throwsAsync(od.open(file, 'w', { [key]: v } as never), { instanceOf: od.DirectIoError })
      t.true(typeof e?.code === 'string' && e.code.startsWith('ERR_'), `${key}: ${String(e?.code)}`)
    }
    // As the options object itself: anything but an object (one without a prototype is fine).
    if (v !== oddValues[0] && v !== oddValues[2]) await t.throwsAsync(od.open(file, 'w', v as never), { instanceOf: od.DirectIoError })
    await t.throwsAsync(od.open(v as never, 'r'), { instanceOf: od.DirectIoError })
  }
  const detached = new Uint8Array(new ArrayBuffer(8))
  structuredClone(detached.buffer, { transfer: [detached.buffer] })
  await t.throwsAsync(od.open(detached as never, 'r'), { instanceOf: od.DirectIoError, code: 'ERR_INVALID_ARG_VALUE' })
  await t.throwsAsync(od.open(new URL('file:///tmp/%E0%A4%A'), 'r'), { code: 'ERR_INVALID_URL' })
  await t.throwsAsync(od.open(new URL('file:///tmp/a%2Fb'), 'r'), { code: 'ERR_INVALID_FILE_URL_PATH' })
  t.false(fs.existsSync(file))
})
