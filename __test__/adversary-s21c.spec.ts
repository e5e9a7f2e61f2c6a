// Three loose ends of the twenty-first session's first adversary pass (helper "small"):
// 1. readMany (array form; typed form on odirect's memory and on plain memory) refused a read of a
//    block-multiple length at a misaligned position at or past the end of the file with
//    ERR_ODIRECT_ALIGNMENT where fh.read answers 0 bytes there, as node:fs: such ops now read 0
//    (one fstat per call, on the refusal path only: src/handle.ts #manyAtEnd, src/many.ts
//    spreadResults). Inside the file, and any misaligned length, still refused, nothing read.
// 2. fh.stats() counted the writes cancelled by a short write in a linked writeMany datasync chain
//    (io_uring), and the chain's cancelled fdatasync, as failed ops of a call that resolved after
//    their re-run: a cancelled op the caller never sees is no op of stats() now (src/many.ts
//    rerunCancelled, src/handle.ts #thenDatasync).
// 3. Deno's fh.stat() (a native fstat: Deno's node:fs cannot fstat our descriptor) gave rdev 0 for a
//    device, birthtime = ctime and nanoseconds rebuilt from doubles (wrong last digits): rdev,
//    statx's birth time and the kernel's exact seconds + nanoseconds now (crates/napi/src/tasks.rs
//    StatTask, crates/core/src/align.rs statx_btime, src/stat.ts nativeStats).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import * as od from '../dist/index.js'
import { bytes } from './helpers/crashbed.js'
import { loopDevice, loopFs, type Requirement } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { runtimes } from './helpers/runtimes.ts'
import { scratchDirs } from './helpers/scratch.ts'

delete process.env.ODIRECT_BACKEND
delete process.env.ODIRECT_MANY_NATIVE
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const CHILDREN = path.join(here, 'adversary-s21c')
// Probed before any test or hook is declared (ava starts once one is, and an await after it is too late).
const where = await od.probe('/var/tmp')
const BACKENDS = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => where.backends[b].available)
const LOOP_REQS: Requirement[] = ['root', 'loop', 'cmd:blockdev']
const FS_REQS: Requirement[] = [...LOOP_REQS, 'cmd:mount']
const scratch = scratchDirs('s21c')

// ---------------------------------------------------------------------------------------
// 1. readMany at a misaligned position at or past the end of the file

