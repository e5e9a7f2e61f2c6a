// Adversary pass of the twenty-first session: what a serious storage user would meet.
// Found:
// 1. writeMany(ops, { datasync: true }) on io_uring with a write that moved fewer bytes than asked
//    in the middle of its linked chain (a block device's end, RLIMIT_FSIZE): the kernel ends an
//    IOSQE_IO_LINK chain at a short transfer, so the writes linked after it (and the fdatasync)
//    completed ECANCELED and the call rejected [8192, 4096, ECANCELED] with no fdatasync at all,
//    where aio and the thread pool resolve [8192, 4096, 8192] after a real fdatasync: a power cut
//    right after the call lost the writes it said had landed. The cancelled writes now run again
//    unlinked, then the fdatasync (src/many.ts rerunCancelled, src/handle.ts #thenDatasync); the
//    batch counts as a write in flight until then, so an fh.datasync() called meanwhile covers them.
// 2. The typed-array writeMany / readMany on memory that is not odirect's own (a plain Uint8Array:
//    the ops go through bounce buffers) wrote +errno into `results` for a failed op (+28 for
//    ENOSPC, read as 28 bytes moved) where the engine-run form writes -errno (src/many.ts viaOps).
// 3. fs's read loops (`while ((await fh.read(buf, 0, n, null)).bytesRead > 0)`, or `pos +=
//    bytesRead`) on a direct handle of a file whose size is not a block multiple ended in
//    ERR_ODIRECT_ALIGNMENT at the position their short last read left, where fs reads 0 bytes. A
//    read of block-multiple length at a misaligned position at or past the end now reads 0 (one
//    fstat on the refusal path; src/handle.ts #readAtEnd).
// 4. copyFile / writeFile({ atomic }) in a process ended by process.exit() or an uncaught
//    exception left the temp file (as large as its reservation): removed by an 'exit' listener
//    now (src/fileops.ts tempOwned). Deno runs no 'exit' listener after an uncaught exception
//    (removed natively at exit(3) since live-s22, crates/napi/src/paths.rs TEMPS).
// 5. open(path, O_RDONLY | O_TRUNC) failed EINVAL from the held-back ftruncate on a read-only
//    descriptor where the kernel and node:fs truncate (crates/core/src/file.rs truncate_held).
// 6. probe() / odirect probe / odirect bench of a FIFO without a writer hung forever in the FIFO's
//    open (crates/core/src/probe.rs, bench/bench.ts).
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import * as od from '../dist/index.js'
import { bytes, CRASH_REQS, crashRun, durable } from './helpers/crashbed.js'
import { loopDevice, type Requirement } from './helpers/fixtures.js'
import { fxTest, must } from './helpers/fxtest.js'
import { runtimes } from './helpers/runtimes.ts'
import { scratchDirs } from './helpers/scratch.ts'

delete process.env.ODIRECT_BACKEND
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const CHILDREN = path.join(here, 'adversary-s21')
// Probed before any test or hook is declared (ava starts once one is, and an await after it is too late).
const where = await od.probe('/var/tmp')
const BLOCK = 4096
const scratch = scratchDirs('s21')
const BACKENDS = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => where.backends[b].available)
const LOOP_REQS: Requirement[] = ['root', 'loop', 'cmd:blockdev']
const PRLIMIT = spawnSync('sh', ['-c', 'command -v prlimit']).status === 0 ? undefined : 'prlimit is not installed'

interface ChainResult {
  backend: string
  results: Array<number | string>
  code?: string
  message?: string
  crash?: string
}

/**
 * Runs adversary-s21/chain.cjs (writeMany(ops, { datasync: true }) on `file` with `backend`) in a
 * child, under `prefix` (e.g. prlimit) if given, with ODIRECT_DEBUG=1: its RESULT and the debug lines.
 */
function chain(file: string, backend: string, ops: Array<[number, number, number]>, prefix: string[] = [], extra: string[] = []): { r: ChainResult | undefined; lines: string[]; raw: string } {
  const argv = [...prefix, process.execPath, path.join(CHILDREN, 'chain.cjs'), DIST, file, backend, JSON.stringify(ops), ...extra]
  const p = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env: { ...process.env, ODIRECT_DEBUG: '1', ODIRECT_BACKEND: '' }, timeout: 60_000 })
  const line = p.stdout.split('\n').find((l) => l.startsWith('RESULT '))
  const lines = p.stderr.split('\n').filter((l) => /^odirect: (submit|complete) /.test(l))
  return { r: line === undefined ? undefined : (JSON.parse(line.slice(7)) as ChainResult), lines, raw: `${p.stdout}\n${p.stderr}` }
}

