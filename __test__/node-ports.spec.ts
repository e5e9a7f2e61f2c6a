// Node's own FileHandle and stream tests (nodejs/node test/parallel: fs/read-stream-file-handle,
// fs/promises-file-handle-writeFile, fs/promises-file-handle-readFile, fs/read-stream-double-close,
// fs/promises-file-handle-stream), re-expressed for odirect: the same scenarios and assertions,
// run with buffered I/O (direct: 'off') and with O_DIRECT (direct: 'require', where the scenario's
// sizes and positions can be aligned). Where odirect refuses what Node does, the test asserts the
// refusal and the README ("Coming from fs/promises") says why.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { buffer as consume } from 'node:stream/consumers'
import { finished } from 'node:stream/promises'

import test from 'ava'

import * as od from '../dist/index.js'

const dirs: string[] = []
test.after.always(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
})
function scratch(): string {
  const d = fs.mkdtempSync('/var/tmp/odirect-nodeports-')
  dirs.push(d)
  return d
}

type Direct = 'off' | 'require'
const MODES: Direct[] = ['off', 'require']
const tick = (n: number, fn: () => void): void => {
  if (n <= 0) fn()
  else setImmediate(() => tick(n - 1, fn))
}

/** Resolves once `emitter` emitted `event` (and records that it did). */
function seen(emitter: NodeJS.EventEmitter, event: string): { fired: () => boolean; done: Promise<void> } {
  let fired = false
  const done = new Promise<void>((r) =>
    emitter.once(event, () => {
      fired = true
      r()
    }),
  )
  return { fired: () => fired, done }
}