for (const sector of [4096, 512] as const) {
  for (const backend of BACKENDS) {
    fxTest(`readMany on a direct ${backend} handle, ext4 on ${sector}-byte sectors, a 5000-byte file: ops of a block-multiple length at a misaligned position at or past the end read 0 bytes (array form, typed form on fh.alloc and on plain memory), as fh.read and node:fs; misaligned inside the file, or of a misaligned length, still refused (was: ERR_ODIRECT_ALIGNMENT)`, FS_REQS, async (t) => {
      const place = must(loopFs(sector, 16))
      t.teardown(() => place.cleanup())
      const p = path.join(place.dir, 'five-thousand')
      const data = bytes(5000, 33)
      fs.writeFileSync(p, data)
      const fh = await od.open(p, 'r', { backend })
      try {
        t.true(fh.direct)
        t.is(fh.backend, backend)
        const unit = fh.alignment.offset
        t.is(unit, sector)
        const L = 4096
        // The end of the file (5000), a misaligned position past it (9000), and whole blocks.
        const where = [0, 4096, 5000, 9000, 5000]
        const want = [4096, 904, 0, 0, 0]
        const check = (got: ArrayLike<number>, view: (k: number) => Uint8Array, what: string): void => {
          t.deepEqual(Array.from(got), want, what)
          t.true(view(0).equals(data.subarray(0, 4096)), `${what}: op 0's bytes`)
          t.true(view(1).subarray(0, 904).equals(data.subarray(4096)), `${what}: op 1's bytes`)
        }
        // The array form.
        const bufs = where.map(() => fh.alloc(L))
        const r = await fh.readMany(where.map((position, k) => ({ buffer: bufs[k], position })))
        check(r, (k) => bufs[k], 'array form')
        const windowed = await fh.readMany(where.map((position, k) => ({ buffer: bufs[k], position })), { window: 2 })
        check(windowed, (k) => bufs[k], 'array form, window 2')
        // Every op at the end: nothing to start.
        t.deepEqual(await fh.readMany([{ buffer: bufs[0], position: 5000 }, { buffer: bufs[1], position: 6000 + unit / 2 }]), [0, 0])
        // The typed form, on odirect's memory (the engine's batch) and on plain memory (bounce buffers).
        for (const [what, memory] of [
          ['typed form, fh.alloc', fh.alloc(where.length * L)],
          ['typed form, plain memory', new Uint8Array(where.length * L + 64).subarray(64)],
        ] as const) {
          const results = new Int32Array(where.length).fill(-1)
          const got = await fh.readMany({ memory, offsets: Uint32Array.from(where, (_, k) => k * L), lengths: new Uint32Array(where.length).fill(L), positions: Float64Array.from(where), results })
          t.is(got, results)
          const m = ArrayBuffer.isView(memory) ? memory : new Uint8Array(memory)
          check(got, (k) => Buffer.from(m.buffer, m.byteOffset + k * L, L), what)
          const big = await fh.readMany({ memory, offsets: Uint32Array.from(where, (_, k) => k * L), lengths: new Uint32Array(where.length).fill(L), positions: BigInt64Array.from(where, BigInt) })
          t.deepEqual(Array.from(big), want, `${what}, BigInt64Array positions`)
        }
        // Inside the file: refused as before (the op inside named), nothing read.
        const inside = fh.readMany([
          { buffer: bufs[0], position: 9000 },
          { buffer: bufs[1], position: 4000 },
        ])
        await t.throwsAsync(inside, { code: 'ERR_ODIRECT_ALIGNMENT', message: /position 4000 /u })
        await t.throwsAsync(fh.readMany({ memory: fh.alloc(2 * L), offsets: Uint32Array.of(0, L), lengths: Uint32Array.of(L, L), positions: Float64Array.of(5000, 100) }), { code: 'ERR_ODIRECT_ALIGNMENT', message: /position 100 / })
        // A misaligned length is the caller's mistake wherever it reads.
        await t.throwsAsync(fh.readMany([{ buffer: bufs[0].subarray(0, 100), position: 5000 }]), { code: 'ERR_ODIRECT_ALIGNMENT', message: /length 100 / })
        // close() called while the call's fstat runs waits for the batch it then starts.
        const fh2 = await od.open(p, 'r', { backend })
        const b2 = where.map(() => fh2.alloc(L))
        const during = fh2.readMany(where.map((position, k) => ({ buffer: b2[k], position })))
        const closed = fh2.close()
        check(await during, (k) => b2[k], 'close() called meanwhile')
        await closed
        t.true(fh2.closed)
        // Writes are never let through.
        const wfh = await od.open(p, 'r+', { backend })
        try {
          await t.throwsAsync(wfh.writeMany([{ buffer: wfh.alloc(L), position: 5000 }]), { code: 'ERR_ODIRECT_ALIGNMENT' })
        } finally {
          await wfh.close()
        }
      } finally {
        await fh.close()
      }
      t.true(fs.readFileSync(p).equals(data), 'the file as written')
    })
  }
}

// ---------------------------------------------------------------------------------------
// 2. fh.stats() of a linked writeMany datasync chain whose cancelled ops ran again

