// Adversary pass of the twentieth session, on the durability primitives a database author uses
// (README "Durability": the linked write + fdatasync, per-write dsync, untorn writes) and the
// arguments nobody planned for them.
// Found:
// 1. writeMany(ops, { datasync: true }) read `options.window` three times (twice to decide whether
//    to link the writes and the fdatasync on io_uring, once more for the batch): a getter whose
//    answer changed (64, 64, then 1) had the fdatasync linked after the first write only, the other
//    writes went in after it, and the call resolved with them not durable (a power cut after it
//    lost them). Now the options are read once and the link decided from that answer
//    (src/handle.ts #many).
// 2. writeMany / writev({ datasync: true }) on io_uring with a write that moved fewer bytes than
//    asked (a block device's end, RLIMIT_FSIZE): the kernel ends an IOSQE_IO_LINK chain at a short
//    transfer, so the linked fdatasync completed ECANCELED and the call rejected with it (the short
//    counts lost), where aio and the thread pool resolve with the short count after a real
//    fdatasync. Now the fdatasync is issued again, unlinked, and the call resolves as there
//    (src/handle.ts #thenDatasync).
// 3. An array of ops (or of buffers) that is a Proxy whose `length` trap throws: the caller's error
//    came back renamed ERR_INVALID_ARG_VALUE (the other traps' errors pass through as the caller's
//    own). Now passed through (readMany, writeMany, readv, writev).
// 4. writeFile onto a block device smaller than the data: ENOSPC saying "0 bytes of the data were
//    written before the error" (error.bytesWritten 0) when the device had taken its first MiB (the
//    block's write was short at the device's end, then ENOSPC): a caller told its device was
//    untouched. It now counts what the failed block's short writes put there, as the write
//    stream's cut-back already did (src/streams/core.ts bytesInOrder, src/files.ts writeBlocks).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import * as od from '../dist/index.js'
import { bytes, CRASH_REQS, crashRun, durable } from './helpers/crashbed.js'
import { loopDevice, type Requirement } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { twoFaced } from './helpers/getters.ts'
import { scratchDirs } from './helpers/scratch.ts'

delete process.env.ODIRECT_BACKEND
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
// Probed before any test or hook is declared (ava starts once one is, and an await after it is too late).
const where = await od.probe('/var/tmp')
const scratch = scratchDirs('s20')
const BLOCK = 4096
const BACKENDS = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => where.backends[b].available)
const URING_REASON = where.backends.io_uring.available ? undefined : `io_uring is not available here (${where.backends.io_uring.reason})`

// ---------------------------------------------------------------------------------------
// 1. writeMany({ datasync: true }) with a window getter whose answer changes

fxTest('writeMany(ops, { datasync: true, window }) on io_uring with a window getter answering 64, 64, then 1: read once, and every write is durable when the call resolves (power cut right after it) (was: the fdatasync linked after the first write only: writes after it lost)', CRASH_REQS, async (t) => {
  const slots = [0, 3, 4, 9, 15]
  const old = bytes(16 * BLOCK, 7)
  let reads = -1
  const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'data'), old) }, async (root) => {
    const fh = await od.open(path.join(root, 'data'), 'r+', { backend: 'io_uring' })
    try {
      const ops = slots.map((s) => {
        const buffer = fh.alloc(BLOCK)
        buffer.set(bytes(BLOCK, 300 + s))
        return { buffer, position: s * BLOCK }
      })
      const o = twoFaced({ datasync: true }, 'window', [64, 64, 1])
      const r = await fh.writeMany(ops, o)
      reads = o.reads()
      return r
    } finally {
      await fh.close()
    }
  })
  try {
    t.true(run.outcome.ok, String(run.outcome.ok ? '' : run.outcome.error))
    const got = durable(run, 'data')
    t.is(got?.length, old.length)
    const lost = slots.filter((s) => !got?.subarray(s * BLOCK, (s + 1) * BLOCK).equals(bytes(BLOCK, 300 + s)))
    t.deepEqual(lost, [], `blocks not durable after writeMany({ datasync: true }) resolved: ${lost.join(', ')}`)
    t.is(reads, 1, `options.window read ${reads} times`)
  } finally {
    run.cleanup()
  }
}, URING_REASON)

// ---------------------------------------------------------------------------------------
// 2. A short write in a linked write + fdatasync

