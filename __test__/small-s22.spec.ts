// Five small faults the first adversary of the twenty-second session left (helper "small"):
// 1. fh.createWriteStream() on a read-only handle (fh.createReadStream() on a write-only one) errors
//    and, with autoClose (its default), closes the handle, as node:fs's FileHandle streams do (was:
//    left open) (src/streams/core.ts acquire).
// 2. fh.writev(buffers, pos, { datasync: true }) whose buffers hold 0 bytes runs the fdatasync, as
//    writeMany([], { datasync: true }) does: the promise is "what was written before is durable".
//    Not reproduced on this code (every backend ran it: one op in fh.stats(), one fdatasync(2) in
//    strace for aio/threadpool, the block durable after a power cut): kept as a guard, checked able
//    to fail (the same workload without the call loses the block).
// 3. writeFile(p, data, { atomic: true, flag }) takes the numeric fs.constants forms of 'w'
//    (O_WRONLY | O_CREAT | O_TRUNC) and 'wx' (| O_EXCL), as the strings (was: refused
//    ERR_INVALID_ARG_VALUE); other bits (O_RDWR, O_SYNC...) are still refused (src/files.ts).
// 4. An op on io_uring that the kernel cancels because io-wq could not start a worker thread (the
//    user at RLIMIT_NPROC) fails ECANCELED with a hint naming the limit, how to raise it, and the
//    aio / threadpool backends (was: only "cancelled by an AbortSignal, close() or a chain", none
//    of which applied) (src/errors.ts ecanceledHint).
// 5. io_uring_setup's ENOMEM says what the running kernel charges a ring to: RLIMIT_MEMLOCK before
//    5.12 and from 6.14 (a process without CAP_IPC_LOCK), the memory cgroup in between, with the
//    kernel's version and the process's limit (was: "RLIMIT_MEMLOCK too low on kernels before
//    5.12" on a 6.18 kernel where the limit is the cause) (crates/core/src/io/ring.rs setup_enomem).
import * as fs from 'node:fs'
import * as os from 'node:os'
import { constants as C } from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import * as od from '../dist/index.js'
import { bytes, CRASH_REQS, crashRun, durable } from './helpers/crashbed.js'
import { childRunner } from './helpers/child-result.ts'
import { fxTest } from './helpers/fxtest.js'
import { scratchDirs } from './helpers/scratch.ts'

delete process.env.ODIRECT_BACKEND
const here = path.dirname(fileURLToPath(import.meta.url))
const DIST = path.join(here, '..', 'dist', 'index.js')
const runChild = childRunner(path.join(here, 'small-s22'))
// Probed before any test or hook is declared (ava starts once one is, and an await after it is too late).
const where = await od.probe('/var/tmp')
const scratch = scratchDirs('s22small')
const BLOCK = 4096
const BACKENDS = (['io_uring', 'aio', 'threadpool'] as const).filter((b) => where.backends[b].available)

const settled = (s: NodeJS.EventEmitter): Promise<unknown> =>
  new Promise((resolve) => {
    let err: unknown
    s.on('error', (e) => (err = e))
    s.once('close', () => resolve(err))
  })

// ---------------------------------------------------------------------------------------
// 1. A handle stream refused by the handle's mode closes the handle (autoClose)

test('fh.createWriteStream() on a handle opened \'r\' (and fh.createReadStream() on one opened \'w\'): ERR_ODIRECT_FLAGS, and the handle is closed as node:fs\'s FileHandle stream closes it (autoClose); with autoClose: false it stays open (was: left open either way)', async (t) => {
  const dir = scratch()
  const p = path.join(dir, 'f')
  fs.writeFileSync(p, Buffer.alloc(BLOCK, 1))
  // node:fs, the reference: its stream errors EBADF on the first write and closes the handle.
  {
    const nfh = await fsp.open(p, 'r')
    const ws = nfh.createWriteStream()
    const done = settled(ws)
    ws.end(Buffer.alloc(16))
    t.is((await done as NodeJS.ErrnoException).code, 'EBADF')
    t.is(nfh.fd, -1, 'node:fs closed its handle')
  }
  for (const [flags, make] of [
    ['r', (fh: od.FileHandle, o?: { autoClose: boolean }) => fh.createWriteStream(o)],
    ['w', (fh: od.FileHandle, o?: { autoClose: boolean }) => fh.createReadStream(o)],
  ] as const) {
    const fh = await od.open(p, flags === 'w' ? 'r+' : 'r')
    await fh.close()
    const rfh = await od.open(p, flags)
    const s = make(rfh)
    const done = settled(s)
    if ('end' in s) s.end(Buffer.alloc(BLOCK))
    else s.resume()
    t.is((await done as { code?: string }).code, 'ERR_ODIRECT_FLAGS')
    t.true(rfh.closed, `the '${flags}' handle was closed by its stream`)
    await t.throwsAsync(rfh.stat(), { code: 'ERR_ODIRECT_CLOSED' })
    // autoClose: false: the caller keeps it.
    const kept = await od.open(p, flags)
    try {
      const k = make(kept, { autoClose: false })
      const kd = settled(k)
      if ('end' in k) k.end(Buffer.alloc(BLOCK))
      else k.resume()
      t.is((await kd as { code?: string }).code, 'ERR_ODIRECT_FLAGS')
      t.false(kept.closed)
      await t.notThrowsAsync(kept.stat())
    } finally {
      await kept.close()
    }
  }
})