for (const backend of BACKENDS) {
  fxTest(`fh.stats() after writeMany(ops, { datasync: true }) on ${backend}, a loop device, a short write in the middle (then at the end) of the chain: counts the ops the caller saw, no errors (was on io_uring: the cancelled write and fdatasync counted as 2 failed ops of a call that resolved)`, LOOP_REQS, async (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const size = dev.sizeBytes
    // Each case on a handle of its own, its stats read once close() has waited for every op
    // (the chain's cancelled fdatasync may complete after the call settled).
    const run = async (ops: number[], want: number[] | string, stats: Record<string, number>): Promise<void> => {
      const fh = await od.open(dev.device, 'r+', { backend })
      t.is(fh.backend, backend)
      const buf = fh.alloc(8192)
      try {
        const p = fh.writeMany(ops.map((position) => ({ buffer: buf, position })), { datasync: true })
        if (typeof want === 'string') await t.throwsAsync(p, { code: want })
        else t.deepEqual(await p, want)
      } finally {
        await fh.close()
      }
      const s = fh.stats()
      t.like(s, { ...stats, inflight: 0 }, `${JSON.stringify(ops)}: ${JSON.stringify(s)}`)
    }
    // The short write in the middle: on io_uring the write after it ran again.
    await run([0, size - 4096, 8192], [8192, 4096, 8192], { ops: 4, writes: 3, bytesWritten: 20480, errors: 0 })
    // The short write last: on io_uring the chain's fdatasync cancelled, then made again.
    await run([0, size - 4096], [8192, 4096], { ops: 3, writes: 2, bytesWritten: 12288, errors: 0 })
    // A write that fails (past the device's end): counted; the fdatasync that never ran is not.
    await run([size], 'ENOSPC', { ops: 1, writes: 0, errors: 1 })
  })
}

// ---------------------------------------------------------------------------------------
// 3. fh.stat() in Node, Bun and Deno against node:fs.statSync in Node

interface Shaped {
  number: Record<string, string>
  bigint: Record<string, string>
}

for (const [rt, argv] of runtimes()) {
  fxTest(`${rt}: fh.stat() and fh.stat({ bigint: true }) of a regular file, a loop device and /dev/null say what node:fs.statSync says in Node (a block device's size: the device's; was in Deno: rdev 0, birthtime = ctime, nanoseconds wrong in their last digits)`, LOOP_REQS, (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const file = path.join(scratch(), 'file')
    fs.writeFileSync(file, bytes(5000, 7))
    const paths = [file, dev.device, '/dev/null']
    const c = spawnSync(argv[0], [...argv.slice(1), path.join(CHILDREN, 'stat.cjs'), DIST, ...paths], { encoding: 'utf8', timeout: 60_000 })
    const line = c.stdout.split('\n').find((l) => l.startsWith('RESULT '))
    t.truthy(line, `${c.stdout}\n${c.stderr}`)
    const got = JSON.parse((line as string).slice(7)) as Record<string, Shaped>
    for (const p of paths) {
      for (const bigint of [false, true]) {
        const s = fs.statSync(p, { bigint })
        const g = got[p][bigint ? 'bigint' : 'number']
        const want: Record<string, string> = {}
        for (const k of Object.keys(g)) {
          const v = (s as unknown as Record<string, unknown>)[k]
          want[k] = typeof v === 'function' ? String((v as () => boolean).call(s)) : v instanceof Date ? String(v.getTime()) : String(v)
        }
        if (p === dev.device) want.size = String(dev.sizeBytes)
        // Bun's own node:fs floors the Dates of fs.Stats where Node rounds (its fs.statSync too):
        // fh.stat() there is Bun's fstat, passed through.
        if (rt === 'bun' && !bigint) for (const k of ['atime', 'mtime', 'ctime', 'birthtime']) want[k] = String(Math.floor(Number(want[`${k}Ms`])))
        t.deepEqual(g, want, `${p} (${bigint ? 'bigint' : 'number'})`)
      }
    }
    t.not(got[dev.device].number.rdev, '0')
    t.is(got[dev.device].number.isBlockDevice, 'true')
  })
}