/** Runs `script` (CommonJS; `od`, `dev` in scope) in a child with ODIRECT_DEBUG=1; its stdout and the debug lines. */
function traced(script: string, dev: string): { out: string; lines: string[] } {
  const r = spawnSync(process.execPath, ['-e', `const od = require(${JSON.stringify(DIST)}); const dev = ${JSON.stringify(dev)};\n(async () => {\n${script}\n})().catch((e) => { console.log('FAILED', e.code, e.syscall, e.message); process.exitCode = 1 });`], {
    encoding: 'utf8',
    env: { ...process.env, ODIRECT_DEBUG: '1', ODIRECT_BACKEND: '' },
    timeout: 60_000,
  })
  return { out: r.stdout, lines: r.stderr.split('\n').filter((l) => /^odirect: (submit|complete) /.test(l)) }
}

const LOOP_REQS: Requirement[] = ['root', 'loop', 'cmd:blockdev']

for (const backend of BACKENDS) {
  fxTest(`writeMany / writev({ datasync: true }) on ${backend} with a write straddling a block device's end: resolves with the short count once an fdatasync after it succeeded, the bytes before the end written (was on io_uring: rejected ECANCELED from the linked fdatasync, which the short write cancelled)`, LOOP_REQS, async (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const size = dev.sizeBytes
    const { out, lines } = traced(
      `const fh = await od.open(dev, 'r+', { backend: ${JSON.stringify(backend)} });
       const a = fh.alloc(${2 * BLOCK}).fill(0xa1);
       const b = fh.alloc(${2 * BLOCK}).fill(0xb2);
       console.log('writeMany', JSON.stringify(await fh.writeMany([{ buffer: a, position: ${size - BLOCK} }], { datasync: true })));
       const w = await fh.writev([b], ${size - BLOCK}, { datasync: true });
       console.log('writev', w.bytesWritten);
       await fh.close();`,
      dev.device,
    )
    t.regex(out, /^writeMany \[4096\]$/m, `${out}\n${lines.join('\n')}`)
    t.regex(out, /^writev 4096$/m, `${out}\n${lines.join('\n')}`)
    // After each short write an fdatasync completed with 0 (on io_uring after the cancelled one).
    const writes = lines.map((l, i) => [l, i] as const).filter(([l]) => /^odirect: complete id=\d+ op=writev? .*result=4096\b/.test(l))
    t.is(writes.length, 2, lines.join('\n'))
    for (const [, i] of writes) t.truthy(lines.slice(i + 1).find((l) => /^odirect: complete id=\d+ op=fdatasync .*result=0\b/.test(l)), `no fdatasync succeeded after the write at line ${i}:\n${lines.join('\n')}`)
    // The device holds the last write's bytes up to its end.
    const fd = fs.openSync(dev.device, 'r')
    try {
      const tail = Buffer.alloc(BLOCK)
      fs.readSync(fd, tail, 0, BLOCK, size - BLOCK)
      t.true(tail.equals(Buffer.alloc(BLOCK, 0xb2)))
    } finally {
      fs.closeSync(fd)
    }
  })
}

if (BACKENDS.includes('io_uring')) {
  // (A short write in the middle of the chain: its cancelled followers now run again, adversary-s21.)
  fxTest("writeMany({ datasync: true }) on io_uring with a failed write in the middle of its linked chain: the call rejects, the writes after the failed one say ECANCELED with a hint naming the chain (was: 'cancelled (AbortSignal or close)', neither of which happened)", LOOP_REQS, async (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const size = dev.sizeBytes
    const fh = await od.open(dev.device, 'r+', { backend: 'io_uring' })
    try {
      const ops = [
        { buffer: fh.alloc(BLOCK).fill(0xa1), position: 0 },
        { buffer: fh.alloc(BLOCK).fill(0xb2), position: size },
        { buffer: fh.alloc(BLOCK).fill(0xc3), position: BLOCK },
      ]
      const e = await fh.writeMany(ops, { datasync: true }).then(
        () => undefined,
        (x: unknown) => x,
      )
      t.true(e instanceof od.DirectIoError, String(e))
      const results = (e as od.DirectIoError & { results?: unknown[] }).results ?? []
      t.is(results[0], BLOCK)
      t.is((results[1] as od.DirectIoError)?.code, 'ENOSPC', 'the write at the device end failed')
      const c = results[2] as od.DirectIoError
      t.is(c?.code, 'ECANCELED', String(c))
      t.regex(c.hint ?? '', /linked chain/, c.hint)
      t.notRegex(c.hint ?? '', /^the operation was cancelled \(AbortSignal or close\)/)
    } finally {
      await fh.close()
    }
  })
}

// ---------------------------------------------------------------------------------------
// 3. A Proxy array whose `length` trap throws