/** Index of the last line completing a write, and whether an fdatasync completed with 0 after it. */
function syncedAfterLastWrite(lines: string[]): boolean {
  let last = -1
  lines.forEach((l, i) => {
    if (/^odirect: complete id=\d+ op=writev? /.test(l)) last = i
  })
  return last >= 0 && lines.slice(last + 1).some((l) => /^odirect: complete id=\d+ op=fdatasync .*result=0\b/.test(l))
}

// ---------------------------------------------------------------------------------------
// 1. A short write in the middle of a linked writeMany + fdatasync chain

for (const backend of BACKENDS) {
  fxTest(`writeMany(ops, { datasync: true }) on ${backend}, a loop device, its middle write straddling the device's end: resolves [8192, 4096, 8192] with every write on the device and an fdatasync after the last (was on io_uring: rejected [8192, 4096, ECANCELED], no fdatasync)`, LOOP_REQS, async (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const size = dev.sizeBytes
    const { r, lines, raw } = chain(dev.device, backend, [
      [0xa1, 2 * BLOCK, 0],
      [0xb2, 2 * BLOCK, size - BLOCK],
      [0xc3, 2 * BLOCK, 2 * BLOCK],
    ])
    t.is(r?.backend, backend, raw)
    t.deepEqual(r?.results, [2 * BLOCK, BLOCK, 2 * BLOCK], raw)
    t.is(r?.code, undefined, raw)
    t.true(syncedAfterLastWrite(lines), `no fdatasync completed after the last write:\n${lines.join('\n')}`)
    const fd = fs.openSync(dev.device, 'r')
    try {
      const at = (pos: number, len: number): Buffer => {
        const b = Buffer.alloc(len)
        fs.readSync(fd, b, 0, len, pos)
        return b
      }
      t.true(at(0, 2 * BLOCK).equals(Buffer.alloc(2 * BLOCK, 0xa1)))
      t.true(at(2 * BLOCK, 2 * BLOCK).equals(Buffer.alloc(2 * BLOCK, 0xc3)))
      t.true(at(size - BLOCK, BLOCK).equals(Buffer.alloc(BLOCK, 0xb2)))
    } finally {
      fs.closeSync(fd)
    }
  })
}

for (const backend of BACKENDS) {
  fxTest(`writeMany(ops, { datasync: true }) on ${backend}, a loop device: a short write, then one past the device's end, then one inside: rejects ENOSPC with results [8192, 4096, ENOSPC, 4096] and no fdatasync, as on every backend (was on io_uring: the last two ECANCELED)`, LOOP_REQS, async (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const size = dev.sizeBytes
    const { r, lines, raw } = chain(dev.device, backend, [
      [0xa1, 2 * BLOCK, 0],
      [0xb2, 2 * BLOCK, size - BLOCK],
      [0xc3, BLOCK, size],
      [0xd4, BLOCK, 2 * BLOCK],
    ])
    t.is(r?.code, 'ENOSPC', raw)
    t.deepEqual(r?.results, [2 * BLOCK, BLOCK, 'ENOSPC', BLOCK], raw)
    t.regex(r?.message ?? '', /^1 of 4 writes failed/, raw)
    t.false(lines.some((l) => /^odirect: complete id=\d+ op=fdatasync .*result=0\b/.test(l)), `an fdatasync ran after a failed write:\n${lines.join('\n')}`)
  })
}

if (BACKENDS.includes('io_uring')) {
  fxTest("writeMany(ops, { datasync: true }) on io_uring, its middle write short, with fh.datasync() called right after it: that fdatasync goes to the kernel only once the cancelled write ran again (the batch counts as a write in flight until then)", LOOP_REQS, async (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const size = dev.sizeBytes
    const ops: Array<[number, number, number]> = [
      [0xa1, 2 * BLOCK, 0],
      [0xb2, 2 * BLOCK, size - BLOCK],
      [0xc3, 2 * BLOCK, 2 * BLOCK],
    ]
    const { r, lines, raw } = chain(dev.device, 'io_uring', ops, [], ['barrier'])
    t.deepEqual(r?.results, [2 * BLOCK, BLOCK, 2 * BLOCK], raw)
    // The write at 8192 completes twice (cancelled in the chain, then for real); every fdatasync
    // but the chain's own is submitted after its real completion.
    const again = lines.findIndex((l) => /^odirect: complete id=\d+ op=write .*offset=8192 .*result=8192\b/.test(l))
    t.true(again >= 0, lines.join('\n'))
    const early = lines.slice(0, again).filter((l) => /^odirect: submit id=\d+ op=fdatasync /.test(l))
    t.is(early.length, 1, `fdatasyncs submitted before the cancelled write ran again (only the chain's may be):\n${lines.join('\n')}`)
    t.is(lines.slice(again).filter((l) => /^odirect: complete id=\d+ op=fdatasync .*result=0\b/.test(l)).length, 2, lines.join('\n'))
  })
}

