// fs/promises compatibility cases: snippets written from Node's `fs/promises` documentation
// (FileHandle read/write/readv/writev forms, stat, readFile/writeFile/copyFile,
// createReadStream/createWriteStream options, the FileHandle stream methods), run against odirect
// with only the import changed: `fsp` below is odirect where the docs say `node:fs/promises`.
// Sizes and positions are block multiples (direct I/O's rule); plain `Buffer.alloc` buffers work
// (odirect copies them through aligned memory). What direct I/O refuses is checked as a typed
// error with a hint ("refused" rows of README's "Coming from fs/promises" table).
//
// Runtime-neutral (Node 20/22, Bun, Deno): run by __test__/fs-compat.spec.ts on Node; the
// conformance runner can add them with `import { fsCompatCases } from './fscompat-cases.ts'`.
import { Buffer } from 'node:buffer'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import type { Case } from './cases.ts'

const KiB = 1024

/**
 * Plain `Buffer.alloc` buffers (any memory address) are copied through aligned memory by the
 * engine that exports `engineInfo` (issues 9+10); before it, only aligned memory works.
 */
const needsBounce = ({ od }: { od: object }): string | undefined =>
  'engineInfo' in od ? undefined : 'plain (unaligned) Buffers need the bounce-buffer engine (engineInfo not exported yet)'

async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of stream) parts.push(typeof c === 'string' ? Buffer.from(c) : Buffer.from(c as Uint8Array))
  return Buffer.concat(parts)
}