// ---------------------------------------------------------------------------------------
// 2. writev of 0 bytes with datasync: the fdatasync still runs

for (const backend of BACKENDS) {
  fxTest(`fh.writev([], pos, { datasync: true }) and writev([empty buffer], ...) on ${backend}: the block written before without sync is durable when it resolves (power cut right after), as after writeMany([], { datasync: true })`, CRASH_REQS, async (t) => {
    const old = bytes(4 * BLOCK, 1)
    for (const form of ['writev([])', 'writev([empty])', 'writeMany([])'] as const) {
      const run = await crashRun({ image: (d) => fs.writeFileSync(path.join(d, 'data'), old) }, async (root) => {
        const fh = await od.open(path.join(root, 'data'), 'r+', { backend })
        try {
          const b = fh.alloc(BLOCK)
          b.set(bytes(BLOCK, 99))
          await fh.write(b, 0, BLOCK, 2 * BLOCK)
          if (form === 'writev([])') return (await fh.writev([], 0, { datasync: true })).bytesWritten
          if (form === 'writev([empty])') return (await fh.writev([new Uint8Array(0)], BLOCK, { datasync: true })).bytesWritten
          return (await fh.writeMany([], { datasync: true })).length
        } finally {
          // Nothing after the call may make the block durable: the handle is left to the cut.
          void fh
        }
      })
      try {
        t.true(run.outcome.ok, String(run.outcome.ok ? '' : run.outcome.error))
        t.is(run.outcome.ok ? run.outcome.value : -1, 0)
        const got = durable(run, 'data')
        t.true(got?.subarray(2 * BLOCK, 3 * BLOCK).equals(bytes(BLOCK, 99)), `${form} on ${backend}: the block written before it is not durable`)
      } finally {
        run.cleanup()
      }
    }
  })
}

// ---------------------------------------------------------------------------------------
// 3. writeFile atomic with numeric flags that mean 'w' or 'wx'

test('writeFile(p, data, { atomic: true, flag: O_WRONLY | O_CREAT | O_TRUNC }) replaces p (a new inode, as \'w\'), | O_EXCL (with or without O_TRUNC) is \'wx\' (EEXIST, p untouched; created when absent), O_RDWR | O_CREAT | O_TRUNC and | O_SYNC still refused (was: every numeric form refused)', async (t) => {
  const dir = scratch()
  const p = path.join(dir, 'f')
  fs.writeFileSync(p, 'old')
  const ino = fs.statSync(p).ino
  await od.writeFile(p, 'new', { atomic: true, flag: C.O_WRONLY | C.O_CREAT | C.O_TRUNC })
  t.is(fs.readFileSync(p, 'utf8'), 'new')
  t.not(fs.statSync(p).ino, ino, 'replaced by a rename, not written in place')
  for (const flag of [C.O_WRONLY | C.O_CREAT | C.O_EXCL, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_TRUNC]) {
    await t.throwsAsync(od.writeFile(p, 'other', { atomic: true, flag }), { code: 'EEXIST' })
    t.is(fs.readFileSync(p, 'utf8'), 'new')
    const q = path.join(dir, `absent-${flag}`)
    await od.writeFile(q, 'made', { atomic: true, flag })
    t.is(fs.readFileSync(q, 'utf8'), 'made')
  }
  for (const flag of [C.O_RDWR | C.O_CREAT | C.O_TRUNC, C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_SYNC, C.O_WRONLY | C.O_CREAT]) {
    await t.throwsAsync(od.writeFile(p, 'other', { atomic: true, flag }), { code: 'ERR_INVALID_ARG_VALUE' })
  }
  t.is(fs.readFileSync(p, 'utf8'), 'new')
  t.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('odirect-tmp')), [], 'no temp file left')
})