for (const direct of MODES) {
  // --- fs/read-stream-file-handle.js ---------------------------------------------------------
  test(`[${direct}] read-stream-file-handle: createReadStream(null, { fd: handle }) reads all, closes the handle ('close' on both)`, async (t) => {
    const file = path.join(scratch(), 'rs.txt')
    fs.writeFileSync(file, 'hello world')
    const handle = await od.open(file, 'r', { direct })
    const hclose = seen(handle, 'close')
    const stream = od.createReadStream(null, { fd: handle })
    let output = ''
    stream.on('data', (d) => (output += String(d)))
    const ended = seen(stream, 'end')
    await seen(stream, 'close').done
    await hclose.done
    t.true(ended.fired())
    t.is(output, 'hello world')
  })

  test(`[${direct}] read-stream-file-handle: the handle closed at once: no data, the stream closes`, async (t) => {
    const file = path.join(scratch(), 'rs.txt')
    fs.writeFileSync(file, 'hello world')
    const handle = await od.open(file, 'r', { direct })
    const hclose = seen(handle, 'close')
    const stream = od.createReadStream(null, { fd: handle })
    let data = 0
    stream.on('data', () => data++)
    const sclose = seen(stream, 'close')
    await handle.close()
    await sclose.done
    await hclose.done
    t.is(data, 0)
  })

  test(`[${direct}] read-stream-file-handle: the handle closed from 'data': the stream closes`, async (t) => {
    const file = path.join(scratch(), 'rs.txt')
    fs.writeFileSync(file, 'hello world')
    const handle = await od.open(file, 'r', { direct })
    const hclose = seen(handle, 'close')
    const stream = od.createReadStream(null, { fd: handle })
    stream.on('data', () => void handle.close())
    await seen(stream, 'close').done
    await hclose.done
    t.true(handle.closed)
  })

  test(`[${direct}] read-stream-file-handle: stream.close() closes the stream and the handle`, async (t) => {
    const file = path.join(scratch(), 'rs.txt')
    fs.writeFileSync(file, 'hello world')
    const handle = await od.open(file, 'r', { direct })
    const hclose = seen(handle, 'close')
    const stream = od.createReadStream(null, { fd: handle })
    const sclose = seen(stream, 'close')
    stream.close()
    await sclose.done
    await hclose.done
    t.true(handle.closed)
  })

  test(`[${direct}] read-stream-file-handle: { fd: handle, fs } is refused (Node: ERR_METHOD_NOT_IMPLEMENTED; odirect: ERR_ODIRECT_UNSUPPORTED)`, async (t) => {
    const file = path.join(scratch(), 'rs.txt')
    fs.writeFileSync(file, 'hello world')
    const handle = await od.open(file, 'r', { direct })
    t.throws(() => od.createReadStream(null, { fd: handle, fs } as never), { code: 'ERR_ODIRECT_UNSUPPORTED' })
    await handle.close()
  })

  test(`[${direct}] read-stream-file-handle: the stream reads through handle.read (a patched one is called) and the data is whole`, async (t) => {
    const file = path.join(scratch(), 'rs.txt')
    fs.writeFileSync(file, 'hello world')
    const handle = await od.open(file, 'r', { direct })
    const original = handle.read
    let reads = 0
    handle.read = function read(this: od.FileHandle, ...args: unknown[]) {
      reads++
      return Reflect.apply(original, this, args) as never
    } as typeof handle.read
    const stream = od.createReadStream(null, { fd: handle })
    let output = ''
    stream.on('data', (d) => (output += String(d)))
    await finished(stream)
    t.is(output, 'hello world')
    t.true(reads >= 1)
  })

  // --- fs/promises-file-handle-writeFile.js -------------------------------------------------
  test(`[${direct}] promises-file-handle-writeFile: fh.writeFile(buffer), then the file holds it`, async (t) => {
    const f = path.join(scratch(), 'w.txt')
    const fh = await od.open(f, 'w+', { direct })
    try {
      const buffer = Buffer.from('Hello world'.repeat(100), 'utf8')
      await fh.writeFile(buffer)
      t.deepEqual(fs.readFileSync(f), buffer)
    } finally {
      await fh.close()
    }
  })

  test(`[${direct}] promises-file-handle-writeFile: aborted on the next tick: AbortError`, async (t) => {
    const f = path.join(scratch(), 'dogs-running.txt')
    const fh = await od.open(f, 'w+', { direct })
    try {
      const buffer = Buffer.from('dogs running'.repeat(512 * 1024), 'utf8')
      const controller = new AbortController()
      process.nextTick(() => controller.abort())
      await t.throwsAsync(od.writeFile(fh, buffer, { signal: controller.signal }), { name: 'AbortError' })
    } finally {
      await fh.close()
    }
  })

  test(`[${direct}] promises-file-handle-writeFile: a Readable, iterables (strings, Buffers, async), with an encoding`, async (t) => {
    const dir = scratch()
    const dest = path.join(dir, 'tmp.txt')
    const cases: Array<[unknown, string, BufferEncoding?]> = [
      [Readable.from(['a', 'b', 'c']), 'abc'],
      [{ *[Symbol.iterator]() { yield 'a'; yield 'b'; yield 'c' } }, 'abc'],
      [{ *[Symbol.iterator]() { yield Buffer.from('a'); yield Buffer.from('b'); yield Buffer.from('c') } }, 'abc'],
      [{ async *[Symbol.asyncIterator]() { yield 'a'; yield 'b'; yield 'c' } }, 'abc'],
      [Readable.from(['ümlaut', ' ', 'sechzig']), 'ümlaut sechzig', 'latin1'],
    ]
    for (const [data, expected, encoding] of cases) {
      const fh = await od.open(dest, 'w+', { direct })
      try {
        await fh.writeFile(data as Iterable<string>, encoding)
        t.is(fs.readFileSync(dest, encoding ?? 'utf8'), expected)
      } finally {
        await fh.close()
      }
    }
  })

  test(`[${direct}] promises-file-handle-writeFile: a Readable with a signal aborted on the next tick: AbortError`, async (t) => {
    const fh = await od.open(path.join(scratch(), 'tmp-2.txt'), 'w+', { direct })
    try {
      const controller = new AbortController()
      process.nextTick(() => controller.abort())
      await t.throwsAsync(fh.writeFile(Readable.from(['a', 'b', 'c']), { signal: controller.signal } as never), { name: 'AbortError' })
    } finally {
      await fh.close()
    }
  })

  test(`[${direct}] promises-file-handle-writeFile: invalid values and iterables of them: ERR_INVALID_ARG_TYPE`, async (t) => {
    const fh = await od.open(path.join(scratch(), 'tmp.txt'), 'w+', { direct })
    try {
      for (const value of [42, 42n, {}, Symbol('42'), true, undefined, null, NaN]) {
        await t.throwsAsync(fh.writeFile({ *[Symbol.iterator]() { yield value } } as never), { code: 'ERR_INVALID_ARG_TYPE' })
        await t.throwsAsync(fh.writeFile(value as never), { code: 'ERR_INVALID_ARG_TYPE' })
      }
    } finally {
      await fh.close()
    }
  })

  // --- fs/promises-file-handle-readFile.js --------------------------------------------------
  test(`[${direct}] promises-file-handle-readFile: fh.readFile() reads what another descriptor wrote`, async (t) => {
    const f = path.join(scratch(), 'tmp-read-file.txt')
    const fh = await od.open(f, 'w+', { direct })
    const buffer = Buffer.from('Hello world'.repeat(100), 'utf8')
    fs.writeFileSync(f, buffer)
    t.deepEqual(await fh.readFile(), buffer)
    await fh.close()
  })

  test(`[${direct}] promises-file-handle-readFile: aborted before, on the next tick, one tick later: AbortError`, async (t) => {
    const dir = scratch()
    const f = path.join(dir, 'dogs-running.txt')
    fs.writeFileSync(f, Buffer.from('Dogs running'.repeat(10000), 'utf8'))
    const fh = await od.open(f, 'r', { direct })
    try {
      await t.throwsAsync(od.readFile(fh, { signal: AbortSignal.abort() }), { name: 'AbortError' })
      const c1 = new AbortController()
      process.nextTick(() => c1.abort())
      await t.throwsAsync(od.readFile(fh, { signal: c1.signal }), { name: 'AbortError' })
      const c2 = new AbortController()
      tick(1, () => c2.abort())
      const p = fh.readFile({ signal: c2.signal, encoding: 'utf8' } as never)
      // Node's file is 12 kB: read in one go here it may finish before the abort, as on Node with a fast disk.
      const r = await p.then(
        () => 'read',
        (e: { name?: string }) => e.name,
      )
      t.true(r === 'AbortError' || r === 'read', String(r))
    } finally {
      await fh.close()
    }
  })
}