for (const backend of BACKENDS) {
  fxTest(`writeMany(ops, { datasync: true }) on ${backend} under RLIMIT_FSIZE, its middle write cut short by the limit: a power cut right after the call finds every byte the call says it wrote (was on io_uring: [8192, 4096, ECANCELED] and no fdatasync, the first writes lost)`, [...CRASH_REQS, 'cmd:bash'], async (t) => {
    const old = bytes(16 * BLOCK, 5)
    const limit = 5 * BLOCK
    // 0-2: whole; 4-5: cut at the limit (block 4 written); 2-3: whole, after the short one.
    const ops: Array<[number, number, number]> = [
      [0xa1, 2 * BLOCK, 0],
      [0xb2, 2 * BLOCK, 4 * BLOCK],
      [0xc3, 2 * BLOCK, 2 * BLOCK],
    ]
    const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'data'), old) }, async (root) => {
      return chain(path.join(root, 'data'), backend, ops, ['bash', '-c', `trap '' XFSZ; exec prlimit --fsize=${limit} -- "$@"`, 'bash'])
    })
    try {
      t.true(run.outcome.ok, String(run.outcome.ok ? '' : run.outcome.error))
      const out = run.outcome.ok ? run.outcome.value : undefined
      t.is(out?.r?.backend, backend, out?.raw)
      const got = durable(run, 'data')
      t.is(got?.length, old.length)
      const want = Buffer.from(old)
      ;(out?.r?.results ?? []).forEach((n, i) => {
        if (typeof n === 'number') want.fill(ops[i][0], ops[i][2], ops[i][2] + n)
      })
      const lost = [...Array(16).keys()].filter((b) => !got?.subarray(b * BLOCK, (b + 1) * BLOCK).equals(want.subarray(b * BLOCK, (b + 1) * BLOCK)))
      t.deepEqual(lost, [], `blocks that the call said were written, not durable after a power cut: ${lost.join(', ')} (${out?.raw})`)
      t.deepEqual(out?.r?.results, [2 * BLOCK, BLOCK, 2 * BLOCK], out?.raw)
    } finally {
      run.cleanup()
    }
  }, PRLIMIT)
}

// ---------------------------------------------------------------------------------------
// 2. The typed-array form's results for memory that is not odirect's own

for (const backend of BACKENDS) {
  fxTest(`typed-array writeMany on ${backend} with plain memory (new Uint8Array) and an op that fails (ENOSPC past a device's end): results[i] is -errno as with fh.alloc memory (was: +28, read as 28 bytes written)`, LOOP_REQS, async (t) => {
    const dev = must(loopDevice(4096, 1))
    t.teardown(() => dev.cleanup())
    const fh = await od.open(dev.device, 'r+', { backend })
    try {
      for (const [what, memory] of [
        ['fh.alloc', fh.alloc(2 * BLOCK)],
        ['plain', new Uint8Array(2 * BLOCK)],
      ] as const) {
        memory.fill(0x5e)
        const results = new Int32Array(2)
        const e = await fh
          .writeMany({ memory, offsets: Uint32Array.of(0, BLOCK), lengths: Uint32Array.of(BLOCK, BLOCK), positions: Float64Array.of(0, dev.sizeBytes), results })
          .then(
            () => undefined,
            (x: unknown) => x as od.DirectIoError & { results?: unknown[] },
          )
        t.is(e?.code, 'ENOSPC', `${what}: ${String(e)}`)
        t.deepEqual([...results], [BLOCK, -28], `${what}: results`)
        t.is(e?.results?.[0], BLOCK, what)
        t.is((e?.results?.[1] as od.DirectIoError | undefined)?.code, 'ENOSPC', what)
      }
    } finally {
      await fh.close()
    }
  })
}

// ---------------------------------------------------------------------------------------
// 3. fs's read loop on a direct handle of a file whose size is not a block multiple