test("readMany, writeMany, readv and writev of a Proxy array whose length trap throws: the caller's own error, nothing done (was: renamed ERR_INVALID_ARG_VALUE)", async (t) => {
  const file = path.join(scratch(), 'f')
  fs.writeFileSync(file, Buffer.alloc(4 * BLOCK, 0x11))
  const fh = await od.open(file, 'r+')
  try {
    const mine = new Error('length trap')
    const buf = fh.alloc(BLOCK)
    const trap = <T extends object>(target: T): T =>
      new Proxy(target, {
        get(o, k, r) {
          if (k === 'length') throw mine
          return Reflect.get(o, k, r) as unknown
        },
      })
    const before = fh.stats().ops
    for (const [name, call] of [
      ['readMany', () => fh.readMany(trap([{ buffer: buf, position: 0 }]))],
      ['writeMany', () => fh.writeMany(trap([{ buffer: buf, position: 0 }]))],
      ['writeMany datasync', () => fh.writeMany(trap([{ buffer: buf, position: 0 }]), { datasync: true })],
      ['readv', () => fh.readv(trap([buf]), 0)],
      ['writev', () => fh.writev(trap([buf]), 0)],
    ] as const) {
      const e = await call().then(
        () => undefined,
        (x: unknown) => x,
      )
      t.is(e, mine, `${name}: ${String(e)}`)
    }
    t.is(fh.stats().ops, before, 'nothing reached the kernel')
  } finally {
    await fh.close()
  }
  t.true(fs.readFileSync(file).equals(Buffer.alloc(4 * BLOCK, 0x11)))
})

// ---------------------------------------------------------------------------------------
// 4. writeFile onto a block device smaller than the data

fxTest('writeFile (plain, atomic, a handle) onto a block device smaller than the data: ENOSPC whose bytesWritten is what the device took of the data (was: 0, "0 bytes of the data were written", with its first MiB overwritten)', LOOP_REQS, async (t) => {
  const dev = must(loopDevice(4096, 1))
  t.teardown(() => dev.cleanup())
  const held = (): number => {
    const d = fs.readFileSync(dev.device)
    let k = 0
    while (k < d.length && d[k] === 0x5a) k++
    return k
  }
  for (const [form, n] of [
    ['writeFile', 2 << 20],
    ['writeFile', (1 << 20) + 8192 + 100],
    ['writeFile atomic', 3 << 20],
    ['fh.writeFile', 2 << 20],
  ] as const) {
    fs.writeFileSync(dev.device, Buffer.alloc(dev.sizeBytes))
    const data = Buffer.alloc(n, 0x5a)
    let call: Promise<unknown>
    if (form === 'fh.writeFile') {
      const fh = await od.open(dev.device, 'r+')
      call = fh.writeFile(data).finally(() => fh.close())
    } else call = od.writeFile(dev.device, data, form === 'writeFile atomic' ? { atomic: true } : undefined)
    const e = await t.throwsAsync<od.DirectIoError>(call, { code: 'ENOSPC' }, `${form} of ${n}`)
    const k = held()
    t.true(k > 0, `${form} of ${n}: the device took none of it`)
    t.is(e?.bytesWritten, k, `${form} of ${n}: ${e?.message}`)
    t.regex(e?.message ?? '', new RegExp(`\\(${k} bytes of the data were written before the error\\)`))
  }
})

// ---------------------------------------------------------------------------------------
// 5. A write stream whose file is rotated by link + unlink mid-stream

fxTest("createWriteStream of a file rotated mid-stream by a hard link and the unlink of the name it opened (log -> log.1 in its folder): once it finished, log.1 is durable after a power cut (was: '(deleted)' in /proc/self/fd taken for a file without a name, no folder synced)", CRASH_REQS, async (t) => {
  const data = bytes(3 * 65536 + 1000, 29)
  const r = await crashRun({ image: (d) => fs.mkdirSync(path.join(d, 'a')) }, async (root) => {
    const log = path.join(root, 'a', 'log')
    const ws = od.createWriteStream(log, { chunkSize: 65536, writeBehind: 2 })
    const src = Readable.from(
      (async function* () {
        yield data.subarray(0, 2 * 65536)
        // Called back: the stream took the head before the rotation.
        await new Promise<void>((res) => ws.write(Buffer.alloc(0), () => res()))
        fs.linkSync(log, path.join(root, 'a', 'log.1'))
        fs.unlinkSync(log)
        yield data.subarray(2 * 65536)
      })(),
    )
    await pipeline(src, ws)
  })
  try {
    t.true(r.outcome.ok, r.outcome.ok ? '' : String(r.outcome.error))
    const got = durable(r, 'a/log.1')
    t.true(got?.equals(data), `a/log.1 after the cut: ${got === undefined ? 'absent' : `${got.length} bytes`}`)
  } finally {
    r.cleanup()
  }
})