test('[off] promises-file-handle-readFile: /proc/sys/kernel/hostname through a handle (direct: require is refused by procfs, prefer falls back)', async (t) => {
  const fh = await od.open('/proc/sys/kernel/hostname', 'r', { direct: 'off' })
  t.true((await fh.readFile()).length > 0)
  await fh.close()
  await t.throwsAsync(od.open('/proc/sys/kernel/hostname', 'r'), { code: 'EINVAL' })
  const p = await od.open('/proc/sys/kernel/hostname', 'r', { direct: 'prefer' })
  t.true((await p.readFile()).length > 0)
  await p.close()
})

// --- fs/read-stream-double-close.js -----------------------------------------------------------
for (const direct of MODES) {
  test(`[${direct}] read-stream-double-close: close(cb) twice, destroy(null, cb) twice: every callback runs`, async (t) => {
    const file = path.join(scratch(), 'dc.txt')
    fs.writeFileSync(file, 'x'.repeat(10_000))
    const s = od.createReadStream(file, { direct })
    let calls = 0
    await Promise.all([new Promise<void>((r) => s.close(() => r(void calls++))), new Promise<void>((r) => s.close(() => r(void calls++)))])
    t.is(calls, 2)
    const s2 = od.createReadStream(file, { direct })
    const destroyCb = s2.destroy as unknown as (e: null, cb: () => void) => void
    await Promise.all([new Promise<void>((r) => destroyCb.call(s2, null, () => r(void calls++))), new Promise<void>((r) => destroyCb.call(s2, null, () => r(void calls++)))])
    t.is(calls, 4)
  })

  // --- fs/promises-file-handle-stream.js ------------------------------------------------------
  test(`[${direct}] promises-file-handle-stream: fh.createWriteStream().end(buffer); fh.createReadStream() consumed whole`, async (t) => {
    const dir = scratch()
    const w = path.join(dir, 'tmp-write.txt')
    const buf = Buffer.from('Hello world'.repeat(100), 'utf8')
    const fh = await od.open(w, 'w', { direct })
    const ws = fh.createWriteStream()
    ws.end(buf)
    await finished(ws)
    t.deepEqual(fs.readFileSync(w), buf)
    const r = path.join(dir, 'tmp-read.txt')
    fs.writeFileSync(r, buf)
    const rh = await od.open(r, 'r', { direct })
    t.deepEqual(await consume(rh.createReadStream()), buf)
  })
}