for (const backend of BACKENDS) {
  test(`fh.read loops as fs's docs write them (position null, or pos += bytesRead) and readv on a direct ${backend} handle of a 5000-byte file end with a 0-byte read at the end, as node:fs (was: ERR_ODIRECT_ALIGNMENT at position 5000, where the short last read left it); reads at a misaligned position inside the file, and misaligned lengths, still refused`, async (t) => {
    const dir = scratch()
    const p = path.join(dir, 'five-thousand')
    const data = bytes(5000, 21)
    fs.writeFileSync(p, data)
    const fh = await od.open(p, 'r', { backend })
    try {
      t.true(fh.direct)
      const buf = fh.alloc(4096)
      const loop = async (next: (pos: number) => Promise<number>): Promise<number[]> => {
        const got: number[] = []
        let pos = 0
        for (let i = 0; i < 5; i++) {
          const n = await next(pos)
          got.push(n)
          if (n === 0) break
          t.true(buf.subarray(0, n).equals(data.subarray(pos, pos + n)), `bytes at ${pos}`)
          pos += n
        }
        return got
      }
      t.deepEqual(await loop(async () => (await fh.read(buf, 0, 4096, null)).bytesRead), [4096, 904, 0], 'position null')
      t.is(fh.position, 5000)
      t.deepEqual(await loop(async (pos) => (await fh.read(buf, 0, 4096, pos)).bytesRead), [4096, 904, 0], 'pos += bytesRead')
      t.deepEqual(await loop(async (pos) => (await fh.read({ buffer: buf, position: pos })).bytesRead), [4096, 904, 0], 'read({ buffer, position })')
      t.is((await fh.readv([buf], 5000)).bytesRead, 0, 'readv at the end')
      t.is((await fh.read(buf, 0, 4096, 9000)).bytesRead, 0, 'a misaligned position past the end')
      // A misaligned length is the caller's mistake wherever it reads: refused, at the end too.
      await t.throwsAsync(fh.read(buf, 0, 100, 5000), { code: 'ERR_ODIRECT_ALIGNMENT' })
      // Inside the file: refused as before, nothing read.
      await t.throwsAsync(fh.read(buf, 0, 4096, 100), { code: 'ERR_ODIRECT_ALIGNMENT' })
      await t.throwsAsync(fh.read(buf, 0, 100, 0), { code: 'ERR_ODIRECT_ALIGNMENT' })
      await t.throwsAsync(fh.readv([buf], 4000), { code: 'ERR_ODIRECT_ALIGNMENT' })
      t.is(fh.position, 5000)
    } finally {
      await fh.close()
    }
    // node:fs's answers, for the record.
    const nfh = await fs.promises.open(p, 'r')
    try {
      const b = Buffer.alloc(4096)
      const n: number[] = []
      for (let r = 1; r !== 0; ) n.push((r = (await nfh.read(b, 0, 4096, null)).bytesRead))
      t.deepEqual(n, [4096, 904, 0])
    } finally {
      await nfh.close()
    }
  })
}

// ---------------------------------------------------------------------------------------
// 4. A process that ends through process.exit() or an uncaught exception mid-copy

for (const [rt, argv] of runtimes()) {
  for (const form of ['copy', 'atomic'] as const) {
    for (const how of ['exit', 'throw'] as const) {
      const title = `${rt}: ${form === 'copy' ? 'copyFile' : 'writeFile({ atomic })'} in a process ended mid-way by ${how === 'exit' ? 'process.exit(3)' : 'an uncaught exception'}: no temp file left, the destination as it was (was: the temp file left, as large as its reservation)`
      // Deno 2.9 runs no process 'exit' listener when an uncaught exception ends it (its 'error'
      // event may be cancelled by a listener after ours: removing a live copy's temp file there
      // is not safe); it ends through exit(3), whose handler removes the temp files natively
      // (live-s22: was skipped, the temp file left).
      fxTest(title, [], (t) => {
        const dir = scratch()
        const old = bytes(5000, 9)
        fs.writeFileSync(path.join(dir, 'src'), bytes(16 << 20, 10))
        fs.writeFileSync(path.join(dir, 'dst'), old)
        const r = spawnSync(argv[0], [...argv.slice(1), path.join(CHILDREN, 'exit-temp.cjs'), DIST, dir, form, how], { encoding: 'utf8', timeout: 60_000 })
        t.is(r.status, how === 'exit' ? 3 : 1, `${r.stdout}\n${r.stderr}`)
        t.notRegex(r.stdout, /before the exit/, 'the copy ended before the exit: the case proves nothing')
        t.deepEqual(fs.readdirSync(dir).sort(), ['dst', 'src'], 'files left in the directory')
        t.true(fs.readFileSync(path.join(dir, 'dst')).equals(old), 'the destination changed')
      })
    }
  }
}

// ---------------------------------------------------------------------------------------
// 5. Numeric flags O_RDONLY | O_TRUNC