// ---------------------------------------------------------------------------------------
// 4. io-wq starved by RLIMIT_NPROC: ECANCELED that says why

type OpOut = 'ok' | { code: string; hint: string }
const NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups']
const NPROC_REASON = !where.backends.io_uring.available ? `io_uring is not available here (${where.backends.io_uring.reason})` : !where.backends.aio.available ? 'aio is not available here' : undefined

fxTest('io_uring ops of a user at RLIMIT_NPROC (a child as nobody, its limit set by prlimit to its own threads): the write and fdatasync io-wq cannot start a worker for fail ECANCELED with a hint naming RLIMIT_NPROC, its raise and the aio backend; on aio the same ops succeed (was: a hint about AbortSignals, close() and chains only)', ['root', 'cmd:setpriv', 'cmd:prlimit'], async (t) => {
  const dir = scratch()
  fs.chmodSync(dir, 0o777)
  const r = await runChild<{ io_uring: OpOut[]; aio: OpOut[] }>('nproc.mjs', [DIST, dir], { argv: [...NOBODY, process.execPath] })
  t.deepEqual(r.aio, ['ok', 'ok'], 'aio starts no io-wq worker: its ops succeed under the same limit')
  // fdatasync always goes to an io-wq worker; the write too when it extends the file (O_DIRECT).
  const sync = r.io_uring[1]
  t.not(sync, 'ok', 'the fdatasync ran: an io-wq worker started, the limit did not bite')
  for (const op of r.io_uring) {
    if (op === 'ok') continue
    t.is(op.code, 'ECANCELED')
    t.regex(op.hint, /io-wq could not start a worker thread/)
    t.regex(op.hint, /RLIMIT_NPROC = \d+/)
    t.regex(op.hint, /prlimit --nproc/)
    t.regex(op.hint, /backend: 'aio'/)
  }
}, NPROC_REASON)

// ---------------------------------------------------------------------------------------
// 5. io_uring_setup ENOMEM under RLIMIT_MEMLOCK: the hint true for the running kernel

const [KMAJ, KMIN] = os.release().split('.').map(Number)
const MEMLOCK_CHARGED = KMAJ > 6 || (KMAJ === 6 && KMIN >= 14) || KMAJ < 5 || (KMAJ === 5 && KMIN < 12)
const MEMLOCK_REASON = !MEMLOCK_CHARGED ? `Linux ${KMAJ}.${KMIN} charges io_uring rings to the memory cgroup, not RLIMIT_MEMLOCK: a limit of 0 does not refuse a ring` : undefined

fxTest('io_uring refused ENOMEM for an unprivileged user under RLIMIT_MEMLOCK 0 (prlimit on a child as nobody): the reason names this kernel\'s version, RLIMIT_MEMLOCK with the process\'s 0 bytes, how to raise it and the other backends (was: "RLIMIT_MEMLOCK too low on kernels before 5.12" on a 6.18 kernel)', ['root', 'cmd:setpriv', 'cmd:prlimit'], async (t) => {
  const dir = scratch()
  fs.chmodSync(dir, 0o777)
  const r = await runChild<{ reason: string | null }>('memlock.mjs', [DIST, dir], { argv: ['prlimit', '--memlock=0', ...NOBODY, process.execPath] })
  t.not(r.reason, null, 'io_uring was available under RLIMIT_MEMLOCK 0: this kernel does not charge the ring to it')
  const reason = r.reason ?? ''
  t.regex(reason, /^io_uring_setup: ENOMEM/)
  t.true(reason.includes(`Linux ${KMAJ}.${KMIN} charges it to RLIMIT_MEMLOCK (this process: 0 bytes)`), reason)
  t.regex(reason, /prlimit --memlock=/)
  t.regex(reason, /backend 'aio' or 'threadpool'/)
  t.notRegex(reason, /before 5\.12/)
}, MEMLOCK_REASON)