export const fsCompatCases: Case[] = [
  {
    name: 'fs/promises docs: filehandle.read(buffer, offset, length, position) resolves { bytesRead, buffer }',
    precheck: needsBounce,
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'sample.bin')
      const data = randomBytes(16 * KiB)
      fs.writeFileSync(file, data)
      const filehandle = await fsp.open(file, 'r')
      try {
        const buffer = Buffer.alloc(8 * KiB)
        const { bytesRead, buffer: same } = await filehandle.read(buffer, 0, 4 * KiB, 8 * KiB)
        t.is(bytesRead, 4 * KiB)
        t.true(same === buffer, 'the same buffer comes back')
        t.true(buffer.subarray(0, 4 * KiB).equals(data.subarray(8 * KiB, 12 * KiB)), 'read at position 8192 into offset 0')
        // offset 4096 in the buffer (fs semantics, not a position)
        const r2 = await filehandle.read(buffer, 4 * KiB, 4 * KiB, 0)
        t.is(r2.bytesRead, 4 * KiB)
        t.true(buffer.subarray(4 * KiB).equals(data.subarray(0, 4 * KiB)))
      } finally {
        await filehandle.close()
      }
    },
  },
  {
    name: 'fs/promises docs: filehandle.read(buffer, { offset, length, position }) and read({ buffer, position })',
    precheck: needsBounce,
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'sample.bin')
      const data = randomBytes(16 * KiB)
      fs.writeFileSync(file, data)
      const filehandle = await fsp.open(file, 'r')
      try {
        const buf = Buffer.alloc(4 * KiB)
        const a = await filehandle.read(buf, { position: 4 * KiB })
        t.is(a.bytesRead, 4 * KiB)
        t.true(a.buffer.equals(data.subarray(4 * KiB, 8 * KiB)))
        const b = await filehandle.read({ buffer: Buffer.alloc(8 * KiB), length: 4 * KiB, offset: 4 * KiB, position: 12 * KiB })
        t.is(b.bytesRead, 4 * KiB)
        t.true(b.buffer.subarray(4 * KiB).equals(data.subarray(12 * KiB)))
      } finally {
        await filehandle.close()
      }
    },
  },
  {
    name: 'fs/promises docs: position null reads from the current position, which advances; read() allocates 16 KiB',
    precheck: needsBounce,
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'seq.bin')
      const data = randomBytes(32 * KiB)
      fs.writeFileSync(file, data)
      const filehandle = await fsp.open(file, 'r')
      try {
        const first = await filehandle.read(Buffer.alloc(4 * KiB), 0, 4 * KiB, null)
        const second = await filehandle.read(Buffer.alloc(4 * KiB), 0, 4 * KiB, null)
        t.true(first.buffer.equals(data.subarray(0, 4 * KiB)))
        t.true(second.buffer.equals(data.subarray(4 * KiB, 8 * KiB)))
        const { bytesRead, buffer } = await filehandle.read()
        t.is(buffer.byteLength, 16 * KiB)
        t.is(bytesRead, 16 * KiB)
        t.true(Buffer.from(buffer.buffer, buffer.byteOffset, bytesRead).equals(data.subarray(8 * KiB, 24 * KiB)))
      } finally {
        await filehandle.close()
      }
    },
  },
  {
    name: 'fs/promises docs: filehandle.write(buffer, offset, length, position) writes at position, resolves { bytesWritten, buffer }',
    precheck: needsBounce,
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'w.bin')
      fs.writeFileSync(file, Buffer.alloc(16 * KiB, 1))
      const filehandle = await fsp.open(file, 'r+')
      try {
        const b = Buffer.alloc(8 * KiB, 7)
        const { bytesWritten, buffer } = await filehandle.write(b, 0, 4 * KiB, 8 * KiB)
        t.is(bytesWritten, 4 * KiB)
        t.true(buffer === b)
        const r = await filehandle.write(b, { offset: 4 * KiB, length: 4 * KiB, position: 0 })
        t.is(r.bytesWritten, 4 * KiB)
      } finally {
        await filehandle.close()
      }
      const back = fs.readFileSync(file)
      t.true(back.subarray(0, 4 * KiB).every((x) => x === 7), 'options form at 0')
      t.true(back.subarray(4 * KiB, 8 * KiB).every((x) => x === 1), 'untouched')
      t.true(back.subarray(8 * KiB, 12 * KiB).every((x) => x === 7), 'positional form at 8192, not at 0')
      t.true(back.subarray(12 * KiB).every((x) => x === 1), 'untouched')
    },
  },
  {
    name: 'fs/promises docs: an unaligned position or length is refused with a hint, never written elsewhere',
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'u.bin')
      fs.writeFileSync(file, Buffer.alloc(8 * KiB, 1))
      const filehandle = await fsp.open(file, 'r+')
      try {
        const e = (await t.throwsAsync(filehandle.write(Buffer.alloc(4 * KiB, 9), 0, 4 * KiB, 100), { code: 'ERR_ODIRECT_ALIGNMENT' })) as { hint: string }
        t.true(e.hint.length > 0, 'a hint says the direct-I/O way')
        await t.throwsAsync(filehandle.write('hello', 0), { code: 'ERR_ODIRECT_ALIGNMENT' })
        await t.throwsAsync(filehandle.read(Buffer.alloc(100), 0, 100, 0), { code: 'ERR_ODIRECT_ALIGNMENT' })
      } finally {
        await filehandle.close()
      }
      t.true(fs.readFileSync(file).every((x) => x === 1), 'nothing was written')
    },
  },
  {
    name: 'fs/promises docs: readv / writev(buffers, position) resolve { bytesRead | bytesWritten, buffers }',
    precheck: needsBounce,
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'v.bin')
      const filehandle = await fsp.open(file, 'w+')
      try {
        const parts = [Buffer.alloc(4 * KiB, 1), Buffer.alloc(8 * KiB, 2)]
        const w = await filehandle.writev(parts, 4 * KiB)
        t.is(w.bytesWritten, 12 * KiB)
        t.true(w.buffers === parts)
        const back = [Buffer.alloc(8 * KiB), Buffer.alloc(4 * KiB)]
        const r = await filehandle.readv(back, 4 * KiB)
        t.is(r.bytesRead, 12 * KiB)
        t.true(back[0]!.subarray(0, 4 * KiB).every((x) => x === 1) && back[0]!.subarray(4 * KiB).every((x) => x === 2) && back[1]!.every((x) => x === 2))
      } finally {
        await filehandle.close()
      }
    },
  },
  {
    name: 'fs/promises docs: filehandle.stat() is an fs.Stats (isFile, mtime Date), { bigint: true } a BigIntStats',
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 's.bin')
      fs.writeFileSync(file, Buffer.alloc(12345))
      const filehandle = await fsp.open(file, 'r')
      try {
        const stats = await filehandle.stat()
        t.true(stats.isFile() && !stats.isDirectory())
        t.is(stats.size, 12345)
        t.true(stats.mtime instanceof Date)
        const big = await filehandle.stat({ bigint: true })
        t.is(big.size, 12345n)
        t.is(typeof big.mtimeNs, 'bigint')
      } finally {
        await filehandle.close()
      }
    },
  },
  {
    name: 'fs/promises docs: readFile(path, { encoding }) / readFile(path, encoding) / readFile(filehandle)',
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'r.txt')
      const text = 'Hello Node.js\n'.repeat(999)
      fs.writeFileSync(file, text)
      t.is(await fsp.readFile(file, { encoding: 'utf8' }), text)
      t.is(await fsp.readFile(file, 'utf8'), text)
      const buf = await fsp.readFile(file)
      t.true(Buffer.isBuffer(buf) && buf.toString() === text)
      const filehandle = await fsp.open(file, 'r')
      try {
        t.is((await fsp.readFile(filehandle)).toString(), text)
      } finally {
        await filehandle.close()
      }
      // The AbortSignal example: an aborted read rejects with an AbortError.
      const controller = new AbortController()
      const { signal } = controller
      const promise = fsp.readFile(file, { signal })
      controller.abort()
      const e = (await t.throwsAsync(promise)) as { name: string }
      t.is(e.name, 'AbortError')
      t.is(fs.readdirSync(dir).length, 1)
    },
  },
  {
    name: 'fs/promises docs: writeFile(file, data, options) with a Uint8Array, a string and an encoding, any length',
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'message.txt')
      const data = new Uint8Array(Buffer.from('Hello Node.js'))
      await fsp.writeFile(file, data)
      t.is(fs.readFileSync(file, 'utf8'), 'Hello Node.js')
      await fsp.writeFile(file, '68656c6c6f', { encoding: 'hex' })
      t.is(fs.readFileSync(file, 'utf8'), 'hello')
      await fsp.writeFile(file, 'x'.repeat(10_000), 'utf8')
      t.is(fs.statSync(file).size, 10_000)
      await fsp.writeFile(file, 'atomic', { atomic: true, mode: 0o600 })
      t.is(fs.readFileSync(file, 'utf8'), 'atomic')
      t.deepEqual(fs.readdirSync(dir), ['message.txt'])
      await t.throwsAsync(fsp.writeFile(file, 'no', { flag: 'wx' }), { code: 'EEXIST' })
    },
  },
  {
    name: 'fs/promises docs: copyFile(src, dest) and copyFile(src, dest, constants.COPYFILE_EXCL)',
    async fn(t, { od: fsp, dir }) {
      const src = path.join(dir, 'source.txt')
      const dst = path.join(dir, 'destination.txt')
      const data = randomBytes(100_001)
      fs.writeFileSync(src, data)
      await fsp.copyFile(src, dst)
      t.true(fs.readFileSync(dst).equals(data))
      await t.throwsAsync(fsp.copyFile(src, dst, fs.constants.COPYFILE_EXCL), { code: 'EEXIST' })
      await t.throwsAsync(fsp.copyFile(src, src), { code: 'ERR_ODIRECT_SAME_FILE' })
      t.deepEqual(fs.readdirSync(dir).sort(), ['destination.txt', 'source.txt'])
    },
  },
  {
    name: 'fs docs: createReadStream(path, { start: 90, end: 99 }), { encoding }, { highWaterMark }',
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'sample.txt')
      const data = Buffer.from('abcdefghijklmnopqrstuvwxyz'.repeat(400))
      fs.writeFileSync(file, data)
      t.true((await collect(fsp.createReadStream(file, { start: 90, end: 99 }))).equals(data.subarray(90, 100)))
      const chunks: unknown[] = []
      for await (const c of fsp.createReadStream(file, { encoding: 'utf8', highWaterMark: 4096 })) chunks.push(c)
      t.true(chunks.every((c) => typeof c === 'string'))
      t.is(chunks.join(''), data.toString())
    },
  },
  {
    name: "fs docs: createWriteStream(path, { flags: 'r+', start }) modifies in place; { flags, mode }",
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'inplace.bin')
      fs.writeFileSync(file, Buffer.alloc(16 * KiB, 1))
      await pipeline(Readable.from([Buffer.alloc(4 * KiB, 2)]), fsp.createWriteStream(file, { flags: 'r+', start: 4 * KiB }))
      const back = fs.readFileSync(file)
      t.is(back.length, 16 * KiB)
      t.true(back.subarray(4 * KiB, 8 * KiB).every((x) => x === 2) && back.subarray(8 * KiB).every((x) => x === 1))
      const created = path.join(dir, 'created.txt')
      await pipeline(Readable.from(['some text']), fsp.createWriteStream(created, { flags: 'w', mode: 0o640 }))
      t.is(fs.readFileSync(created, 'utf8'), 'some text')
      // A start that is not a block multiple is refused (fs would write there).
      await t.throwsAsync(pipeline(Readable.from(['x']), fsp.createWriteStream(created, { flags: 'r+', start: 100 })), { code: 'ERR_ODIRECT_ALIGNMENT' })
    },
  },
  {
    name: 'fs/promises docs: filehandle.createReadStream / createWriteStream / readableWebStream',
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'fh-streams.bin')
      const data = randomBytes(300_000)
      const w = await fsp.open(file, 'w')
      await pipeline(Readable.from([data]), w.createWriteStream())
      const fd = await fsp.open(file, 'r')
      t.true((await collect(fd.createReadStream({ start: 90, end: 99 }))).equals(data.subarray(90, 100)))
      const file2 = await fsp.open(file, 'r')
      try {
        t.true((await collect(file2.readableWebStream() as unknown as AsyncIterable<unknown>)).equals(data))
      } finally {
        await file2.close()
      }
    },
  },
  {
    name: 'fs/promises docs: open(URL) and open(Buffer) paths; bad URLs have Node\'s codes',
    async fn(t, { od: fsp, dir }) {
      const file = path.join(dir, 'url.bin')
      fs.writeFileSync(file, Buffer.alloc(4 * KiB, 3))
      const a = await fsp.open(new URL(`file://${file}`), 'r')
      t.is(a.path, file)
      await a.close()
      const b = await fsp.open(Buffer.from(file), 'r')
      t.is(b.path, file)
      await b.close()
      await t.throwsAsync(fsp.open(new URL('http://example.com/x'), 'r'), { code: 'ERR_INVALID_URL_SCHEME' })
      await t.throwsAsync(fsp.open(new URL('file://otherhost/x'), 'r'), { code: 'ERR_INVALID_FILE_URL_HOST' })
    },
  },
]