// The kernel truncates at open(O_RDONLY | O_TRUNC) (for a caller that may write the file), and
// node:fs opens it so. odirect holds O_TRUNC back until O_DIRECT is known to work and then
// ftruncated the descriptor, which a read-only one refuses: the open failed EINVAL naming an
// ftruncate the caller never asked for. Now truncated through a writable descriptor of the file
// (crates/core/src/file.rs truncate_held).
for (const direct of ['require', 'uncached'] as const) {
  test(`open(path, O_RDONLY | O_TRUNC${direct === 'require' ? '' : ", { direct: 'uncached' }"}) truncates the file and opens it read-only, as node:fs and the kernel do (was: EINVAL from the held-back ftruncate on the read-only descriptor); as nobody on a file it may not write: EACCES, untouched`, async (t) => {
    const dir = scratch()
    const p = path.join(dir, 'ro-trunc')
    fs.writeFileSync(p, Buffer.alloc(8192, 1))
    const { O_RDONLY, O_TRUNC, O_CREAT } = fs.constants
    const opened = await od.open(p, O_RDONLY | O_TRUNC, { direct }).catch((e: unknown) => e as od.DirectIoError)
    if (opened instanceof od.DirectIoError && direct === 'uncached' && opened.syscall === 'preadv2') return t.log(`no RWF_DONTCACHE here: ${opened.message}`)
    t.false(opened instanceof Error, String(opened))
    const fh = opened as od.FileHandle
    try {
      t.is((await fh.stat()).size, 0)
      t.is(fs.statSync(p).size, 0)
      t.true(fh.readable)
      t.false(fh.writable)
    } finally {
      await fh.close()
    }
    // Created by it: an empty new file.
    const q = path.join(dir, 'ro-trunc-new')
    await (await od.open(q, O_RDONLY | O_TRUNC | O_CREAT, { direct })).close()
    t.is(fs.statSync(q).size, 0)
    // As a user who may not write it: refused as the kernel's open refuses it, the file untouched.
    if (process.getuid?.() === 0) {
      fs.writeFileSync(p, Buffer.alloc(8192, 2))
      fs.chmodSync(p, 0o644)
      fs.chmodSync(dir, 0o755)
      const script = `require(${JSON.stringify(DIST)}).open(${JSON.stringify(p)}, ${O_RDONLY | O_TRUNC}, { direct: ${JSON.stringify(direct)} }).then(() => console.log('opened'), (e) => console.log(e.code))`
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script], { encoding: 'utf8' })
      t.is(r.stdout.trim(), 'EACCES', r.stderr)
      t.is(fs.statSync(p).size, 8192)
    }
  })
}

// ---------------------------------------------------------------------------------------
// 6. probe() of a FIFO

for (const how of ['probe()', 'odirect probe', 'odirect bench'] as const) {
  const what = how === 'odirect bench' ? 'refuses it at once (exit 1), naming what it is, before preparing anything' : 'answers at once that direct I/O does not apply, without opening it'
  test(`${how} of a FIFO without a writer (and of a character device) ${what} (was: the open waited for a writer forever: the call never settled, the process never ended)`, (t) => {
    const dir = scratch()
    const fifo = path.join(dir, 'fifo')
    t.is(spawnSync('mkfifo', [fifo]).status, 0)
    const argv =
      how === 'probe()'
        ? [process.execPath, '-e', `const od = require(${JSON.stringify(DIST)}); (async () => { for (const p of process.argv.slice(1)) { const r = await od.probe(p); console.log(JSON.stringify({ works: r.direct.works, reason: r.direct.reason })) } })()`, fifo, '/dev/null']
        : [process.execPath, path.join(here, '..', 'dist', 'cli.js'), how === 'odirect probe' ? 'probe' : 'bench', fifo, ...(how === 'odirect bench' ? ['--size', '8M', '--engines', 'odirect'] : [])]
    // The timeout only ends a child that hangs (it would otherwise never end); nothing is timed.
    const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 60_000 })
    t.is(r.signal, null, `killed: it hung (${r.stdout}${r.stderr})`)
    if (how === 'probe()') {
      const [f, d] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { works: boolean; reason: string })
      t.false(f.works)
      t.regex(f.reason, /is a FIFO/)
      t.false(d.works)
      t.regex(d.reason, /is a character device/)
    } else if (how === 'odirect probe') {
      t.is(r.status, 2, r.stderr)
      t.regex(r.stdout, /is a FIFO: direct I\/O does not apply/)
    } else {
      t.is(r.status, 1, r.stderr)
      t.regex(r.stderr, /is a FIFO: pass a directory, a regular file or a block device/)
      t.notRegex(r.stdout, /preparing/)
    }
  })
}
